"""The ``VectorIndex`` seam: one collection of vectors per scope, searched by inner product.

* ``FaissIndex`` (embedded): per scope, in memory, snapshotted to files under DATAPILOT_HOME on close
  and reloaded only when the snapshot matches the SQL rows exactly (otherwise rebuilt from them).
  Exact flat inner-product search up to ``HNSW_FROM`` vectors; past that an HNSW graph, because one
  exact query over 100k x 384 floats reads 150 MB of memory (milliseconds), while batched queries,
  which reuse the matrix from cache, do not need this.
* ``MilvusIndex`` (production): one Milvus collection per scope, through ``pymilvus``; a Milvus server
  or, in tests, ``milvus-lite`` (a local file). Same code for both.

Collections per scope mean a search can never return another tenant's vector.
"""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from datapilot.core.errors import MissingDependencyError


class VectorIndex(Protocol):
    def add(self, scope: str, ids: np.ndarray, vectors: np.ndarray) -> None: ...

    def search(self, scope: str, vector: np.ndarray, k: int) -> tuple[list[int], list[float]]: ...

    def delete(self, scope: str, ids: list[int]) -> None: ...

    def drop(self, scope: str) -> None: ...

    def count(self, scope: str) -> int: ...

    def restore(self, scope: str, signature: tuple[int, int, int]) -> bool:
        """Load a persisted copy that matches ``signature``; False if there is none that does."""
        ...

    def close(self, signatures: dict[str, tuple[int, int, int]]) -> None: ...


def _file_stem(scope: str) -> str:
    return hashlib.sha256(scope.encode()).hexdigest()[:24]


HNSW_FROM = 20_000  # below, exact flat search is fast; above, a single flat query reads too much memory
HNSW_M = 32
HNSW_EF_SEARCH = 96
HNSW_EF_CONSTRUCTION = 64


