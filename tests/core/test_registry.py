"""``datapilot.core.Registry``: the one allow-list every seam registers its implementations in."""

from __future__ import annotations

import importlib.metadata
import logging
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from datapilot.core import (
    ConfigError,
    DuplicateNameError,
    InvalidRequestError,
    NotAllowedError,
    Registry,
    UnknownNameError,
)


def first() -> str:
    return "first"


def second() -> str:
    return "second"


def test_register_get_and_the_duplicate_rule() -> None:
    reg: Registry[Any] = Registry("widget")
    assert reg.register("a", first) is first
    reg.register("a", first)  # the same object again: fine
    with pytest.raises(DuplicateNameError, match=r"widget name 'a' is already registered") as e:
        reg.register("a", second)
    assert isinstance(e.value, ConfigError) and "replace=True" in e.value.message
    assert reg.get("a") is first
    reg.register("a", second, replace=True)
    assert reg.get("a") is second and reg.name_of(second) == "a" and reg.name_of(first) is None
    assert "a" in reg and "b" not in reg and len(reg) == 1 and list(reg) == ["a"]


def test_same_definition_executed_again_replaces_but_closures_do_not() -> None:
    reg: Registry[Any] = Registry("operator")
    namespace: dict[str, Any] = {"__name__": "flows.example"}
    source = "class Echo:\n    pass\n"
    exec(source, namespace)
    old = namespace["Echo"]
    reg.register("echo", old)
    exec(source, namespace)  # the file reloaded: a new class with the same module and qualified name
    reg.register("echo", namespace["Echo"])
    assert reg.get("echo") is namespace["Echo"] is not old

    def make(value: str) -> Any:
        return lambda: value

    reg.register("x", make("one"))
    with pytest.raises(DuplicateNameError):
        reg.register("x", make("two"))  # same qualified name, a different closure


def test_aliases_canonical_names_and_unregister() -> None:
    reg: Registry[Any] = Registry("function")
    reg.register("identity", first, ("id", "same"))
    assert reg.get("id") is first and reg.canonical("id") == "identity" and reg.canonical("other") == "other"
    assert reg.names() == ["identity"] and reg.items() == [("identity", first)] and reg.name_of(first) == "identity"
    with pytest.raises(DuplicateNameError, match="'id' is already registered \\(an alias of 'identity'\\)"):
        reg.register("other", second, ("id",))
    assert "other" not in reg  # nothing half-registered
    reg.register("id", second, replace=True)  # replacing an alias leaves the canonical entry
    assert reg.get("identity") is first and reg.get("id") is second and reg.canonical("id") == "id"
    assert reg.unregister("same") is first
    assert "identity" not in reg and "same" not in reg and reg.name_of(first) is None
    assert reg.names() == ["id"]
    with pytest.raises(UnknownNameError):
        reg.unregister("identity")


def test_decorator_form() -> None:
    reg: Registry[Any] = Registry("schema")

    @reg.add("thing", "item")
    class Thing:
        pass

    assert reg.get("item") is Thing and reg.name_of(Thing) == "thing"


def test_unknown_names_say_what_is_registered_and_suggest() -> None:
    reg: Registry[Any] = Registry("operator")
    reg.register("llm", first)
    reg.register("map", second)
    with pytest.raises(UnknownNameError) as e:
        reg.get("mapp")
    assert e.value.message == "unknown operator 'mapp' (did you mean 'map'?); registered: llm, map"
    assert isinstance(e.value, InvalidRequestError) and e.value.status_code == 400
    own: Registry[Any] = Registry("operator", error=LookupError)  # a seam keeps its own error type
    own.register("llm", first)
    with pytest.raises(LookupError, match="unknown operator 'zzz'; registered: llm"):
        own.get("zzz")
    assert "registered: none" in Registry("tool").unknown_message("x")


