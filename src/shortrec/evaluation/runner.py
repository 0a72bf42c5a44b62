"""The offline evaluation runner: one loop that evaluates every recommender on identical users,
candidates and exclusions under one protocol.

For each recommender and each batch of users: ``score`` the whole catalogue, exclude the user's
training items and items not yet uploaded at the serving time (``-inf``), take the top ``K``
(``K`` = the largest cut-off; ties broken by item index), look up each slot's relevance gain,
and accumulate the per-user metrics of :mod:`shortrec.evaluation.metrics`. The sampled
protocol ranks each user's candidate set instead of the catalogue. Results are means over the
evaluated users (catalogue-level metrics such as coverage are computed once over all lists).
"""

from __future__ import annotations

import importlib.metadata
import math
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from hashlib import sha256

import numpy as np
import numpy.typing as npt
import polars as pl
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from shortrec import schema as S
from shortrec.config import EvalConfig
from shortrec.domain import FloatArray, IntArray, Oracle, Recommender
from shortrec.evaluation import metrics as M
from shortrec.evaluation.protocols import EvalTask, Impressions, build_task, csr_keys, member
from shortrec.evaluation.report import EvalReport

F64 = npt.NDArray[np.float64]
#: Most score cells per user batch (1 GiB of float32): caps ``user_batch`` on huge catalogues.
_SCORE_CELLS = 1 << 28
#: Rows ranked together: a small block keeps the int64 key buffer in cache.
_TOPK_ROWS = 16
#: Columns sampled per row to find a top-k threshold (see :func:`_top_by_sample`).
_TOPK_SAMPLE = 4096
#: Key of an excluded entry: below every score, ``-inf`` included.
MASKED = np.iinfo(np.int64).min
_LO, _HI = (0, 1) if sys.byteorder == "little" else (1, 0)
#: High word of the key of a ``-inf`` score (the order-preserving image of its bits).
_NEG_INF_HI = int(np.int32(np.float32(-np.inf).view(np.int32)) ^ np.int32(0x7FFFFFFF))

Exclude = Callable[[int, int, npt.NDArray[np.int64]], None]


class EvaluationError(RuntimeError):
    """A recommender or oracle broke its contract (wrong shape, NaN scores)."""


# ---------------------------------------------------------------- ranking helpers
def top_k(scores: FloatArray, k: int, exclude: Exclude | None = None) -> IntArray:
    """Column indices of the ``k`` largest scores of each row, best first, shape (n, k).

    Entries are ranked by a composite int64 key: the order-preserving integer image of the
    float32 score in the high word and ``n_cols - 1 - column`` in the low word. All keys are
    distinct, so ties are broken by the lower column index and arg-partition never meets a long
    run of equal values (its slow case, e.g. a popularity list that is mostly zeros).
    ``exclude(lo, hi, key)`` may set ``key[r - lo, c] = MASKED`` to exclude entries of rows
    ``lo..hi-1``. Slots of excluded or ``-inf`` entries (or beyond the row length) are ``-1``.
    """
    n, m = scores.shape
    kk = min(k, m)
    out = np.full((n, k), -1, dtype=np.int64)
    if kk == 0 or n == 0:
        return out
    low = (m - 1 - np.arange(m)).astype(np.int32)
    rows = min(_TOPK_ROWS, n)
    buf = np.empty((rows, m, 2), dtype=np.int32)
    fbuf = np.empty((rows, m), dtype=np.float32)
    for lo in range(0, n, rows):
        c = min(rows, n - lo)
        f = fbuf[:c]
        # adding +0.0 turns -0.0 into +0.0, whose bit image would otherwise sort below it
        np.add(scores[lo : lo + c], np.float32(0.0), out=f, casting="same_kind")
        bits = f.view(np.int32)
        hi = buf[:c, :, _HI]
        np.right_shift(bits, 31, out=hi)
        np.bitwise_and(hi, np.int32(0x7FFFFFFF), out=hi)
        np.bitwise_xor(hi, bits, out=hi)
        buf[:c, :, _LO] = low
        key = buf[:c].view(np.int64).reshape(c, m)
        if exclude is not None:
            exclude(lo, lo + c, key)
        stride = m // _TOPK_SAMPLE
        if kk < m and stride > 1 and m // stride >= kk:
            idx, kv = _top_by_sample(key, kk, stride)
        else:
            part = (
                np.argpartition(key, m - kk, axis=1)[:, m - kk :]
                if kk < m
                else (np.broadcast_to(np.arange(m), key.shape))
            )
            kv = np.take_along_axis(key, part, axis=1)
            order = np.argsort(kv, axis=1)[:, ::-1]
            idx = np.take_along_axis(part, order, axis=1)
            kv = np.take_along_axis(kv, order, axis=1)
        out[lo : lo + c, :kk] = np.where((kv >> 32) > _NEG_INF_HI, idx, -1)
    return out


