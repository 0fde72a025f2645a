"""A ``ModelRequest`` in vLLM's terms: the keyword arguments of ``SamplingParams``, and logprobs back.

vLLM enforces structured output itself (xgrammar or llguidance inside the engine, batched on the GPU).
Since vLLM 0.11 the constraint is ``SamplingParams(structured_outputs=StructuredOutputsParams(...))``;
from 0.6.3 to 0.10 it was ``SamplingParams(guided_decoding=GuidedDecodingParams(...))`` with the
same fields. ``sampling_kwargs`` takes vLLM's ``sampling_params`` module and uses whichever class it
has, so it is tested without vLLM installed.

The layer above (``datapilot.models.structured``) hands this backend a JSON schema both as
``response_format`` and compiled to a GBNF ``grammar``: the schema goes to vLLM as it is (its JSON
path is the fastest), the grammar only when there is no schema (``grammar`` requests and tool calls
with ``tool_choice: auto``, whose grammar admits plain text too).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from datapilot.core.errors import InvalidRequestError
from datapilot.core.types import ModelRequest, TokenLogprob, TopLogprob

# OpenAI's stand-in for a log-probability of minus infinity.
_FLOOR = -9999.0


def structured_spec(request: ModelRequest) -> dict[str, Any] | None:
    """The one constraint of ``StructuredOutputsParams`` (or ``GuidedDecodingParams``) this request
    asks for, or None."""
    fmt = request.response_format
    if fmt is not None and fmt.type == "json_schema" and fmt.schema:
        return {"json": fmt.schema}
    if fmt is not None and fmt.type in ("json_object", "json_schema"):
        return {"json_object": True}
    if request.grammar is not None:
        return {"grammar": request.grammar}
    return None


def sampling_kwargs(request: ModelRequest, sampling_params: Any) -> dict[str, Any]:
    """Keyword arguments for ``sampling_params.SamplingParams`` (``sampling_params`` is vLLM's module)."""
    p = request.params
    kwargs: dict[str, Any] = {
        "max_tokens": p.max_tokens or 512,
        "temperature": p.temperature,
        "top_p": p.top_p,
        "top_k": p.top_k if p.top_k > 0 else -1,
        "seed": p.seed,
        "presence_penalty": p.presence_penalty,
        "frequency_penalty": p.frequency_penalty,
        "repetition_penalty": p.repeat_penalty,
    }
    if request.logprobs:
        # vLLM returns the sampled token's logprob and this many alternatives at each step.
        kwargs["logprobs"] = request.top_logprobs
    spec = structured_spec(request)
    if spec is None:
        return kwargs
    if hasattr(sampling_params, "StructuredOutputsParams"):
        kwargs["structured_outputs"] = sampling_params.StructuredOutputsParams(**spec)
    elif hasattr(sampling_params, "GuidedDecodingParams"):
        kwargs["guided_decoding"] = sampling_params.GuidedDecodingParams(**spec)
    else:
        raise InvalidRequestError(
            "this vLLM cannot enforce structured output: upgrade it to 0.6.3 or later",
            param="grammar" if "grammar" in spec else "response_format",
        )
    return kwargs


def _finite(value: float) -> float:
    return value if value > float("-inf") else _FLOOR


def _piece(entry: Any) -> tuple[str, list[int]]:
    text = entry.decoded_token or ""
    return text, list(text.encode("utf-8"))


def token_logprob(step: Mapping[int, Any], token: int, top: int) -> TokenLogprob:
    """One position of vLLM's ``CompletionOutput.logprobs`` (token id to ``Logprob(logprob, rank,
    decoded_token)``: the ``top`` most likely, and the sampled token when it is not among them)."""
    chosen = step[token]
    ranked = sorted(step.items(), key=lambda kv: kv[1].rank if kv[1].rank is not None else 1 << 30)[:top]
    alternatives = []
    for _, entry in ranked:
        alt_text, alt_raw = _piece(entry)
        alternatives.append(TopLogprob(alt_text, _finite(float(entry.logprob)), alt_raw))
    text, raw = _piece(chosen)
    return TokenLogprob(text, _finite(float(chosen.logprob)), raw, tuple(alternatives))
