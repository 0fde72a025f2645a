"""Pydantic models of the OpenAI request bodies DataPilot accepts, and their conversion to core types.

Unknown arguments are refused (as OpenAI does) rather than silently ignored, and parameters that
would change the answer but are not implemented (``n > 1``, ``logprobs``, tools) are refused with a
message that says so.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, field_validator

from datapilot.core.errors import InvalidRequestError
from datapilot.core.types import ROLES, Message, ModelRequest, SamplingParams

MAX_STOP_SEQUENCES = 4
MAX_EMBEDDING_INPUTS = 2048


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StreamOptions(_Strict):
    include_usage: StrictBool = False


class ChatMessageIn(BaseModel):
    # Clients echo back assistant messages with extra fields (tool_calls, refusal, audio): tolerated.
    model_config = ConfigDict(extra="ignore")

    role: str
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None

    @field_validator("role")
    @classmethod
    def _known_role(cls, v: str) -> str:
        if v not in ROLES:
            raise ValueError(f"unknown role {v!r}; expected one of: {', '.join(ROLES)}")
        return v

    def to_message(self, index: int) -> Message:
        content = self.content
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
        return Message(self.role, content, self.name)


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


class ChatCompletionRequest(_GenerationIn):
    messages: list[ChatMessageIn] = Field(min_length=1)
    max_completion_tokens: StrictInt | None = Field(None, ge=1)
    response_format: dict[str, Any] | None = None
    logprobs: StrictBool | None = None
    top_logprobs: StrictInt | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None

    def to_model_request(self) -> ModelRequest:
        if self.logprobs:
            raise InvalidRequestError("logprobs are not supported", param="logprobs")
        if self.tools:
            raise InvalidRequestError(f"model {self.model!r} does not support tools", param="tools")
        if self.response_format and self.response_format.get("type") not in (None, "text"):
            raise InvalidRequestError(
                f"response_format {self.response_format.get('type')!r} is not supported; use 'text'",
                param="response_format",
            )
        messages = [m.to_message(i) for i, m in enumerate(self.messages)]
        max_tokens = self.max_completion_tokens or self.max_tokens
        return ModelRequest(model=self.model, messages=messages, params=self.sampling(max_tokens))


class CompletionRequest(_GenerationIn):
    prompt: str | list[str]
    max_tokens: StrictInt | None = Field(16, ge=1)
    echo: StrictBool = False
    suffix: str | None = None
    logprobs: StrictInt | None = None
    best_of: StrictInt | None = None

    def to_model_request(self) -> ModelRequest:
        if self.logprobs is not None:
            raise InvalidRequestError("logprobs are not supported", param="logprobs")
        if self.suffix:
            raise InvalidRequestError("suffix (insertion) is not supported", param="suffix")
        if self.best_of not in (None, 1):
            raise InvalidRequestError("only best_of=1 is supported", param="best_of")
        prompt = self.prompt
        if isinstance(prompt, list):
            if len(prompt) != 1:
                raise InvalidRequestError("prompt must be a string or a list of exactly one string", param="prompt")
            prompt = prompt[0]
        return ModelRequest(model=self.model, prompt=prompt, params=self.sampling(self.max_tokens))


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