def _top_by_sample(
    key: npt.NDArray[np.int64], k: int, stride: int
) -> tuple[IntArray, npt.NDArray[np.int64]]:
    """Exact top ``k`` of each row of distinct keys, best first: ``(columns, keys)``.

    The ``k``-th largest key of every ``stride``-th column is a threshold that at least ``k``
    entries of the row reach, so the top ``k`` are among the entries at or above it; only
    those few (about ``k * stride``) are sorted. A compare pass replaces a full
    arg-partition, which is several times slower on long rows.
    """
    c = key.shape[0]
    sample = key[:, ::stride]
    ms = sample.shape[1]
    thr = np.partition(sample, ms - k, axis=1)[:, ms - k]
    r, col = np.nonzero(key >= thr[:, None])
    vals = key[r, col]
    order = np.lexsort((vals, r))
    r, col, vals = r[order], col[order], vals[order]
    end = np.searchsorted(r, np.arange(c), side="right")
    pos = end[:, None] - 1 - np.arange(k)[None, :]
    return col[pos].astype(np.int64), vals[pos]


def _lookup(keys: IntArray, values: F64, query: IntArray, valid: npt.NDArray[np.bool_]) -> F64:
    """``values`` at ``query`` keys (0 where absent or not ``valid``); ``keys`` sorted."""
    if keys.size == 0:
        return np.zeros(query.shape)
    pos = np.minimum(np.searchsorted(keys, query), keys.size - 1)
    hit = (keys[pos] == query) & valid
    return np.where(hit, values[pos], 0.0)


def _ideal(rel: sp.csr_array, k: int) -> F64:
    """Each row's gains sorted descending, zero-padded to ``k`` columns, shape (n_rows, k)."""
    rows = np.repeat(np.arange(rel.shape[0], dtype=np.int64), np.diff(rel.indptr))
    vals = rel.data.astype(np.float64)
    order = np.lexsort((-vals, rows))
    rows, vals = rows[order], vals[order]
    pos = np.arange(rows.size) - rel.indptr[rows]
    keep = pos < k
    out = np.zeros((rel.shape[0], k))
    out[rows[keep], pos[keep]] = vals[keep]
    return out


# ---------------------------------------------------------------- item side information
@dataclass(frozen=True)
class _Items:
    creator: IntArray
    topic: IntArray | None
    bitsets: npt.NDArray[np.uint64]
    self_info: F64
    pop_pct: F64
    embeddings: F64 | None
    embedding_source: str


