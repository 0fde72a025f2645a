"""Structured generation: JSON schemas and GBNF grammars, tool calling, and what each backend enforces."""

from datapilot.models.structured._gbnf import GrammarError, check_gbnf, gbnf_literal, parse_gbnf
from datapilot.models.structured._instance import is_valid, smallest_instance
from datapilot.models.structured._json_schema import JSON_OBJECT_GBNF, GBNFBuilder, check_json_schema, schema_to_gbnf
from datapilot.models.structured._plan import (
    GRAMMAR,
    JSON_SCHEMA,
    LOGPROBS,
    PASSTHROUGH,
    TOOLS,
    advertised,
    check_supported,
    prepare,
    wrap_stream,
)

__all__ = [
    "GRAMMAR",
    "JSON_OBJECT_GBNF",
    "JSON_SCHEMA",
    "LOGPROBS",
    "PASSTHROUGH",
    "TOOLS",
    "GBNFBuilder",
    "GrammarError",
    "advertised",
    "check_gbnf",
    "check_json_schema",
    "check_supported",
    "gbnf_literal",
    "is_valid",
    "parse_gbnf",
    "prepare",
    "schema_to_gbnf",
    "smallest_instance",
    "wrap_stream",
]
