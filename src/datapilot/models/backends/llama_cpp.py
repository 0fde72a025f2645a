"""llama.cpp backend: any GGUF file, through ``llama-cpp-python``.

Chat requests use the GGUF's own chat template when it has one; a base model without one gets the
few-shot dialogue prompt (see ``datapilot.models.prompt``). Generation runs token by token so that
usage is exact, stop strings are honoured while streaming, and a cancelled request stops at once.
llama.cpp reuses the longest cached prompt prefix, so the fixed few-shot preamble is evaluated once.

With ``parallel`` > 1 (params: ``parallel``, ``ctx_per_slot``, ``batch_size``), requests are batched:
up to ``parallel`` sequences decode together in one context (``_llama_batch.BatchEngine``: continuous
batching, chunked prefill, prefix reuse across requests), grammars and logprobs included: each
sequence samples through its own guided sampler. A seeded request with temperature > 0 runs alone, so
that it is repeatable under any load.
"""

from __future__ import annotations

import asyncio
import codecs
import os
import random
import threading
from collections.abc import AsyncIterator
from typing import Any

from datapilot.core.errors import ContextLengthExceededError, MissingDependencyError, ModelNotReadyError
from datapilot.core.types import FinishReason, ModelChunk, ModelRequest, TokenLogprob, Usage
from datapilot.models._threaded import Emit, ThreadChannel, stream_from_thread
from datapilot.models.backend import CHAT, COMPLETION, ThreadedBackend
from datapilot.models.backends._llama_sampling import GuidedSampler, VocabIndex
from datapilot.models.prompt import FormattedPrompt, StopFilter, few_shot_dialogue
from datapilot.models.structured import GRAMMAR, LOGPROBS

_LLAMA_KWARGS = ("n_ctx", "n_threads", "n_batch", "n_gpu_layers", "use_mmap", "flash_attn", "lora_path", "lora_scale")


_LOADING = threading.Lock()


