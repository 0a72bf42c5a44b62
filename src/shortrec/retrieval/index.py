"""The vector index over video embeddings: the only module that imports faiss.

Vectors are L2-normalised by the caller and searched by inner product (= cosine). The index type
follows the catalogue size (:class:`~shortrec.config.IndexConfig`): exact ``IndexFlatIP`` up to
``exact_max`` vectors (0.75 ms/query at 100k x 64 on 2 cores, so exact is both simplest and fast
enough there), ``IndexHNSWFlat`` (Malkov & Yashunin, TPAMI 2018) or ``IndexIVFFlat`` above.
Positions in the index are the ids returned by :meth:`VectorIndex.search`; the caller maps them
(here: position == video_idx).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt

from shortrec.config import IndexConfig
from shortrec.schema import BadInput

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]

INDEX_FILE = "index.faiss"
META_FILE = "index.json"


class IndexError_(BadInput):
    """An index file is missing or does not match its metadata (the message names the path)."""


def _as_matrix(x: npt.ArrayLike, name: str, dim: int | None = None) -> F32:
    a = np.ascontiguousarray(x, dtype=np.float32)
    if a.ndim != 2:
        raise ValueError(f"{name}: expected shape (n, d), got {a.shape}")
    if dim is not None and a.shape[1] != dim:
        raise ValueError(f"{name}: dimension {a.shape[1]}, index has {dim}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name}: non-finite values")
    return a


@dataclass(frozen=True)
class VectorIndex:
    """A built FAISS index with what it is (``kind``: flat, hnsw or ivf) and its search knobs.

    Build with :meth:`build`; the object is not changed by searching. faiss itself is thread
    safe for concurrent searches on a read-only index. Searches run on ``search_threads``
    OpenMP threads (faiss's process-wide setting, set on each call).
    """

    index: Any
    kind: str
    dim: int
    size: int
    ef_search: int
    nprobe: int
    search_threads: int = 1

    @staticmethod
    def build(vectors: npt.ArrayLike, cfg: IndexConfig) -> VectorIndex:
        """Index ``vectors`` (n, d) float32; the type is chosen by ``n`` (see module doc)."""
        x = _as_matrix(vectors, "vectors")
        n, d = x.shape
        if n == 0:
            raise ValueError("cannot build an index over zero vectors")
        faiss.omp_set_num_threads(cfg.threads)
        if n <= cfg.exact_max:
            idx: Any = faiss.IndexFlatIP(d)
            kind = "flat"
        elif cfg.ann == "hnsw":
            idx = faiss.IndexHNSWFlat(d, cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            idx.hnsw.efConstruction = cfg.hnsw_ef_construction
            kind = "hnsw"
        else:
            # ~4 sqrt(n) lists is the usual faiss guideline; train on at most 64 points per list.
            nlist = cfg.ivf_nlist or max(1, int(4 * math.sqrt(n)))
            quant = faiss.IndexFlatIP(d)
            idx = faiss.IndexIVFFlat(quant, d, nlist, faiss.METRIC_INNER_PRODUCT)
            rng = np.random.default_rng(0)
            sample = x[rng.choice(n, size=min(n, 64 * nlist), replace=False)]
            idx.train(sample)
            kind = "ivf"
        idx.add(x)
        return VectorIndex(idx, kind, d, n, cfg.hnsw_ef_search, cfg.ivf_nprobe, cfg.search_threads)

    def search(self, queries: npt.ArrayLike, k: int) -> tuple[F32, I64]:
        """Top-``k`` by inner product: ``(scores (q, k) float32, ids (q, k) int64)``, best
        first; rows with fewer than ``k`` results are padded with score -inf and id -1.

        HNSW's efSearch is raised to at least ``k``: faiss does not do it itself, and a beam
        narrower than ``k`` cannot return ``k`` good neighbours.
        """
        q = _as_matrix(queries, "queries", self.dim)
        k = int(k)
        if k <= 0:
            raise ValueError(f"k must be >= 1, got {k}")
        kk = min(k, self.size)
        params: Any = None
        if self.kind == "hnsw":
            params = faiss.SearchParametersHNSW(efSearch=max(self.ef_search, kk))  # type: ignore[attr-defined]
        elif self.kind == "ivf":
            params = faiss.SearchParametersIVF(nprobe=self.nprobe)  # type: ignore[call-arg]
        # set on every call: other libraries in the process may change the OpenMP setting
        faiss.omp_set_num_threads(self.search_threads)
        dist, ids = self.index.search(q, kk, params=params)
        dist = np.where(ids < 0, -np.inf, dist).astype(np.float32)
        if kk < k:
            pad = k - kk
            dist = np.pad(dist, ((0, 0), (0, pad)), constant_values=-np.inf)
            ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
        return dist, ids.astype(np.int64)

    def save(self, directory: Path) -> None:
        """Write ``index.faiss`` and ``index.json`` into ``directory`` (each via a temporary
        file and a rename, so a reader never sees half a file)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".index.", suffix=".tmp", dir=directory)
        os.close(fd)
        try:
            faiss.write_index(self.index, tmp)
            os.replace(tmp, directory / INDEX_FILE)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        meta = {
            "kind": self.kind,
            "dim": self.dim,
            "size": self.size,
            "ef_search": self.ef_search,
            "nprobe": self.nprobe,
        }
        fd, tmp = tempfile.mkstemp(prefix=".index.", suffix=".tmp", dir=directory)
        with os.fdopen(fd, "w") as fh:
            json.dump(meta, fh, sort_keys=True)
        os.replace(tmp, directory / META_FILE)

    @staticmethod
    def load(directory: Path, search_threads: int = 1) -> VectorIndex:
        """Read an index written by :meth:`save`; raises :class:`IndexError_` on a mismatch.
        Searches then run on ``search_threads`` OpenMP threads."""
        directory = Path(directory)
        ipath, mpath = directory / INDEX_FILE, directory / META_FILE
        for p in (ipath, mpath):
            if not p.is_file():
                raise IndexError_(f"{p}: file not found")
        try:
            meta = json.loads(mpath.read_text())
        except json.JSONDecodeError as e:
            raise IndexError_(f"{mpath}: line {e.lineno}: invalid JSON: {e.msg}") from e
        idx = faiss.read_index(str(ipath))
        if idx.d != meta["dim"] or idx.ntotal != meta["size"]:
            raise IndexError_(
                f"{ipath}: holds {idx.ntotal} x {idx.d}, metadata says "
                f"{meta['size']} x {meta['dim']}"
            )
        return VectorIndex(
            idx,
            str(meta["kind"]),
            int(meta["dim"]),
            int(meta["size"]),
            int(meta["ef_search"]),
            int(meta["nprobe"]),
        )


def exact_search(vectors: npt.ArrayLike, queries: npt.ArrayLike, k: int) -> I64:
    """Exact top-``k`` ids by inner product, shape (q, k) (brute force, for ground truth)."""
    x = _as_matrix(vectors, "vectors")
    flat = faiss.IndexFlatIP(x.shape[1])
    flat.add(x)
    _, ids = flat.search(_as_matrix(queries, "queries", x.shape[1]), min(k, x.shape[0]))
    return np.asarray(ids, dtype=np.int64)


def recall_vs_exact(
    index: VectorIndex, vectors: npt.ArrayLike, queries: npt.ArrayLike, k: int
) -> float:
    """Mean over queries of ``|ANN top-k ∩ exact top-k| / k`` (recall@k against brute force)."""
    truth = exact_search(vectors, queries, k)
    _, got = index.search(queries, k)
    hits = sum(
        len(np.intersect1d(t, g[g >= 0], assume_unique=True))
        for t, g in zip(truth, got, strict=True)
    )
    return hits / float(truth.size) if truth.size else 1.0
