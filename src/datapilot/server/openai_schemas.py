"""Pydantic models of the OpenAI request bodies DataPilot accepts, and their conversion to core types.

Unknown arguments are refused (as OpenAI does) rather than silently ignored, and parameters that
would change the answer but are not implemented (``n > 1``) are refused with a message that says so.
Structured generation (``response_format``, ``tools``, the ``grammar`` extension) is checked here, so
a bad schema or grammar is a 400 naming its ``param`` before any model is asked.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, field_validator

from datapilot.core.errors import InvalidRequestError
from datapilot.core.types import ROLES, Message, ModelRequest, ResponseFormat, SamplingParams, ToolCall, ToolSpec
from datapilot.models.structured import check_gbnf, check_json_schema

MAX_STOP_SEQUENCES = 4
MAX_EMBEDDING_INPUTS = 2048
MAX_TOOLS = 128
MAX_TOP_LOGPROBS = 20
_FUNCTION_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StreamOptions(_Strict):
    include_usage: StrictBool = False


class FunctionCallIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str
    arguments: str


class ToolCallIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str
    type: Literal["function"] = "function"
    function: FunctionCallIn


class ChatMessageIn(BaseModel):
    # Clients echo back assistant messages with extra fields (refusal, audio, annotations): tolerated.
    model_config = ConfigDict(extra="ignore")

    role: str
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: str | None = None

    @field_validator("role")
    @classmethod
    def _known_role(cls, v: str) -> str:
        if v not in ROLES:
            raise ValueError(f"unknown role {v!r}; expected one of: {', '.join(ROLES)}")
        return v

    def to_message(self, index: int) -> Message:
        content = self.content
        calls = tuple(ToolCall(c.id, c.function.name, c.function.arguments) for c in self.tool_calls or ())
        if calls and self.role != "assistant":
            raise InvalidRequestError(
                f"messages[{index}] has tool_calls but role {self.role!r}; only assistant messages call tools",
                param=f"messages.{index}.tool_calls",
            )
        if self.role == "tool" and not self.tool_call_id:
            raise InvalidRequestError(
                f"messages[{index}] has role 'tool' but no tool_call_id: say which call it answers",
                param=f"messages.{index}.tool_call_id",
            )
        if content is None:
            if self.role != "assistant":
                raise InvalidRequestError(
                    f"messages[{index}].content is required for role {self.role!r}",
                    param=f"messages.{index}.content",
                )
            content = ""
        if isinstance(content, list):
            texts = []
            for j, part in enumerate(content):
                if part.get("type") != "text" or not isinstance(part.get("text"), str):
                    raise InvalidRequestError(
                        f"messages[{index}].content[{j}] has type {part.get('type')!r}; only text parts are supported",
                        param=f"messages.{index}.content.{j}",
                    )
                texts.append(part["text"])
            content = "\n".join(texts)
        return Message(self.role, content, self.name, calls, self.tool_call_id)


class _GenerationIn(_Strict):
    model: str = Field(min_length=1)
    max_tokens: StrictInt | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    top_k: StrictInt | None = Field(None, ge=0)
    repetition_penalty: float | None = Field(None, gt=0)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    stop: str | list[str] | None = None
    seed: StrictInt | None = None
    n: StrictInt = Field(1, ge=1)
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    cache: StrictBool | None = Field(None, description="false: bypass the semantic cache for this request")

    @field_validator("n")
    @classmethod
    def _only_one(cls, v: int) -> int:
        if v != 1:
            raise ValueError("only n=1 is supported; send n requests with different seeds instead")
        return v

    @field_validator("stop")
    @classmethod
    def _stops(cls, v: str | list[str] | None) -> str | list[str] | None:
        if isinstance(v, list) and len(v) > MAX_STOP_SEQUENCES:
            raise ValueError(f"at most {MAX_STOP_SEQUENCES} stop sequences are allowed")
        return v

    def sampling(self, max_tokens: int | None) -> SamplingParams:
        p = SamplingParams(max_tokens=max_tokens)
        if self.temperature is not None:
            p.temperature = self.temperature
        if self.top_p is not None:
            p.top_p = self.top_p
        if self.top_k is not None:
            p.top_k = self.top_k
        if self.repetition_penalty is not None:
            p.repeat_penalty = self.repetition_penalty
        p.presence_penalty = self.presence_penalty or 0.0
        p.frequency_penalty = self.frequency_penalty or 0.0
        p.stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        p.seed = self.seed
        return p

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


def parse_response_format(value: dict[str, Any] | None) -> ResponseFormat | None:
    """OpenAI's ``response_format`` as a core value; the schema is checked here (400 on a bad one)."""
    if value is None:
        return None
    kind = value.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return ResponseFormat("json_object")
    if kind != "json_schema":
        raise InvalidRequestError(
            f"response_format.type must be 'text', 'json_object' or 'json_schema', not {kind!r}",
            param="response_format.type",
        )
    spec = value.get("json_schema")
    if not isinstance(spec, dict):
        raise InvalidRequestError(
            "response_format.json_schema must be an object with 'name' and 'schema'",
            param="response_format.json_schema",
        )
    name = spec.get("name", "response")
    if not isinstance(name, str) or not _FUNCTION_NAME.match(name):
        raise InvalidRequestError(
            "response_format.json_schema.name must be 1-64 letters, digits, '_' or '-'",
            param="response_format.json_schema.name",
        )
    schema = spec.get("schema", {})
    check_json_schema(schema, param="response_format.json_schema.schema")
    return ResponseFormat("json_schema", schema, name, bool(spec.get("strict", False)))


