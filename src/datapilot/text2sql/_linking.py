"""Schema linking: which tables a question needs, so prompts stay small on large schemas.

Up to ``top_k`` tables go into a prompt whole. Past that, tables are ranked by the question's
similarity to the table (its one-line description: name, comment, columns) and to its best column
(``table.column`` and the column's comment), each embedded once per schema through the ``Embedder``
seam and kept by the linker across requests; without an embedder, word overlap ranks them instead.
The best tables are taken, then the tables on the foreign-key path between them (a question about
customers and products needs orders and order_items to join them), then the tables the chosen ones
reference, never more than ``top_k`` in all. ``select(..., must=...)`` adds tables the caller knows
are needed (those holding a value the question names).
"""

from __future__ import annotations

import hashlib
import re
from collections import deque
from typing import TYPE_CHECKING

import numpy as np

from datapilot.datasource import TableInfo

if TYPE_CHECKING:
    from datapilot.core.retrieval import Embedder

_WORD = re.compile(r"[A-Za-z]+|[\u4e00-\u9fff]")
MAX_PATH = 3  # foreign-key hops between two chosen tables that linking will bridge


def _words(text: str) -> set[str]:
    out = set()
    for w in _WORD.findall(text.lower().replace("_", " ")):
        out.add(w)
        if len(w) > 3 and w.endswith("s"):
            out.add(w[:-1])  # customers ~ customer
    return out


def _column_text(t: TableInfo, i: int) -> str:
    c = t.columns[i]
    return f"{t.name} {c.name}".replace("_", " ") + (f" ({c.comment})" if c.comment else "")


class SchemaLinker:
    def __init__(self, embedder: Embedder | None = None, top_k: int = 8) -> None:
        self.embedder = embedder
        self.top_k = top_k
        # schema hash -> (table matrix, column matrix, column -> table index); kept across requests.
        self._vectors: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    async def select(self, question: str, tables: list[TableInfo], *, must: set[str] | None = None) -> list[TableInfo]:
        if len(tables) <= self.top_k:
            return tables
        scores = await self._scores(question, tables)
        order = sorted(range(len(tables)), key=lambda i: -scores[i])
        by_name = {t.name: t for t in tables}
        chosen: list[str] = [n for n in (must or ()) if n in by_name][: self.top_k]
        core = max(1, (self.top_k * 5) // 8)  # the best few first; joins and references fill the rest
        for i in order:
            if len(chosen) >= core:
                break
            if tables[i].name not in chosen:
                chosen.append(tables[i].name)
        graph = _fk_graph(tables)
        for a in list(chosen):  # the tables that join the chosen ones, shortest paths first
            for b in list(chosen):
                if a < b and len(chosen) < self.top_k:
                    path = _path(graph, a, b, set(chosen))
                    for n in path:
                        if n not in chosen and len(chosen) < self.top_k:
                            chosen.append(n)
        for i in order:  # then the next best, and what the chosen ones reference
            if len(chosen) >= self.top_k:
                break
            name = tables[i].name
            if name not in chosen:
                chosen.append(name)
            for fk in by_name[name].foreign_keys:
                if fk.ref_table in by_name and fk.ref_table not in chosen and len(chosen) < self.top_k:
                    chosen.append(fk.ref_table)
        keep = set(chosen)
        return [t for t in tables if t.name in keep]

    async def _scores(self, question: str, tables: list[TableInfo]) -> list[float]:
        if self.embedder is None:
            q = _words(question)
            return [len(q & _words(t.describe())) + (2.0 if _words(t.name) & q else 0.0) for t in tables]
        descriptions = [t.describe() for t in tables]
        key = hashlib.sha256("\n".join(descriptions).encode()).hexdigest()
        if key not in self._vectors:
            columns = [(ti, ci) for ti, t in enumerate(tables) for ci in range(len(t.columns))]
            texts = descriptions + [_column_text(tables[ti], ci) for ti, ci in columns]
            matrix = await self.embedder.embed(texts)
            owner = np.array([ti for ti, _ in columns], dtype=np.int64)
            self._vectors = {key: (matrix[: len(tables)], matrix[len(tables) :], owner)}  # one schema kept
        table_m, column_m, owner = self._vectors[key]
        q = (await self.embedder.embed([question]))[0]
        table_s = table_m @ q
        best_column = np.full(len(tables), -1.0, dtype=np.float32)
        if len(owner):
            np.maximum.at(best_column, owner, column_m @ q)
        return [float(0.5 * a + 0.5 * b) for a, b in zip(table_s, best_column, strict=True)]


def _fk_graph(tables: list[TableInfo]) -> dict[str, set[str]]:
    names = {t.name for t in tables}
    graph: dict[str, set[str]] = {t.name: set() for t in tables}
    for t in tables:
        for fk in t.foreign_keys:
            if fk.ref_table in names and fk.ref_table != t.name:
                graph[t.name].add(fk.ref_table)
                graph[fk.ref_table].add(t.name)
    return graph


def _path(graph: dict[str, set[str]], a: str, b: str, chosen: set[str]) -> list[str]:
    """The tables strictly between ``a`` and ``b`` on a shortest foreign-key path (through chosen
    tables where it can), or none when they are further apart than ``MAX_PATH`` hops."""
    previous: dict[str, str | None] = {a: None}
    queue = deque([(a, 0)])
    while queue:
        node, hops = queue.popleft()
        if node == b:
            out = []
            step = previous[b]
            while step is not None and step != a:
                out.append(step)
                step = previous[step]
            return out[::-1]
        if hops == MAX_PATH:
            continue
        # Chosen tables first: a path through them adds nothing to the prompt.
        for nxt in sorted(graph.get(node, ()), key=lambda n: (n not in chosen, n)):
            if nxt not in previous:
                previous[nxt] = node
                queue.append((nxt, hops + 1))
    return []
