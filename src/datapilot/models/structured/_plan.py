"""Structured generation for any backend: what it can enforce, and how the rest is built on that.

Backends declare what they enforce themselves:

* ``grammar``: a GBNF grammar on ``ModelRequest.grammar`` (llama.cpp, transformers through
  llguidance). JSON schemas and tool calls are compiled to a grammar here, once, for all of them.
* ``json_schema``: a JSON schema on ``response_format`` (the scripted test model). Tool calls become
  an envelope schema.
* ``passthrough``: everything is forwarded to an upstream that speaks OpenAI's API (``openai_compat``,
  a worker of this cluster): nothing is rewritten here.
* ``logprobs``: per-token log-probabilities.

``prepare`` refuses what a backend cannot do (a 400 naming the ``param``), rewrites the
request for the backend, and parses tool calls back out of the answer.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator, Iterable
from typing import Any

from datapilot.core.errors import InvalidRequestError
from datapilot.core.types import ModelChunk, ModelRequest, ResponseFormat
from datapilot.models.structured._json_schema import JSON_OBJECT_GBNF, schema_to_gbnf
from datapilot.models.structured._tools import (
    envelope_grammar,
    envelope_schema,
    parse_tool_stream,
    prompt_messages,
    with_instruction,
)

GRAMMAR = "grammar"
JSON_SCHEMA = "json_schema"
TOOLS = "tools"
LOGPROBS = "logprobs"
PASSTHROUGH = "passthrough"


def advertised(capabilities: Iterable[str]) -> frozenset[str]:
    """What a backend supports once this module builds on what it enforces (for ``/v1/models``)."""
    caps = set(capabilities)
    if PASSTHROUGH in caps:
        caps |= {GRAMMAR, JSON_SCHEMA, TOOLS, LOGPROBS}
    if GRAMMAR in caps:
        caps |= {JSON_SCHEMA, TOOLS}
    if JSON_SCHEMA in caps:
        caps.add(TOOLS)
    caps.discard(PASSTHROUGH)
    return frozenset(caps)


def check_supported(model: str, capabilities: Iterable[str], request: ModelRequest) -> None:
    caps = advertised(capabilities)
    if request.grammar is not None and GRAMMAR not in caps:
        raise InvalidRequestError(
            f"model {model!r} cannot enforce a grammar; use a llama.cpp or transformers model", param="grammar"
        )
    if request.wants_json and JSON_SCHEMA not in caps:
        raise InvalidRequestError(
            f"model {model!r} cannot enforce a response_format; send type 'text'", param="response_format"
        )
    if request.uses_tools and TOOLS not in caps:
        raise InvalidRequestError(f"model {model!r} cannot call tools", param="tools")
    if request.logprobs and LOGPROBS not in caps:
        raise InvalidRequestError(f"model {model!r} does not report logprobs", param="logprobs")


def _response_grammar(fmt: ResponseFormat) -> str:
    if fmt.type == "json_object":
        return JSON_OBJECT_GBNF
    return schema_to_gbnf(fmt.schema or {}, param="response_format.json_schema.schema")


def json_instruction(fmt: ResponseFormat) -> str:
    if fmt.type == "json_schema" and fmt.schema:
        schema = json.dumps(fmt.schema, ensure_ascii=False, separators=(",", ":"))
        return f"Answer with only a JSON object valid under this JSON schema, with real values: {schema}"
    return "Answer with only a JSON object."


def rewrite(request: ModelRequest, capabilities: Iterable[str]) -> ModelRequest:
    """The request as this backend is asked it: tools in the prompt, constraints in the form it enforces."""
    caps = set(capabilities)
    if PASSTHROUGH in caps:
        return request
    changes: dict[str, Any] = {}
    if request.is_chat and (request.tools or any(m.tool_calls or m.role == "tool" for m in request.messages or ())):
        changes["messages"] = prompt_messages(request)
        changes["tools"] = []
        changes["tool_choice"] = "none"
    if request.uses_tools:
        if GRAMMAR in caps:
            changes["grammar"] = envelope_grammar(request)
            changes["response_format"] = None
        if JSON_SCHEMA in caps and request.tool_choice != "auto":
            changes["response_format"] = ResponseFormat("json_schema", envelope_schema(request), "tool_calls")
    elif request.wants_json and GRAMMAR in caps and request.response_format is not None:
        changes["grammar"] = _response_grammar(request.response_format)
        if JSON_SCHEMA not in caps:
            changes["response_format"] = None
        if request.is_chat:
            # A small model forced into JSON it was not told about writes empty strings and zeros.
            changes["messages"] = with_instruction(request.messages or [], json_instruction(request.response_format))
    return dataclasses.replace(request, **changes) if changes else request


def prepare(model: str, capabilities: Iterable[str], request: ModelRequest) -> ModelRequest:
    """Check ``request`` against the backend and return the request to send it (see ``wrap_stream``)."""
    check_supported(model, capabilities, request)
    return rewrite(request, capabilities)


def wrap_stream(
    original: ModelRequest, capabilities: Iterable[str], chunks: AsyncIterator[ModelChunk]
) -> AsyncIterator[ModelChunk]:
    """The backend's answer to a rewritten request, as the original request expects it."""
    if PASSTHROUGH in set(capabilities) or not original.uses_tools:
        return chunks
    return parse_tool_stream(chunks)