class LlamaCppBackend(ThreadedBackend):
    capabilities = frozenset({CHAT, COMPLETION, GRAMMAR, LOGPROBS})
    thread_prefix = "llama"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._llm: Any = None
        self._template: Any = None
        self._llama_cpp: Any = None
        self._vocab_index: VocabIndex | None = None
        self._engine: Any = None  # the batching engine, with parallel > 1

    @property
    def context_length(self) -> int | None:
        return self._llm.n_ctx() if self._llm is not None else None

    def _load_sync(self) -> None:
        try:
            import llama_cpp
            from llama_cpp import Llama
        except ImportError:
            raise MissingDependencyError("llama-cpp-python", "llama") from None
        if self.model_path is None or not self.model_path.is_file():
            raise ModelNotReadyError(f"GGUF file not found: {self.model_path}; set `path` for this model")
        params = self.config.params
        kwargs: dict[str, Any] = {k: params[k] for k in _LLAMA_KWARGS if k in params}
        kwargs.setdefault("n_ctx", 4096)
        kwargs.setdefault("n_threads", max(1, os.cpu_count() or 1))
        self._llama_cpp = llama_cpp
        # One load at a time: Llama(verbose=False) points the process's fds 1 and 2 at /dev/null while it
        # loads, and two loads at once (two GGUF models starting together) can leave them there for good.
        with _LOADING:
            self._llm = Llama(model_path=str(self.model_path), verbose=False, **kwargs)
        parallel = int(params.get("parallel", 1))
        if parallel > 1:
            from datapilot.models.backends._llama_batch import BatchEngine

            self._engine = BatchEngine(
                self._llm,
                parallel,
                int(params.get("ctx_per_slot", 2048)),
                int(params.get("batch_size", 256)),
                int(kwargs["n_threads"]),
            )
        style = params.get("prompt_style", "auto")
        template = self._llm.metadata.get("tokenizer.chat_template")
        if template and style in ("auto", "template"):
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            vocab = self._llm
            self._template = Jinja2ChatFormatter(
                template=template,
                eos_token=vocab.detokenize([vocab.token_eos()]).decode("utf-8", "replace"),
                bos_token=vocab.detokenize([vocab.token_bos()]).decode("utf-8", "replace"),
            )

    async def close(self) -> None:
        engine, self._engine = self._engine, None
        if engine is not None:
            await asyncio.to_thread(engine.close)
        llm, self._llm = self._llm, None
        if llm is not None:
            self._executor.submit(llm.close).result()
        self._executor.shutdown(wait=False)

    def format(self, request: ModelRequest) -> FormattedPrompt:
        if request.messages is None:
            return FormattedPrompt(request.prompt or "", stop=[])
        if self._template is not None:
            out = self._template(messages=[{"role": m.role, "content": m.content} for m in request.messages])
            stops = out.stop if isinstance(out.stop, list) else [out.stop] if out.stop else []
            return FormattedPrompt(out.prompt, stop=stops, add_bos=False)
        return few_shot_dialogue(request.messages)

    def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        if self._llm is None:
            raise ModelNotReadyError(f"model {self.config.name!r} is not loaded")
        prompt = self.format(request)
        p = request.params
        # A seeded sampled request runs alone on the model's own context: llama.cpp's kernels round a
        # little differently with the size of the batch, enough to flip a sampled token, and the same
        # seed must give the same text whatever else is running.
        if self._engine is not None and not (p.seed is not None and p.temperature > 0):
            return self._batched(request, prompt)
        return stream_from_thread(self._executor, lambda emit, cancel: self._run(request, prompt, emit, cancel))

    def batch_stats(self) -> dict[str, Any] | None:
        """Slots, running and waiting sequences, KV use and prefix reuse, with ``parallel`` > 1."""
        return self._engine.stats() if self._engine is not None else None

    async def _batched(self, request: ModelRequest, prompt: FormattedPrompt) -> AsyncIterator[ModelChunk]:
        from datapilot.models.backends._llama_batch import Sequence

        channel = ThreadChannel()
        tokens = self._llm.tokenize(prompt.text.encode("utf-8"), add_bos=prompt.add_bos, special=True)
        stops = [*prompt.stop, *request.params.stop]
        seq = Sequence(tokens, request.params, stops, channel.put, prompt.strip_leading_space, channel.cancel)
        if request.grammar is not None or request.logprobs:
            # Its own guided sampler: the grammar is asked about the token the chain picks (see
            # _llama_sampling), and log-probabilities come from this sequence's row of logits.
            if request.grammar is not None and self._vocab_index is None:
                loop = asyncio.get_running_loop()
                self._vocab_index = await loop.run_in_executor(self._executor, VocabIndex, self._llm)
            top = request.top_logprobs if request.logprobs else None
            seq.guided = GuidedSampler(self._llm, request.grammar, top, self._vocab_index)
        try:
            self._engine.submit(seq)
        except BaseException:
            if seq.guided is not None:
                seq.guided.close()
            raise  # a reader that goes away sets channel.cancel: the engine frees the slot
        async for chunk in channel.chunks():
            yield chunk

    def _run(self, request: ModelRequest, prompt: FormattedPrompt, emit: Emit, cancel: threading.Event) -> None:
        llm = self._llm
        p = request.params
        tokens = llm.tokenize(prompt.text.encode("utf-8"), add_bos=prompt.add_bos, special=True)
        n_ctx = llm.n_ctx()
        room = n_ctx - len(tokens)
        if room < 1 or (p.max_tokens is not None and p.max_tokens > room):
            raise ContextLengthExceededError(
                f"this model's maximum context length is {n_ctx} tokens; the prompt has {len(tokens)} "
                f"tokens and max_tokens asks for {p.max_tokens or 'at least 1'} more: shorten the prompt "
                f"or lower max_tokens",
                param="max_tokens" if room >= 1 else "messages",
            )
        max_tokens = p.max_tokens or room
        # The sampler takes its seed at creation; an unseeded request must not reuse the last seed.
        llm.set_seed(p.seed if p.seed is not None else random.getrandbits(31))
        if p.seed is not None:
            # Reusing a cached prefix changes how the prompt is batched, which nudges the logits enough
            # to flip sampled tokens: a seeded request evaluates its prompt afresh to be repeatable.
            llm.reset()
        stops = StopFilter([*prompt.stop, *p.stop])
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        is_eog = self._llama_cpp.llama_vocab_is_eog
        strip_lead = prompt.strip_leading_space
        generated: list[int] = []
        finish: FinishReason = "length"
        guided = None
        if request.grammar is not None or request.logprobs:
            # llama-cpp-python builds its sampler inside generate(); ours checks the grammar on the sampled
            # token first and records logprobs, then generate() goes on as usual (prefix reuse included).
            if request.grammar is not None and self._vocab_index is None:
                self._vocab_index = VocabIndex(llm)  # once, in this model's own thread
            top = request.top_logprobs if request.logprobs else None
            guided = GuidedSampler(llm, request.grammar, top, self._vocab_index)
            llm._init_sampler = guided.init_sampler
        try:
            for token in llm.generate(
                tokens,
                top_k=p.top_k,
                top_p=p.top_p,
                temp=p.temperature,
                repeat_penalty=p.repeat_penalty,
                frequency_penalty=p.frequency_penalty,
                presence_penalty=p.presence_penalty,
                reset=True,
            ):
                if cancel.is_set():
                    finish = "cancelled"
                    break
                if is_eog(llm._model.vocab, token):
                    finish = "stop"
                    break
                piece = decoder.decode(llm.detokenize([token], prev_tokens=tokens + generated))
                generated.append(token)
                text = stops.feed(piece)
                if strip_lead and text:
                    # The transcript prompt ends in "Assistant:"; the answer's leading space is not content.
                    text = text.lstrip()
                    strip_lead = not text
                logprobs: list[TokenLogprob] | None = guided.take_logprobs() if guided is not None else None
                if text or logprobs:
                    emit(ModelChunk(text, logprobs=logprobs))
                if stops.stopped:
                    finish = "stop"
                    break
                if len(generated) >= max_tokens:
                    break
        finally:
            if guided is not None:
                del llm._init_sampler  # back to the class's own
                guided.close()
        tail = stops.feed(decoder.decode(b"", final=True)) + stops.flush()
        emit(ModelChunk(tail, finish_reason=finish, usage=Usage(len(tokens), len(generated))))

    def count_tokens(self, text: str) -> int:
        return len(self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))
