"""Ready operators over the platform's modules, through their public APIs only: prompt templates,
LLM calls (through ``LLMClient``, so the cache and routing apply), embeddings, vector retrieval,
read-only SQL, output parsers, a cached LLM call, chat history and HTTP responses."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment
from pydantic import BaseModel, ConfigDict, Field

from datapilot.awel._dag import BaseOperator, Requirement
from datapilot.awel._errors import DAGError
from datapilot.awel._registry import register_operator, register_schema
from datapilot.awel._resources import (
    DEFAULT_HISTORY,
    DEFAULT_VECTOR_STORE,
    FlowResources,
    VectorStore,
)
from datapilot.awel._runner import CallContext
from datapilot.core.client import EmbeddingClient, LLMClient
from datapilot.core.errors import ConfigError, InvalidRequestError
from datapilot.core.types import Message, ModelOutput, ModelRequest, SamplingParams

TEXT_KEYS = ("question", "query", "user_input", "input", "text", "prompt", "content", "texts")


# values that flow between ready operators ------------------------------------------------------


@dataclass(slots=True)
class Embedded:
    """Texts with their vectors ([n, d], L2-normalised); ``payload`` carries the original input on."""

    texts: list[str]
    vectors: np.ndarray
    payload: Any = None

    @property
    def text(self) -> str:
        return self.texts[0] if self.texts else ""


@dataclass(slots=True)
class Document:
    text: str
    score: float = 0.0
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Retrieved:
    """What a vector search found for ``query``."""

    query: str
    documents: list[Document]
    payload: Any = None


@dataclass(slots=True)
class ChatState:
    """One chat turn as it moves through a chat DAG: request → prompt → history → retrieval → model."""

    conv_id: str
    question: str
    model: str | None = None
    system: str | None = None
    history: list[Message] = field(default_factory=list)
    context: list[str] = field(default_factory=list)
    vector: np.ndarray | None = None
    params: dict[str, Any] = field(default_factory=dict)


@register_schema("ChatRequest")
class ChatRequest(BaseModel):
    """The request body of a chat flow (DB-GPT's ``ConversationVo`` fields)."""

    model_config = ConfigDict(extra="forbid")

    conv_uid: str = Field("default", min_length=1, max_length=200)
    user_input: str = Field(min_length=1, max_length=20_000)
    model_name: str | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    max_tokens: int | None = Field(None, ge=1, le=8192)


def to_jsonable(value: Any) -> Any:
    """A JSON view of any value a flow produces (for HTTP responses and the CLI)."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, ModelOutput):
        return {
            "text": value.text,
            "finish_reason": value.finish_reason,
            "model": value.model,
            "usage": value.usage.to_dict(),
        }
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_jsonable(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def text_of(value: Any, field_name: str | None = None, node: str = "") -> str | list[str]:
    """The text in a value: a string, a chat turn's question, or a field of a request object."""
    if isinstance(value, str):
        return value
    if isinstance(value, ChatState):
        return value.question
    if isinstance(value, Retrieved):
        return value.query
    if isinstance(value, ModelOutput):
        return value.text
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    data = value.model_dump() if isinstance(value, BaseModel) else value
    if isinstance(data, dict):
        keys = [field_name] if field_name else [k for k in TEXT_KEYS if k in data]
        for k in keys:
            got = data.get(k)
            if isinstance(got, str) or (isinstance(got, list) and all(isinstance(v, str) for v in got)):
                return got
        wanted = f"field {field_name!r}" if field_name else f"one of the fields {', '.join(TEXT_KEYS)}"
        raise InvalidRequestError(
            f"node {node!r} needs text: expected {wanted} in the input (it has: {', '.join(map(str, data)) or 'none'})"
        )
    raise InvalidRequestError(f"node {node!r} needs text, got {type(value).__name__}")


def _resources(ctx: CallContext, node: str) -> FlowResources:
    env = ctx.resources
    if not isinstance(env, FlowResources):
        raise ConfigError(f"node {node!r} needs FlowResources: bind them with dag.bind(...) or the DAG manager")
    return env


_SANDBOX = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)


