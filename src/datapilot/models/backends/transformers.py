"""Hugging Face ``transformers`` backend: any local causal-LM folder, on CPU or GPU.

Chat requests use the tokenizer's chat template when it has one, otherwise the few-shot dialogue.
Generation runs in the backend's own thread and streams token by token through
``TextIteratorStreamer``; a stopping criterion ends it when the request is cancelled.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from datapilot.core.errors import ContextLengthExceededError, MissingDependencyError, ModelNotReadyError
from datapilot.core.types import FinishReason, ModelChunk, ModelRequest, Usage
from datapilot.models._threaded import Emit, stream_from_thread
from datapilot.models.backend import CHAT, COMPLETION, ModelBackend
from datapilot.models.backends.sentence_transformers import _offline
from datapilot.models.prompt import FormattedPrompt, StopFilter, format_chat


class TransformersBackend(ModelBackend):
    capabilities = frozenset({CHAT, COMPLETION})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._model: Any = None
        self._tokenizer: Any = None
        self._torch: Any = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"hf-{self.config.name}")

    @property
    def context_length(self) -> int | None:
        if self._model is None:
            return None
        cfg: Any = self._model.config
        return int(getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None) or 2048)

    async def load(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._load_sync)

    def _load_sync(self) -> None:
        _offline()
        try:
            import torch
            import transformers
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError:
            raise MissingDependencyError("transformers", "hf") from None
        transformers.logging.disable_progress_bar()
        if self.model_path is None or not self.model_path.is_dir():
            raise ModelNotReadyError(f"model folder not found: {self.model_path}; set `path` for this model")
        params = self.config.params
        device = params.get("device") or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = getattr(torch, params["dtype"]) if "dtype" in params else None
        self._tokenizer = AutoTokenizer.from_pretrained(str(self.model_path), local_files_only=True)
        model: Any = AutoModelForCausalLM.from_pretrained(str(self.model_path), local_files_only=True, dtype=dtype)
        self._model = model.to(device).eval()
        self._torch = torch

    async def close(self) -> None:
        self._model = self._tokenizer = None
        self._executor.shutdown(wait=False)

    def format(self, request: ModelRequest) -> FormattedPrompt:
        return format_chat(self._tokenizer, request)

    def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        if self._model is None:
            raise ModelNotReadyError(f"model {self.config.name!r} is not loaded")
        prompt = self.format(request)
        return stream_from_thread(self._executor, lambda emit, cancel: self._run(request, prompt, emit, cancel))

    def _run(self, request: ModelRequest, prompt: FormattedPrompt, emit: Emit, cancel: threading.Event) -> None:
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

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
        generated = [0]

        class _Watch(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kw: Any) -> bool:
                generated[0] = int(input_ids.shape[1]) - n_prompt
                return cancel.is_set()

        streamer = TextIteratorStreamer(tok, skip_prompt=True, skip_special_tokens=True)
        if p.seed is not None:
            torch.manual_seed(p.seed)
        sample = p.temperature > 0
        kwargs: dict[str, Any] = {
            **inputs,
            "max_new_tokens": max_new,
            "do_sample": sample,
            "streamer": streamer,
            "stopping_criteria": StoppingCriteriaList([_Watch()]),
            "pad_token_id": tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
        }
        if sample:
            kwargs.update(temperature=p.temperature, top_p=p.top_p, top_k=p.top_k)
        failure: list[BaseException] = []

        def generate() -> None:
            try:
                with torch.inference_mode():
                    model.generate(**kwargs)
            except BaseException as exc:  # re-raised below, in the streaming thread
                failure.append(exc)
                streamer.end()

        thread = threading.Thread(target=generate, daemon=True)
        thread.start()
        stops = StopFilter([*prompt.stop, *p.stop])
        lead = prompt.strip_leading_space
        for piece in streamer:
            text = stops.feed(piece)
            if lead and text:
                text, lead = text.lstrip(), False
            if text:
                emit(ModelChunk(text))
            if stops.stopped:
                cancel.set()
                break
        thread.join()
        if failure:
            raise failure[0]
        finish: FinishReason = "cancelled" if cancel.is_set() and not stops.stopped else "stop"
        if stops.stopped:
            finish = "stop"
        elif generated[0] >= max_new:
            finish = "length"
        emit(ModelChunk(stops.flush(), finish_reason=finish, usage=Usage(n_prompt, generated[0])))
