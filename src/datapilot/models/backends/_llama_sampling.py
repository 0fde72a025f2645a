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

# The most likely tokens asked one by one before the grammar is applied to the whole vocabulary.
_SCAN = 1024


class GuidedSampler:
    """Stands in for llama-cpp-python's sampler inside ``Llama.generate`` for one request."""

    def __init__(self, llm: Any, grammar: str | None, top_logprobs: int | None) -> None:
        import llama_cpp

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
        self._cur["id"] = np.arange(self._n_vocab, dtype=np.int32)
        self._few = np.zeros(_SCAN, dtype=dtype)
        self._one = (llama_cpp.llama_token_data * 1)()
        self._need = 1  # allowed candidates a tier must hold to decide like the whole vocabulary would

    def init_sampler(self, **kwargs: Any) -> GuidedSampler:
        """Called by ``Llama.generate`` in place of its own: the chain without the grammar, kept here."""
        kwargs["grammar"] = None
        self._chain = self._class_init(self._llm, **kwargs)
        # Greedy needs the best allowed token only; sampling needs its top-k pool from the tier.
        if float(kwargs.get("temp", 0.8)) > 0:
            self._need = max(1, int(kwargs.get("top_k", 40)))
        return self

    def _array(self, logits: np.ndarray) -> Any:
        cur = self._cur
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
        """The chain's choice among allowed tokens, asking the grammar one token at a time in order of
        likelihood (microseconds each) until it has as many as the chain looks at."""
        lib = self._lib
        n = min(_SCAN, self._n_vocab - 1)
        order = np.argpartition(-logits, n)[:n]
        order = order[np.argsort(-logits[order])]
        allowed = []
        for t in order.tolist():
            if self._allowed(t):
                allowed.append(t)
                if len(allowed) >= self._need:
                    break
        if len(allowed) >= self._need:
            few = self._few[: len(allowed)]
            few["id"] = allowed
            few["logit"] = logits[allowed]
            few["p"] = 0.0
            arr = lib.llama_token_data_array(
                few.ctypes.data_as(ctypes.POINTER(lib.llama_token_data)), len(allowed), -1, False
            )
            return self._pick(arr)
        arr = self._array(logits)
        lib.llama_sampler_apply(self._grammar, ctypes.byref(arr))
        return self._pick(arr)

    def sample(self, ctx: Any, idx: int) -> int:
        lib = self._lib
        ptr = lib.llama_get_logits_ith(ctx.ctx, idx)
        logits = np.ctypeslib.as_array(ptr, shape=(self._n_vocab,))
        token = self._pick(self._array(logits))
        if self._grammar is not None and not self._allowed(token):
            token = self._constrained(logits)
        if self._grammar is not None:
            lib.llama_sampler_accept(self._grammar, token)
        lib.llama_sampler_accept(self._chain.sampler, token)
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