def parse_tools(value: list[dict[str, Any]] | None) -> list[ToolSpec]:
    if not value:
        return []
    if len(value) > MAX_TOOLS:
        raise InvalidRequestError(f"at most {MAX_TOOLS} tools are allowed", param="tools")
    tools: list[ToolSpec] = []
    for i, tool in enumerate(value):
        if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(tool.get("function"), dict):
            raise InvalidRequestError(
                f"tools[{i}] must be {{'type': 'function', 'function': {{...}}}}", param=f"tools.{i}"
            )
        fn = tool["function"]
        name = fn.get("name")
        if not isinstance(name, str) or not _FUNCTION_NAME.match(name):
            raise InvalidRequestError(
                f"tools[{i}].function.name must be 1-64 letters, digits, '_' or '-', not {name!r}",
                param=f"tools.{i}.function.name",
            )
        if any(t.name == name for t in tools):
            raise InvalidRequestError(f"tools[{i}]: the function {name!r} is declared twice", param=f"tools.{i}")
        params = fn.get("parameters", {"type": "object", "properties": {}})
        check_json_schema(params, param=f"tools.{i}.function.parameters")
        if isinstance(params, dict) and params.get("type", "object") != "object":
            raise InvalidRequestError(
                f"tools[{i}].function.parameters must describe an object (type 'object')",
                param=f"tools.{i}.function.parameters",
            )
        description = fn.get("description") or ""
        tools.append(ToolSpec(name, str(description), params, bool(fn.get("strict", False))))
    return tools


def parse_tool_choice(value: Any, tools: list[ToolSpec]) -> str:
    if value is None:
        return "auto" if tools else "none"
    if isinstance(value, str):
        if value not in ("none", "auto", "required"):
            raise InvalidRequestError(
                f"tool_choice must be 'none', 'auto', 'required' or a named function, not {value!r}",
                param="tool_choice",
            )
        if value != "none" and not tools:
            raise InvalidRequestError(f"tool_choice {value!r} needs tools", param="tool_choice")
        return value
    name = value.get("function", {}).get("name") if isinstance(value, dict) else None
    if not isinstance(value, dict) or value.get("type") != "function" or not isinstance(name, str):
        raise InvalidRequestError(
            "tool_choice must be a string or {'type': 'function', 'function': {'name': ...}}", param="tool_choice"
        )
    if not any(t.name == name for t in tools):
        known = ", ".join(t.name for t in tools) or "none"
        raise InvalidRequestError(
            f"tool_choice names the function {name!r}, which is not among the tools (declared: {known})",
            param="tool_choice",
        )
    return name


class ChatCompletionRequest(_GenerationIn):
    messages: list[ChatMessageIn] = Field(min_length=1)
    max_completion_tokens: StrictInt | None = Field(None, ge=1)
    response_format: dict[str, Any] | None = None
    logprobs: StrictBool | None = None
    top_logprobs: StrictInt | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    parallel_tool_calls: StrictBool | None = None
    grammar: str | None = Field(None, description="a GBNF grammar (llama.cpp's format) the answer must match")

    def to_model_request(self) -> ModelRequest:
        if self.top_logprobs and not self.logprobs:
            raise InvalidRequestError("top_logprobs needs logprobs: true", param="top_logprobs")
        response_format = parse_response_format(self.response_format)
        if self.grammar is not None:
            if response_format is not None:
                raise InvalidRequestError("send either grammar or a JSON response_format, not both", param="grammar")
            check_gbnf(self.grammar, param="grammar")
        tools = parse_tools(self.tools)
        tool_choice = parse_tool_choice(self.tool_choice, tools)
        if tools and tool_choice != "none" and self.grammar is not None:
            raise InvalidRequestError("grammar cannot be combined with tools", param="grammar")
        messages = [m.to_message(i) for i, m in enumerate(self.messages)]
        _check_tool_history(messages)
        max_tokens = self.max_completion_tokens or self.max_tokens
        return ModelRequest(
            model=self.model,
            messages=messages,
            params=self.sampling(max_tokens),
            response_format=response_format,
            grammar=self.grammar,
            tools=tools,
            tool_choice=tool_choice,
            parallel_tool_calls=self.parallel_tool_calls is not False,
            logprobs=bool(self.logprobs),
            top_logprobs=self.top_logprobs or 0,
        )


