"""Chunkers: a loaded document to chunks, registered by strategy name.

* ``size``: windows of at most ``chunk_size`` tokens sharing ``chunk_overlap`` tokens, ending at a
  paragraph or sentence break when one is near the end of the window;
* ``paragraph``: whole paragraphs packed together up to ``chunk_size`` tokens;
* ``separator``: one chunk per piece between ``separator`` strings;
* ``markdown``: one chunk per markdown header section.

A chunk never crosses a page or section boundary, and a piece over ``chunk_size`` tokens is always
cut by size, so no strategy makes a chunk the embedder would have to truncate. Tokens are words and
punctuation marks (CJK characters one each): close to a word-piece tokenizer's count, at no cost.
Every chunk keeps its character offsets into the document's text.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import partial

from datapilot.core.errors import InvalidRequestError
from datapilot.core.registry import Registry
from datapilot.rag._config import ChunkingConfig
from datapilot.rag._loaders import markdown_sections
from datapilot.rag._types import ChunkDraft, LoadedDocument, Segment

_TOKEN = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]|\w+|[^\w\s]")
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n\s*")
_SENTENCE_END = {".", "!", "?", "\u3002", "\uff01", "\uff1f"}

Chunker = Callable[[LoadedDocument, ChunkingConfig], list[ChunkDraft]]
_CHUNKERS: Registry[Chunker] = Registry(
    "chunking strategy", error=partial(InvalidRequestError, param="chunking.strategy")
)


def register_chunker(name: str, *, replace: bool = False) -> Callable[[Chunker], Chunker]:
    def deco(fn: Chunker) -> Chunker:
        _CHUNKERS.register(name, fn, replace=replace)
        return fn

    return deco


def chunker_names() -> list[str]:
    return _CHUNKERS.names()


def check_chunking(config: ChunkingConfig) -> ChunkingConfig:
    _CHUNKERS.get(config.strategy)  # an unknown strategy: a 400 naming the known ones
    if config.chunk_overlap >= config.chunk_size:
        raise InvalidRequestError("chunk_overlap must be smaller than chunk_size", param="chunking.chunk_overlap")
    return config


def chunk_document(doc: LoadedDocument, config: ChunkingConfig) -> list[ChunkDraft]:
    return _CHUNKERS.get(check_chunking(config).strategy)(doc, config)


def count_tokens(text: str) -> int:
    return sum(1 for _ in _TOKEN.finditer(text))


def _draft(text: str, start: int, end: int, seg: Segment, section: str | None = None) -> ChunkDraft | None:
    # Trim whitespace but keep offsets exact.
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    if start >= end:
        return None
    return ChunkDraft(text[start:end], start, end, seg.page, section if section is not None else seg.section)


def _break_at(text: str, tokens: list[tuple[int, int]], lo: int, hi: int) -> int:
    """The best token index in (lo, hi] to end a window before: a paragraph, then a sentence, then a line."""
    best_sentence = best_line = -1
    for t in range(hi, lo, -1):
        gap = text[tokens[t - 1][1] : tokens[t][0]]
        if "\n\n" in gap or _PARAGRAPH_BREAK.search(gap):
            return t
        if best_sentence < 0 and text[tokens[t - 1][0] : tokens[t - 1][1]] in _SENTENCE_END and gap:
            best_sentence = t
        if best_line < 0 and "\n" in gap:
            best_line = t
    return best_sentence if best_sentence > 0 else best_line if best_line > 0 else hi


def split_by_size(
    text: str, start: int, end: int, seg: Segment, size: int, overlap: int, section: str | None = None
) -> list[ChunkDraft]:
    tokens = [(m.start(), m.end()) for m in _TOKEN.finditer(text, start, end)]
    if len(tokens) <= size:
        one = _draft(text, start, end, seg, section)
        return [one] if one else []
    out: list[ChunkDraft] = []
    i, n = 0, len(tokens)
    while i < n:
        j = min(i + size, n)
        if j < n:
            j = _break_at(text, tokens, i + max(size * 3 // 5, 1), j)
        piece = _draft(text, tokens[i][0], tokens[j - 1][1], seg, section)
        if piece:
            out.append(piece)
        if j >= n:
            break
        i = max(j - overlap, i + 1)
    return out


def _units(text: str, start: int, end: int, pattern: re.Pattern[str] | str) -> list[tuple[int, int]]:
    """Spans of ``text[start:end]`` between matches of ``pattern`` (a regex or a literal separator)."""
    spans: list[tuple[int, int]] = []
    pos = start
    if isinstance(pattern, str):
        while True:
            k = text.find(pattern, pos, end)
            if k < 0:
                break
            spans.append((pos, k))
            pos = k + len(pattern)
    else:
        for m in pattern.finditer(text, start, end):
            spans.append((pos, m.start()))
            pos = m.end()
    spans.append((pos, end))
    return [(s, e) for s, e in spans if text[s:e].strip()]


def _pack(
    text: str, units: list[tuple[int, int]], seg: Segment, config: ChunkingConfig, section: str | None = None
) -> list[ChunkDraft]:
    """Consecutive units joined while they fit in ``chunk_size`` tokens; a unit too big alone is cut by size."""
    out: list[ChunkDraft] = []
    run_start, run_end, run_tokens = -1, -1, 0

    def flush() -> None:
        if run_start >= 0:
            piece = _draft(text, run_start, run_end, seg, section)
            if piece:
                out.append(piece)

    for s, e in units:
        n = count_tokens(text[s:e])
        if n > config.chunk_size:
            flush()
            run_start, run_tokens = -1, 0
            out.extend(split_by_size(text, s, e, seg, config.chunk_size, config.chunk_overlap, section))
            continue
        if run_start >= 0 and run_tokens + n <= config.chunk_size:
            run_end, run_tokens = e, run_tokens + n
            continue
        flush()
        run_start, run_end, run_tokens = s, e, n
    flush()
    return out


@register_chunker("size")
def chunk_by_size(doc: LoadedDocument, config: ChunkingConfig) -> list[ChunkDraft]:
    out: list[ChunkDraft] = []
    for seg in doc.segments:
        out.extend(split_by_size(doc.text, seg.start, seg.end, seg, config.chunk_size, config.chunk_overlap))
    return out


@register_chunker("paragraph")
def chunk_by_paragraph(doc: LoadedDocument, config: ChunkingConfig) -> list[ChunkDraft]:
    out: list[ChunkDraft] = []
    for seg in doc.segments:
        out.extend(_pack(doc.text, _units(doc.text, seg.start, seg.end, _PARAGRAPH_BREAK), seg, config))
    return out


@register_chunker("separator")
def chunk_by_separator(doc: LoadedDocument, config: ChunkingConfig) -> list[ChunkDraft]:
    out: list[ChunkDraft] = []
    for seg in doc.segments:
        for s, e in _units(doc.text, seg.start, seg.end, config.separator):
            out.extend(split_by_size(doc.text, s, e, seg, config.chunk_size, config.chunk_overlap))
    return out


@register_chunker("markdown")
def chunk_by_markdown(doc: LoadedDocument, config: ChunkingConfig) -> list[ChunkDraft]:
    out: list[ChunkDraft] = []
    for seg in doc.segments:
        # Loaders of structured formats (md, html, docx) already cut at headers; in other text, find them.
        subs = [seg] if seg.section else markdown_sections(doc.text[seg.start : seg.end], seg.start, seg.page)
        for sub in subs:
            units = _units(doc.text, sub.start, sub.end, _PARAGRAPH_BREAK)
            out.extend(_pack(doc.text, units, seg, config, sub.section))
    return out
