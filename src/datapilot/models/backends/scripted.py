"""A scripted test model: deterministic replies, word tokens, optional delays and failures.

Shipped with the code as a test seam for the serving logic (streaming, stop strings, cancellation,
errors, load failures). It never stands in for the real path, which the tests exercise with the
embedded GGUF and MiniLM models.

params: ``replies`` (list, cycled; default echoes the last user text), ``rules`` (``[[regex, reply or
[replies]], ...]``: the first regex found in the prompt picks the reply, each rule cycling its own
list, before ``replies``; lets concurrent callers get their own scripts), ``token_delay_s``,
``load_delay_s``, ``busy_s`` (each answer holds the instance this long, one answer at a time, as a
model that uses all of its machine does: for throughput and scaling benchmarks), ``fail_load`` (a
reason: loading fails with it), ``fail_after_tokens`` (the answer breaks off with an instance
failure after that many tokens), ``dimension`` (embeddings), ``context_length``.

It honours ``response_format`` (a JSON object, or a JSON schema) and so tool calls: a scripted reply
that is valid stands, anything else is replaced by the smallest valid instance. Logprobs are reported
as certain (0.0) for every word token.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import numpy as np

from datapilot.core.errors import ContextLengthExceededError, ModelNotReadyError, UpstreamError
from datapilot.core.types import (
    EmbeddingOutput,
    FinishReason,
    ModelChunk,
    ModelRequest,
    RerankOutput,
    TokenLogprob,
    TopLogprob,
    Usage,
)
from datapilot.models.backend import CHAT, COMPLETION, EMBEDDING, RERANK, ModelBackend
from datapilot.models.prompt import StopFilter
from datapilot.models.structured import JSON_SCHEMA, LOGPROBS, is_valid, smallest_instance

_WORD = re.compile(r"\s*\S+")


def word_tokens(text: str) -> list[str]:
    return _WORD.findall(text)


class ScriptedBackend(ModelBackend):
    capabilities = frozenset({CHAT, COMPLETION, EMBEDDING, RERANK, JSON_SCHEMA, LOGPROBS})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        p = self.config.params
        replies = p.get("replies")
        self._replies = itertools.cycle(replies) if replies else None
        self._rules = [
            (re.compile(str(pattern), re.S), itertools.cycle(reply if isinstance(reply, list) else [reply]))
            for pattern, reply in p.get("rules", [])
        ]
        self.token_delay_s = float(p.get("token_delay_s", 0.0))
        self.fail_after_tokens = p.get("fail_after_tokens")
        self.dimension = int(p.get("dimension", 32))
        self._context_length = int(p.get("context_length", 2048))
        self.tokens_generated = 0
        self.loaded = False
        self.busy_s = float(p.get("busy_s", 0.0))
        self._busy = asyncio.Lock()

    @property
    def context_length(self) -> int | None:
        return self._context_length

    async def load(self) -> None:
        await asyncio.sleep(float(self.config.params.get("load_delay_s", 0.0)))
        reason = self.config.params.get("fail_load")
        if reason:
            raise ModelNotReadyError(str(reason))
        self.loaded = True

    def _reply(self, request: ModelRequest) -> tuple[str, int]:
        if request.messages is not None:
            prompt = "\n".join(f"{m.role}: {m.content}" for m in request.messages)
            last = next((m.content for m in reversed(request.messages) if m.role == "user"), "")
        else:
            prompt = last = request.prompt or ""
        rule = next((cycle for pattern, cycle in self._rules if pattern.search(prompt)), None)
        if rule is not None:
            return str(next(rule)), len(word_tokens(prompt))
        reply = next(self._replies) if self._replies is not None else f"You said: {last}"
        return reply, len(word_tokens(prompt))

    @staticmethod
    def _honour_format(request: ModelRequest, reply: str) -> str:
        fmt = request.response_format
        if fmt is None or fmt.type == "text":
            return reply
        schema = fmt.schema if fmt.type == "json_schema" else None
        if is_valid(reply, schema):
            return reply
        value = smallest_instance(schema) if schema is not None else {}
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        reply, n_prompt = self._reply(request)
        reply = self._honour_format(request, reply)
        room = self._context_length - n_prompt
        max_tokens = request.params.max_tokens
        if max_tokens is not None and max_tokens > room:
            raise ContextLengthExceededError(
                f"this model's maximum context length is {self._context_length} tokens; the prompt has "
                f"{n_prompt} and max_tokens asks for {max_tokens} more",
                param="max_tokens",
            )
        limit = max_tokens or room
        if self.busy_s:
            async with self._busy:
                await asyncio.sleep(self.busy_s)
        stops = StopFilter(request.params.stop)
        finish: FinishReason = "stop"
        n = 0
        for token in word_tokens(reply):
            if n >= limit:
                finish = "length"
                break
            if self.token_delay_s:
                await asyncio.sleep(self.token_delay_s)
            if self.fail_after_tokens is not None and n >= int(self.fail_after_tokens):
                raise UpstreamError(f"scripted failure after {n} tokens (test)", code="instance_failed")
            n += 1
            self.tokens_generated += 1
            text = stops.feed(token)
            logprobs = None
            if request.logprobs:
                top = (TopLogprob(token, 0.0, list(token.encode())),) if request.top_logprobs else ()
                logprobs = [TokenLogprob(token, 0.0, list(token.encode()), top)]
            if text or logprobs:
                yield ModelChunk(text, logprobs=logprobs)
            if stops.stopped:
                break
        yield ModelChunk(stops.flush(), finish_reason=finish, usage=Usage(n_prompt, n))

    async def embed(self, texts: list[str]) -> EmbeddingOutput:
        if not self.loaded:
            raise ModelNotReadyError(f"model {self.config.name!r} is not loaded")
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in text.lower().split():
                h = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")
                out[i, h % self.dimension] += 1.0 if (h >> 32) & 1 else -1.0
            norm = float(np.linalg.norm(out[i]))
            out[i] = out[i] / norm if norm else 1.0 / np.sqrt(self.dimension)
        return EmbeddingOutput(out, Usage(sum(len(word_tokens(t)) for t in texts)))

    async def rerank(self, query: str, documents: list[str]) -> RerankOutput:
        """Share of the query's words found in each document."""
        words = set(query.lower().split())
        scores = [len(words & set(d.lower().split())) / max(1, len(words)) for d in documents]
        return RerankOutput(scores, Usage(sum(len(word_tokens(t)) for t in [query, *documents])))