def _check_tool_history(messages: list[Message]) -> None:
    """Every tool message answers a call made earlier in the conversation, and call arguments are JSON."""
    called: set[str] = set()
    for i, m in enumerate(messages):
        for j, call in enumerate(m.tool_calls):
            try:
                json.loads(call.arguments or "{}")
            except ValueError:
                raise InvalidRequestError(
                    f"messages[{i}].tool_calls[{j}].function.arguments is not valid JSON",
                    param=f"messages.{i}.tool_calls.{j}.function.arguments",
                ) from None
            called.add(call.id)
        if m.role == "tool" and m.tool_call_id not in called:
            raise InvalidRequestError(
                f"messages[{i}] answers tool call {m.tool_call_id!r}, which no earlier assistant message made",
                param=f"messages.{i}.tool_call_id",
            )


class CompletionRequest(_GenerationIn):
    prompt: str | list[str]
    max_tokens: StrictInt | None = Field(16, ge=1)
    echo: StrictBool = False
    suffix: str | None = None
    logprobs: StrictInt | None = None
    best_of: StrictInt | None = None

    grammar: str | None = Field(None, description="a GBNF grammar (llama.cpp's format) the answer must match")
    response_format: dict[str, Any] | None = None

    def to_model_request(self) -> ModelRequest:
        if self.logprobs is not None and not 0 <= self.logprobs <= MAX_TOP_LOGPROBS:
            raise InvalidRequestError(f"logprobs must be between 0 and {MAX_TOP_LOGPROBS}", param="logprobs")
        if self.grammar is not None:
            check_gbnf(self.grammar, param="grammar")
        response_format = parse_response_format(self.response_format)
        if self.grammar is not None and response_format is not None:
            raise InvalidRequestError("send either grammar or a JSON response_format, not both", param="grammar")
        if self.suffix:
            raise InvalidRequestError("suffix (insertion) is not supported", param="suffix")
        if self.best_of not in (None, 1):
            raise InvalidRequestError("only best_of=1 is supported", param="best_of")
        prompt = self.prompt
        if isinstance(prompt, list):
            if len(prompt) != 1:
                raise InvalidRequestError("prompt must be a string or a list of exactly one string", param="prompt")
            prompt = prompt[0]
        return ModelRequest(
            model=self.model,
            prompt=prompt,
            params=self.sampling(self.max_tokens),
            response_format=response_format,
            grammar=self.grammar,
            logprobs=self.logprobs is not None,
            top_logprobs=self.logprobs or 0,
        )


class EmbeddingRequest(_Strict):
    model: str = Field(min_length=1)
    input: str | list[str]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: StrictInt | None = Field(None, ge=1)
    user: str | None = None

    def texts(self) -> list[str]:
        texts = [self.input] if isinstance(self.input, str) else self.input
        if not texts:
            raise InvalidRequestError("input must not be an empty list", param="input")
        if len(texts) > MAX_EMBEDDING_INPUTS:
            raise InvalidRequestError(f"at most {MAX_EMBEDDING_INPUTS} inputs per request", param="input")
        for i, t in enumerate(texts):
            if not t:
                raise InvalidRequestError(f"input[{i}] is an empty string", param="input")
        return texts


class RerankDocument(BaseModel):
    model_config = ConfigDict(extra="ignore")
    text: str


class RerankRequest(_Strict):
    """The Cohere / Jina rerank request: score documents against a query, best first."""

    model: str = Field(min_length=1)
    query: str = Field(min_length=1)
    documents: list[str | RerankDocument] = Field(min_length=1, max_length=1000)
    top_n: StrictInt | None = Field(None, ge=1)
    return_documents: StrictBool = True
    max_chunks_per_doc: StrictInt | None = None
    rank_fields: list[str] | None = None

    def texts(self) -> list[str]:
        return [d if isinstance(d, str) else d.text for d in self.documents]
