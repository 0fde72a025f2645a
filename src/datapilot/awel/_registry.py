"""The allow-lists: operators, functions and request schemas, by name.

Anything loaded from JSON, the DSL or the UI resolves names here and nowhere else, so a flow file can
never import arbitrary code. Built-ins register exactly as plugins do.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from datapilot.awel._errors import RegistryError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, what: str) -> None:
        self.what = what
        self._by_name: dict[str, T] = {}
        self._names: dict[int, str] = {}  # id(obj) -> canonical name
        self._aliases: dict[str, str] = {}

    def register(self, name: str, obj: T, aliases: tuple[str, ...] = ()) -> T:
        for n in (name, *aliases):
            old = self._by_name.get(n)
            if old is not None and old is not obj and not _same_definition(old, obj):
                raise RegistryError(f"{self.what} name {n!r} is already registered")
            self._by_name[n] = obj
        self._names.setdefault(id(obj), name)
        for a in aliases:
            self._aliases[a] = name
        return obj

    def get(self, name: str) -> T:
        try:
            return self._by_name[name]
        except KeyError:
            raise RegistryError(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(name, list(self._by_name), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"unknown {self.what} {name!r}{hint}; registered: {', '.join(sorted(self.names()))}"

    def name_of(self, obj: object) -> str | None:
        return self._names.get(id(obj))

    def canonical(self, name: str) -> str:
        return self._aliases.get(name, name)

    def names(self) -> list[str]:
        return [n for n in self._by_name if n not in self._aliases]

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def _same_definition(a: object, b: object) -> bool:
    """A module executed again (a flow file reloaded) redefines the same class: allow replacing it."""
    key = ("__module__", "__qualname__")
    return all(getattr(a, k, None) == getattr(b, k, object()) for k in key)


OPERATORS: Registry[type[Any]] = Registry("operator")
FUNCTIONS: Registry[Callable[..., Any]] = Registry("function")
SCHEMAS: Registry[type[Any]] = Registry("schema")

C = TypeVar("C", bound=type[Any])
F = TypeVar("F", bound=Callable[..., Any])


def register_operator(name: str, *aliases: str) -> Callable[[C], C]:
    """Class decorator: make an operator loadable by ``name`` (and ``aliases``) from JSON and the DSL."""

    def deco(cls: C) -> C:
        cls.kind = name
        OPERATORS.register(name, cls, aliases)
        return cls

    return deco


def register_function(name: str) -> Callable[[F], F]:
    """Decorator: let maps, joins and branches over ``fn`` be written to JSON and named in the DSL."""

    def deco(fn: F) -> F:
        FUNCTIONS.register(name, fn)
        return fn

    return deco


def register_schema(name: str | None = None) -> Callable[[C], C]:
    """Class decorator for a pydantic model used as an ``HttpTrigger`` request body in loadable flows."""

    def deco(cls: C) -> C:
        SCHEMAS.register(name or cls.__name__, cls)
        return cls

    return deco