def _variables(value: Any) -> dict[str, Any]:
    if isinstance(value, BaseModel):
        return value.model_dump()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): v for k, v in value.items()}
    return {"input": value, "question": value}


class _Template:
    """A sandboxed Jinja template: flows from JSON, the DSL or the UI cannot reach Python internals."""

    def __init__(self, source: str, node: BaseOperator) -> None:
        self.source, self.node = source, node
        try:
            self.template = _SANDBOX.from_string(source)
        except TemplateError as e:
            raise DAGError(f"node {node.name or node.kind!r}: invalid template: {e}") from None

    def render(self, variables: dict[str, Any]) -> str:
        try:
            return self.template.render(**variables)
        except TemplateError as e:
            raise InvalidRequestError(
                f"node {self.node.name!r}: template failed: {e} (variables: {', '.join(variables) or 'none'})"
            ) from None


# prompts ----------------------------------------------------------------------------------------


@register_operator("prompt", "prompt_template")
class PromptTemplateOperator(BaseOperator):
    """Renders chat messages from the input's fields: ``template`` is the user message (Jinja,
    sandboxed), ``system`` an optional system message. A plain string input is ``{{ input }}``."""

    def __init__(self, template: str, system: str | None = None, **kw: Any) -> None:
        self.template, self.system = template, system
        self._user = _Template(template, self)
        self._system = _Template(system, self) if system else None
        super().__init__(**kw)

    node_name = "prompt"
    produces = list[Message]

    def _render(self, value: Any) -> list[Message]:
        variables = _variables(value)
        messages = [Message("system", self._system.render(variables))] if self._system else []
        messages.append(Message("user", self._user.render(variables)))
        return messages

    def fast_path(self) -> tuple[Callable[..., Any] | None, Callable[..., Any] | None]:
        return self._render, None

    async def execute(self, inputs: list[Any], ctx: CallContext) -> Any:
        return self._render(inputs[0])

    def params(self) -> dict[str, Any]:
        return {"template": self.template, **({"system": self.system} if self.system else {})}


@register_operator("chat_request")
class ChatRequestOperator(BaseOperator):
    """Parses a chat request (dict or pydantic: conv_uid/conv_id, user_input/question, model_name/model)
    into a ``ChatState``."""

    def __init__(self, default_model: str | None = None, **kw: Any) -> None:
        self.default_model = default_model
        super().__init__(**kw)

    node_name = "parse_request"
    produces = ChatState

    def _parse(self, value: Any) -> ChatState:
        data = value.model_dump() if isinstance(value, BaseModel) else value
        if isinstance(data, str):
            return ChatState(conv_id="default", question=data, model=self.default_model)
        if not isinstance(data, dict):
            raise InvalidRequestError(f"node {self.name!r}: a chat request must be an object")
        question = text_of(data, None, self.name)
        params = {k: data[k] for k in ("temperature", "max_tokens") if data.get(k) is not None}
        return ChatState(
            conv_id=str(data.get("conv_uid") or data.get("conv_id") or "default"),
            question=question if isinstance(question, str) else " ".join(question),
            model=data.get("model_name") or data.get("model") or self.default_model,
            params=params,
        )

    def fast_path(self) -> tuple[Callable[..., Any] | None, Callable[..., Any] | None]:
        return self._parse, None

    async def execute(self, inputs: list[Any], ctx: CallContext) -> Any:
        return self._parse(inputs[0])

    def params(self) -> dict[str, Any]:
        return {"default_model": self.default_model} if self.default_model else {}


