"""The allow-lists: operators, functions and request schemas, by name.

Anything loaded from JSON, the DSL or the UI resolves names here and nowhere else, so a flow file can
never import arbitrary code. Built-ins register exactly as plugins do; installed plugins add operators
through the ``datapilot.operators`` entry-point group (an operator class, or a module whose classes
are decorated with ``@register_operator``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from datapilot.awel._errors import RegistryError
from datapilot.core.registry import Registry

# Modules that register operators when imported (e.g. a module's AWEL operators): imported on the first
# operator name that is not registered yet, so loading a flow never depends on import order.
BUILTIN_OPERATOR_MODULES: tuple[str, ...] = (
    "datapilot.datasource",  # datasource_connect, datasource_schema, sql
    "datapilot.text2sql",  # text2sql_ground, _link, _prompt, _generate, _vote
    "datapilot.cache",  # cache_lookup, cache_store
    "datapilot.rag",  # knowledge_retrieve, rag_retrieve, rag_answer, rag_cite
    "datapilot.apps",  # the scenes' operators, agent_team, agent_run
)

OPERATORS: Registry[type[Any]] = Registry(
    "operator", entry_point_group="datapilot.operators", builtins=BUILTIN_OPERATOR_MODULES, error=RegistryError
)
FUNCTIONS: Registry[Callable[..., Any]] = Registry("function", error=RegistryError)
SCHEMAS: Registry[type[Any]] = Registry("schema", error=RegistryError)

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
