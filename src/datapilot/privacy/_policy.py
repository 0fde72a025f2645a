"""Per-model privacy policies, applied to requests and answers on the serving path.

``mask``: detected values are replaced by placeholders before the request leaves, and put back in the
answer (whole or streamed). ``block``: a request with personal data is refused (``PiiBlockedError``, a
400 naming the kinds found, never the values). ``off``: sent as it is.

Default: ``mask`` for backends that send requests to a remote endpoint (``openai_compat``), ``off``
for models that run here; a model's ``privacy`` setting overrides it.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal, get_args

from datapilot.core.audit import audit_append
from datapilot.core.config import ModelConfig
from datapilot.core.errors import InvalidRequestError
from datapilot.core.types import ModelChunk, ModelOutput, ModelRequest, ToolCall, ToolCallDelta
from datapilot.privacy._detect import KINDS, detect
from datapilot.privacy._mask import Masker, StreamRestorer, json_escape

log = logging.getLogger("datapilot.privacy")

Policy = Literal["mask", "block", "off"]
POLICIES: tuple[str, ...] = get_args(Policy)
# Backends whose requests leave this deployment.
REMOTE_BACKENDS = frozenset({"openai_compat"})


def policy_for(config: ModelConfig) -> Policy:
    """The model's ``privacy`` setting, else ``mask`` for a remote backend and ``off`` for a local one."""
    if config.privacy is not None:
        return config.privacy
    return "mask" if config.backend in REMOTE_BACKENDS else "off"


class PiiBlockedError(InvalidRequestError):
    """A request with personal data, to a model whose policy is ``block``."""

    default_code = "pii_blocked"


@dataclass(slots=True, frozen=True)
class PrivacyReport:
    """What one request had masked (or was refused for): kinds and counts, never values.

    ``counts``: occurrences per kind; ``distinct``: how many different values (placeholders) per kind.
    """

    model: str
    request_id: str
    operation: str  # chat, completion, embedding, rerank
    policy: Policy
    counts: dict[str, int] = field(default_factory=dict)
    distinct: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        return " ".join(f"{k}={n}" for k, n in sorted(self.counts.items())) or "nothing"

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


ReportSink = Callable[[PrivacyReport], None]


