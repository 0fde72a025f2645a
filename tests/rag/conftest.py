"""Sample documents of every supported type, built by the tests themselves (no binary fixtures)."""

from __future__ import annotations

from pathlib import Path

import pytest


def minimal_pdf(pages: list[str]) -> bytes:
    """A valid PDF with one line of Helvetica text per page, cross-reference offsets computed exactly."""
    objects: list[bytes] = []
    n = len(pages)
    page_ids = [3 + 2 * i for i in range(n)]
    font_id = 3 + 2 * n
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    objects.append(f"<< /Type /Pages /Kids [{' '.join(f'{p} 0 R' for p in page_ids)}] /Count {n} >>".encode())
    for i, text in enumerate(pages):
        safe = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
        stream = f"BT /F1 12 Tf 72 720 Td ({safe}) Tj ET".encode()
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {page_ids[i] + 1} 0 R "
            f"/Resources << /Font << /F1 {font_id} 0 R >> >> >>".encode()
        )
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def minimal_docx(path: Path) -> Path:
    import docx

    document = docx.Document()
    document.add_heading("Handbook", level=1)
    document.add_paragraph("Welcome to the onboarding handbook.")
    document.add_heading("Vacation", level=2)
    document.add_paragraph("Employees get twenty-five vacation days per year.")
    table = document.add_table(rows=2, cols=2)
    table.cell(0, 0).text, table.cell(0, 1).text = "office", "city"
    table.cell(1, 0).text, table.cell(1, 1).text = "HQ", "Lisbon"
    document.save(str(path))
    return path


MARKDOWN = """# Guide

DataPilot answers questions from documents.

## Install

Run make run to install everything. It builds llama.cpp from source.

## Cache

The semantic cache answers repeated questions without running the model.
"""

HTML = """<html><head><title>Release notes</title><script>var x = 1;</script></head><body>
<h1>Release 2.0</h1><p>The <b>knowledge</b> feature arrived.</p>
<h2>Fixes</h2><ul><li>Faster startup</li><li>Smaller memory use</li></ul></body></html>"""


@pytest.fixture
def mixed_folder(tmp_path: Path) -> Path:
    """A folder of mixed documents: every type, a nested folder, an unknown type and a broken PDF."""
    folder = tmp_path / "docs"
    (folder / "nested").mkdir(parents=True)
    (folder / "guide.md").write_text(MARKDOWN)
    (folder / "notes.txt").write_text("The office plant is watered on Mondays by the facilities team.\n")
    (folder / "release.html").write_text(HTML)
    (folder / "nested" / "cities.csv").write_text("city,country\nParis,France\nRome,Italy\n")
    (folder / "nested" / "config.json").write_text('{"server": {"port": 5670, "host": "127.0.0.1"}}')
    (folder / "manual.pdf").write_bytes(minimal_pdf(["Page one is about turbines.", "Page two covers the gearbox."]))
    minimal_docx(folder / "handbook.docx")
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4 this is not really a pdf")
    (folder / "image.bmp").write_bytes(b"BM\x00\x00")
    (folder / ".hidden.md").write_text("# hidden\n")
    return folder
