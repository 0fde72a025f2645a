"""Loaders: bytes of a file to text with page and section spans, registered by file extension.

Built in: txt, md, pdf, docx, html, csv, json/jsonl. Every loader works on bytes, so an upload and a
file on disk take the same path. Too-large and unknown-type files are refused with a clear error
before any parsing; a file that fails to parse raises ``DocumentParseError`` naming the file.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from datapilot.core.errors import MissingDependencyError
from datapilot.core.registry import Registry
from datapilot.rag._errors import DocumentParseError, FileTooLargeError, UnsupportedFileError
from datapilot.rag._types import LoadedDocument, Segment

Loader = Callable[[bytes, str], LoadedDocument]
_LOADERS: Registry[tuple[str, Loader]] = Registry("file extension", error=UnsupportedFileError)  # -> (kind, loader)


def register_loader(extensions: list[str] | str, kind: str, *, replace: bool = False) -> Callable[[Loader], Loader]:
    """Decorator: files ending in any of ``extensions`` (".md") are read by the function as ``kind``."""

    def deco(fn: Loader) -> Loader:
        entry = (kind, fn)
        for ext in [extensions] if isinstance(extensions, str) else extensions:
            _LOADERS.register(ext.lower(), entry, replace=replace)
        return fn

    return deco


def supported_extensions() -> list[str]:
    return _LOADERS.names()


def _extension(name: str) -> str:
    return Path(name).suffix.lower()


def is_supported(name: str) -> bool:
    return _extension(name) in _LOADERS


def check_size(name: str, size: int, max_bytes: int) -> None:
    if size > max_bytes:
        raise FileTooLargeError(
            f"{name}: {size:,} bytes is over the limit of {max_bytes:,} bytes per file (knowledge.max_file_bytes)"
        )


def kind_of(name: str) -> str:
    if _extension(name) not in _LOADERS:
        raise UnsupportedFileError(
            f"{name}: unsupported file type {_extension(name) or '(no extension)'!r}; "
            f"supported: {', '.join(supported_extensions())}"
        )
    return _LOADERS.get(_extension(name))[0]


def load_bytes(name: str, data: bytes, max_bytes: int) -> LoadedDocument:
    """Parse ``data`` as the file ``name``; the extension chooses the loader."""
    kind_of(name)
    check_size(name, len(data), max_bytes)
    kind, loader = _LOADERS.get(_extension(name))
    try:
        doc = loader(data, name)
    except (DocumentParseError, MissingDependencyError):
        raise
    except Exception as exc:
        raise DocumentParseError(f"{name}: could not be read as {kind}: {type(exc).__name__}: {exc}") from None
    if not doc.text.strip():
        raise DocumentParseError(f"{name}: no text found in the {kind} file")
    return doc


def discover(folder: Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Files under ``folder`` (recursively, hidden ones skipped) a loader reads, and the others with why."""
    found: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts) or not path.is_file():
            continue
        if is_supported(path.name):
            found.append(path)
        else:
            skipped.append((path, f"unsupported file type {path.suffix or '(no extension)'!r}"))
    return found, skipped


# text helpers ----------------------------------------------------------------------------------------


def decode_text(data: bytes) -> str:
    for encoding in ("utf-8-sig", "utf-16") if data[:2] in (b"\xff\xfe", b"\xfe\xff") else ("utf-8-sig",):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1")


_HEADER = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$")
_FENCE = re.compile(r"^(```|~~~)")


def markdown_sections(text: str, base: int = 0, page: int | None = None) -> list[Segment]:
    """Spans of ``text`` from one ATX header to the next (headers inside code fences do not count),
    each with its header path ("Guide > Install"); text before the first header has no section."""
    segments: list[Segment] = []
    path: list[tuple[int, str]] = []
    start, section = 0, None
    in_fence = False
    offset = 0
    for line in text.splitlines(keepends=True):
        stripped = line.strip()
        if _FENCE.match(stripped):
            in_fence = not in_fence
        m = None if in_fence else _HEADER.match(stripped)
        if m:
            if text[start:offset].strip():
                segments.append(Segment(base + start, base + offset, page, section))
            level = len(m.group(1))
            path = [(lvl, title) for lvl, title in path if lvl < level] + [(level, m.group(2).strip())]
            section = " > ".join(title for _, title in path)
            start = offset
        offset += len(line)
    if text[start:].strip():
        segments.append(Segment(base + start, base + len(text), page, section))
    return segments or [Segment(base, base + len(text), page, None)]


def _whole(text: str) -> list[Segment]:
    return [Segment(0, len(text))]


# the built-in loaders ---------------------------------------------------------------------------------


@register_loader([".txt", ".text", ".rst", ".log"], "txt")
def load_txt(data: bytes, name: str) -> LoadedDocument:
    text = decode_text(data)
    return LoadedDocument(name, "txt", text, _whole(text))


@register_loader([".md", ".markdown"], "md")
def load_markdown(data: bytes, name: str) -> LoadedDocument:
    text = decode_text(data)
    return LoadedDocument(name, "md", text, markdown_sections(text))