@register_operator("chat_prompt")
class ChatPromptOperator(BaseOperator):
    """Sets a chat turn's system prompt from a template over its fields (e.g. ``{{ question }}``)."""

    def __init__(self, system: str, **kw: Any) -> None:
        self.system = system
        self._template = _Template(system, self)
        super().__init__(**kw)

    node_name = "prompt"
    accepts = (ChatState,)
    produces = ChatState

    def _apply(self, state: ChatState) -> ChatState:
        return dataclasses.replace(state, system=self._template.render(_variables(state)))

    def fast_path(self) -> tuple[Callable[..., Any] | None, Callable[..., Any] | None]:
        return self._apply, None

    async def execute(self, inputs: list[Any], ctx: CallContext) -> Any:
        return self._apply(inputs[0])

    def params(self) -> dict[str, Any]:
        return {"system": self.system}


class _HistoryOperator(BaseOperator):
    """A chat turn in, the chat turn out, through one named history store."""

    def __init__(self, store: str = DEFAULT_HISTORY, **kw: Any) -> None:
        self.store = store
        super().__init__(**kw)

    accepts = (ChatState,)
    produces = ChatState

    def requirements(self) -> list[Requirement]:
        return [Requirement(self.name, "history", self.store)]


@register_operator("history_store")
class ChatHistoryStoreOperator(_HistoryOperator):
    """Appends the turn's question to the conversation's history store."""

    node_name = "store_history"

    async def execute(self, inputs: list[Any], ctx: CallContext) -> Any:
        state: ChatState = inputs[0]
        history = _resources(ctx, self.name).store("history", self.store, self.name)
        await history.append(state.conv_id, [Message("user", state.question)])
        return state

    def params(self) -> dict[str, Any]:
        return {"store": self.store}


@register_operator("history_load")
class ChatHistoryLoadOperator(_HistoryOperator):
    """Loads the conversation's earlier turns (up to ``limit`` messages) into the chat turn."""

    def __init__(self, store: str = DEFAULT_HISTORY, limit: int = 10, **kw: Any) -> None:
        self.limit = limit
        super().__init__(store, **kw)

    node_name = "load_history"

    async def execute(self, inputs: list[Any], ctx: CallContext) -> Any:
        state: ChatState = inputs[0]
        history = _resources(ctx, self.name).store("history", self.store, self.name)
        turns = await history.load(state.conv_id, self.limit + 1)
        if turns and turns[-1].role == "user" and turns[-1].content == state.question:
            turns = turns[:-1]  # the turn being answered was just stored
        return dataclasses.replace(state, history=turns[-self.limit :] if self.limit else [])

    def params(self) -> dict[str, Any]:
        return {"store": self.store, "limit": self.limit}


# embeddings and vectors ---------------------------------------------------------------------------


@register_operator("embedding", "text2vec")
class EmbeddingOperator(BaseOperator):
    """Embeds text through an ``EmbeddingClient``. A chat turn gets its ``vector`` set; anything else
    (a string, strings, a request with a text ``field``) becomes ``Embedded`` carrying the input on."""

    def __init__(self, model: str, field: str | None = None, client: EmbeddingClient | None = None, **kw: Any):
        self.model, self.field, self.client = model, field, client
        super().__init__(**kw)

    node_name = "embedding"
    produces = Embedded | ChatState

    def requirements(self) -> list[Requirement]:
        return [Requirement(self.name, "model", self.model, "embedding")]

    async def execute(self, inputs: list[Any], ctx: CallContext) -> Any:
        value = inputs[0]
        client = self.client or _resources(ctx, self.name).embedding_client(self.name)
        text = text_of(value, self.field, self.name)
        texts = [text] if isinstance(text, str) else text
        out = await client.embed(self.model, texts)
        if isinstance(value, ChatState):
            return dataclasses.replace(value, vector=out.vectors[0])
        return Embedded(texts, out.vectors, value)

    def params(self) -> dict[str, Any]:
        return {"model": self.model, **({"field": self.field} if self.field else {})}


def _store_name(store: str | None, database: str | None) -> str:
    return store or database or DEFAULT_VECTOR_STORE


