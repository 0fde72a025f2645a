"""vLLM backend (GPU): a local model folder served by vLLM's async engine, imported lazily.

Where vLLM is absent (every CPU-only machine), loading fails with a message naming the extra to
install; the rest of DataPilot is unaffected. Grammars, JSON schemas and logprobs are vLLM's own
(see ``_vllm_params``).
"""

from __future__ import annotations

import importlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

from datapilot.core.errors import MissingDependencyError, ModelNotReadyError
from datapilot.core.types import FinishReason, ModelChunk, ModelRequest, TokenLogprob, Usage
from datapilot.models.backend import CHAT, COMPLETION, ModelBackend
from datapilot.models.backends._vllm_params import sampling_kwargs, token_logprob
from datapilot.models.prompt import FormattedPrompt, StopFilter, format_chat
from datapilot.models.structured import GRAMMAR, JSON_SCHEMA, LOGPROBS

_ENGINE_KWARGS = ("tensor_parallel_size", "gpu_memory_utilization", "max_model_len", "dtype", "enforce_eager")


class VLLMBackend(ModelBackend):
    capabilities = frozenset({CHAT, COMPLETION, GRAMMAR, JSON_SCHEMA, LOGPROBS})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._engine: Any = None
        self._tokenizer: Any = None
        self._vllm: Any = None
        self._sampling_params: Any = None

    async def load(self) -> None:
        try:
            import vllm
        except ImportError:
            raise MissingDependencyError("vllm", "vllm") from None
        if self.model_path is None or not self.model_path.is_dir():
            raise ModelNotReadyError(f"model folder not found: {self.model_path}; set `path` for this model")
        params = self.config.params
        args = vllm.AsyncEngineArgs(model=str(self.model_path), **{k: params[k] for k in _ENGINE_KWARGS if k in params})
        self._engine = vllm.AsyncLLMEngine.from_engine_args(args)
        self._tokenizer = await self._engine.get_tokenizer()
        self._vllm = vllm
        # vLLM's package exports load lazily in recent versions: import the submodule by name.
        self._sampling_params = importlib.import_module("vllm.sampling_params")

    async def close(self) -> None:
        engine, self._engine = self._engine, None
        if engine is not None and hasattr(engine, "shutdown"):
            engine.shutdown()

    def format(self, request: ModelRequest) -> FormattedPrompt:
        return format_chat(self._tokenizer, request)

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        if self._engine is None:
            raise ModelNotReadyError(f"model {self.config.name!r} is not loaded")
        prompt = self.format(request)
        p = request.params
        module = self._sampling_params
        sampling = module.SamplingParams(**sampling_kwargs(request, module))
        request_id = uuid.uuid4().hex
        stops = StopFilter([*prompt.stop, *p.stop])
        sent = scored = 0
        finish: FinishReason = "stop"
        n_prompt = n_out = 0
        try:
            async for out in self._engine.generate(prompt.text, sampling, request_id):
                completion = out.outputs[0]
                n_prompt, n_out = len(out.prompt_token_ids or ()), len(completion.token_ids)
                text = stops.feed(completion.text[sent:])
                sent = len(completion.text)
                logprobs: list[TokenLogprob] | None = None
                if request.logprobs and completion.logprobs:
                    ids = completion.token_ids
                    logprobs = [
                        token_logprob(completion.logprobs[i], ids[i], request.top_logprobs)
                        for i in range(scored, len(completion.logprobs))
                    ]
                    scored = len(completion.logprobs)
                if text or logprobs:
                    if prompt.strip_leading_space and sent == len(text):
                        text = text.lstrip()
                    yield ModelChunk(text, logprobs=logprobs or None)
                if stops.stopped:
                    await self._engine.abort(request_id)
                    break
                if completion.finish_reason == "length":
                    finish = "length"
        except BaseException:
            await self._engine.abort(request_id)
            raise
        yield ModelChunk(stops.flush(), finish_reason=finish, usage=Usage(n_prompt, n_out))