class RequestPrivacy:
    """The policy of one model applied to one request: mask (or refuse) what goes out, restore what
    comes back, and report what was found to ``sink`` (and the log, at INFO: kinds and counts only)."""

    def __init__(
        self,
        model: str,
        policy: Policy,
        request_id: str = "",
        operation: str = "chat",
        sink: ReportSink | None = None,
        kinds: Iterable[str] | None = None,
        quiet: bool = False,
    ) -> None:
        """``quiet``: report nothing (log, audit, sink): for a second masking of a request whose model
        call reports its own (the semantic cache's key)."""
        self.model, self.policy, self.request_id, self.operation = model, policy, request_id, operation
        self.masker = Masker(kinds)
        self.sink = sink
        self.quiet = quiet
        self.report: PrivacyReport | None = None

    @property
    def active(self) -> bool:
        return self.policy != "off"

    def _texts(self, texts: list[str], param: str) -> list[str]:
        """Mask ``texts`` (or refuse them, under ``block``) and report what was found."""
        if self.policy == "off":
            return texts
        self.masker.reserve(texts)
        if self.policy == "block":
            found = [s for t in texts for s in self.masker.find(t)]
            if found:
                self.masker.counts.update(s.kind for s in found)
                kinds = sorted(self.masker.counts, key=KINDS.index)
                self._finish()
                raise PiiBlockedError(
                    f"the request contains personal data ({', '.join(kinds)}) and model {self.model!r} refuses "
                    f'it (privacy = "block"); remove it, or use a model whose privacy policy masks it',
                    param=param,
                )
            return texts
        out = [self.masker.mask(t) for t in texts]
        self._finish()
        return out

    def _finish(self) -> None:
        if not self.masker.counts or self.quiet:
            return
        self.report = PrivacyReport(
            self.model, self.request_id, self.operation, self.policy, dict(self.masker.counts), self.masker.distinct
        )
        action = "blocked" if self.policy == "block" else "masked"
        log.info(
            "privacy: %s %s request %s to model %s: %s",
            action,
            self.operation,
            self.request_id,
            self.model,
            self.report.summary(),
        )
        # The audit log's record of this request: kinds and counts, never values (datapilot.core.audit).
        entry = {"model": self.model, "operation": self.operation, "action": action, "counts": self.report.counts}
        audit_append("privacy", entry)
        if self.sink is not None:
            self.sink(self.report)

    # --- requests ----------------------------------------------------------------------------------

    def request(self, request: ModelRequest) -> ModelRequest:
        """The request to send: its messages (content and tool-call arguments) or prompt masked."""
        if self.policy == "off":
            return request
        if request.messages is not None:
            texts = [m.content for m in request.messages]
            args = [c.arguments for m in request.messages for c in m.tool_calls]
            masked = self._texts(texts + args, "messages")
            if masked == texts + args:
                return request  # nothing found
            contents, arguments = iter(masked[: len(texts)]), iter(masked[len(texts) :])
            messages = [
                dataclasses.replace(
                    m,
                    content=next(contents),
                    tool_calls=tuple(dataclasses.replace(c, arguments=next(arguments)) for c in m.tool_calls),
                )
                for m in request.messages
            ]
            return dataclasses.replace(request, messages=messages)
        if request.prompt is not None:
            prompt = self._texts([request.prompt], "prompt")[0]
            return request if prompt == request.prompt else dataclasses.replace(request, prompt=prompt)
        return request

    def texts(self, texts: list[str], param: str = "input") -> list[str]:
        """Embedding inputs, or a rerank query and its documents, masked together."""
        return self._texts(texts, param)

    # --- answers -----------------------------------------------------------------------------------

    def output(self, out: ModelOutput) -> ModelOutput:
        """A whole answer with the placeholders put back."""
        if not self.masker.masked:
            return out
        out.text = self.masker.restore(out.text)
        out.tool_calls = [ToolCall(c.id, c.name, self.masker.restore(c.arguments, json_escape)) for c in out.tool_calls]
        return out

    def stream(self, chunks: AsyncIterator[ModelChunk]) -> AsyncIterator[ModelChunk]:
        """The answer's chunks with the placeholders put back, even one split across chunks."""
        if not self.masker.masked:
            return chunks
        return _restore_stream(self.masker, chunks)


async def _restore_stream(masker: Masker, chunks: AsyncIterator[ModelChunk]) -> AsyncIterator[ModelChunk]:
    text = masker.restorer()
    calls: dict[int, StreamRestorer] = {}
    try:
        async for chunk in chunks:
            chunk.text = text.feed(chunk.text)
            if chunk.tool_calls:
                chunk.tool_calls = [
                    dataclasses.replace(
                        d, arguments=calls.setdefault(d.index, masker.restorer(json_escape)).feed(d.arguments)
                    )
                    for d in chunk.tool_calls
                ]
            if chunk.finish_reason is not None:
                chunk.text += text.flush()
                rest = [ToolCallDelta(i, arguments=r.flush()) for i, r in calls.items() if r.held]
                if rest:
                    chunk.tool_calls = [*(chunk.tool_calls or []), *rest]
            elif not chunk.has_content and not chunk.logprobs and chunk.usage is None:
                continue  # everything in it is held back, for now
            yield chunk
        # A stream that ended without a finishing chunk still gets what was held.
        held = text.flush()
        if held:
            yield ModelChunk(held)
    finally:
        close = getattr(chunks, "aclose", None)
        if close is not None:
            await close()


def find_kinds(text: str) -> list[str]:
    """The kinds of personal data in ``text``, in ``KINDS`` order."""
    return sorted({s.kind for s in detect(text)}, key=KINDS.index)
