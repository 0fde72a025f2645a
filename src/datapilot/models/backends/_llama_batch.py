"""Continuous batching for GGUF models: many sequences in one llama.cpp context, one forward pass a step.

On a CPU the decode step of a small model is bound by memory traffic: the weights are read once a step
whatever the number of sequences in the batch, so N sequences decoding together cost far less than N
steps. ``BatchEngine`` keeps ``slots`` sequences in one context (one sequence id each, a unified KV
cache) and runs a loop on its own thread:

* each step puts one token of every decoding sequence into the batch, then fills what room is left
  (``n_batch``) with chunks of the prompts of newly arrived requests, so a long prompt never stalls
  the running streams by more than one chunk;
* requests join and leave between steps; a cancelled or finished sequence frees its slot at once;
* each sequence samples with its own chain (penalties, top-k, top-p, min-p, temperature, seed; greedy
  at temperature 0), stop strings and max tokens;
* prefix reuse: a free slot keeps the KV of the last prompt it held, and a new request goes to the
  slot sharing the longest prefix with it (the system prompt, the text-to-SQL schema), whose cached
  tokens are not evaluated again.

A request with a grammar (structured generation) or logprobs samples through its own
``GuidedSampler``: the chain picks a token, the grammar is asked only about that token, and log-
probabilities are read from the sequence's own row of logits.
"""

from __future__ import annotations

import codecs
import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np

from datapilot.core.errors import ContextLengthExceededError, DataPilotError
from datapilot.core.types import FinishReason, ModelChunk, SamplingParams, Usage
from datapilot.models.backends._llama_sampling import best_unless_penalised
from datapilot.models.prompt import StopFilter

log = logging.getLogger("datapilot.models")

Emit = Callable[[ModelChunk], None]
_PENALTY_WINDOW = 64  # recent tokens the repetition penalties look back on


@dataclass(eq=False)
class Sequence:
    """One request in the engine: its tokens, its sampler, and where its chunks go."""

    tokens: list[int]  # the prompt
    params: SamplingParams
    stops: list[str]
    emit: Emit
    strip_leading_space: bool = False
    cancel: threading.Event = field(default_factory=threading.Event)
    guided: Any = None  # a GuidedSampler for a grammar or logprobs; it owns the chain once admitted
    fast_greedy: bool = False  # greedy with penalties that only lower logits: argmax first
    # engine state
    slot: int = -1
    n_past: int = 0  # tokens of this sequence in the KV
    generated: list[int] = field(default_factory=list)
    last: int = -1  # the token to decode next
    sampler: Any = None
    decoder: Any = None
    stop_filter: Any = None
    finished: bool = False

    @property
    def prefilling(self) -> bool:
        return self.n_past < len(self.tokens)


