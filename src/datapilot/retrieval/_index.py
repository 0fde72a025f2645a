"""``VectorIndex`` implementations (the seam is ``datapilot.core.retrieval.VectorIndex``): one
collection of vectors per scope, searched by inner product.

* ``InMemoryVectorIndex``: exact search over one numpy matrix per scope; nothing persists. The test
  seam, and the embedded default of AWEL flows' named vector stores.

* ``FaissIndex`` (embedded): per scope, in memory, snapshotted to files under DATAPILOT_HOME on close
  and reloaded only when the snapshot matches the SQL rows exactly (otherwise rebuilt from them).
  Exact flat inner-product search up to ``IVF_FROM`` vectors; past that an inverted-file index (IVF:
  k-means lists, flat vectors inside), because one exact query over 100k x 384 floats reads 150 MB of
  memory (milliseconds). IVF rather than HNSW: at 100k vectors it searches in a third of the time at
  the same recall, builds in seconds instead of minutes, and deletes for real (no tombstones).
* ``MilvusIndex`` (production): one Milvus collection per scope, through ``pymilvus``; a Milvus server
  or, in tests, ``milvus-lite`` (a local file). Same code for both.

Collections per scope mean a search can never return another tenant's vector.
"""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path
from typing import Any

import numpy as np

from datapilot.core.errors import MissingDependencyError
from datapilot.core.retrieval import Signature


def _file_stem(scope: str) -> str:
    return hashlib.sha256(scope.encode()).hexdigest()[:24]


IVF_FROM = 20_000  # below, exact flat search is fast; above, a single flat query reads too much memory
IVF_REBUILD_GROWTH = 4  # a scope that grew this many times past its last training is clustered anew
IVF_POINTS_PER_LIST = 64  # training sample per inverted list (faiss wants at least 39)


def ivf_lists(n: int) -> int:
    """Inverted lists for ``n`` vectors: about 4 * sqrt(n) as a power of two, with at least 39 vectors
    per list (k-means needs them), at most 65,536."""
    target = min(4 * np.sqrt(n), n / 39, 65_536)
    return 1 << max(0, int(np.log2(max(1.0, target))))


