"""Honest baselines every model must beat, each a :class:`shortrec.domain.Recommender`.

All of them learn from *engaged* training views only: rows whose ``skipped`` is not True (a null
``skipped``, as in rating datasets, counts as engaged). Scores are float32 of shape
``(len(user_idx), n_items)``; higher is better. Constructors store; ``fit`` learns and returns
self; ``is_fitted`` tells the evaluation runner whether it must call ``fit``.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import scipy.sparse as sp

from shortrec import schema as S
from shortrec.domain import FloatArray, IntArray, Recommender, TrainingData

_US_PER_DAY = 86_400 * 1_000_000
#: Weight of the popularity tie-breaker added to item-kNN scores (far below any similarity).
_TIE_BREAK = 1e-6


def engaged_pairs(data: TrainingData) -> tuple[IntArray, IntArray, IntArray]:
    """``(user_idx, video_idx, ts_us)`` of the engaged training views (``skipped`` not True)."""
    lf = data.interactions.lazy().filter(pl.col(S.SKIPPED).fill_null(False).not_())
    df = lf.select(
        pl.col(S.USER_IDX).cast(pl.Int64),
        pl.col(S.VIDEO_IDX).cast(pl.Int64),
        pl.col(S.TS).dt.epoch("us").cast(pl.Int64),
    ).collect()
    return (
        df.get_column(S.USER_IDX).to_numpy(),
        df.get_column(S.VIDEO_IDX).to_numpy(),
        df.get_column(S.TS).to_numpy(),
    )


def user_item_matrix(data: TrainingData) -> sp.csr_array:
    """Binary ``(n_users, n_items)`` CSR matrix of engaged training views (1 = engaged)."""
    u, v, _ = engaged_pairs(data)
    m = sp.csr_array(
        (np.ones(u.size, dtype=np.float32), (u, v)), shape=(data.n_users, data.n_items)
    )
    m.sum_duplicates()
    m.data[:] = 1.0
    return m


class _Fitted:
    """Shared bookkeeping: the catalogue size and the fitted flag."""

    name: str

    def __init__(self) -> None:
        self._n_items = 0
        self._n_users = 0

    @property
    def is_fitted(self) -> bool:
        return self._n_items > 0

    def _require(self, user_idx: IntArray) -> IntArray:
        if not self.is_fitted:
            raise RuntimeError(f"{self.name}: score() called before fit()")
        u = np.asarray(user_idx, dtype=np.int64)
        if u.ndim != 1:
            raise ValueError(f"{self.name}: user_idx must be 1-d, got shape {u.shape}")
        return u


class RandomRecommender(_Fitted):
    """Uniform random scores; each user's scores depend only on ``(seed, user_idx)``, so the
    result does not depend on how users are batched."""

    def __init__(self, seed: int = 0, name: str = "random") -> None:
        super().__init__()
        self.seed = seed
        self.name = name

    def fit(self, data: TrainingData) -> RandomRecommender:
        self._n_items = data.n_items
        return self

    def score(self, user_idx: IntArray) -> FloatArray:
        u = self._require(user_idx)
        out = np.empty((u.size, self._n_items), dtype=np.float32)
        for row, user in enumerate(u.tolist()):
            out[row] = np.random.default_rng([self.seed, user]).random(
                self._n_items, dtype=np.float32
            )
        return out


class MostPopular(_Fitted):
    """Same list for everyone: items by their number of distinct engaged training users.

    ``score`` returns a read-only broadcast view (no per-user copy of the catalogue)."""

    def __init__(self, name: str = "most-popular") -> None:
        super().__init__()
        self.name = name
        self._pop: FloatArray = np.zeros(0, dtype=np.float32)

    def fit(self, data: TrainingData) -> MostPopular:
        m = user_item_matrix(data)
        self._pop = np.asarray((m > 0).sum(axis=0), dtype=np.float32).ravel()
        self._n_items = data.n_items
        return self

    def score(self, user_idx: IntArray) -> FloatArray:
        u = self._require(user_idx)
        return np.broadcast_to(self._pop, (u.size, self._n_items))


class Trending(_Fitted):
    """Time-decayed popularity at the training cut-off, the same for everyone:
    ``score_i = sum over engaged views v of i of 2 ** (-(cutoff - ts_v) / half_life)``.

    Exponential decay as in Hacker-News-style trending and the "recency-weighted popularity"
    baselines of session-based recommendation (Ludewig & Jannach 2018)."""

    def __init__(self, half_life_days: float = 1.0, name: str = "trending") -> None:
        super().__init__()
        if not half_life_days > 0:
            raise ValueError(f"half_life_days must be > 0, got {half_life_days}")
        self.half_life_days = half_life_days
        self.name = name
        self._score: FloatArray = np.zeros(0, dtype=np.float32)

    def fit(self, data: TrainingData) -> Trending:
        _, v, ts = engaged_pairs(data)
        age_days = np.maximum(data.cutoff_us - ts, 0) / _US_PER_DAY
        w = np.exp2(-age_days / self.half_life_days)
        self._score = np.bincount(v, weights=w, minlength=data.n_items).astype(np.float32)
        self._n_items = data.n_items
        return self

    def score(self, user_idx: IntArray) -> FloatArray:
        u = self._require(user_idx)
        return np.broadcast_to(self._score, (u.size, self._n_items))


class ItemKNN(_Fitted):
    """Item-to-item co-occurrence: cosine similarity of item columns of the binary user-item
    matrix, each item keeping its ``n_neighbours`` most similar items;
    ``score(u, j) = sum_{i in history(u)} sim(i, j)`` (Sarwar et al. 2001, "Item-based
    collaborative filtering recommendation algorithms", WWW; Deshpande & Karypis 2004, TOIS).

    A tie-breaker of ``1e-6 x`` the item's popularity percentile fills lists for users with
    little history; it never reorders items with a non-zero similarity score by more than that.
    """

    def __init__(self, n_neighbours: int = 100, block: int = 2048, name: str = "item-knn") -> None:
        super().__init__()
        if n_neighbours < 1 or block < 1:
            raise ValueError("n_neighbours and block must be >= 1")
        self.n_neighbours = n_neighbours
        self.block = block
        self.name = name
        self._x: sp.csr_array = sp.csr_array((0, 0), dtype=np.float32)
        self._sim: sp.csr_array = sp.csr_array((0, 0), dtype=np.float32)
        self._prior: FloatArray = np.zeros(0, dtype=np.float32)

    def fit(self, data: TrainingData) -> ItemKNN:
        x = user_item_matrix(data)
        count = np.asarray(x.sum(axis=0)).ravel()
        inv = np.divide(1.0, np.sqrt(count), out=np.zeros_like(count), where=count > 0)
        xn = (x @ sp.diags_array(inv.astype(np.float32))).tocsr()
        xt = xn.T.tocsr()
        blocks = [
            self._prune(xt[lo : lo + self.block] @ xn, lo)
            for lo in range(0, data.n_items, self.block)
        ]
        self._sim = (
            sp.vstack(blocks, format="csr")
            if blocks
            else sp.csr_array((0, data.n_items), dtype=np.float32)
        )
        order = np.argsort(np.argsort(count, kind="stable"), kind="stable")
        self._prior = (_TIE_BREAK * order / max(1, data.n_items - 1)).astype(np.float32)
        self._x = x
        self._n_items = data.n_items
        self._n_users = data.n_users
        return self

    def _prune(self, block: sp.csr_array, lo: int) -> sp.csr_array:
        """Drop self-similarity and keep each row's ``n_neighbours`` largest entries."""
        coo = block.tocoo()
        row, col, val = coo.row.astype(np.int64), coo.col.astype(np.int64), coo.data
        keep = (col != row + lo) & (val > 0)
        row, col, val = row[keep], col[keep], val[keep]
        order = np.lexsort((col, -val, row))  # by row, then similarity desc, then item
        row, col, val = row[order], col[order], val[order]
        starts = np.searchsorted(row, row, side="left")
        keep = (np.arange(row.size) - starts) < self.n_neighbours
        return sp.csr_array(
            (val[keep].astype(np.float32), (row[keep], col[keep])), shape=block.shape
        )

    def score(self, user_idx: IntArray) -> FloatArray:
        u = self._require(user_idx)
        hist = self._x[np.clip(u, 0, self._n_users - 1)]
        known = (u >= 0) & (u < self._n_users)
        s = np.asarray((hist @ self._sim).toarray(), dtype=np.float32)
        s[~known] = 0.0
        s += self._prior
        return s


def default_baselines(seed: int) -> list[Recommender]:
    """Fresh, unfit instances of every baseline: random, most-popular, trending, item-kNN."""
    return [RandomRecommender(seed=seed), MostPopular(), Trending(), ItemKNN()]