def _item_side(
    task: EvalTask, videos: pl.DataFrame, config: EvalConfig, item_embeddings: FloatArray | None
) -> _Items:
    n = task.n_items
    v = videos.select(S.VIDEO_IDX, S.CREATOR_IDX, S.TAGS).sort(S.VIDEO_IDX)
    vid = v.get_column(S.VIDEO_IDX).to_numpy().astype(np.int64)
    creator = np.full(n, -1, dtype=np.int64)
    creator[vid] = v.get_column(S.CREATOR_IDX).to_numpy()
    # unknown creators get their own id each so they never count as "the same creator"
    missing = np.flatnonzero(creator < 0)
    creator[missing] = creator.max(initial=-1) + 1 + np.arange(missing.size)
    topic: IntArray | None = None
    if S.CATEGORY in videos.columns:
        cat = videos.select(S.VIDEO_IDX, S.CATEGORY).sort(S.VIDEO_IDX)
        topic = np.full(n, -1, dtype=np.int64)
        topic[cat.get_column(S.VIDEO_IDX).to_numpy()] = (
            cat.get_column(S.CATEGORY).cast(pl.Int64).fill_null(-1).to_numpy()
        )
        # as for creators: an unknown topic is never "the same topic" as another
        missing = np.flatnonzero(topic < 0)
        topic[missing] = topic.max(initial=-1) + 1 + np.arange(missing.size)
    tags = v.get_column(S.TAGS).list.drop_nulls()
    lengths = np.zeros(n, dtype=np.int64)
    lengths[vid] = tags.list.len().to_numpy()
    # tags in video_idx order; items absent from the table have no tags
    flat = tags.explode().drop_nulls().to_numpy().astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    bitsets = M.tag_bitsets(offsets, flat, n)
    eng = task.train.interactions.filter(pl.col(S.SKIPPED).fill_null(False).not_())
    pairs = eng.select(S.USER_IDX, S.VIDEO_IDX).unique()
    n_train_users = eng.get_column(S.USER_IDX).n_unique()
    pop = np.bincount(pairs.get_column(S.VIDEO_IDX).to_numpy(), minlength=n).astype(np.float64)
    emb: F64 | None = None
    source = "none"
    if item_embeddings is not None:
        e = np.asarray(item_embeddings, dtype=np.float64)
        if e.ndim != 2 or e.shape[0] != n:
            raise ValueError(f"item_embeddings must have shape ({n}, d), got {e.shape}")
        emb, source = e, f"supplied ({e.shape[1]}-d)"
    elif pairs.height:
        x = sp.csr_array(
            (
                np.ones(pairs.height),
                (pairs.get_column(S.USER_IDX).to_numpy(), pairs.get_column(S.VIDEO_IDX).to_numpy()),
            ),
            shape=(task.train.n_users, n),
        )
        d = min(config.embedding_dim, min(x.shape) - 1)
        if d >= 1:
            v0 = np.random.default_rng(config.seed).random(min(x.shape))
            _, s, vt = spla.svds(x, k=d, v0=v0)
            emb, source = (vt.T * s).astype(np.float64), f"truncated SVD ({d}-d) of training"
    return _Items(
        creator=creator,
        topic=topic,
        bitsets=bitsets,
        self_info=M.self_information(pop, n_train_users),
        pop_pct=M.popularity_percentile(pop),
        embeddings=emb,
        embedding_source=source,
    )


