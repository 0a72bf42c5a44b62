"""Candidate sources behind one protocol: trending, tags, two-tower vectors, co-visitation,
fresh, explore.

Each source is an immutable object built from frames once (``from_frames``) and then answers
:meth:`CandidateSource.candidates` per request from numpy arrays only, so a request costs
microseconds to a millisecond. Sources may return videos the user has seen; the merge
(``merge.py``) removes them. Scores are comparable within one source only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numba
import numpy as np
import numpy.typing as npt
import polars as pl
import scipy.sparse as sp

from shortrec import schema as S
from shortrec.config import (
    CovisitConfig,
    EngagementConfig,
    ExploreConfig,
    FreshConfig,
    TagSourceConfig,
    TrendingConfig,
)
from shortrec.retrieval import features as fx
from shortrec.retrieval.index import VectorIndex
from shortrec.retrieval.two_tower import TrainedTwoTower
from shortrec.retrieval.types import Candidates, RetrievalRequest

Idx32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]
F32 = npt.NDArray[np.float32]

US_PER_DAY = 86_400 * 1_000_000


@runtime_checkable
class CandidateSource(Protocol):
    """Anything that proposes up to ``k`` videos for a request, best first."""

    @property
    def name(self) -> str: ...

    def candidates(self, request: RetrievalRequest, k: int) -> Candidates: ...


def _top(idx: Idx32, score: F32, k: int) -> tuple[Idx32, F32]:
    """Top ``k`` of (idx, score) by score descending, ties by idx ascending."""
    if idx.shape[0] > k:
        part = np.argpartition(-score, k - 1)[:k]
        idx, score = idx[part], score[part]
    order = np.lexsort((idx, -score))
    return idx[order], score[order]


def _csr(keys: I64, values: Idx32, scores: F32, n_keys: int) -> tuple[I64, Idx32, F32]:
    """Group (already sorted by key) rows into CSR: ``ptr`` (n_keys+1,), values, scores."""
    ptr = np.zeros(n_keys + 1, dtype=np.int64)
    np.add.at(ptr, keys + 1, 1)
    return np.cumsum(ptr), values, scores


def _gather(
    ptr: I64,
    values: Idx32,
    scores: F32,
    rows: I64,
    weights: F32,
    exclude: npt.ArrayLike = (),
) -> tuple[Idx32, F32]:
    """``sum_r weights[r] * scores`` over the CSR ``rows``: the distinct values (ascending)
    with their float32 totals, summed in row order; values in ``exclude`` are left out."""
    ex = np.unique(np.asarray(exclude, np.int64).ravel())  # sorted
    w = np.asarray(weights, np.float32)
    return _gather_kernel(ptr, values, scores, np.asarray(rows, np.int64), w, ex)


@numba.njit(cache=True, nogil=True)
def _gather_kernel(
    ptr: I64, values: Idx32, scores: F32, rows: I64, weights: F32, exclude: I64
) -> tuple[Idx32, F32]:
    """:func:`_gather` compiled: one pass per step instead of a dozen NumPy calls (the
    request path calls it for every tag and co-visitation request)."""
    n = 0
    for r in rows:
        n += ptr[r + 1] - ptr[r]
    vals = np.empty(n, values.dtype)
    contrib = np.empty(n, np.float32)
    j = 0
    for i in range(rows.shape[0]):
        r, w = rows[i], weights[i]
        for p in range(ptr[r], ptr[r + 1]):
            vals[j] = values[p]
            contrib[j] = scores[p] * w
            j += 1
    order = np.argsort(vals)  # groups equal values; the sums below keep row order
    uniq = np.empty(n, values.dtype)
    group = np.empty(n, np.int64)
    u = -1
    for t in range(n):
        e = order[t]
        if u < 0 or vals[e] != uniq[u]:
            u += 1
            uniq[u] = vals[e]
        group[e] = u
    total = np.zeros(u + 1, np.float32)
    for e in range(n):
        total[group[e]] += contrib[e]
    keep = np.ones(u + 1, np.bool_)
    x = 0  # both sorted: one walk drops the excluded values
    for g in range(u + 1):
        while x < exclude.shape[0] and exclude[x] < uniq[g]:
            x += 1
        if x < exclude.shape[0] and exclude[x] == uniq[g]:
            keep[g] = False
    return uniq[: u + 1][keep], total[keep]


# ---------------------------------------------------------------- trending
@dataclass(frozen=True)
class TrendingSource:
    """Time-decayed engagement (half-life ``cfg.half_life_hours``), per region with global
    backoff: a region's list ranks by ``0.5 * region_share + 0.5 * global_share`` where a
    share is a video's fraction of the list's total decayed engagement, so a small region
    still gets globally trending videos. ``state`` keeps every score for incremental refresh
    (:meth:`refreshed`)."""

    cfg: TrendingConfig
    engagement: EngagementConfig
    state: pl.DataFrame  # [region, video_idx, score] at as_of_us
    as_of_us: int
    lists: dict[str, tuple[Idx32, F32]]
    name: str = "trending"

    @staticmethod
    def from_frames(
        events: pl.DataFrame,
        users: pl.DataFrame,
        now_us: int,
        cfg: TrendingConfig,
        engagement: EngagementConfig,
    ) -> TrendingSource:
        state = fx.decayed_engagement(
            events.lazy(),
            users.lazy(),
            now_us,
            cfg.half_life_hours * 3600.0,
            engagement,
            cfg.per_region,
        )
        return TrendingSource.from_state(state, now_us, cfg, engagement)

    @staticmethod
    def from_state(
        state: pl.DataFrame, as_of_us: int, cfg: TrendingConfig, engagement: EngagementConfig
    ) -> TrendingSource:
        shares = state.with_columns(
            (pl.col(fx.SCORE) / pl.col(fx.SCORE).sum().over(S.REGION)).alias("share")
        )
        glob = shares.filter(pl.col(S.REGION) == fx.GLOBAL).select(
            S.VIDEO_IDX, pl.col("share").alias("g")
        )
        lists: dict[str, tuple[Idx32, F32]] = {}
        top_g = glob.sort("g", S.VIDEO_IDX, descending=[True, False]).head(cfg.top_n)
        lists[fx.GLOBAL] = (
            top_g.get_column(S.VIDEO_IDX).to_numpy().astype(np.int32),
            top_g.get_column("g").to_numpy().astype(np.float32),
        )
        for (region,), part in shares.filter(pl.col(S.REGION) != fx.GLOBAL).group_by(
            S.REGION, maintain_order=True
        ):
            # candidates: the region's own top plus the global top, blended
            own = part.sort("share", S.VIDEO_IDX, descending=[True, False]).head(cfg.top_n)
            pool = pl.concat([own.select(S.VIDEO_IDX), top_g.select(S.VIDEO_IDX)]).unique()
            blend = (
                pool.join(own.select(S.VIDEO_IDX, "share"), on=S.VIDEO_IDX, how="left")
                .join(glob, on=S.VIDEO_IDX, how="left")
                .select(
                    S.VIDEO_IDX,
                    (0.5 * pl.col("share").fill_null(0.0) + 0.5 * pl.col("g").fill_null(0.0)).alias(
                        fx.SCORE
                    ),
                )
                .sort(fx.SCORE, S.VIDEO_IDX, descending=[True, False])
                .head(cfg.top_n)
            )
            lists[str(region)] = (
                blend.get_column(S.VIDEO_IDX).to_numpy().astype(np.int32),
                blend.get_column(fx.SCORE).to_numpy().astype(np.float32),
            )
        return TrendingSource(cfg, engagement, state, as_of_us, lists)

    def refreshed(
        self, new_events: pl.DataFrame, users: pl.DataFrame, now_us: int
    ) -> TrendingSource:
        """A new source at ``now_us`` from this one plus ``new_events`` (those after
        ``as_of_us``): old scores decay, new events add; equal to a rebuild from all events."""
        h = self.cfg.half_life_hours * 3600.0
        new = fx.decayed_engagement(
            new_events.lazy().filter(pl.col(S.TS).dt.epoch("us") > self.as_of_us),
            users.lazy(),
            now_us,
            h,
            self.engagement,
            self.cfg.per_region,
        )
        state = fx.advance_decayed(self.state, self.as_of_us, new, now_us, h)
        return TrendingSource.from_state(state, now_us, self.cfg, self.engagement)

    def candidates(self, request: RetrievalRequest, k: int) -> Candidates:
        key = request.region if (self.cfg.per_region and request.region in self.lists) else None
        idx, score = self.lists[key if key is not None else fx.GLOBAL]
        return Candidates(self.name, idx[:k], score[:k])


# ---------------------------------------------------------------- tags
@dataclass(frozen=True)
class TagSource:
    """Per-tag top videos by smoothed engagement (``features.smoothed_engagement``), each
    list scaled to a maximum of 1; a request's score is ``sum_t a_t * s_tv`` over its
    ``max_user_tags`` strongest affinities ``a_t``."""

    cfg: TagSourceConfig
    ptr: I64  # (n_tags + 1,)
    video: Idx32
    score: F32
    name: str = "tags"

    @staticmethod
    def from_frames(
        events: pl.DataFrame,
        videos: pl.DataFrame,
        cfg: TagSourceConfig,
        engagement: EngagementConfig,
    ) -> TagSource:
        scored = fx.smoothed_engagement(
            fx.video_stats(events.lazy(), engagement), cfg.prior_strength
        )
        top = fx.per_tag_top(videos, scored, cfg.per_tag_top_n).with_columns(
            (pl.col(fx.SCORE) / pl.col(fx.SCORE).max().over(S.TAG_IDX)).alias(fx.SCORE)
        )
        tmax = videos.get_column(S.TAGS).explode().max()
        n_tags = int(tmax) + 1 if tmax is not None else 0  # type: ignore[arg-type]
        ptr, vid, sc = _csr(
            top.get_column(S.TAG_IDX).to_numpy().astype(np.int64),
            top.get_column(S.VIDEO_IDX).to_numpy().astype(np.int32),
            top.get_column(fx.SCORE).to_numpy().astype(np.float32),
            n_tags,
        )
        return TagSource(cfg, ptr, vid, sc)

    def candidates(self, request: RetrievalRequest, k: int) -> Candidates:
        t, w = request.tag_idx, request.tag_weight
        ok = (t >= 0) & (t < self.ptr.shape[0] - 1) & (w > 0)
        t, w = t[ok], w[ok]
        if t.shape[0] == 0 or k <= 0:
            return Candidates.empty(self.name)
        if t.shape[0] > self.cfg.max_user_tags:
            keep = np.lexsort((t, -w))[: self.cfg.max_user_tags]
            t, w = t[keep], w[keep]
        uniq, total = _gather(self.ptr, self.video, self.score, t.astype(np.int64), w)
        idx, sc = _top(uniq, total, k)
        return Candidates(self.name, idx, sc)


# ---------------------------------------------------------------- covisit
def covisit_table(
    user: I64, video: Idx32, n_videos: int, cfg: CovisitConfig
) -> tuple[I64, Idx32, F32]:
    """The item-to-item co-visitation table as CSR ``(ptr (n_videos + 1,), nbr, score)``,
    each row's neighbours best first (ties by video_idx).

    ``user``/``video`` (n,): positive impressions sorted by user, then (ts, event_id). Two
    impressions of one user ``d`` positions apart (``1 <= d <= window``, different videos)
    add ``d ** -distance_exponent`` to both directed pairs; a pair's total ``c_ij`` becomes
    ``c_ij / sqrt(n_i * n_j)`` with ``n_i`` video ``i``'s impressions (cosine-style, so popular
    videos do not neighbour everything), and each row keeps its ``neighbours`` best.

    Work is ``O(n * window)`` numpy operations. Rows are built in blocks of consecutive videos
    with about ``chunk_pairs`` pairs, each block summed from pieces of at most about
    ``chunk_pairs`` pairs (a viral video's pairs span several pieces), then pruned; memory is
    one piece, one block's distinct pairs and the pruned table.
    """
    n, w_max = video.shape[0], cfg.window
    first = np.ones(n, dtype=np.bool_)
    first[1:] = user[1:] != user[:-1]
    starts = np.flatnonzero(first)
    lens = np.diff(np.append(starts, n))
    pos = np.arange(n, dtype=np.int64)
    fwd = np.minimum(w_max, np.repeat(starts + lens, lens) - 1 - pos)  # (n,) partners after
    bwd = np.minimum(w_max, pos - np.repeat(starts, lens))  # (n,) partners before
    del pos, first
    freq = np.bincount(video, minlength=n_videos).astype(np.float64)  # (V,) n_i
    pairs = np.bincount(video, weights=fwd + bwd, minlength=n_videos)  # (V,) pairs per row
    by_video = np.argsort(video, kind="stable")  # impressions grouped by video
    vptr = np.concatenate([[0], np.cumsum(freq.astype(np.int64))])  # (V+1,) into by_video
    # block b holds the videos whose first pair falls in [b, b+1) * chunk_pairs
    block = (np.cumsum(pairs) - pairs) // cfg.chunk_pairs
    edges = np.append(np.flatnonzero(np.diff(block, prepend=-1)), n_videos)
    weight = np.arange(1, w_max + 1, dtype=np.float64) ** -cfg.distance_exponent  # (W,)
    rows, nbrs, scores = [], [], []
    for lo, hi in zip(edges[:-1].tolist(), edges[1:].tolist(), strict=True):
        anchor = by_video[vptr[lo] : vptr[hi]]  # impressions of videos lo..hi-1
        cost = np.cumsum(fwd[anchor] + bwd[anchor])
        if cost.shape[0] == 0 or cost[-1] == 0:
            continue  # these videos pair with nothing
        cuts = np.searchsorted(cost, np.arange(cfg.chunk_pairs, cost[-1], cfg.chunk_pairs))
        m = sp.csr_array((hi - lo, n_videos), dtype=np.float64)
        for piece in np.split(anchor, cuts):
            m = m + _covisit_piece(piece, fwd, bwd, video, weight, lo, m.shape)
        m.sum_duplicates()
        row = np.repeat(np.arange(lo, hi, dtype=np.int64), np.diff(m.indptr))  # (nnz,)
        col = m.indices.astype(np.int64)
        sc = m.data / np.sqrt(freq[row] * freq[col])
        order = np.lexsort((col, -sc, row))  # by row, best first
        rank = np.arange(order.shape[0]) - m.indptr[row[order] - lo]
        keep = order[rank < cfg.neighbours]
        rows.append(row[keep])
        nbrs.append(col[keep].astype(np.int32))
        scores.append(sc[keep].astype(np.float32))
    if not rows:
        return np.zeros(n_videos + 1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32)
    return _csr(np.concatenate(rows), np.concatenate(nbrs), np.concatenate(scores), n_videos)


def _covisit_piece(
    anchor: I64,
    fwd: I64,
    bwd: I64,
    video: Idx32,
    weight: npt.NDArray[np.float64],
    lo: int,
    shape: tuple[int, int],
) -> sp.csr_array:
    """The pairs of the impressions ``anchor`` (rows ``video - lo``) summed into a CSR."""
    src_l, dst_l, wt_l = [], [], []
    for d in range(1, weight.shape[0] + 1):
        for a, step in ((anchor[fwd[anchor] >= d], d), (anchor[bwd[anchor] >= d], -d)):
            dst = video[a + step]
            ok = dst != video[a]
            src_l.append(video[a][ok] - lo)
            dst_l.append(dst[ok])
            wt_l.append(np.full(int(ok.sum()), weight[d - 1]))
    data = (np.concatenate(wt_l), (np.concatenate(src_l), np.concatenate(dst_l)))
    return sp.csr_array(data, shape=shape)  # duplicate pairs are summed


@dataclass(frozen=True)
class CovisitSource:
    """Item-to-item co-visitation ("people who watched X around it also watched Y"): the
    table of :func:`covisit_table` as CSR ``ptr``/``nbr``/``score``. A request sums the
    neighbour scores of its last ``history_items`` positive history videos, the i-th most
    recent (from 0) weighted ``history_decay ** i``; history videos are never proposed. A
    cold user (no positive history) gets nothing."""

    cfg: CovisitConfig
    engagement: EngagementConfig
    ptr: I64  # (n_videos + 1,)
    nbr: Idx32
    score: F32
    name: str = "covisit"

    @staticmethod
    def from_frames(
        events: pl.DataFrame,
        n_videos: int,
        now_us: int,
        cfg: CovisitConfig,
        engagement: EngagementConfig,
    ) -> CovisitSource:
        """From ``schema.EVENTS`` rows up to ``now_us`` (positive impressions only) over a
        catalogue of ``n_videos`` (video_idx beyond it are dropped)."""
        ev = (
            events.lazy()
            .filter(pl.col(S.TS).dt.epoch("us") <= now_us)
            .filter(fx.positive_expr(engagement) & (pl.col(S.VIDEO_IDX) < n_videos))
            .sort(S.USER_IDX, S.TS, S.EVENT_ID)
            .select(S.USER_IDX, S.VIDEO_IDX)
            .collect()
        )
        ptr, nbr, score = covisit_table(
            ev.get_column(S.USER_IDX).to_numpy().astype(np.int64),
            ev.get_column(S.VIDEO_IDX).to_numpy().astype(np.int32),
            n_videos,
            cfg,
        )
        return CovisitSource(cfg, engagement, ptr, nbr, score)

    def candidates(self, request: RetrievalRequest, k: int) -> Candidates:
        h = request.history
        keep = fx.positive_mask(request.watch_ratio, request.skipped, h.shape[0], self.engagement)
        keep &= (h >= 0) & (h < self.ptr.shape[0] - 1)  # videos newer than the table: unknown
        recent = h[keep][-self.cfg.history_items :].astype(np.int64)
        if recent.shape[0] == 0 or k <= 0:
            return Candidates.empty(self.name)
        age = np.arange(recent.shape[0] - 1, -1, -1)  # 0 = most recent
        weight = (self.cfg.history_decay**age).astype(np.float32)
        uniq, total = _gather(self.ptr, self.nbr, self.score, recent, weight, exclude=h)
        idx, sc = _top(uniq, total, k)
        return Candidates(self.name, idx, sc)


# ---------------------------------------------------------------- fresh
@dataclass(frozen=True)
class FreshSource:
    """Recent uploads with little exposure, matched to the user's tags.

    Pool at request time: uploaded within ``window_days`` before ``now`` (never after), with
    at most ``max_impressions`` impressions, the ``max_pool`` most recent. Score =
    ``sum of the user's affinities over the video's tags + recency_weight * (1 - age/window)``;
    a cold user ranks by recency alone, so every new upload can be proposed with no history.
    """

    cfg: FreshConfig
    video: Idx32  # sorted by upload time ascending
    upload_us: I64
    impressions: I64
    tag_ptr: I64  # (len(video) + 1,) into tag_flat
    tag_flat: Idx32
    name: str = "fresh"

    @staticmethod
    def from_frames(events: pl.DataFrame, videos: pl.DataFrame, cfg: FreshConfig) -> FreshSource:
        counts = events.group_by(S.VIDEO_IDX).agg(pl.len().alias(fx.IMPRESSIONS))
        v = (
            videos.filter(pl.col(S.UPLOAD_TS).is_not_null())
            .join(counts, on=S.VIDEO_IDX, how="left")
            .with_columns(pl.col(fx.IMPRESSIONS).fill_null(0).cast(pl.Int64))
            .filter(pl.col(fx.IMPRESSIONS) <= cfg.max_impressions)
            .with_columns(pl.col(S.UPLOAD_TS).dt.epoch("us").alias(fx.TS_US))
            .sort(fx.TS_US, S.VIDEO_IDX)
        )
        lens = v.get_column(S.TAGS).list.len().to_numpy().astype(np.int64)
        return FreshSource(
            cfg,
            v.get_column(S.VIDEO_IDX).to_numpy().astype(np.int32),
            v.get_column(fx.TS_US).to_numpy().astype(np.int64),
            v.get_column(fx.IMPRESSIONS).to_numpy().astype(np.int64),
            np.concatenate([[0], np.cumsum(lens)]).astype(np.int64),
            v.get_column(S.TAGS).explode().drop_nulls().to_numpy().astype(np.int32),
        )

    def candidates(self, request: RetrievalRequest, k: int) -> Candidates:
        window = self.cfg.window_days * US_PER_DAY
        lo = int(np.searchsorted(self.upload_us, request.now_us - window, side="left"))
        hi = int(np.searchsorted(self.upload_us, request.now_us, side="right"))
        lo = max(lo, hi - self.cfg.max_pool)
        if hi <= lo or k <= 0:
            return Candidates.empty(self.name)
        age = (request.now_us - self.upload_us[lo:hi]).astype(np.float64)
        score = (self.cfg.recency_weight * (1.0 - age / window)).astype(np.float32)
        if request.tag_idx.shape[0]:
            n_aff = int(max(request.tag_idx.max(), self.tag_flat.max(initial=0))) + 1
            aff = np.zeros(n_aff, dtype=np.float32)
            np.add.at(aff, request.tag_idx, request.tag_weight)
            a, b = self.tag_ptr[lo], self.tag_ptr[hi]
            per_tag = aff[self.tag_flat[a:b]]
            seg = np.repeat(np.arange(hi - lo), np.diff(self.tag_ptr[lo : hi + 1]))
            match = np.zeros(hi - lo, dtype=np.float32)
            np.add.at(match, seg, per_tag)
            score = score + match
        idx, sc = _top(self.video[lo:hi], score, k)
        return Candidates(self.name, idx, sc)


# ---------------------------------------------------------------- explore
@dataclass(frozen=True)
class ExploreSource:
    """Diverse exploration: the per-category top videos (smoothed engagement) taken
    round-robin over categories, so the first ``c`` candidates cover ``c`` categories.
    Score = ``1 / (1 + round)``."""

    cfg: ExploreConfig
    video: Idx32
    score: F32
    name: str = "explore"

    @staticmethod
    def from_frames(
        events: pl.DataFrame,
        videos: pl.DataFrame,
        cfg: ExploreConfig,
        engagement: EngagementConfig,
        prior_strength: float,
    ) -> ExploreSource:
        scored = fx.smoothed_engagement(fx.video_stats(events.lazy(), engagement), prior_strength)
        top = (
            fx.per_category_top(videos, scored, cfg.per_category_top_n)
            .with_columns(pl.int_range(pl.len()).over(S.CATEGORY).alias("round"))
            .sort("round", fx.SCORE, S.VIDEO_IDX, descending=[False, True, False])
        )
        rounds = top.get_column("round").to_numpy().astype(np.float32)
        return ExploreSource(
            cfg,
            top.get_column(S.VIDEO_IDX).to_numpy().astype(np.int32),
            (1.0 / (1.0 + rounds)).astype(np.float32),
        )

    def candidates(self, request: RetrievalRequest, k: int) -> Candidates:
        return Candidates(self.name, self.video[:k], self.score[:k])


# ---------------------------------------------------------------- vector (two-tower)
@dataclass(frozen=True)
class VectorSource:
    """Two-tower retrieval: the user vector from the live history at request time (positive
    impressions only, as in training), then a FAISS search over the video vectors."""

    model: TrainedTwoTower
    index: VectorIndex
    engagement: EngagementConfig
    name: str = "two_tower"

    def user_vector(self, request: RetrievalRequest) -> F32:
        keep = fx.positive_mask(
            request.watch_ratio, request.skipped, request.history.shape[0], self.engagement
        )
        return self.model.user_embedding(
            request.history[keep], request.region, request.age_bucket, request.device
        )

    def candidates(self, request: RetrievalRequest, k: int) -> Candidates:
        if k <= 0:
            return Candidates.empty(self.name)
        scores, ids = self.index.search(self.user_vector(request)[None, :], k)
        ok = ids[0] >= 0
        return Candidates(self.name, ids[0][ok].astype(np.int32), scores[0][ok])
