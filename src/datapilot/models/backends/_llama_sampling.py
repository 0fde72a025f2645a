"""Grammar-guided sampling and logprobs for llama.cpp, at nearly the speed of unconstrained decoding.

llama-cpp-python applies a grammar to every candidate token before sampling; with a 262k-token vocabulary
(Gemma 3) that costs more than the forward pass. llama.cpp's own server samples first and asks the
grammar only about the token it picked, applying the grammar to the whole vocabulary only when that
token is refused. ``GuidedSampler`` does the same through the low-level API. When the grammar refuses
the sampled token, it asks about the most likely tokens one at a time (microseconds each) and only
then about the whole vocabulary (25 ms for Gemma's on two cores, more than a decode step): the forced
token of a JSON skeleton is nearly always among the first few. It also records each token's
log-probability and the most likely alternatives from the raw logits when asked.
"""

from __future__ import annotations

import ctypes
import math
from typing import Any

import numpy as np

from datapilot.core.errors import DataPilotError, InvalidRequestError
from datapilot.core.types import TokenLogprob, TopLogprob

# The most likely tokens asked one by one before the grammar sees a filtered candidate set.
_SCAN = 32
_NEAR = 8.0  # logits within this of the best are scanned (e^-8: a three-thousandth of its probability)
# Characters that stand for every token starting with a non-ASCII character.
_OTHER_PROBES = ("é", "中", "ü", "я")


def best_unless_penalised(logits: np.ndarray, recent: list[int], window: int) -> int | None:
    """The greedy choice without the vocabulary-sized candidate array a sampler chain builds (about a
    millisecond for Gemma's 262k tokens): penalties only lower the logits of recent tokens, so the best
    raw logit is the chain's choice unless it is one of them (then None: ask the chain)."""
    best = int(logits.argmax())
    return None if best in recent[-window:] else best


class VocabIndex:
    """Each token's first character, so that a grammar refusing the sampled token is asked only about
    tokens that can start with a character it allows. Built once per model (about a second for 262k
    tokens). Tokens with no text (end of generation, controls) are always candidates."""

    def __init__(self, llm: Any) -> None:
        n = int(llm.n_vocab())
        groups: dict[int, list[int]] = {}
        probes: dict[int, int] = {}
        other_probes: list[int] = []
        always: list[int] = []
        for token in range(n):
            text = bytes(llm.detokenize([token])).decode("utf-8", "ignore")
            if not text:
                always.append(token)
                continue
            first = ord(text[0]) if text[0].isascii() else -1
            groups.setdefault(first, []).append(token)
            if len(text) == 1 and first >= 0:
                probes.setdefault(first, token)
            elif text in _OTHER_PROBES:
                other_probes.append(token)
        self.groups = {k: np.asarray(v, dtype=np.int32) for k, v in groups.items()}
        self.always = np.asarray(always, dtype=np.int32)
        # ASCII characters with a one-character token are probed; the others are always candidates.
        self.probes = probes
        self.unprobed = [k for k in self.groups if k >= 0 and k not in probes]
        self.other_probes = other_probes


