"""Grammar-constrained decoding and logprobs for ``transformers`` generation, through llguidance.

llguidance (Rust; the engine behind the ``guidance`` backends of llama.cpp, vLLM and SGLang) walks the
tokenizer's token trie against the grammar's lexer and parser, so the mask over a whole vocabulary
costs tens of microseconds a step instead of a pass over every token in Python. It reads the GBNF
grammar that ``datapilot.models.structured`` produces through its own GBNF-to-Lark converter.

Inside ``model.generate`` the pieces run in this order each step: ``StepProcessor`` (a logits
processor, before temperature, top-k and top-p) records the step's log-probabilities and masks the
tokens the grammar refuses, including EOS until the grammar may end; after sampling, the backend's
stopping criterion hands the token to ``Constraint.consume`` and stops once the grammar is complete.
This module imports torch and transformers: import it only where they are installed.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from transformers import LogitsProcessor

from datapilot.core.errors import DataPilotError, InvalidRequestError, MissingDependencyError
from datapilot.core.types import TokenLogprob, TopLogprob

# OpenAI's stand-in for a log-probability of minus infinity (a token masked before this step).
_FLOOR = -9999.0


def eos_ids(tokenizer: Any, model: Any) -> list[int]:
    """Every token that ends generation: the generation config's (often several) and the tokenizer's."""
    ids: list[int] = []
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in (configured, tokenizer.eos_token_id):
        for t in value if isinstance(value, list | tuple) else [value]:
            if t is not None and int(t) not in ids:
                ids.append(int(t))
    return ids


class TokenTable:
    """One model's vocabulary as llguidance sees it (token bytes, EOS); built once, about a second for a
    large vocabulary, and shared by every request to that model."""

    def __init__(self, tokenizer: Any, model: Any) -> None:
        try:
            import llguidance.hf
        except ImportError:
            raise MissingDependencyError("llguidance", "hf") from None
        self.eos = eos_ids(tokenizer, model)
        if not self.eos:
            raise InvalidRequestError(
                "this model's tokenizer has no end-of-sequence token, so a grammar could never end", param="grammar"
            )
        # The output layer is often wider than the vocabulary (padded for speed); the extra columns are
        # tokens without bytes that a grammar never allows.
        self.n_logits = int(model.get_output_embeddings().weight.shape[0])
        wider = self.n_logits if self.n_logits > len(tokenizer) else None
        try:
            self.ll: Any = llguidance.hf.from_tokenizer(tokenizer, n_vocab=wider, eos_token=self.eos)
        except Exception as exc:  # slow (Python) tokenizers, unusual pre-tokenizers
            raise InvalidRequestError(
                f"this model's tokenizer cannot be used for grammar-constrained decoding: {exc}", param="grammar"
            ) from None

    def token_bytes(self, token: int) -> bytes:
        return bytes(self.ll.decode_bytes([token]))


class Constraint:
    """One request's grammar, advanced token by token."""

    def __init__(self, table: TokenTable, grammar: str) -> None:
        import llguidance
        import llguidance.numpy

        try:
            lark = llguidance.grammar_from("gbnf", grammar)
        except ValueError as exc:
            raise InvalidRequestError(f"the grammar cannot be used: {exc}", param="grammar") from None
        self._matcher: Any = llguidance.LLMatcher(table.ll, lark, log_level=0)
        if self._matcher.is_error():
            raise InvalidRequestError(f"the grammar cannot be used: {self._matcher.get_error()}", param="grammar")
        self._fill = llguidance.numpy.fill_next_token_bitmask
        self._n_vocab = int(table.ll.vocab_size)
        self._n_logits = table.n_logits
        self._bits = llguidance.numpy.allocate_token_bitmask(1, self._n_vocab)

    def blocked(self) -> torch.Tensor:
        """A boolean row over the output layer: True where the grammar refuses the token now."""
        self._fill(self._matcher, self._bits, 0)
        if self._matcher.is_error():
            raise DataPilotError(f"grammar-constrained decoding failed: {self._matcher.get_error()}")
        allowed = np.unpackbits(self._bits.view(np.uint8), axis=-1, bitorder="little")[0, : self._n_vocab]
        row = np.ones(self._n_logits, dtype=bool)
        n = min(self._n_vocab, self._n_logits)
        row[:n] = allowed[:n] == 0
        return torch.from_numpy(row)

    def consume(self, token: int) -> None:
        if not self._matcher.consume_token(token):
            raise DataPilotError(f"the grammar refused a generated token: {self._matcher.get_error()}")

    @property
    def finished(self) -> bool:
        """The grammar is complete and admits nothing more: generation ends here."""
        return bool(self._matcher.is_stopped())


class StepProcessor(LogitsProcessor):
    """Records each step's log-probabilities from the scores as they reach it (before sampling warpers
    and the grammar), then masks what the grammar refuses."""

    def __init__(self, constraint: Constraint | None, record: bool) -> None:
        self.constraint = constraint
        self.record = record
        self.last: torch.Tensor | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.record:
            self.last = torch.log_softmax(scores[0].float(), dim=-1)
        if self.constraint is not None:
            blocked = self.constraint.blocked().to(scores.device, non_blocking=True)
            scores = scores.masked_fill(blocked[: scores.shape[-1]], -math.inf)  # type: ignore[assignment]
        return scores


class LogprobRecorder:
    """Turns the recorded distribution and the sampled token into OpenAI's logprobs entry."""

    def __init__(self, tokenizer: Any, table: TokenTable | None, top: int) -> None:
        self._tokenizer = tokenizer
        self._table = table
        self._top = top

    def _piece(self, token: int) -> tuple[str, list[int]]:
        if self._table is not None:
            raw = self._table.token_bytes(token)
        else:
            raw = self._tokenizer.decode([token], clean_up_tokenization_spaces=False).encode("utf-8")
        return raw.decode("utf-8", "replace"), list(raw)

    def entry(self, logprobs: torch.Tensor, token: int) -> TokenLogprob:
        top: tuple[TopLogprob, ...] = ()
        if self._top:
            values, ids = torch.topk(logprobs, min(self._top, int(logprobs.shape[-1])))
            entries = []
            for value, alt in zip(values.tolist(), ids.tolist(), strict=True):
                alt_text, alt_raw = self._piece(int(alt))
                entries.append(TopLogprob(alt_text, _finite(value), alt_raw))
            top = tuple(entries)
        text, raw = self._piece(token)
        return TokenLogprob(text, _finite(float(logprobs[token])), raw, top)


def _finite(value: float) -> float:
    return value if math.isfinite(value) else _FLOOR


class TextDecoder:
    """Token ids to text as they come, holding back a token that ends inside a UTF-8 character.

    Decoding a short window (the last emitted token and what came after) rather than one token at a
    time keeps SentencePiece's leading spaces and byte-level merges right."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self._ids: list[int] = []
        self._prefix = 0
        self._read = 0

    def _decode(self, ids: list[int]) -> str:
        return str(self._tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False))

    def _tail(self) -> str:
        before = self._decode(self._ids[self._prefix : self._read])
        after = self._decode(self._ids[self._prefix :])
        return after[len(before) :] if len(after) > len(before) else ""

    def feed(self, token: int) -> str:
        self._ids.append(token)
        text = self._tail()
        if not text or text.endswith("\ufffd"):
            return ""
        self._prefix, self._read = self._read, len(self._ids)
        return text

    def flush(self) -> str:
        text = self._tail()
        self._prefix = self._read = len(self._ids)
        return text
