"""Placeholders for detected values, stable within one request, and their restoration (whole texts and
streams).

A value becomes ``<LABEL_N>``: ``<EMAIL_1>``, ``<PHONE_2>``, ``<IDCARD_1>``, ``<CARD_1>``, ``<IP_1>``,
``<NAME_1>``. The same value (exact text) always gets the same placeholder within one ``Masker``; a
placeholder that already appears literally in the request is never handed out, so restoring cannot
turn the user's own text into someone's data.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Iterable

from datapilot.privacy._detect import BANK_CARD, CN_ID, EMAIL, IPV4, IPV6, PERSON, PHONE, Span, detect

LABELS: dict[str, str] = {
    EMAIL: "EMAIL",
    PHONE: "PHONE",
    CN_ID: "IDCARD",
    BANK_CARD: "CARD",
    IPV4: "IP",
    IPV6: "IP",
    PERSON: "NAME",
}
PLACEHOLDER = re.compile(r"<([A-Z]+)_([0-9]+)>")


def json_escape(value: str) -> str:
    """``value`` as it is written inside a JSON string (for placeholders restored in tool-call arguments)."""
    return json.dumps(value, ensure_ascii=False)[1:-1]


class Masker:
    """Masks the personal data of one request and restores it in the answer.

    ``kinds`` limits detection (default: every kind); ``detector`` replaces ``detect`` (a seam for tests
    and for an external detector returning the same ``Span``s).
    """

    def __init__(
        self,
        kinds: Iterable[str] | None = None,
        detector: Callable[[str], list[Span]] | None = None,
    ) -> None:
        self._kinds = tuple(kinds) if kinds is not None else None
        self._detector = detector
        self._by_value: dict[tuple[str, str], str] = {}
        self._values: dict[str, str] = {}  # placeholder -> value
        self._next: Counter[str] = Counter()
        self._reserved: set[str] = set()
        self.counts: Counter[str] = Counter()  # occurrences masked, per kind

    def reserve(self, texts: Iterable[str]) -> None:
        """Never hand out a placeholder that appears literally in ``texts`` (call before ``mask``)."""
        for text in texts:
            if "<" in text:
                self._reserved.update(m.group() for m in PLACEHOLDER.finditer(text))

    def find(self, text: str) -> list[Span]:
        return self._detector(text) if self._detector is not None else detect(text, self._kinds)

    def placeholder(self, kind: str, value: str) -> str:
        """The placeholder of ``value`` (a new one the first time it is seen)."""
        key = (kind, value)
        found = self._by_value.get(key)
        if found is None:
            label = LABELS.get(kind, kind.upper().replace("_", ""))
            while True:
                self._next[label] += 1
                found = f"<{label}_{self._next[label]}>"
                if found not in self._reserved:
                    break
            self._by_value[key] = found
            self._values[found] = value
        return found

    def mask(self, text: str) -> str:
        """``text`` with every detected value replaced by its placeholder."""
        spans = self.find(text)
        if not spans:
            return text
        out: list[str] = []
        at = 0
        for span in spans:
            out += (text[at : span.start], self.placeholder(span.kind, span.value))
            at = span.end
            self.counts[span.kind] += 1
        out.append(text[at:])
        return "".join(out)

    @property
    def mapping(self) -> dict[str, str]:
        """Placeholder -> original value (kept in memory for this request only; never log it)."""
        return dict(self._values)

    @property
    def distinct(self) -> dict[str, int]:
        """How many different values were given a placeholder, per kind."""
        return dict(Counter(kind for kind, _ in self._by_value))

    @property
    def masked(self) -> bool:
        return bool(self._values)

    def restore(self, text: str, escape: Callable[[str], str] | None = None) -> str:
        """``text`` with this masker's placeholders put back (others are left as they are); ``escape``
        encodes each value for where it lands (``json_escape`` inside JSON strings)."""
        if not self._values or "<" not in text:
            return text

        def put(m: re.Match[str]) -> str:
            value = self._values.get(m.group())
            if value is None:
                return m.group()
            return escape(value) if escape is not None else value

        return PLACEHOLDER.sub(put, text)

    def restorer(self, escape: Callable[[str], str] | None = None) -> StreamRestorer:
        return StreamRestorer(self, escape)


class StreamRestorer:
    """Restores placeholders in a stream of text pieces. A placeholder may be split across pieces: the
    end of a piece that could still become one of this masker's placeholders is held back (never more
    than that), and put out with the next piece or by ``flush``."""

    def __init__(self, masker: Masker, escape: Callable[[str], str] | None = None) -> None:
        self._masker = masker
        self._escape = escape
        placeholders = list(masker.mapping)
        self._prefixes = frozenset(p[:i] for p in placeholders for i in range(1, len(p)))
        self._longest = max(map(len, placeholders), default=0)
        self._held = ""

    @property
    def held(self) -> str:
        return self._held

    def feed(self, piece: str) -> str:
        if not self._prefixes:
            return piece
        buf = self._held + piece
        # Only the last "<" can open a partial placeholder: a placeholder has no other "<" in it.
        cut = buf.rfind("<", max(0, len(buf) - self._longest + 1))
        if cut != -1 and buf[cut:] in self._prefixes:
            buf, self._held = buf[:cut], buf[cut:]
        else:
            self._held = ""
        return self._masker.restore(buf, self._escape)

    def flush(self) -> str:
        rest, self._held = self._held, ""
        return self._masker.restore(rest, self._escape)
