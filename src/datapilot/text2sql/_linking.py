"""Schema linking: which tables a question needs, so prompts stay small on large schemas.

Up to ``top_k`` tables go into a prompt whole. Past that, each table's one-line description (name,
comment, columns) is embedded once through the ``Embedder`` seam and the tables most similar to the
question are chosen, plus the tables their foreign keys point to while room remains. Without an
embedder, word overlap ranks them instead.
"""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING

import numpy as np

from datapilot.datasource import TableInfo

if TYPE_CHECKING:
    from datapilot.cache import Embedder

_WORD = re.compile(r"[A-Za-z]+|[\u4e00-\u9fff]")


def _words(text: str) -> set[str]:
    out = set()
    for w in _WORD.findall(text.lower()):
        out.add(w)
        if len(w) > 3 and w.endswith("s"):
            out.add(w[:-1])  # customers ~ customer
    return out


class SchemaLinker:
    def __init__(self, embedder: Embedder | None = None, top_k: int = 8) -> None:
        self.embedder = embedder
        self.top_k = top_k
        self._vectors: dict[str, np.ndarray] = {}  # descriptions' hash -> matrix

    async def select(self, question: str, tables: list[TableInfo]) -> list[TableInfo]:
        if len(tables) <= self.top_k:
            return tables
        scores = await self._scores(question, tables)
        order = sorted(range(len(tables)), key=lambda i: -scores[i])
        chosen = [tables[i] for i in order[: self.top_k]]
        names = {t.name for t in chosen}
        by_name = {t.name: t for t in tables}
        room = max(2, self.top_k // 4)  # joins need the referenced tables: allow a few over top_k
        for t in list(chosen):
            for fk in t.foreign_keys:
                if room and fk.ref_table not in names and fk.ref_table in by_name:
                    chosen.append(by_name[fk.ref_table])
                    names.add(fk.ref_table)
                    room -= 1
        return chosen

    async def _scores(self, question: str, tables: list[TableInfo]) -> list[float]:
        descriptions = [t.describe() for t in tables]
        if self.embedder is None:
            q = _words(question)
            return [
                len(q & _words(d)) + (2.0 if _words(t.name) & q else 0.0)
                for t, d in zip(tables, descriptions, strict=True)
            ]
        key = hashlib.sha256("\n".join(descriptions).encode()).hexdigest()
        matrix = self._vectors.get(key)
        if matrix is None:
            matrix = await self.embedder.embed(descriptions)
            self._vectors[key] = matrix
        q = (await self.embedder.embed([question]))[0]
        return [float(s) for s in matrix @ q]