def test_builtins_are_imported_lazily_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "dp_test_builtin_widgets.py").write_text(
        "from dp_test_widget_registry import WIDGETS, first\nIMPORTS = [1]\nWIDGETS.register('gear', first)\n"
    )
    (tmp_path / "dp_test_broken_widgets.py").write_text("raise RuntimeError('boom')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg: Registry[Any] = Registry("widget", builtins=("dp_test_builtin_widgets", "dp_test_broken_widgets"))
    hook = types.ModuleType("dp_test_widget_registry")
    hook.WIDGETS, hook.first = reg, first  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "dp_test_widget_registry", hook)
    try:
        assert "dp_test_builtin_widgets" not in sys.modules  # nothing imported at construction
        assert reg.get("gear") is first
        module = sys.modules["dp_test_builtin_widgets"]
        with pytest.raises(UnknownNameError):
            reg.get("nothing")  # a second miss does not import again
        assert module.IMPORTS == [1] and sys.modules["dp_test_builtin_widgets"] is module
        assert len(reg.problems) == 1 and "dp_test_broken_widgets" in reg.problems[0] and "boom" in reg.problems[0]
    finally:
        sys.modules.pop("dp_test_builtin_widgets", None)
        sys.modules.pop("dp_test_broken_widgets", None)


def _fake_distribution(root: Path, group: str, entries: dict[str, str]) -> None:
    dist = root / "dp_fake_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: dp-fake-plugin\nVersion: 1.0\n")
    lines = "".join(f"{name} = {value}\n" for name, value in entries.items())
    (dist / "entry_points.txt").write_text(f"[{group}]\n{lines}")


def test_entry_point_plugins_load_on_a_miss_and_failures_are_logged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "dp_fake_plugin.py").write_text("def shout(text):\n    return text.upper()\n")
    group = "datapilot.test_widgets"
    _fake_distribution(
        tmp_path,
        group,
        {"shout": "dp_fake_plugin:shout", "broken": "dp_fake_plugin:missing", "taken": "dp_fake_plugin:shout"},
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    reg: Registry[Any] = Registry("widget", entry_point_group=group)
    reg.register("taken", first)
    try:
        with caplog.at_level(logging.ERROR, logger="datapilot.registry"):
            assert reg.get("shout")("hi") == "HI"
        assert reg.get("taken") is first  # a plugin never displaces a registered name
        assert reg.names() == ["shout", "taken"]
        assert len(reg.problems) == 2
        assert any("'broken'" in p and "AttributeError" in p for p in reg.problems)
        assert any("'taken'" in p and "DuplicateNameError" in p for p in reg.problems)
        assert "plugin 'broken'" in caplog.text
    finally:
        sys.modules.pop("dp_fake_plugin", None)


def test_entry_points_through_a_patched_lookup_and_a_custom_loader(monkeypatch: pytest.MonkeyPatch) -> None:
    eps = importlib.metadata.EntryPoints(
        [importlib.metadata.EntryPoint("later", "os.path:join", "datapilot.test_loaders")]
    )
    calls: list[str | None] = []

    def fake(group: str | None = None) -> importlib.metadata.EntryPoints:
        calls.append(group)
        return eps

    monkeypatch.setattr(importlib.metadata, "entry_points", fake)
    group = "datapilot.test_loaders"
    reg: Registry[Any] = Registry("loader", entry_point_group=group, entry_point_loader=lambda ep: ep)
    assert "later" in reg and reg.get("later").value == "os.path:join"
    assert reg.names() == ["later"] and calls == ["datapilot.test_loaders"]  # loaded once


def test_plugin_allow_list_and_copies() -> None:
    reg: Registry[Any] = Registry("tool")
    reg.register("builtin", first)
    limited = reg.copy({"word_count"})
    limited.register("word_count", second, plugin=True)
    with pytest.raises(NotAllowedError, match=r"tool 'rm' is not in the plugin allow-list \(word_count\)"):
        limited.register("rm", second, plugin=True)
    limited.register("rm", second)  # code that registers directly is not a plugin
    assert limited.names() == ["builtin", "rm", "word_count"] and reg.names() == ["builtin"]
    assert reg.copy().allow == frozenset({"*"}) and limited.copy().allow == frozenset({"word_count"})