@register_loader(".pdf", "pdf")
def load_pdf(data: bytes, name: str) -> LoadedDocument:
    try:
        from pypdf import PdfReader
        from pypdf.errors import PdfReadError
    except ImportError:
        raise MissingDependencyError("pypdf", "all") from None
    logging.getLogger("pypdf").setLevel(logging.ERROR)  # its warnings about damaged files repeat our error
    try:
        reader = PdfReader(io.BytesIO(data))
        pages = [(page.extract_text() or "").strip() for page in reader.pages]
    except PdfReadError as exc:
        raise DocumentParseError(f"{name}: not a readable PDF: {exc}") from None
    if not any(pages):
        raise DocumentParseError(f"{name}: the PDF has no extractable text (a scanned PDF needs OCR first)")
    parts: list[str] = []
    segments: list[Segment] = []
    offset = 0
    for number, page_text in enumerate(pages, 1):
        if not page_text:
            continue
        if parts:
            parts.append("\n\n")
            offset += 2
        segments.append(Segment(offset, offset + len(page_text), number))
        parts.append(page_text)
        offset += len(page_text)
    return LoadedDocument(name, "pdf", "".join(parts), segments, {"pages": len(pages)})


@register_loader(".docx", "docx")
def load_docx(data: bytes, name: str) -> LoadedDocument:
    try:
        import docx
    except ImportError:
        raise MissingDependencyError("python-docx", "all") from None
    document = docx.Document(io.BytesIO(data))
    lines: list[str] = []
    for para in document.paragraphs:
        text = para.text.strip()
        if not text:
            continue
        style = (para.style.name if para.style is not None else "") or ""
        level = 1 if style == "Title" else int(m.group(1)) if (m := re.match(r"Heading (\d)", style)) else 0
        lines.append(f"{'#' * min(level, 6)} {text}" if level else text)
    for table in document.tables:
        rows = [" | ".join(cell.text.strip() for cell in row.cells) for row in table.rows]
        lines.append("\n".join(r for r in rows if r.strip(" |")))
    text = "\n\n".join(lines)
    return LoadedDocument(name, "docx", text, markdown_sections(text))


_BLOCKS = ["p", "div", "li", "tr", "section", "article", "pre", "table", "ul", "ol", "blockquote", "dd", "dt"]


@register_loader([".html", ".htm", ".xhtml"], "html")
def load_html(data: bytes, name: str) -> LoadedDocument:
    try:
        from bs4 import BeautifulSoup
    except ImportError:
        raise MissingDependencyError("beautifulsoup4", "all") from None
    soup = BeautifulSoup(decode_text(data), "html.parser")
    for tag in soup(["script", "style", "noscript", "template", "svg"]):
        tag.decompose()
    title = soup.title.get_text(" ", strip=True) if soup.title else None
    if soup.title:
        soup.title.decompose()
    for br in soup.find_all("br"):
        br.replace_with("\n")
    for heading in soup.find_all(re.compile(r"^h[1-6]$")):
        level = int(heading.name[1])
        heading.replace_with(f"\n\n{'#' * level} {heading.get_text(' ', strip=True)}\n\n")
    for block in soup.find_all(_BLOCKS):
        block.insert_after("\n\n")
    raw = soup.get_text()
    lines = [re.sub(r"[ \t\r\f\v]+", " ", line).strip() for line in raw.splitlines()]
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    meta: dict[str, Any] = {"title": title} if title else {}
    return LoadedDocument(name, "html", text, markdown_sections(text), meta)


@register_loader([".csv", ".tsv"], "csv")
def load_csv(data: bytes, name: str) -> LoadedDocument:
    raw = decode_text(data)
    if name.lower().endswith(".tsv"):
        dialect: Any = csv.excel_tab
    else:
        try:
            dialect = csv.Sniffer().sniff(raw[:4096], delimiters=",;\t|")
        except csv.Error:
            dialect = csv.excel
    rows = list(csv.reader(io.StringIO(raw), dialect))
    rows = [r for r in rows if any(cell.strip() for cell in r)]
    if not rows:
        raise DocumentParseError(f"{name}: the CSV file has no rows")
    header, body = rows[0], rows[1:]
    if not body:
        body, header = rows, [f"column {i + 1}" for i in range(len(rows[0]))]
    lines = [
        "; ".join(f"{h.strip()}: {v.strip()}" for h, v in zip(header, row, strict=False) if v.strip()) for row in body
    ]
    text = "\n".join(lines)
    return LoadedDocument(name, "csv", text, _whole(text), {"rows": len(body), "columns": header})


def _flatten(value: Any, path: str, out: list[str]) -> None:
    if isinstance(value, dict):
        if all(not isinstance(v, dict | list) for v in value.values()) and path:
            out.append(f"{path}: " + "; ".join(f"{k}: {v}" for k, v in value.items()))
            return
        for k, v in value.items():
            _flatten(v, f"{path}.{k}" if path else str(k), out)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _flatten(v, f"{path}[{i}]", out)
    elif value is not None and value != "":
        out.append(f"{path}: {value}" if path else str(value))


@register_loader([".json", ".jsonl", ".ndjson"], "json")
def load_json(data: bytes, name: str) -> LoadedDocument:
    raw = decode_text(data)
    try:
        if name.lower().endswith((".jsonl", ".ndjson")):
            values: Any = [json.loads(line) for line in raw.splitlines() if line.strip()]
        else:
            values = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise DocumentParseError(f"{name}: not valid JSON: {exc}") from None
    lines: list[str] = []
    _flatten(values, "", lines)
    text = "\n".join(lines)
    return LoadedDocument(name, "json", text, _whole(text))