class _Hnsw:
    """An HNSW graph over one scope: approximate, sub-millisecond at 100k vectors. HNSW cannot delete, so
    deleted ids are tombstones filtered from results, and the graph is rebuilt when a quarter is dead."""

    def __init__(self, faiss: Any, dim: int) -> None:
        self.index = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        self.index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        self.index.hnsw.efSearch = HNSW_EF_SEARCH
        self.labels = np.empty(0, dtype=np.int64)
        self.dead: set[int] = set()

    @property
    def d(self) -> int:
        return int(self.index.d)

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal) - len(self.dead)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self.index.add(vectors)
        self.labels = np.concatenate([self.labels, np.asarray(ids, dtype=np.int64)])
        self.dead.difference_update(int(i) for i in ids)

    def search(self, vector: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores, internal = self.index.search(vector, k + min(len(self.dead), 64))
        keep = [
            (s, self.labels[i])
            for s, i in zip(scores[0], internal[0], strict=True)
            if i >= 0 and int(self.labels[i]) not in self.dead
        ][:k]
        return np.array([[s for s, _ in keep]]), np.array([[i for _, i in keep]])

    def live(self) -> tuple[np.ndarray, np.ndarray]:
        vectors = self.index.reconstruct_n(0, self.index.ntotal)
        mask = np.array([int(i) not in self.dead for i in self.labels], dtype=bool)
        return self.labels[mask], vectors[mask]


class FaissIndex:
    def __init__(self, folder: Path | None = None, hnsw_from: int = HNSW_FROM) -> None:
        try:
            import faiss
        except ImportError:
            raise MissingDependencyError("faiss-cpu", "all") from None
        self._faiss = faiss
        # One query at a time is faster single-threaded; concurrency comes from many queries.
        faiss.omp_set_num_threads(1)
        self.folder = folder
        self.hnsw_from = hnsw_from
        self._indexes: dict[str, Any] = {}
        self._lock = threading.RLock()

    def _index(self, scope: str, dim: int) -> Any:
        index = self._indexes.get(scope)
        if index is None:
            index = self._faiss.IndexIDMap2(self._faiss.IndexFlatIP(dim))
            self._indexes[scope] = index
        return index

    def _to_hnsw(self, scope: str, flat: Any) -> None:
        ids = self._faiss.vector_to_array(flat.id_map).astype(np.int64)
        vectors = flat.index.reconstruct_n(0, flat.ntotal)
        graph = _Hnsw(self._faiss, flat.d)
        graph.add(ids, vectors)
        self._indexes[scope] = graph

    def add(self, scope: str, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids) == 0:
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        with self._lock:
            index = self._index(scope, vectors.shape[1])
            if index.d != vectors.shape[1]:
                raise ValueError(f"scope has {index.d}-dimensional vectors, got {vectors.shape[1]}")
            if isinstance(index, _Hnsw):
                index.add(ids, vectors)
                return
            index.add_with_ids(vectors, np.asarray(ids, dtype=np.int64))
            if index.ntotal >= self.hnsw_from:
                self._to_hnsw(scope, index)

    def search(self, scope: str, vector: np.ndarray, k: int) -> tuple[list[int], list[float]]:
        with self._lock:
            index = self._indexes.get(scope)
            if index is None or index.ntotal == 0 or index.d != vector.shape[-1]:
                return [], []
            scores, ids = index.search(np.ascontiguousarray(vector.reshape(1, -1), dtype=np.float32), k)
        pairs = [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0]
        return [i for i, _ in pairs], [s for _, s in pairs]

    def delete(self, scope: str, ids: list[int]) -> None:
        with self._lock:
            index = self._indexes.get(scope)
            if index is None or not ids:
                return
            if isinstance(index, _Hnsw):
                known = set(index.labels.tolist())
                index.dead.update(int(i) for i in ids if int(i) in known)
                if len(index.dead) > index.index.ntotal // 4:
                    live_ids, live_vectors = index.live()
                    self._indexes.pop(scope)
                    flat = self._index(scope, index.d)
                    if len(live_ids):
                        flat.add_with_ids(live_vectors, live_ids)
                        if flat.ntotal >= self.hnsw_from:
                            self._to_hnsw(scope, flat)
                return
            index.remove_ids(np.asarray(ids, dtype=np.int64))

    def drop(self, scope: str) -> None:
        with self._lock:
            self._indexes.pop(scope, None)
            if self.folder is not None:
                for suffix in (".faiss", ".json", ".npy"):
                    (self.folder / f"{_file_stem(scope)}{suffix}").unlink(missing_ok=True)

    def count(self, scope: str) -> int:
        with self._lock:
            index = self._indexes.get(scope)
            return 0 if index is None else int(index.ntotal)

    def restore(self, scope: str, signature: tuple[int, int, int]) -> bool:
        if self.folder is None:
            return False
        stem = self.folder / _file_stem(scope)
        meta_path, data_path = stem.with_suffix(".json"), stem.with_suffix(".faiss")
        try:
            meta = json.loads(meta_path.read_text())
            if meta.get("scope") != scope or tuple(meta.get("signature", ())) != signature:
                return False
            index: Any = self._faiss.read_index(str(data_path))
            if meta.get("kind") == "hnsw":
                graph = _Hnsw(self._faiss, index.d)
                graph.index = index
                graph.index.hnsw.efSearch = HNSW_EF_SEARCH
                graph.labels = np.load(stem.with_suffix(".npy"))
                graph.dead = {int(i) for i in meta.get("dead", [])}
                index = graph
        except (OSError, ValueError, RuntimeError):
            return False
        if index.ntotal != signature[0]:
            return False
        # Used once: from now on only the rows in SQL are the truth, until the next clean close.
        meta_path.unlink(missing_ok=True)
        with self._lock:
            self._indexes[scope] = index
        return True

    def close(self, signatures: dict[str, tuple[int, int, int]]) -> None:
        if self.folder is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        with self._lock:
            for scope, index in self._indexes.items():
                sig = signatures.get(scope)
                stem = self.folder / _file_stem(scope)
                meta_path = stem.with_suffix(".json")
                # The metadata goes last and names the rows the snapshot holds; a crash before it
                # leaves an old or missing signature, and the next open rebuilds from SQL.
                meta_path.unlink(missing_ok=True)
                if sig is None or sig[0] != index.ntotal:
                    continue
                meta: dict[str, Any] = {"scope": scope, "signature": list(sig), "kind": "flat"}
                if isinstance(index, _Hnsw):
                    self._faiss.write_index(index.index, str(stem.with_suffix(".faiss")))
                    np.save(stem.with_suffix(".npy"), index.labels)
                    meta.update(kind="hnsw", dead=sorted(index.dead))
                else:
                    self._faiss.write_index(index, str(stem.with_suffix(".faiss")))
                meta_path.write_text(json.dumps(meta))


class MilvusIndex:
    """One Milvus collection per scope (named from a hash of the scope key); inner product on normalised
    vectors is cosine. Consistency level "Strong" so a row written is searchable at once."""

    def __init__(self, uri: str, token: str | None = None, prefix: str = "dp_cache_") -> None:
        try:
            from pymilvus import MilvusClient
        except ImportError:
            raise MissingDependencyError("pymilvus", "milvus") from None
        kwargs: dict[str, Any] = {"uri": uri}
        if token:
            kwargs["token"] = token
        self._client = MilvusClient(**kwargs)
        self._prefix = prefix
        self._known: set[str] = set()
        self._lock = threading.RLock()

    def _name(self, scope: str) -> str:
        return self._prefix + _file_stem(scope)

    def _ensure(self, scope: str, dim: int) -> str:
        name = self._name(scope)
        if name in self._known:
            return name
        with self._lock:
            if not self._client.has_collection(name):
                self._client.create_collection(
                    name, dimension=dim, metric_type="IP", consistency_level="Strong", auto_id=False
                )
            self._known.add(name)
        return name

    def add(self, scope: str, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids) == 0:
            return
        name = self._ensure(scope, int(vectors.shape[1]))
        rows = [{"id": int(i), "vector": v.astype(np.float32).tolist()} for i, v in zip(ids, vectors, strict=True)]
        with self._lock:
            self._client.insert(name, rows)

    def search(self, scope: str, vector: np.ndarray, k: int) -> tuple[list[int], list[float]]:
        name = self._name(scope)
        with self._lock:
            if name not in self._known and not self._client.has_collection(name):
                return [], []
            self._known.add(name)
            found = self._client.search(
                name, data=[vector.astype(np.float32).tolist()], limit=k, search_params={"metric_type": "IP"}
            )
        hits = found[0] if found else []
        return [int(h["id"]) for h in hits], [float(h["distance"]) for h in hits]

    def delete(self, scope: str, ids: list[int]) -> None:
        name = self._name(scope)
        with self._lock:
            if ids and self._client.has_collection(name):
                self._client.delete(name, ids=[int(i) for i in ids])

    def drop(self, scope: str) -> None:
        name = self._name(scope)
        with self._lock:
            if self._client.has_collection(name):
                self._client.drop_collection(name)
            self._known.discard(name)

    def count(self, scope: str) -> int:
        name = self._name(scope)
        with self._lock:
            if not self._client.has_collection(name):
                return 0
            res = self._client.query(name, filter="", output_fields=["count(*)"])
        return int(res[0]["count(*)"]) if res else 0

    def restore(self, scope: str, signature: tuple[int, int, int]) -> bool:
        # Milvus persists by itself; it is trusted when it holds as many vectors as SQL has rows.
        return self.count(scope) == signature[0]

    def close(self, signatures: dict[str, tuple[int, int, int]]) -> None:
        with self._lock:
            self._client.close()