def _document(payload: Any, score: float) -> Document:
    if isinstance(payload, Document):
        return Document(payload.text, score, payload.metadata)
    if isinstance(payload, dict):
        return Document(str(payload.get("text", "")), score, {k: v for k, v in payload.items() if k != "text"})
    return Document(str(payload), score)


@register_operator("vector_search", "vstore", "retrieve")
class VectorRetrieveOperator(BaseOperator):
    """Finds the ``k`` nearest documents to an embedded query in a named vector store (``database``
    is accepted as the DSL's spelling of ``store``). A chat turn gets them as its ``context``."""

    def __init__(
        self,
        store: str | None = None,
        k: int = 4,
        min_score: float | None = None,
        *,
        database: str | None = None,
        index: VectorStore | None = None,
        **kw: Any,
    ) -> None:
        self.store, self.k, self.min_score, self.index = _store_name(store, database), k, min_score, index
        super().__init__(**kw)

    node_name = "retrieve"
    accepts = (Embedded | ChatState,)
    produces = Retrieved | ChatState

    def requirements(self) -> list[Requirement]:
        return [] if self.index is not None else [Requirement(self.name, "vector_store", self.store)]

    def _named_store(self, ctx: CallContext) -> VectorStore:
        store: VectorStore = _resources(ctx, self.name).store("vector_store", self.store, self.name)
        return store

    async def execute(self, inputs: list[Any], ctx: CallContext) -> Any:
        value = inputs[0]
        index = self.index if self.index is not None else self._named_store(ctx)
        if isinstance(value, ChatState):
            if value.vector is None:
                raise InvalidRequestError(f"node {self.name!r}: the chat turn has no vector; embed it first")
            vector, query = value.vector, value.question
        elif isinstance(value, Embedded):
            vector, query = value.vectors[0], value.text
        else:
            got = type(value).__name__
            raise InvalidRequestError(f"node {self.name!r} retrieves with an embedded query, got {got}")
        hits = index.search(vector, self.k)
        docs = [_document(h.payload, h.score) for h in hits if self.min_score is None or h.score >= self.min_score]
        if isinstance(value, ChatState):
            return dataclasses.replace(value, context=[d.text for d in docs])
        return Retrieved(query, docs, value.payload)

    def params(self) -> dict[str, Any]:
        out: dict[str, Any] = {"store": self.store, "k": self.k}
        if self.min_score is not None:
            out["min_score"] = self.min_score
        return out


@register_operator("vector_add")
class VectorAddOperator(BaseOperator):
    """Adds embedded texts to a named vector store; answers ``{"added": n, "ids": [...], "total": n}``."""

    def __init__(self, store: str | None = None, *, database: str | None = None, **kw: Any) -> None:
        self.store = _store_name(store, database)
        super().__init__(**kw)

    node_name = "vector_add"
    accepts = (Embedded,)
    produces = dict[str, Any]

    def requirements(self) -> list[Requirement]:
        return [Requirement(self.name, "vector_store", self.store)]

    async def execute(self, inputs: list[Any], ctx: CallContext) -> Any:
        emb: Embedded = inputs[0]
        index = _resources(ctx, self.name).store("vector_store", self.store, self.name)
        ids = index.add(emb.vectors, [{"text": t} for t in emb.texts])
        return {"added": len(ids), "ids": ids, "total": len(index)}

    def params(self) -> dict[str, Any]:
        return {"store": self.store}


# models -------------------------------------------------------------------------------------------

RAG_SYSTEM = "Answer the question using the context. If the context does not help, say so briefly."