class GuidedSampler:
    """Stands in for llama-cpp-python's sampler inside ``Llama.generate`` for one request."""

    def __init__(
        self, llm: Any, grammar: str | None, top_logprobs: int | None, index: VocabIndex | None = None
    ) -> None:
        import llama_cpp

        self._index = index

        self._lib = llama_cpp
        self._llm = llm
        self._class_init = type(llm)._init_sampler
        self._top = top_logprobs
        self._logprobs: list[TokenLogprob] = []
        self._chain: Any = None
        self._grammar: Any = None
        self._n_vocab = int(llm.n_vocab())
        if grammar is not None:
            self._grammar = llama_cpp.llama_sampler_init_grammar(llm._model.vocab, grammar.encode("utf-8"), b"root")
            if not self._grammar:
                raise InvalidRequestError("llama.cpp could not parse the grammar", param="grammar")
        dtype = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)], align=True)
        if dtype.itemsize != ctypes.sizeof(llama_cpp.llama_token_data):
            raise DataPilotError("llama_token_data has an unexpected layout in this llama-cpp-python")
        self._cur = np.zeros(self._n_vocab, dtype=dtype)
        self._ids = np.arange(self._n_vocab, dtype=np.int32)
        self._few = np.zeros(_SCAN, dtype=dtype)
        self._one = (llama_cpp.llama_token_data * 1)()
        self._need = 1  # allowed candidates a tier must hold to decide like the whole vocabulary would
        self._greedy = False
        self._window = 64
        self._recent: list[int] = []  # generated tokens, which the chain's penalties look back on

    def init_sampler(self, **kwargs: Any) -> GuidedSampler:
        """Called by ``Llama.generate`` in place of its own: the chain without the grammar, kept here."""
        kwargs["grammar"] = None
        return self.use_chain(
            self._class_init(self._llm, **kwargs),
            float(kwargs.get("temp", 0.8)),
            int(kwargs.get("top_k", 40)),
            int(getattr(self._llm, "last_n_tokens_size", 64)),
        )

    def use_chain(self, chain: Any, temperature: float, top_k: int, window: int = 64) -> GuidedSampler:
        """For a caller that builds the sampling chain itself (the batching engine): this sampler owns
        ``chain`` from now on (``close`` frees it) and checks the grammar on what it picks. Greedy needs
        the best allowed token only; sampling needs its top-k pool from the tier."""
        self._chain = chain
        self._greedy = temperature <= 0
        if not self._greedy:
            self._need = top_k if top_k > 0 else self._n_vocab
        self._window = window
        return self

    def _first_pick(self, logits: np.ndarray) -> int:
        """The chain's own choice. Greedy skips building the vocabulary-sized array (1.3 ms of a 17 ms
        step): penalties only lower the logits of recent tokens, so the raw best token is the chain's
        choice unless it is one of them."""
        if self._greedy:
            best = best_unless_penalised(logits, self._recent, self._window)
            if best is not None:
                return best
        return self._pick(self._array(logits))

    def _array(self, logits: np.ndarray) -> Any:
        cur = self._cur
        # The chain sorts the array in place (top-k, top-p): the ids are reset with the logits, or the
        # next step's logits would land on another step's order of tokens.
        cur["id"] = self._ids
        cur["logit"] = logits
        cur["p"] = 0.0
        lib = self._lib
        data = cur.ctypes.data_as(ctypes.POINTER(lib.llama_token_data))
        return lib.llama_token_data_array(data, self._n_vocab, -1, False)

    def _pick(self, arr: Any) -> int:
        self._lib.llama_sampler_apply(self._chain.sampler, ctypes.byref(arr))
        if arr.selected < 0:
            raise DataPilotError("the sampler chose no token")
        return int(arr.data[arr.selected].id)

    def _allowed(self, token: int) -> bool:
        one = self._one
        one[0].id, one[0].logit, one[0].p = token, 0.0, 0.0  # type: ignore[assignment]
        single = self._lib.llama_token_data_array(one, 1, -1, False)
        self._lib.llama_sampler_apply(self._grammar, ctypes.byref(single))
        return not math.isinf(one[0].logit)

    def _constrained(self, logits: np.ndarray) -> int:
        """The chain's choice among the tokens the grammar allows.

        First the most likely tokens one at a time, in order (microseconds each): enough for free
        text, where the refused token was a near miss. Then the tokens whose first character the
        grammar allows (a forced ``","`` leaves a few thousand of 262k), and only without an index
        the whole vocabulary (40 ms for Gemma's on two cores)."""
        # The most likely tokens without partitioning the whole vocabulary (0.8 ms for 262k): one
        # comparison pass keeps those near the best, which are nearly always few.
        near = np.flatnonzero(logits > logits.max() - _NEAR)
        if len(near) > _SCAN:
            near = near[np.argpartition(-logits[near], _SCAN)[:_SCAN]]
        order = near[np.argsort(-logits[near])]
        allowed = [t for t in order.tolist() if self._allowed(t)]
        # Greedy needs one allowed token (all found are offered, so penalties can still reorder them);
        # sampling needs the whole pool its top-k would see.
        if allowed and len(allowed) >= self._need:
            return self._pick_among(np.asarray(allowed, dtype=np.int32), logits, grammar=False)
        if self._index is not None:
            token = self._pick_among(self._candidates(self._index), logits, grammar=True)
            if token >= 0:
                return token
        arr = self._array(logits)
        self._lib.llama_sampler_apply(self._grammar, ctypes.byref(arr))
        return self._pick(arr)

    def _candidates(self, index: VocabIndex) -> np.ndarray:
        parts = [index.always, *(index.groups[c] for c in index.unprobed)]
        parts += [index.groups[c] for c, probe in index.probes.items() if self._allowed(probe)]
        if -1 in index.groups and any(self._allowed(t) for t in index.other_probes):
            parts.append(index.groups[-1])
        return np.concatenate(parts)

    def _pick_among(self, ids: np.ndarray, logits: np.ndarray, grammar: bool) -> int:
        """The chain's choice among ``ids`` (asking the grammar first when ``grammar``); -1 if it allows none."""
        lib = self._lib
        if len(ids) > len(self._few):
            self._few = np.zeros(len(ids), dtype=self._few.dtype)
        few = self._few[: len(ids)]
        few["id"] = ids
        few["logit"] = logits[ids]
        few["p"] = 0.0
        arr = lib.llama_token_data_array(few.ctypes.data_as(ctypes.POINTER(lib.llama_token_data)), len(ids), -1, False)
        if grammar:
            lib.llama_sampler_apply(self._grammar, ctypes.byref(arr))
            if not np.isfinite(few["logit"][: arr.size]).any():
                return -1
        return self._pick(arr)

    def sample(self, ctx: Any, idx: int) -> int:
        lib = self._lib
        ptr = lib.llama_get_logits_ith(ctx.ctx, idx)
        logits = np.ctypeslib.as_array(ptr, shape=(self._n_vocab,))
        token = self._first_pick(logits)
        if self._grammar is not None and not self._allowed(token):
            token = self._constrained(logits)
        if self._grammar is not None:
            lib.llama_sampler_accept(self._grammar, token)
        lib.llama_sampler_accept(self._chain.sampler, token)
        self._recent.append(token)
        if self._top is not None:
            self._record(logits, token)
        return token

    def _token(self, token: int) -> tuple[str, list[int]]:
        raw = bytes(self._llm.detokenize([token], special=True))
        return raw.decode("utf-8", "replace"), list(raw)

    def _record(self, logits: np.ndarray, token: int) -> None:
        peak = float(logits.max())
        lse = peak + math.log(float(np.exp(logits - peak, dtype=np.float64).sum()))
        top: tuple[TopLogprob, ...] = ()
        if self._top:
            best = np.argpartition(-logits, self._top)[: self._top]
            best = best[np.argsort(-logits[best])]
            top = tuple(self._top_entry(int(t), logits, lse) for t in best)
        text, raw = self._token(token)
        self._logprobs.append(TokenLogprob(text, float(logits[token]) - lse, raw, top))

    def _top_entry(self, token: int, logits: np.ndarray, lse: float) -> TopLogprob:
        text, raw = self._token(token)
        return TopLogprob(text, float(logits[token]) - lse, raw)

    def take_logprobs(self) -> list[TokenLogprob] | None:
        if self._top is None:
            return None
        out, self._logprobs = self._logprobs, []
        return out

    def close(self) -> None:
        if self._grammar is not None:
            self._lib.llama_sampler_free(self._grammar)
            self._grammar = None
        if self._chain is not None:
            self._chain.close()
            self._chain = None