def ivf_probes(lists: int) -> int:
    """Lists searched per query: 1/64 of them, at least 16. Measured at 1,024 lists: the best match is
    found for 99.9% of the QQP probes that have one above cosine 0.85 (those a cache can hit), and for
    99% of near-duplicate probes among random vectors (the hardest case: no cluster structure)."""
    return max(16, lists // 64)


def _ivf_contents(faiss: Any, index: Any) -> tuple[np.ndarray, np.ndarray]:
    """Every (id, vector) an IVF-flat index holds, read from its inverted lists."""
    inv, d = index.invlists, index.d
    ids, vectors = [np.empty(0, dtype=np.int64)], [np.empty((0, d), dtype=np.float32)]
    for lst in range(index.nlist):
        n = inv.list_size(lst)
        if n == 0:
            continue
        ids.append(faiss.rev_swig_ptr(inv.get_ids(lst), n).copy())
        codes = faiss.rev_swig_ptr(inv.get_codes(lst), n * inv.code_size).copy()
        vectors.append(codes.view(np.float32).reshape(n, d))
    return np.concatenate(ids), np.concatenate(vectors)


class FaissIndex:
    def __init__(self, folder: Path | None = None, ivf_from: int = IVF_FROM) -> None:
        try:
            import faiss
        except ImportError:
            raise MissingDependencyError("faiss-cpu", "all") from None
        self._faiss = faiss
        # One query at a time is faster single-threaded; concurrency comes from many queries. OpenMP's
        # thread count is per calling thread, so each thread that searches sets it once (see _single).
        self._threads = threading.local()
        self.folder = folder
        self.ivf_from = ivf_from
        self._indexes: dict[str, Any] = {}
        self._trained: dict[str, int] = {}  # IVF scopes: how many vectors their lists were trained on
        self._lock = threading.RLock()

    def _index(self, scope: str, dim: int) -> Any:
        index = self._indexes.get(scope)
        if index is None:
            index = self._faiss.IndexIDMap2(self._faiss.IndexFlatIP(dim))
            self._indexes[scope] = index
        return index

    def _is_ivf(self, index: Any) -> bool:
        return isinstance(index, self._faiss.IndexIVF)

    def _cluster(self, scope: str, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Train an IVF index on (a sample of) these vectors and move them all into it."""
        d, n = vectors.shape[1], len(ids)
        lists = ivf_lists(n)
        # The factory's index owns its quantizer (one built in Python would be freed under it).
        ivf: Any = self._faiss.index_factory(d, f"IVF{lists},Flat", self._faiss.METRIC_INNER_PRODUCT)
        sample = np.sort(np.random.default_rng(0).permutation(n)[: lists * IVF_POINTS_PER_LIST])
        ivf.train(np.ascontiguousarray(vectors[sample]))
        ivf.add_with_ids(np.ascontiguousarray(vectors), np.ascontiguousarray(ids, dtype=np.int64))
        ivf.nprobe = ivf_probes(lists)
        self._indexes[scope] = ivf
        self._trained[scope] = n

    def _contents(self, index: Any) -> tuple[np.ndarray, np.ndarray]:
        if self._is_ivf(index):
            return _ivf_contents(self._faiss, index)
        ids = self._faiss.vector_to_array(index.id_map).astype(np.int64)
        return ids, index.index.reconstruct_n(0, index.ntotal)

    def add(self, scope: str, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids) == 0:
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        with self._lock:
            index = self._index(scope, vectors.shape[1])
            if index.d != vectors.shape[1]:
                raise ValueError(f"scope has {index.d}-dimensional vectors, got {vectors.shape[1]}")
            index.add_with_ids(vectors, np.asarray(ids, dtype=np.int64))
            trained = self._trained.get(scope)
            grown = trained is not None and index.ntotal >= trained * IVF_REBUILD_GROWTH
            if (trained is None and index.ntotal >= self.ivf_from) or grown:
                self._cluster(scope, *self._contents(index))

    def busy(self) -> bool:
        """Whether a write holds the index now (a search would wait for it)."""
        if self._lock.acquire(blocking=False):
            self._lock.release()
            return False
        return True

    def _single(self) -> None:
        if not getattr(self._threads, "single", False):
            self._faiss.omp_set_num_threads(1)
            self._threads.single = True

    def search(self, scope: str, vector: np.ndarray, k: int) -> tuple[list[int], list[float]]:
        self._single()
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
            index.remove_ids(np.asarray(ids, dtype=np.int64))

    def drop(self, scope: str) -> None:
        with self._lock:
            self._indexes.pop(scope, None)
            self._trained.pop(scope, None)
            if self.folder is not None:
                for suffix in (".faiss", ".json", ".npy"):
                    (self.folder / f"{_file_stem(scope)}{suffix}").unlink(missing_ok=True)

    def count(self, scope: str) -> int:
        with self._lock:
            index = self._indexes.get(scope)
            return 0 if index is None else int(index.ntotal)

    def restore(self, scope: str, signature: Signature) -> bool:
        if self.folder is None:
            return False
        stem = self.folder / _file_stem(scope)
        meta_path, data_path = stem.with_suffix(".json"), stem.with_suffix(".faiss")
        try:
            meta = json.loads(meta_path.read_text())
            if meta.get("scope") != scope or tuple(meta.get("signature", ())) != signature:
                return False
            if meta.get("kind") not in ("flat", "ivf"):
                return False  # an older layout: rebuilt from SQL
            index: Any = self._faiss.read_index(str(data_path))
            if meta.get("kind") == "ivf":
                index.nprobe = ivf_probes(index.nlist)
        except (OSError, ValueError, RuntimeError):
            return False
        if index.ntotal != signature[0]:
            return False
        # Used once: from now on only the rows in SQL are the truth, until the next clean close.
        meta_path.unlink(missing_ok=True)
        with self._lock:
            self._indexes[scope] = index
            if meta.get("kind") == "ivf":
                self._trained[scope] = int(meta.get("trained", index.ntotal))
        return True

    def close(self, signatures: dict[str, Signature]) -> None:
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
                if self._is_ivf(index):
                    meta.update(kind="ivf", trained=self._trained.get(scope, index.ntotal))
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

    def restore(self, scope: str, signature: Signature) -> bool:
        # Milvus persists by itself; it is trusted when it holds as many vectors as SQL has rows.
        return self.count(scope) == signature[0]

    def close(self, signatures: dict[str, Signature]) -> None:
        with self._lock:
            self._client.close()


class InMemoryVectorIndex:
    """Exact inner-product search over one float32 matrix per scope, in numpy. Nothing persists:
    ``restore`` always answers False, so owners rebuild from their rows."""

    def __init__(self) -> None:
        self._scopes: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # scope -> (ids [n], vectors [n, d])
        self._lock = threading.Lock()

    def add(self, scope: str, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        vectors = np.asarray(vectors, dtype=np.float32)
        if len(ids) == 0:
            return
        if vectors.ndim != 2 or len(vectors) != len(ids):
            raise ValueError("add() takes n ids and an [n, d] matrix")
        with self._lock:
            old = self._scopes.get(scope)
            if old is None:
                self._scopes[scope] = (ids.copy(), vectors.copy())
                return
            if old[1].shape[1] != vectors.shape[1]:
                raise ValueError(f"scope has {old[1].shape[1]}-dimensional vectors, got {vectors.shape[1]}")
            keep = ~np.isin(old[0], ids)  # an id added again replaces its vector
            self._scopes[scope] = (np.concatenate([old[0][keep], ids]), np.vstack([old[1][keep], vectors]))

    def search(self, scope: str, vector: np.ndarray, k: int) -> tuple[list[int], list[float]]:
        with self._lock:
            found = self._scopes.get(scope)
        q = np.asarray(vector, dtype=np.float32).reshape(-1)
        if found is None or k <= 0 or found[1].shape[1] != q.shape[0]:
            return [], []
        ids, matrix = found
        scores = matrix @ q
        best = np.argsort(-scores, kind="stable")[:k]
        return [int(i) for i in ids[best]], [float(s) for s in scores[best]]

    def delete(self, scope: str, ids: list[int]) -> None:
        with self._lock:
            found = self._scopes.get(scope)
            if found is None or not ids:
                return
            keep = ~np.isin(found[0], np.asarray(ids, dtype=np.int64))
            self._scopes[scope] = (found[0][keep], found[1][keep])

    def drop(self, scope: str) -> None:
        with self._lock:
            self._scopes.pop(scope, None)

    def count(self, scope: str) -> int:
        with self._lock:
            found = self._scopes.get(scope)
            return 0 if found is None else len(found[0])

    def restore(self, scope: str, signature: Signature) -> bool:
        return False

    def close(self, signatures: dict[str, Signature]) -> None:
        return None