class _ModelCall(BaseOperator):
    def __init__(
        self,
        model: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        system: str | None = None,
        client: LLMClient | None = None,
        **kw: Any,
    ) -> None:
        self.model, self.temperature, self.max_tokens, self.system = model, temperature, max_tokens, system
        self.client = client
        super().__init__(**kw)

    node_name = "llm"

    def requirements(self) -> list[Requirement]:
        return [Requirement(self.name, "model", self.model, "chat")] if self.model else []

    def request(self, value: Any) -> ModelRequest:
        """Turn the input into a request: a request, messages, text, retrieved documents, a chat turn."""
        if isinstance(value, ModelRequest):
            req = value
            if self.model:
                req = dataclasses.replace(req, model=self.model)
        else:
            model = self.model
            messages: list[Message]
            params = SamplingParams()
            if isinstance(value, ChatState):
                model = model or value.model
                messages = self._chat_messages(value)
                for k, v in value.params.items():
                    setattr(params, k, v)
            elif isinstance(value, Retrieved):
                context = "\n".join(f"- {d.text}" for d in value.documents) or "(nothing found)"
                messages = [
                    Message("system", self.system or RAG_SYSTEM),
                    Message("user", f"Context:\n{context}\n\nQuestion: {value.query}"),
                ]
            elif isinstance(value, list) and all(isinstance(m, Message) for m in value):
                messages = list(value)
            elif isinstance(value, dict) and isinstance(value.get("messages"), list):
                messages = [Message(str(m["role"]), str(m["content"])) for m in value["messages"]]
            else:
                text = text_of(value, None, self.name)
                messages = [Message("user", text if isinstance(text, str) else "\n".join(text))]
            if self.system and not isinstance(value, Retrieved) and (not messages or messages[0].role != "system"):
                messages.insert(0, Message("system", self.system))
            if not model:
                raise InvalidRequestError(f"node {self.name!r} has no model: set model= or send one in the request")
            req = ModelRequest(model=model, messages=messages, params=params)
        if self.temperature is not None:
            req.params.temperature = self.temperature
        if self.max_tokens is not None:
            req.params.max_tokens = self.max_tokens
        return req

    def _chat_messages(self, state: ChatState) -> list[Message]:
        system = state.system or self.system
        if state.context:
            context = "\n".join(f"- {c}" for c in state.context)
            system = f"{system or RAG_SYSTEM}\n\nContext:\n{context}"
        messages = [Message("system", system)] if system else []
        return [*messages, *state.history, Message("user", state.question)]

    def params(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k in ("model", "temperature", "max_tokens", "system"):
            v = getattr(self, k)
            if v is not None:
                out[k] = v
        return out


@register_operator("chat")
class ChatOperator(_ModelCall):
    """Builds the model request for a chat turn (system prompt, retrieved context, history, question)."""

    node_name = "chat"
    produces = ModelRequest

    def fast_path(self) -> tuple[Callable[..., Any] | None, Callable[..., Any] | None]:
        return self.request, None

    async def execute(self, inputs: list[Any], ctx: CallContext) -> Any:
        return self.request(inputs[0])

    def requirements(self) -> list[Requirement]:
        return []


@register_operator("llm", "model")
class LLMOperator(_ModelCall):
    """Calls a model through the ``LLMClient`` (so the semantic cache and routing apply) and answers
    a ``ModelOutput``. Takes a request, messages, text, retrieved documents or a chat turn."""

    produces = ModelOutput

    async def execute(self, inputs: list[Any], ctx: CallContext) -> Any:
        client = self.client or _resources(ctx, self.name).chat_client(self.name)
        return await client.generate(self.request(inputs[0]))


@register_operator("llm_stream")
class StreamingLLMOperator(_ModelCall):
    """As ``LLMOperator``, answering a stream of text chunks."""

    node_name = "llm_stream"
    produces = AsyncIterator[str]

    async def execute(self, inputs: list[Any], ctx: CallContext) -> Any:
        client = self.client or _resources(ctx, self.name).chat_client(self.name)
        chunks = client.stream(self.request(inputs[0])).__aiter__()
        first = await chunks.__anext__()  # surface request errors here, under the node's error policy

        async def texts() -> AsyncIterator[str]:
            if first.text:
                yield first.text
            async for chunk in chunks:
                if chunk.text:
                    yield chunk.text

        return texts()


# output parsers -----------------------------------------------------------------------------------

_FENCE = re.compile(r"```(?:[a-zA-Z]+)?\s*\n?(.*?)```", re.S)


def _text(value: Any) -> str:
    return value.text if isinstance(value, ModelOutput) else str(value)


@register_operator("text_output")
class TextOutputParser(BaseOperator):
    """A model's answer as plain text, stripped."""

    node_name = "output_parser"
    accepts = (ModelOutput | str,)
    produces = str

    def fast_path(self) -> tuple[Callable[..., Any] | None, Callable[..., Any] | None]:
        return _strip_text, None

    async def execute(self, inputs: list[Any], ctx: CallContext) -> Any:
        return _strip_text(inputs[0])


def _strip_text(value: Any) -> str:
    return _text(value).strip()


@register_operator("json_output")
class JSONOutputParser(BaseOperator):
    """The JSON value in a model's answer (inside a ``` fence, or the first {...} / [...])."""

    node_name = "json_parser"
    accepts = (ModelOutput | str,)

    def fast_path(self) -> tuple[Callable[..., Any] | None, Callable[..., Any] | None]:
        return self._parse, None

    async def execute(self, inputs: list[Any], ctx: CallContext) -> Any:
        return self._parse(inputs[0])

    def _parse(self, value: Any) -> Any:
        text = _text(value)
        candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
        decoder = json.JSONDecoder()
        for cand in candidates:
            for i, ch in enumerate(cand):
                if ch in "{[":
                    try:
                        return decoder.raw_decode(cand[i:])[0]
                    except json.JSONDecodeError:
                        continue
        raise InvalidRequestError(f"node {self.name!r}: no JSON found in the model's answer: {text[:200]!r}")


_SQL_START = re.compile(r"\b(with|select)\b", re.I)


@register_operator("sql_output")
class SQLOutputParser(BaseOperator):
    """The SQL statement in a model's answer (a ```sql fence, or from the first SELECT/WITH to ';')."""

    node_name = "sql_parser"
    accepts = (ModelOutput | str,)
    produces = str

    def fast_path(self) -> tuple[Callable[..., Any] | None, Callable[..., Any] | None]:
        return self._parse, None

    async def execute(self, inputs: list[Any], ctx: CallContext) -> Any:
        return self._parse(inputs[0])

    def _parse(self, value: Any) -> str:
        text = _text(value)
        fenced = _FENCE.search(text)
        body = fenced.group(1) if fenced else text
        start = _SQL_START.search(body)
        if start is None:
            raise InvalidRequestError(f"node {self.name!r}: no SQL found in the model's answer: {text[:200]!r}")
        return body[start.start() :].split(";")[0].strip()


# responses ----------------------------------------------------------------------------------------


@register_operator("respond")
class RespondOperator(BaseOperator):
    """Shapes the flow's answer for its trigger: JSON values for HTTP; streams pass through as SSE."""

    def __init__(self, to: str | None = None, **kw: Any) -> None:
        self.to = to
        super().__init__(**kw)

    node_name = "respond"

    def _shape(self, value: Any) -> Any:
        return value if hasattr(value, "__aiter__") else to_jsonable(value)

    def fast_path(self) -> tuple[Callable[..., Any] | None, Callable[..., Any] | None]:
        return self._shape, None

    async def execute(self, inputs: list[Any], ctx: CallContext) -> Any:
        return self._shape(inputs[0])

    def check_structure(self) -> list[str]:
        if self.to is None or self.dag is None:
            return []
        trigger = self.dag.nodes.get(self.to)
        if trigger is None or not trigger.is_source:
            return [f"node {self.describe()} responds to {self.to!r}, which is not a trigger of this DAG"]
        return []

    def params(self) -> dict[str, Any]:
        return {"to": self.to} if self.to else {}