class BatchEngine:
    """Runs sequences of one model in one llama.cpp context (see the module's doc)."""

    def __init__(self, llm: Any, slots: int, ctx_per_slot: int, n_batch: int, n_threads: int) -> None:
        import llama_cpp.llama_cpp as lib

        self.lib, self.llm, self.slots = lib, llm, slots
        self.ctx_per_slot, self.n_batch = ctx_per_slot, n_batch
        params = lib.llama_context_default_params()
        params.n_ctx = slots * ctx_per_slot
        params.n_batch = params.n_ubatch = n_batch
        params.n_seq_max = slots
        params.n_threads = params.n_threads_batch = n_threads
        params.kv_unified = True
        params.no_perf = True
        # Not wrapped in llama-cpp-python's suppress_stdout_stderr: it swaps the process's fds 1 and 2,
        # which races with another model loading on another thread and can leave them on /dev/null.
        self.ctx = lib.llama_init_from_model(llm._model.model, params)
        if not self.ctx:
            raise DataPilotError("llama.cpp could not create the batched context (out of memory?)")
        adapter = getattr(llm, "_lora_adapter", None)
        if adapter is not None:  # a fine-tuned model (``lora_path``): its adapter on this context too
            import ctypes

            adapters = (lib.llama_adapter_lora_p_ctypes * 1)(adapter)
            scales = (ctypes.c_float * 1)(float(llm.lora_scale))
            if lib.llama_set_adapters_lora(self.ctx, adapters, 1, scales):
                raise DataPilotError(f"could not apply the LoRA adapter {llm.lora_path} to the batched context")
        self.mem = lib.llama_get_memory(self.ctx)
        self._ctx_ref = SimpleNamespace(ctx=self.ctx)  # what a GuidedSampler reads logits through
        self.vocab = llm._model.vocab
        self.n_vocab = int(llm.n_vocab())
        self.batch = lib.llama_batch_init(n_batch, 0, 1)
        self.cached: list[list[int]] = [[] for _ in range(slots)]  # what each slot's KV holds
        self.running: list[Sequence] = []
        self.waiting: list[Sequence] = []
        self.lock = threading.Condition()
        self.closed = False
        # figures for /api/metrics and /metrics
        self.prefix_hits = self.prompt_tokens = self.reused_tokens = self.steps = 0
        self.thread = threading.Thread(target=self._loop, name="llama-batch", daemon=True)
        self.thread.start()

    # --- the caller's side -----------------------------------------------------------------------------

    def submit(self, seq: Sequence) -> None:
        """Queue ``seq``; its chunks arrive through ``seq.emit``, the last with ``finish_reason``."""
        p = seq.params
        room = self.ctx_per_slot - len(seq.tokens)
        if room < 1 or (p.max_tokens is not None and p.max_tokens > room):
            raise ContextLengthExceededError(
                f"this model's context is {self.ctx_per_slot} tokens per parallel sequence; the prompt has "
                f"{len(seq.tokens)} tokens and max_tokens asks for {p.max_tokens or 'at least 1'} more: "
                "shorten the prompt, lower max_tokens, or raise ctx_per_slot",
                param="max_tokens" if room >= 1 else "messages",
            )
        with self.lock:
            if self.closed:
                raise DataPilotError("the model is closing")
            self.waiting.append(seq)
            self.lock.notify()

    def stats(self) -> dict[str, Any]:
        with self.lock:
            busy = {s.slot: s.n_past for s in self.running}  # a running slot's cells are its n_past
            used = sum(busy.get(slot, len(cached)) for slot, cached in enumerate(self.cached))
            return {
                "slots": self.slots,
                "running": len(self.running),
                "waiting": len(self.waiting),
                "kv_cells": self.slots * self.ctx_per_slot,
                "kv_used": used,
                "prefix_hits": self.prefix_hits,
                "prefix_hit_rate": round(self.reused_tokens / self.prompt_tokens, 4) if self.prompt_tokens else 0.0,
                "steps": self.steps,
            }

    def close(self) -> None:
        with self.lock:
            self.closed = True
            self.lock.notify()
        self.thread.join(timeout=30)
        self.lib.llama_batch_free(self.batch)
        self.lib.llama_free(self.ctx)

    # --- the engine's thread ---------------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self.lock:
                while not self.closed and not self.running and not self.waiting:
                    self.lock.wait()
                if self.closed:
                    for seq in [*self.running, *self.waiting]:
                        self._finish(seq, "cancelled")
                    return
                self._admit()
            try:
                self._step()
            except Exception as exc:  # a failed step fails its sequences, never the engine
                log.exception("batched decode step failed")
                with self.lock:
                    for seq in list(self.running):
                        self._fail(seq, exc)

    def _admit(self) -> None:
        """Move waiting requests into free slots, each to the slot sharing its longest prefix."""
        for seq in list(self.running):
            if seq.cancel.is_set():
                self._finish(seq, "cancelled")
        free = [s for s in range(self.slots) if all(r.slot != s for r in self.running)]
        while self.waiting and free:
            seq = self.waiting.pop(0)
            if seq.cancel.is_set():
                self._finish(seq, "cancelled")
                continue
            best = max(free, key=lambda s: _common(self.cached[s], seq.tokens))
            free.remove(best)
            keep = min(_common(self.cached[best], seq.tokens), len(seq.tokens) - 1)  # one token gives logits
            if seq.params.seed is not None:
                # A reused prefix is batched differently from a fresh prompt, which nudges the logits enough
                # to flip sampled tokens: a seeded request evaluates its prompt afresh to be repeatable.
                keep = 0
            self.lib.llama_memory_seq_rm(self.mem, best, keep, -1)
            self.cached[best] = self.cached[best][:keep]
            seq.slot, seq.n_past = best, keep
            self.prompt_tokens += len(seq.tokens)
            self.reused_tokens += keep
            self.prefix_hits += keep > 0
            seq.sampler = self._sampler(seq.params)
            p = seq.params
            seq.fast_greedy = (
                p.temperature <= 0 and p.repeat_penalty >= 1 and p.frequency_penalty >= 0 and p.presence_penalty >= 0
            )
            if seq.guided is not None:
                seq.guided.use_chain(seq.sampler, seq.params.temperature, seq.params.top_k, _PENALTY_WINDOW)
            seq.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            seq.stop_filter = StopFilter(seq.stops)
            self.running.append(seq)

    def _greedy(self, seq: Sequence, idx: int) -> int:
        """A greedy pick (``best_unless_penalised``: a sixth of a step at 8 sequences saved)."""
        logits = np.ctypeslib.as_array(self.lib.llama_get_logits_ith(self.ctx, idx), shape=(self.n_vocab,))
        best = best_unless_penalised(logits, seq.generated, _PENALTY_WINDOW)
        if best is None:
            return int(self.lib.llama_sampler_sample(seq.sampler.sampler, self.ctx, idx))
        self.lib.llama_sampler_accept(seq.sampler.sampler, best)  # the penalties' history, as sample() keeps it
        return best

    def _sampler(self, p: SamplingParams) -> Any:
        from llama_cpp._internals import LlamaSampler

        s = LlamaSampler()
        s.add_penalties(self.n_vocab, _PENALTY_WINDOW, p.repeat_penalty, p.frequency_penalty, p.presence_penalty)
        if p.temperature <= 0:
            s.add_greedy()
        else:
            s.add_top_k(p.top_k)
            s.add_top_p(p.top_p, 1)
            s.add_min_p(0.05, 1)
            s.add_temp(p.temperature)
            s.add_dist(p.seed if p.seed is not None else random.getrandbits(31))
        return s

    def _step(self) -> None:
        b = self.batch
        n = 0
        wants: list[tuple[Sequence, int]] = []  # sequences that sample from this step, at batch index
        with self.lock:
            running = list(self.running)
        for seq in running:  # one token for every decoding sequence first
            if not seq.prefilling and not seq.finished:
                self._put(b, n, seq.last, seq.n_past, seq.slot, True)
                wants.append((seq, n))
                seq.n_past += 1
                n += 1
        for seq in running:  # then prompt chunks, as much as the batch holds
            if seq.prefilling and n < self.n_batch:
                take = min(len(seq.tokens) - seq.n_past, self.n_batch - n)
                for i in range(take):
                    pos = seq.n_past + i
                    last = pos == len(seq.tokens) - 1
                    self._put(b, n, seq.tokens[pos], pos, seq.slot, last)
                    if last:
                        wants.append((seq, n))
                    n += 1
                seq.n_past += take
        if n == 0:
            return
        b.n_tokens = n
        rc = self.lib.llama_decode(self.ctx, b)
        if rc != 0:
            raise DataPilotError(f"llama_decode returned {rc} (the KV cache is full: lower parallel or the context)")
        self.steps += 1
        with self.lock:
            for seq, idx in wants:
                if seq.finished:
                    continue
                if seq.guided is not None:
                    self._take(seq, seq.guided.sample(self._ctx_ref, idx))
                elif seq.fast_greedy:
                    self._take(seq, self._greedy(seq, idx))
                else:
                    self._take(seq, int(self.lib.llama_sampler_sample(seq.sampler.sampler, self.ctx, idx)))

    @staticmethod
    def _put(b: Any, i: int, token: int, pos: int, seq_id: int, logits: bool) -> None:
        b.token[i] = token
        b.pos[i] = pos
        b.n_seq_id[i] = 1
        b.seq_id[i][0] = seq_id
        b.logits[i] = logits

    def _take(self, seq: Sequence, token: int) -> None:
        """A sampled token: end of generation, a stop string, max tokens, or text to send."""
        if seq.cancel.is_set():
            self._finish(seq, "cancelled")
            return
        if self.lib.llama_vocab_is_eog(self.vocab, token):
            self._finish(seq, "stop")
            return
        prev = seq.tokens + seq.generated
        piece = seq.decoder.decode(self.llm.detokenize([token], prev_tokens=prev))
        seq.generated.append(token)
        seq.last = token
        text = seq.stop_filter.feed(piece)
        if seq.strip_leading_space and text:
            text = text.lstrip()
            seq.strip_leading_space = not text
        logprobs = seq.guided.take_logprobs() if seq.guided is not None else None
        if text or logprobs:
            seq.emit(ModelChunk(text, logprobs=logprobs))
        if seq.stop_filter.stopped:
            self._finish(seq, "stop")
        elif seq.params.max_tokens is not None and len(seq.generated) >= seq.params.max_tokens:
            self._finish(seq, "length")
        elif seq.n_past + 1 >= self.ctx_per_slot:
            self._finish(seq, "length")

    def _finish(self, seq: Sequence, reason: FinishReason) -> None:
        if seq.finished:
            return
        seq.finished = True
        tail = ""
        if seq.stop_filter is not None:
            tail = seq.stop_filter.feed(seq.decoder.decode(b"", final=True)) + seq.stop_filter.flush()
        self._release(seq)
        seq.emit(ModelChunk(tail, finish_reason=reason, usage=Usage(len(seq.tokens), len(seq.generated))))

    def _fail(self, seq: Sequence, exc: BaseException) -> None:
        seq.finished = True
        self._release(seq)
        seq.emit(exc)  # type: ignore[arg-type]

    def _release(self, seq: Sequence) -> None:
        """Free the slot; its KV is kept as the cached prompt for prefix reuse (generated tokens dropped)."""
        if seq in self.running:
            self.running.remove(seq)
        if seq in self.waiting:
            self.waiting.remove(seq)
        if seq.slot >= 0:
            kept = min(seq.n_past, len(seq.tokens))
            self.lib.llama_memory_seq_rm(self.mem, seq.slot, kept, -1)
            self.cached[seq.slot] = seq.tokens[:kept]
        if seq.guided is not None:
            seq.guided.close()  # with the chain it was given
            seq.guided = seq.sampler = None
        elif seq.sampler is not None:
            seq.sampler.close()
            seq.sampler = None


def _common(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i