# ---------------------------------------------------------------- accumulation
@dataclass
class _Acc:
    """Per-user metric arrays ``(n_eval, n_ks)`` plus catalogue-level sums."""

    n: int
    ks: tuple[int, ...]
    n_items: int
    per_user: dict[str, F64] = field(default_factory=dict)
    sums: dict[str, float] = field(default_factory=dict)
    exposure: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    measured: set[tuple[str, int]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.exposure = np.zeros((len(self.ks), self.n_items), dtype=np.int64)

    def put(self, name: str, rows: slice, j: int, values: F64) -> None:
        if name not in self.per_user:
            self.per_user[name] = np.full((self.n, len(self.ks)), np.nan)
        self.per_user[name][rows, j] = values
        self.measured.add((name, j))

    def add(self, name: str, value: float) -> None:
        self.sums[name] = self.sums.get(name, 0.0) + value


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else float("nan")


def _evaluate_one(
    rec: Recommender,
    task: EvalTask,
    items: _Items,
    config: EvalConfig,
    ks: tuple[int, ...],
    oracle: Oracle | None,
    progress: Progress,
    task_id: TaskID,
    oracle_top: tuple[IntArray, IntArray] | None = None,
) -> tuple[dict[str, float], float]:
    """All metrics of one recommender over the task's users, batch by batch; also returns the
    seconds spent inside ``rec.score``. ``oracle_top``: the users' oracle relevant sets as
    (sorted keys, size per user) (:func:`_oracle_top`), for recall and hit under the oracle."""
    n_eval, n_items = task.users.size, task.n_items
    big_k = max(ks)
    acc = _Acc(n_eval, ks, n_items)
    rel_keys = csr_keys(task.relevant)
    rel_vals = task.relevant.data.astype(np.float64)
    ideal = _ideal(task.relevant, big_k)
    n_rel = np.diff(task.relevant.indptr)
    seen_keys = csr_keys(task.seen) if oracle is not None else np.zeros(0, dtype=np.int64)
    uniform_ts = bool(n_eval == 0 or (task.eval_ts_us == task.eval_ts_us[0]).all())
    known = np.flatnonzero(task.upload_us != np.iinfo(np.int64).min)
    by_upload = known[np.argsort(task.upload_us[known], kind="stable")]
    imp = task.impressions
    score_s = 0.0
    batch = _batch_size(config, n_items)
    for b, lo in enumerate(range(0, n_eval, batch)):
        hi = min(n_eval, lo + batch)
        users = task.users[lo:hi]
        ts = task.eval_ts_us[lo:hi]
        nb = hi - lo
        t0 = time.perf_counter()
        raw = rec.score(users)
        score_s += time.perf_counter() - t0
        if getattr(raw, "shape", None) != (nb, n_items):
            raise EvaluationError(
                f"{rec.name}: score() returned shape "
                f"{getattr(raw, 'shape', None)}, expected {(nb, n_items)}"
            )
        if np.isnan(raw).any():
            raise EvaluationError(f"{rec.name}: score() returned NaN scores")
        rows = np.arange(lo, hi, dtype=np.int64)
        if task.candidates is not None:
            cand = task.candidates[lo:hi]
            pos = top_k(np.take_along_axis(np.asarray(raw), cand, axis=1), big_k)
            top = np.where(pos >= 0, np.take_along_axis(cand, np.maximum(pos, 0), axis=1), -1)
        else:
            top = top_k(raw, big_k, _excluder(task, lo, ts, uniform_ts, by_upload))
        valid = top >= 0
        if oracle is not None:
            gains, big_ideal = _oracle_batch(
                oracle, users, ts, top, valid, task, seen_keys, config, b, acc, lo, hi, ks
            )
        else:
            gains = _lookup(rel_keys, rel_vals, rows[:, None] * n_items + top, valid)
            big_ideal = ideal[lo:hi]
        sl = slice(lo, hi)
        for j, k in enumerate(ks):
            acc.put("ndcg", sl, j, M.ndcg_at_k(gains, big_ideal, k))
            if oracle_top is not None:
                oracle_keys, oracle_n = oracle_top
                hit = member(oracle_keys, rows[:, None] * n_items + top[:, :k]) & valid[:, :k]
                found = hit.sum(axis=1).astype(np.float64)
                n_top = oracle_n[lo:hi]
                acc.put(
                    "recall",
                    sl,
                    j,
                    np.divide(found, n_top, out=np.full(nb, np.nan), where=n_top > 0),
                )
                acc.put("hit", sl, j, (found > 0).astype(np.float64))
            if oracle is None:
                acc.put("hit", sl, j, M.hit_at_k(gains, k))
                acc.put("recall", sl, j, M.recall_at_k(gains, n_rel[lo:hi], k))
                acc.put("mrr", sl, j, M.mrr_at_k(gains, k))
            if task.sampled:
                continue
            tk = top[:, :k]
            acc.exposure[j] += np.bincount(tk[tk >= 0], minlength=n_items)
            acc.put("novelty", sl, j, M.mean_item_value_at_k(top, items.self_info, k))
            acc.put("popularity_percentile", sl, j, M.mean_item_value_at_k(top, items.pop_pct, k))
            acc.put("distinct_creators", sl, j, M.distinct_share_at_k(top, items.creator, k))
            if items.topic is not None:
                acc.put("distinct_topics", sl, j, M.distinct_share_at_k(top, items.topic, k))
            if 2 <= k <= config.pairwise_max_k:
                acc.put("ild_tags", sl, j, M.ild_jaccard_at_k(top, items.bitsets, k))
                if items.embeddings is not None:
                    acc.put("ild_embedding", sl, j, M.ild_cosine_at_k(top, items.embeddings, k))
            if imp is not None:
                _replay(acc, imp, rows, top, valid, k, n_items)
        if imp is not None:
            _gauc_batch(acc, imp, raw, lo, hi, n_items)
        progress.advance(task_id)
    return _finish(acc, task, ks, items), score_s


def _batch_size(config: EvalConfig, n_items: int) -> int:
    """``config.user_batch``, capped so one batch of scores has at most ``_SCORE_CELLS``."""
    return max(1, min(config.user_batch, _SCORE_CELLS // max(1, n_items)))


def _excluder(
    task: EvalTask, offset: int, ts: IntArray, uniform_ts: bool, by_upload: IntArray
) -> Exclude:
    """Exclusion for batch rows starting at ``offset``: the user's training items and items
    uploaded after the serving time get the ``MASKED`` key. ``by_upload`` lists the items with
    a known upload time in ascending upload order, so each row's late items are a suffix."""
    seen = task.seen
    sorted_upload = task.upload_us[by_upload]
    first_late = np.searchsorted(sorted_upload, ts, side="right")
    late_all = by_upload[first_late[0] :] if ts.size else by_upload[:0]

    def exclude(lo: int, hi: int, key: npt.NDArray[np.int64]) -> None:
        a, b = seen.indptr[offset + lo], seen.indptr[offset + hi]
        rows = np.repeat(np.arange(hi - lo), np.diff(seen.indptr[offset + lo : offset + hi + 1]))
        key[rows, seen.indices[a:b]] = MASKED
        if uniform_ts:
            if late_all.size:
                key[:, late_all] = MASKED
            return
        for r in range(hi - lo):
            late = by_upload[first_late[lo + r] :]
            if late.size:
                key[r, late] = MASKED

    return exclude


def _replay(
    acc: _Acc,
    imp: Impressions,
    rows: IntArray,
    top: IntArray,
    valid: npt.NDArray[np.bool_],
    k: int,
    n_items: int,
) -> None:
    """Replay statistics (Li et al. 2011, "Unbiased offline evaluation of contextual-bandit-
    based news article recommendation algorithms", WSDM): the logged outcome of recommended
    items that the user was actually served in the test window."""
    q = rows[:, None] * n_items + top[:, :k]
    v = valid[:, :k]
    if imp.key.size == 0:
        acc.add(f"slots@{k}", float(v.sum()))
        return
    pos = np.minimum(np.searchsorted(imp.key, q), imp.key.size - 1)
    hit = (imp.key[pos] == q) & v
    p = pos[hit]
    acc.add(f"slots@{k}", float(v.sum()))
    acc.add(f"matched@{k}", float(hit.sum()))
    for name, arr in (
        ("skipped", imp.skipped),
        ("ratio", imp.watch_ratio),
        ("time", imp.watch_time_s),
    ):
        x = arr[p]
        known = ~np.isnan(x)
        acc.add(f"{name}_sum@{k}", float(x[known].sum()))
        acc.add(f"{name}_n@{k}", float(known.sum()))


def _gauc_batch(
    acc: _Acc, imp: Impressions, raw: FloatArray, lo: int, hi: int, n_items: int
) -> None:
    """Per-user AUC of the raw scores of the user's logged test impressions, engaged (not
    skipped) against skipped; summed with impression-count weights (GAUC)."""
    a, b = np.searchsorted(imp.key, [lo * n_items, hi * n_items])
    key = imp.key[a:b]
    row, item = key // n_items, key % n_items
    scores = np.asarray(raw)[row - lo, item].astype(np.float64)
    engaged = ~(imp.skipped[a:b] == 1.0)  # NaN (unknown) counts as engaged
    _, auc, w = M.group_auc(scores, engaged, row)
    acc.add("gauc_num", float(np.dot(auc, w)))
    acc.add("gauc_den", float(w.sum()))


def _oracle_batch(
    oracle: Oracle,
    users: IntArray,
    ts: IntArray,
    top: IntArray,
    valid: npt.NDArray[np.bool_],
    task: EvalTask,
    seen_keys: IntArray,
    config: EvalConfig,
    batch: int,
    acc: _Acc,
    lo: int,
    hi: int,
    ks: tuple[int, ...],
) -> tuple[F64, F64]:
    """Oracle gains of the list and of the ideal list over the list + a catalogue sample."""
    nb, big_k = top.shape
    n_items = task.n_items
    vids = np.where(valid, top, 0)
    resp = oracle.expected_response(users.astype(np.int64), vids, ts)
    wr = _resp(resp.watch_ratio, (nb, big_k), "watch_ratio")
    gains = np.where(valid, np.clip(wr, 0.0, config.relevance_cap), 0.0)
    for j, k in enumerate(ks):
        v = valid[:, :k]
        n = v.sum(axis=1)
        for name, arr in (
            ("exp_watch_ratio", wr),
            ("exp_skip_rate", resp.p_skip),
            ("exp_like_rate", resp.p_like),
            ("exp_watch_time_s", resp.watch_time_s),
        ):
            x = np.where(v, _resp(arr, (nb, big_k), name)[:, :k], 0.0).sum(axis=1)
            acc.put(name, slice(lo, hi), j, np.divide(x, n, out=np.full(nb, np.nan), where=n > 0))
    # the same sample for every recommender: a generator keyed by (seed, batch)
    rng = np.random.default_rng([config.seed, batch])
    pool = np.flatnonzero(task.upload_us <= ts.max())
    if pool.size <= config.oracle_ideal_sample:
        sample = np.broadcast_to(pool, (nb, pool.size))
    else:
        sample = pool[rng.integers(0, pool.size, size=(nb, config.oracle_ideal_sample))]
    rows = np.arange(lo, hi, dtype=np.int64)[:, None]
    allc = np.concatenate([np.where(valid, top, -1), sample], axis=1)
    ok = allc >= 0
    ok[:, big_k:] &= ~member(seen_keys, rows * n_items + sample)
    order = np.argsort(allc, axis=1, kind="stable")
    srt = np.take_along_axis(allc, order, axis=1)
    dup = np.zeros(srt.shape, dtype=bool)
    dup[:, 1:] = srt[:, 1:] == srt[:, :-1]
    dup_o = np.empty_like(dup)
    np.put_along_axis(dup_o, order, dup, axis=1)
    ok &= ~dup_o
    sresp = oracle.expected_response(users.astype(np.int64), sample.astype(np.int64), ts)
    swr = _resp(sresp.watch_ratio, sample.shape, "watch_ratio")
    g_all = np.concatenate([gains, np.clip(swr, 0.0, config.relevance_cap)], axis=1)
    g_all = np.where(ok, g_all, -np.inf)
    best = -np.sort(-g_all, axis=1)[:, :big_k]
    return gains, np.where(np.isfinite(best), np.maximum(best, 0.0), 0.0)


def _oracle_top(
    oracle: Oracle, task: EvalTask, r: int, config: EvalConfig
) -> tuple[IntArray, IntArray]:
    """Each evaluated user's oracle relevant set: the ``r`` videos with the highest expected
    gain (watch ratio clipped to ``relevance_cap``) among those uploaded by the user's serving
    time and not in their training history, the whole catalogue scored (in blocks of users).
    Ties at the cut are broken by the lower video index. Returns the sorted keys
    ``row * n_items + video`` and the set's size per user (n_eval,)."""
    n_eval, n_items = task.users.size, task.n_items
    seen_keys = csr_keys(task.seen)
    out = np.full((n_eval, min(r, n_items)), -1, dtype=np.int64)
    items = np.arange(n_items, dtype=np.int64)
    block = max(1, 2_000_000 // max(n_items, 1))
    for lo in range(0, n_eval, block):
        hi = min(n_eval, lo + block)
        users, ts = task.users[lo:hi], task.eval_ts_us[lo:hi]
        grid = np.broadcast_to(items, (hi - lo, n_items))
        resp = oracle.expected_response(users.astype(np.int64), grid, ts)
        gain = np.clip(
            _resp(resp.watch_ratio, grid.shape, "watch_ratio"), 0.0, config.relevance_cap
        )
        rows = np.arange(lo, hi, dtype=np.int64)[:, None]
        ok = (task.upload_us[None, :] <= ts[:, None]) & ~member(seen_keys, rows * n_items + grid)
        # best first by gain, ties by index: a stable sort of -gain
        order = np.argsort(np.where(ok, -gain, np.inf), axis=1, kind="stable")[:, : out.shape[1]]
        keep = np.take_along_axis(ok, order, axis=1)
        out[lo:hi] = np.where(keep, order, -1)
    ok = out >= 0
    rows = np.broadcast_to(np.arange(n_eval, dtype=np.int64)[:, None], out.shape)
    return np.sort(rows[ok] * n_items + out[ok]), ok.sum(axis=1)


def _resp(arr: npt.ArrayLike, shape: tuple[int, ...], name: str) -> F64:
    a = np.asarray(arr, dtype=np.float64)
    if a.shape != shape:
        raise EvaluationError(
            f"oracle: expected_response().{name} has shape {a.shape}, expected {shape}"
        )
    if np.isnan(a).any():
        raise EvaluationError(f"oracle: expected_response().{name} contains NaN")
    return a


def _finish(acc: _Acc, task: EvalTask, ks: tuple[int, ...], items: _Items) -> dict[str, float]:
    out: dict[str, float] = {}
    n_elig = int((task.upload_us <= (task.eval_ts_us.max() if task.users.size else 0)).sum())
    for name, arr in acc.per_user.items():
        for j, k in enumerate(ks):
            if (name, j) not in acc.measured:
                continue  # not defined at this k (e.g. pairwise diversity of one item)
            col = arr[:, j]
            col = col[~np.isnan(col)]
            out[f"{name}@{k}"] = float(col.mean()) if col.size else float("nan")
    if not task.sampled:
        for j, k in enumerate(ks):
            out[f"coverage@{k}"] = M.coverage(acc.exposure[j], n_elig)
            creators = np.bincount(items.creator, weights=acc.exposure[j])
            out[f"creator_gini@{k}"] = M.gini(creators)
    if task.impressions is not None:
        s = acc.sums
        for k in ks:
            out[f"replay_match_rate@{k}"] = _ratio(
                s.get(f"matched@{k}", 0.0), s.get(f"slots@{k}", 0.0)
            )
            out[f"replay_skip_rate@{k}"] = _ratio(
                s.get(f"skipped_sum@{k}", 0.0), s.get(f"skipped_n@{k}", 0.0)
            )
            out[f"replay_watch_ratio@{k}"] = _ratio(
                s.get(f"ratio_sum@{k}", 0.0), s.get(f"ratio_n@{k}", 0.0)
            )
            out[f"replay_watch_time_s@{k}"] = _ratio(
                s.get(f"time_sum@{k}", 0.0), s.get(f"time_n@{k}", 0.0)
            )
        out["gauc"] = _ratio(s.get("gauc_num", 0.0), s.get("gauc_den", 0.0))
    return dict(sorted(out.items()))


# ---------------------------------------------------------------- entry point
def data_fingerprint(events: pl.DataFrame) -> str:
    """A content hash of the events (ids, users, videos, times, splits), 16 hex digits.

    Computed from the raw column bytes in ``event_id`` order, so it does not depend on row
    order or on a library's hash function."""
    cols = [c for c in (S.EVENT_ID, S.USER_IDX, S.VIDEO_IDX) if c in events.columns]
    e = events.sort(S.EVENT_ID) if S.EVENT_ID in events.columns else events
    h = sha256()
    for c in cols:
        h.update(e.get_column(c).cast(pl.Int64).to_numpy().tobytes())
    if S.TS in e.columns:
        h.update(e.select(pl.col(S.TS).dt.epoch("us")).to_series().to_numpy().tobytes())
    for c in (S.SPLIT, S.LOO_SPLIT):
        if c in e.columns:
            h.update("\x00".join(e.get_column(c).cast(pl.String).fill_null("").to_list()).encode())
    return h.hexdigest()[:16]


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for p in ("shortrec", "numpy", "polars", "scipy"):
        try:
            out[p] = importlib.metadata.version(p)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def evaluate(
    events: pl.DataFrame,
    videos: pl.DataFrame,
    users: pl.DataFrame,
    recommenders: Sequence[Recommender],
    config: EvalConfig,
    oracle: Oracle | None = None,
    skip_threshold_s: float = S.DEFAULT_SKIP_THRESHOLD_S,
    fingerprint: str = "",
    progress: bool = True,
    item_embeddings: FloatArray | None = None,
) -> EvalReport:
    """Evaluate ``recommenders`` under ``config.protocol`` and return the report.

    ``events`` has the columns of ``schema.ETL_EVENTS``; ``videos``/``users`` those of
    ``schema.VIDEOS``/``schema.USERS``. A recommender whose ``is_fitted`` attribute is not
    True is fit by the runner on the protocol's training data (pass fresh instances per
    protocol: a model fit on another protocol's training data may have seen its test items).
    ``oracle`` is required by the ``oracle`` protocol. ``item_embeddings`` ``(n_items, d)``
    feeds embedding diversity (default: a truncated SVD of the training matrix). Raises
    :class:`schema.BadInput` on bad tables or a protocol the data cannot support, and
    :class:`EvaluationError` when a recommender breaks its contract.
    """
    names = [r.name for r in recommenders]
    if len(set(names)) != len(names):
        raise ValueError(f"recommender names must be unique, got {names}")
    ks_all = config.cutoffs
    if min(ks_all) < 1:
        raise ValueError(f"cut-offs must be >= 1, got {ks_all}")
    if oracle is not None and not isinstance(oracle, Oracle):
        raise TypeError("oracle must implement shortrec.domain.Oracle")
    t_start = time.perf_counter()
    task = build_task(events, videos, users, config, skip_threshold_s, oracle is not None)
    oracle_used = oracle if config.protocol == "oracle" else None
    ks = ks_all
    if task.candidates is not None:
        ks = tuple(k for k in ks_all if k <= task.candidates.shape[1])
        if config.k not in ks:
            raise ValueError(
                f"k={config.k} exceeds the {task.candidates.shape[1]} candidates "
                "of the sampled protocol"
            )
    items = _item_side(task, videos, config, item_embeddings)
    oracle_top = None
    if oracle_used is not None and config.oracle_recall_top is not None:
        oracle_top = _oracle_top(oracle_used, task, config.oracle_recall_top, config)
    n_batches = math.ceil(task.users.size / _batch_size(config, task.n_items))
    results: dict[str, dict[str, float]] = {}
    info: dict[str, dict[str, object]] = {}
    console = Console(stderr=True)
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, disable=not progress, transient=False) as bar:
        for rec in recommenders:
            tid = bar.add_task(f"{config.protocol}: {rec.name}", total=n_batches)
            t0 = time.perf_counter()
            fit_by_runner = not bool(getattr(rec, "is_fitted", False))
            if fit_by_runner:
                rec.fit(task.train)
            fit_s = time.perf_counter() - t0
            t1, c1 = time.perf_counter(), time.process_time()
            results[rec.name], score_s = _evaluate_one(
                rec, task, items, config, ks, oracle_used, bar, tid, oracle_top
            )
            eval_s = time.perf_counter() - t1
            eval_cpu_s = time.process_time() - c1
            info[rec.name] = {
                "fit_by_runner": fit_by_runner,
                "fit_s": round(fit_s, 4),
                "score_s": round(score_s, 4),
                "eval_s": round(eval_s, 4),
                "eval_cpu_s": round(eval_cpu_s, 4),
                "users_per_s": round(task.users.size / eval_s, 1) if eval_s > 0 else None,
            }
    data = {
        "fingerprint": fingerprint or data_fingerprint(events),
        "users": int(task.train.n_users),
        "items": int(task.n_items),
        "interactions": int(events.height),
        "train_interactions": int(task.train.interactions.height),
        "eval_users": int(task.users.size),
    }
    sampling = None
    if task.candidates is not None:
        sampling = {
            "n_negatives": config.n_negatives,
            "negatives": config.negative_sampling,
            "candidates_per_user": int(task.candidates.shape[1]),
        }
    return EvalReport(
        protocol=config.protocol,
        k=config.k,
        ks=ks,
        sampled=task.sampled,
        sampling=sampling,
        data=data,
        metrics=results,
        recommender_info={n: {"fit_by_runner": bool(i["fit_by_runner"])} for n, i in info.items()},
        logged=dict(task.logged),
        notes=(*task.notes, f"embedding: {items.embedding_source}"),
        config=config.model_dump(mode="json"),
        versions=_versions(),
        timing={**info, "total_s": round(time.perf_counter() - t_start, 4)},
    )
