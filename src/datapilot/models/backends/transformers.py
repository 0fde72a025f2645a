"""Hugging Face ``transformers`` backend: any local causal-LM folder, on CPU or GPU.

Chat requests use the tokenizer's chat template when it has one, otherwise the few-shot dialogue.
Generation runs in the backend's own thread; a stopping criterion, called after every sampled token,
decodes and emits it (with its logprobs when asked) and ends generation when the request is
cancelled, a stop string appears or the grammar is complete. Grammars (GBNF, ``request.grammar``)
are enforced through llguidance: see ``_hf_guide``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from datapilot.core.errors import (
    ContextLengthExceededError,
    DataPilotError,
    MissingDependencyError,
    ModelNotReadyError,
)
from datapilot.core.types import FinishReason, ModelChunk, ModelRequest, Usage
from datapilot.models._threaded import Emit, stream_from_thread
from datapilot.models.backend import CHAT, COMPLETION, ThreadedBackend
from datapilot.models.backends.sentence_transformers import _offline
from datapilot.models.prompt import FormattedPrompt, StopFilter, format_chat
from datapilot.models.structured import GRAMMAR, LOGPROBS

# transformers builds a model on the meta device through process-wide state: two models loading at once
# in two threads (a config with two transformers models starts both together) break each other with
# "Cannot copy out of meta tensor".
_LOADING = threading.Lock()


def _llguidance_installed() -> bool:
    return importlib.util.find_spec("llguidance") is not None


class TransformersBackend(ThreadedBackend):
    # Grammars need llguidance (in the ``hf`` extra); without it the layer above refuses them with a 400.
    capabilities = frozenset({CHAT, COMPLETION, LOGPROBS, *([GRAMMAR] if _llguidance_installed() else [])})
    thread_prefix = "hf"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._model: Any = None
        self._tokenizer: Any = None
        self._torch: Any = None
        self._table: Any = None

    @property
    def context_length(self) -> int | None:
        if self._model is None:
            return None
        cfg: Any = self._model.config
        return int(getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None) or 2048)

    def _load_sync(self) -> None:
        _offline()
        try:
            import torch
            import transformers
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError:
            raise MissingDependencyError("transformers", "hf") from None
        transformers.logging.disable_progress_bar()
        folder = self.model_folder()
        params = self.config.params
        device = params.get("device") or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = getattr(torch, params["dtype"]) if "dtype" in params else None
        with _LOADING:
            self._tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
            model: Any = AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True, dtype=dtype)
            self._model = model.to(device).eval()
        self._torch = torch

    async def close(self) -> None:
        self._model = self._tokenizer = self._table = None
        self._executor.shutdown(wait=False)

    def format(self, request: ModelRequest) -> FormattedPrompt:
        return format_chat(self._tokenizer, request)

    def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        if self._model is None:
            raise ModelNotReadyError(f"model {self.config.name!r} is not loaded")
        prompt = self.format(request)
        return stream_from_thread(self._executor, lambda emit, cancel: self._run(request, prompt, emit, cancel))

    def _token_table(self) -> Any:
        """llguidance's view of the vocabulary, built on the first request that needs it (or the reason
        this tokenizer cannot have one, kept too, so that it is not tried again on every request)."""
        if self._table is None:
            from datapilot.models.backends._hf_guide import TokenTable

            try:
                self._table = TokenTable(self._tokenizer, self._model)
            except DataPilotError as exc:
                self._table = exc
        if isinstance(self._table, DataPilotError):
            raise self._table
        return self._table

    def _run(self, request: ModelRequest, prompt: FormattedPrompt, emit: Emit, cancel: threading.Event) -> None:
        from transformers import LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

        from datapilot.models.backends._hf_guide import (
            Constraint,
            LogprobRecorder,
            StepProcessor,
            TextDecoder,
            eos_ids,
        )

        torch, tok, model = self._torch, self._tokenizer, self._model
        p = request.params
        inputs = tok(prompt.text, return_tensors="pt", add_special_tokens=prompt.add_bos).to(model.device)
        n_prompt = int(inputs["input_ids"].shape[1])
        room = (self.context_length or 2048) - n_prompt
        if room < 1 or (p.max_tokens is not None and p.max_tokens > room):
            raise ContextLengthExceededError(
                f"this model's maximum context length is {self.context_length} tokens; the prompt has "
                f"{n_prompt} tokens and max_tokens asks for {p.max_tokens or 'at least 1'} more",
                param="max_tokens",
            )
        max_new = p.max_tokens or min(room, 512)
        constraint = Constraint(self._token_table(), request.grammar) if request.grammar is not None else None
        recorder = None
        if request.logprobs:
            table = None
            if _llguidance_installed():
                # Exact token bytes where llguidance reads this tokenizer; decoded text otherwise.
                with contextlib.suppress(DataPilotError):
                    table = self._token_table()
            recorder = LogprobRecorder(tok, table, request.top_logprobs)
        step = StepProcessor(constraint, record=recorder is not None)
        decoder = TextDecoder(tok)
        stops = StopFilter([*prompt.stop, *p.stop])
        eos = set(eos_ids(tok, model))
        state = _Progress(lead=prompt.strip_leading_space)

        class _Step(StoppingCriteria):
            """Runs after each sampled token: advances the grammar, emits text and logprobs, and decides
            whether generation ends here (cancelled, a stop string, or the grammar complete)."""

            def __call__(self, input_ids: Any, scores: Any, **kw: Any) -> Any:
                token = int(input_ids[0, -1])
                state.generated = int(input_ids.shape[1]) - n_prompt
                state.eos = token in eos
                if constraint is not None:
                    constraint.consume(token)
                logprobs = None
                if recorder is not None and step.last is not None and not state.eos:
                    logprobs = [recorder.entry(step.last, token)]
                text = stops.feed(decoder.feed(token))
                if state.lead and text:
                    # The transcript prompt ends in "Assistant:"; the answer's leading space is not content.
                    text = text.lstrip()
                    state.lead = not text
                if text or logprobs:
                    emit(ModelChunk(text, logprobs=logprobs))
                state.complete = constraint is not None and constraint.finished
                done = cancel.is_set() or stops.stopped or state.complete
                return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)

        if p.seed is not None:
            torch.manual_seed(p.seed)
        sample = p.temperature > 0
        kwargs: dict[str, Any] = {
            **inputs,
            "max_new_tokens": max_new,
            "do_sample": sample,
            "stopping_criteria": StoppingCriteriaList([_Step()]),
            "pad_token_id": tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
        }
        if constraint is not None or recorder is not None:
            kwargs["logits_processor"] = LogitsProcessorList([step])
        if sample:
            kwargs.update(temperature=p.temperature, top_p=p.top_p, top_k=p.top_k)
        with torch.inference_mode():
            model.generate(**kwargs)
        finish: FinishReason = "stop"
        if stops.stopped or state.complete or state.eos:
            finish = "stop"
        elif cancel.is_set():
            finish = "cancelled"
        elif state.generated >= max_new:
            finish = "length"
        tail = stops.feed(decoder.flush())
        if state.lead:
            tail = tail.lstrip()
        emit(ModelChunk(tail + stops.flush(), finish_reason=finish, usage=Usage(n_prompt, state.generated)))


@dataclass
class _Progress:
    lead: bool
    generated: int = 0
    eos: bool = False
    complete: bool = False
