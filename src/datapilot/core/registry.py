"""One registry for every seam: the allow-list of named things (operators, tools, backends, ...).

Anything named in JSON, the DSL, a request or a config file is resolved through a ``Registry`` and
nowhere else, so a name can never import arbitrary code. Built-ins register exactly as plugins do.
Two ways in besides ``register``, both lazy and both tried once, on the first miss:

* ``builtins``: modules that register their objects when imported (kept out of the import graph
  until a name is actually needed, so optional dependencies stay optional);
* ``entry_point_group``: installed plugins. An entry point names the object itself, or a module that
  registers its objects on import. A plugin that fails to load is logged and kept in ``problems``;
  it never hides the other names.

One duplicate rule: a name held by another object is refused (``DuplicateNameError``) unless
``replace=True``; registering the same object again, or the same definition executed again (same
``__module__`` and ``__qualname__``, e.g. a reloaded module), is allowed and keeps the newer one.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from types import ModuleType
from typing import Any, Generic, TypeVar, cast

from datapilot.core.errors import DuplicateNameError, NotAllowedError, UnknownNameError

__all__ = ["Registry"]

T = TypeVar("T")
S = TypeVar("S")

log = logging.getLogger("datapilot.registry")

ANY_NAME = "*"


class Registry(Generic[T]):
    """Named objects of one kind (``what``: "operator", "tool", "backend", ...).

    ``error`` builds the exception for an unknown name from its message (default ``UnknownNameError``,
    a 400). ``allow`` limits the names plugins may register under (``"*"``: any name); built-ins and
    direct ``register`` calls are not limited. ``entry_point_loader`` turns an entry point into the
    registered object (default: ``ep.load()``; a registry of loaders may keep ``ep.load`` itself).
    """

    def __init__(
        self,
        what: str,
        *,
        entry_point_group: str | None = None,
        builtins: tuple[str, ...] = (),
        error: Callable[[str], Exception] | None = None,
        allow: Iterable[str] | None = None,
        entry_point_loader: Callable[[importlib.metadata.EntryPoint], T] | None = None,
    ) -> None:
        self.what = what
        self.entry_point_group = entry_point_group
        self.builtins = tuple(builtins)
        self.error: Callable[[str], Exception] = error or UnknownNameError
        self.allow: frozenset[str] = frozenset(allow) if allow is not None else frozenset({ANY_NAME})
        self.entry_point_loader = entry_point_loader
        self.problems: list[str] = []  # plugins and built-in modules that failed to load, with the error
        self._by_name: dict[str, T] = {}  # canonical names and aliases -> object
        self._aliases: dict[str, str] = {}  # alias -> canonical name
        self._names: dict[int, str] = {}  # id(object) -> the canonical name it was first registered under
        self._builtins_loaded = not self.builtins
        self._plugins_loaded = entry_point_group is None
        self._lock = threading.RLock()

    # --- registering --------------------------------------------------------------------------------------

    def register(
        self, name: str, obj: T, aliases: Iterable[str] = (), *, replace: bool = False, plugin: bool = False
    ) -> T:
        """Make ``obj`` findable by ``name`` (and ``aliases``). ``plugin=True`` checks ``allow``."""
        aliases = tuple(aliases)
        with self._lock:
            if plugin and not self.allowed(name):
                raise NotAllowedError(
                    f"{self.what} {name!r} is not in the plugin allow-list ({', '.join(sorted(self.allow))})"
                )
            for n in (name, *aliases):
                old = self._by_name.get(n)
                if old is not None and not replace and old is not obj and not _same_definition(old, obj):
                    held = self._aliases.get(n, n)
                    raise DuplicateNameError(
                        f"{self.what} name {n!r} is already registered"
                        + (f" (an alias of {held!r})" if held != n else "")
                        + f" to {_label(old)}; pass replace=True to replace it"
                    )
            for n in (name, *aliases):
                old = self._by_name.get(n)
                if old is not None and old is not obj:
                    self._drop_name(n)
                self._by_name[n] = obj
                if n == name:
                    self._aliases.pop(n, None)
                else:
                    self._aliases[n] = name
            self._names.setdefault(id(obj), name)
        return obj

    def add(self, name: str, *aliases: str, replace: bool = False) -> Callable[[S], S]:
        """Decorator form of ``register`` for classes and functions: ``@REGISTRY.add("name")``."""

        def deco(obj: S) -> S:
            self.register(name, cast(T, obj), aliases, replace=replace)
            return obj

        return deco

    def unregister(self, name: str) -> T:
        """Remove what ``name`` resolves to, under its canonical name and every alias; return it."""
        with self._lock:
            if name not in self._by_name:
                raise self.error(self.unknown_message(name))
            canonical = self.canonical(name)
            obj = self._by_name[canonical]
            self._drop_name(canonical)
            return obj

    def _drop_name(self, name: str) -> None:
        """Forget ``name``: an alias alone, or a canonical name with every alias of it."""
        obj = self._by_name.pop(name)
        if self._aliases.pop(name, None) is None:
            for alias in [a for a, c in self._aliases.items() if c == name]:
                del self._by_name[alias], self._aliases[alias]
        left = [n for n, o in self._by_name.items() if o is obj and n not in self._aliases]
        if not left:
            self._names.pop(id(obj), None)
        elif self._names.get(id(obj)) not in left:
            self._names[id(obj)] = left[0]

    def allowed(self, name: str) -> bool:
        """May a plugin register under ``name``?"""
        return ANY_NAME in self.allow or name in self.allow

    def copy(self, allow: Iterable[str] | None = None) -> Registry[T]:
        """A separate registry with the same names (built-ins and plugins loaded first), e.g. one per
        server with its own plugin allow-list; what is added to it later stays out of this one."""
        self.load()
        other: Registry[T] = Registry(
            self.what,
            entry_point_group=self.entry_point_group,
            builtins=self.builtins,
            error=self.error,
            allow=self.allow if allow is None else allow,
            entry_point_loader=self.entry_point_loader,
        )
        with self._lock:
            other._by_name = dict(self._by_name)
            other._aliases = dict(self._aliases)
            other._names = dict(self._names)
            other.problems = list(self.problems)
        other._builtins_loaded = other._plugins_loaded = True
        return other

    # --- finding ------------------------------------------------------------------------------------------

    def get(self, name: str) -> T:
        """The object registered as ``name``; on a miss built-ins and plugins are loaded, then ``error``."""
        try:
            return self._by_name[name]
        except KeyError:
            pass
        self.load()
        try:
            return self._by_name[name]
        except KeyError:
            raise self.error(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(name, list(self._by_name), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"unknown {self.what} {name!r}{hint}; registered: {', '.join(self._sorted()) or 'none'}"

    def name_of(self, obj: object) -> str | None:
        """The canonical name ``obj`` was registered under, or ``None``."""
        return self._names.get(id(obj))

    def canonical(self, name: str) -> str:
        """``name`` itself, or the canonical name when it is an alias."""
        return self._aliases.get(name, name)

    def names(self) -> list[str]:
        """Every canonical name (aliases left out), sorted; built-ins and plugins loaded first."""
        self.load()
        return self._sorted()

    def items(self) -> list[tuple[str, T]]:
        return [(n, self._by_name[n]) for n in self.names()]

    def _sorted(self) -> list[str]:
        return sorted(n for n in self._by_name if n not in self._aliases)

    def __contains__(self, name: object) -> bool:
        if name in self._by_name:
            return True
        self.load()
        return name in self._by_name

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def __repr__(self) -> str:
        return f"Registry({self.what!r}, {len(self._sorted())} names)"

    # --- lazy loading -------------------------------------------------------------------------------------

    def load(self) -> None:
        """Import the ``builtins`` modules and the entry-point group, each once (later calls return)."""
        if self._builtins_loaded and self._plugins_loaded:
            return
        with self._lock:
            if not self._builtins_loaded:
                self._builtins_loaded = True  # first: a module imported here may look names up itself
                for module in self.builtins:
                    try:
                        importlib.import_module(module)
                    except Exception as exc:
                        self._problem(f"built-in module {module}", exc)
            if not self._plugins_loaded:
                self._plugins_loaded = True
                self._load_entry_points()

    def _load_entry_points(self) -> None:
        assert self.entry_point_group is not None
        for ep in importlib.metadata.entry_points(group=self.entry_point_group):
            try:
                if self.entry_point_loader is not None:
                    self.register(ep.name, self.entry_point_loader(ep), plugin=True)
                    continue
                obj: Any = ep.load()
                if not isinstance(obj, ModuleType):  # a module registered its objects when imported
                    self.register(ep.name, obj, plugin=True)
            except Exception as exc:
                self._problem(f"plugin {ep.name!r} ({ep.value}, entry point group {self.entry_point_group})", exc)

    def _problem(self, source: str, exc: Exception) -> None:
        message = f"{self.what} {source} failed to load: {type(exc).__name__}: {exc}"
        self.problems.append(message)
        log.error("%s", message)


def _same_definition(a: object, b: object) -> bool:
    """The same class or function defined again by a module executed again (a reloaded file).

    Closures and lambdas (``<locals>`` in the qualified name) share a qualified name without being the
    same thing, so they never count.
    """
    qualname = getattr(a, "__qualname__", None)
    if not isinstance(qualname, str) or "<locals>" in qualname:
        return False
    return qualname == getattr(b, "__qualname__", None) and getattr(a, "__module__", None) == getattr(
        b, "__module__", object()
    )


def _label(obj: object) -> str:
    qualname = getattr(obj, "__qualname__", None)
    if isinstance(qualname, str):
        return f"{getattr(obj, '__module__', '?')}.{qualname}"
    return repr(obj) if len(repr(obj)) <= 80 else type(obj).__name__
