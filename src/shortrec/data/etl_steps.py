"""Pure ETL steps with no I/O (used by ``data/etl.py``).

Point-in-time windows are *sort-based scans*: a bucket's rows are put in ``(key, ts, event_id)``
order once (an explicit sort in the same step, never an order inherited through a join), every
group is a contiguous run, and a per-group prefix sum is a global ``cumsum`` minus its value at
the group start (:func:`exclusive_sum`). Integer prefix sums are exact (int64 arithmetic is
exact modulo 2^64, so the subtraction recovers the group's own sum whatever the global running
total). The exponentially decayed tag affinity uses the same trick in fixed point
(:func:`decayed_prefix`). Every feature counts only rows strictly before the current one in
``(ts, event_id)`` order. This replaces ``cum_sum().over(key, order_by=...)`` windows, whose cost
is per group and dominated by the ~10^6 tiny (user, tag) groups of a bucket.

Columns whose names start with ``_`` are private intermediates of the ETL; they never reach an
output table (public column names live in :mod:`shortrec.schema`).

Sufficient statistics. Each event carries seven integer indicators (:data:`INDICATORS`):
engaged, watch ratio in micro-units and whether it is known, skipped and whether it is known,
liked and whether it is known. Rates are ratios of their sums, so per-bucket partial sums merge by
addition, and because they are integers the merge is exact in any order (1 bucket and 7 buckets
give bit-identical statistics).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import polars as pl

from shortrec import schema as S

ORDER = [S.TS, S.EVENT_ID]

ENG, WR, WRN, SK, SKN, LK, LKN = "_eng", "_wr", "_wrn", "_sk", "_skn", "_lk", "_lkn"
INDICATORS = (ENG, WR, WRN, SK, SKN, LK, LKN)
N = "n"  # suffix of a count of impressions among the sufficient statistics
HOUR = "_hour"
STATE_LAST_TS = "_last_ts"
U_ENG = "_u_eng"
WR_SCALE = 1_000_000  # watch ratio is summed in integer micro-units so sums are exact
#: The smoothed rates as (numerator, denominator, numerator scale): engage, watch ratio, skip,
#: like (the order of :func:`smoothed_rates`).
RATES = ((ENG, N, 1.0), (WR, WRN, float(WR_SCALE)), (SK, SKN, 1.0), (LK, LKN, 1.0))

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
Mask = npt.NDArray[np.bool_]

_HOUR_US = 3_600_000_000
_US_PER_DAY = 86_400_000_000
#: Fixed-point fraction bits of the decayed prefix sums: terms are >= 1 (or 0), so the relative
#: rounding error of an affinity is below 2^-30 ~ 1e-9 (Float32 output keeps ~6e-8).
_FRAC_BITS = 30
#: Widest exponent segment (nats) of the decayed prefix sums; narrower when groups are long so
#: that a group's fixed-point sum stays below 2^62.
_SEG_MAX = 24.0


def ts_us(col: str = S.TS) -> pl.Expr:
    """A UTC timestamp column as int64 microseconds since the epoch."""
    return pl.col(col).dt.epoch("us")


def us_of(s: pl.Series) -> I64:
    """A UTC timestamp Series as an int64 numpy array of microseconds (nulls must be absent)."""
    return s.dt.epoch("us").to_numpy().astype(np.int64, copy=False)


# ---------------------------------------------------------------- sorted-run kernels (numpy)
def run_firsts(*keys: npt.NDArray[np.generic]) -> I64:
    """Rows sorted so that equal keys are contiguous: the index of the first row of each run.

    ``keys``: 1-d arrays of one length n; a run is a maximal block of rows equal in every key.
    Returns int64 (number of runs,), ascending, starting with 0 (empty when n == 0).
    """
    n = len(keys[0])
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    first = np.empty(n, dtype=bool)
    first[0] = True
    np.not_equal(keys[0][1:], keys[0][:-1], out=first[1:])
    for k in keys[1:]:
        first[1:] |= k[1:] != k[:-1]
    return np.flatnonzero(first)


def run_lengths(firsts: I64, n: int) -> I64:
    """The length of each run from :func:`run_firsts` of ``n`` rows."""
    return np.diff(firsts, append=n)


def run_starts(*keys: npt.NDArray[np.generic]) -> I64:
    """Rows sorted so that equal keys are contiguous: the index of each row's run start.

    ``keys``: 1-d arrays of one length n; a run is a maximal block of rows equal in every key.
    Returns int64 (n,).
    """
    firsts = run_firsts(*keys)
    return np.repeat(firsts, run_lengths(firsts, len(keys[0])))


def firsts_of(starts: I64) -> I64:
    """The first row of each run, from per-row run starts (:func:`run_starts`)."""
    n = len(starts)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    first = np.empty(n, dtype=bool)
    first[0] = True
    np.not_equal(starts[1:], starts[:-1], out=first[1:])
    return np.flatnonzero(first)


def exclusive_sum(
    values: npt.NDArray[np.integer], starts: I64, dtype: type[np.integer] = np.int64
) -> npt.NDArray[np.integer]:
    """Per run, the sum of the earlier rows: ``cumsum - value - (cumsum - value)[run start]``.

    ``values`` integers (n,) in run order, summed in ``dtype``; exact whenever each run's sums
    fit ``dtype`` (the global running total may wrap modulo 2^bits: the difference of two
    wrapped totals is still the exact run sum).
    """
    v = values.astype(dtype, copy=False)
    before = np.cumsum(v, dtype=dtype)
    before -= v  # the global sum of the rows before each row
    out: npt.NDArray[np.integer] = before - np.take(before, starts)
    return out


def sort_perm(*keys: npt.NDArray[np.integer]) -> I64 | None:
    """The permutation sorting rows by ``keys`` (most significant first), or None if sorted.

    Ties across every key keep their input order (stable). The sortedness check is one
    vectorised pass, so already-ordered input (e.g. events written per user in time order)
    costs no sort.
    """
    n = len(keys[0])
    if n < 2:
        return None
    ok = np.ones(n - 1, dtype=bool)  # rows i, i+1 in order so far
    tie = np.ones(n - 1, dtype=bool)  # rows i, i+1 equal in the keys seen so far
    for k in keys:
        a, b = k[:-1], k[1:]
        ok &= ~tie | (a <= b)
        tie &= a == b
    if ok.all():
        return None
    return np.lexsort(tuple(reversed(keys))).astype(np.int64, copy=False)


def stable_argsort(keys: npt.NDArray[np.integer]) -> I64:
    """Stable argsort of non-negative integer keys (ties keep their input order).

    An LSD radix sort in 16-bit digits (numpy's stable sort of uint16 is a counting sort),
    skipping digits that are constant: one or two linear passes for the dense indices this ETL
    sorts by (users, tags, videos, creators). Each digit is cut as uint16 in input order and
    only then permuted (a 2-byte gather rather than an 8-byte one). Keys above 2^48 fall back
    to numpy's stable sort.
    """
    k = keys if keys.dtype.kind in "iu" else keys.astype(np.int64)
    n = len(k)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    lo, hi = int(k.min()), int(k.max())
    if lo < 0 or hi >= 1 << 48:
        return np.argsort(k, kind="stable").astype(np.int64, copy=False)
    order: I64 | None = None
    shift = 0
    while shift == 0 or hi >> shift:
        digit = (k >> shift).astype(np.uint16)  # the low 16 bits (integer casts wrap)
        if digit.min() != digit.max():  # a permutation keeps min and max: test before it
            step = np.argsort(digit if order is None else digit[order], kind="stable")
            order = step if order is None else np.take(order, step)
        shift += 16
    return np.arange(n, dtype=np.int64) if order is None else order.astype(np.int64, copy=False)


def time_order(t_us: I64, event_id: I64) -> I64:
    """The permutation putting rows in ``(ts, event_id)`` order.

    A stable radix sort by ``ts`` (:func:`stable_argsort` of the offset from the earliest time:
    three 16-bit passes for spans up to ~9 years, about half the cost of numpy's merge sort
    on int64), then only the rows that tie on ``ts`` are ordered by ``event_id``.
    """
    if len(t_us) == 0:
        return np.zeros(0, dtype=np.int64)
    order = stable_argsort(t_us - t_us.min())
    ts = np.take(t_us, order)
    tie = np.zeros(len(ts), dtype=bool)
    if len(ts) > 1:
        same = ts[1:] == ts[:-1]
        tie[1:] |= same
        tie[:-1] |= same
    if tie.any():
        pos = np.flatnonzero(tie)
        sub = order[pos]
        order[pos] = sub[np.lexsort((event_id[sub], ts[pos]))]
    return order


def decay_rate_per_us(half_life_days: float) -> float:
    """lambda in exp(-lambda * dt_us): ln 2 per half-life."""
    return math.log(2.0) / (half_life_days * _US_PER_DAY)


def decayed_prefix(t_us: I64, w: npt.NDArray[np.integer], starts: I64, lam: float) -> F64:
    """``A_i = sum_{j in run, j < i} w_j exp(-lam (t_i - t_j))`` for rows in (run, time) order.

    ``t_us`` int64 microseconds (non-decreasing within a run), ``w`` non-negative integer
    weights, ``starts`` from :func:`run_starts`; returns float64 (n,).

    Closed form per run: with ``z = lam (t - t_run_start)`` cut into segments of ``W`` nats
    (``seg = floor(z / W)``, ``r = z - seg W`` in [0, W)), a row's value is
    ``exp(-r) (S_i + Q_seg)`` where ``S_i`` is the exclusive in-segment prefix of
    ``w_j exp(r_j)`` and ``Q_seg`` the decayed mass of the run's earlier segments at the
    segment's base time. ``w exp(r)`` is summed in fixed point (2^-30 units) with
    :func:`exclusive_sum`, which is exact, so nothing cancels however long the bucket;
    ``Q`` follows ``Q_s = (Q_prev + T_prev) exp(-(s - s_prev) W)`` (``T`` a segment's total),
    evaluated for all runs at once, one step per segment rank. Every factor is <= 1 or
    ``exp(r) < e^W``, so no exp overflows for any history length.
    """
    n = len(w)
    if n == 0:
        return np.zeros(0)
    longest = int(run_lengths(firsts_of(starts), n).max())
    w_max = max(int(w.max()), 1)
    # keep every run's fixed-point sum below 2^62: longest * w_max * e^W * 2^30 <= 2^62
    width = min(_SEG_MAX, math.log(2.0 ** (62 - _FRAC_BITS) / (longest * w_max)))
    if width <= 0.0:
        raise ValueError(f"decayed_prefix: a run of {longest} rows is too long")
    z = (t_us - np.take(t_us, starts)).astype(np.float64)
    z *= lam
    scale = float(1 << _FRAC_BITS)
    if float(z.max()) < width:  # the common case: every run fits one segment
        # in place, the same operations in the same order as
        # exclusive_sum(rint(w * grow * scale)) / (grow * scale) with grow = exp(z)
        grow: F64 = np.exp(z, out=z)
        fixed: F64 = np.multiply(w, grow)
        fixed *= scale
        np.rint(fixed, out=fixed)
        one: F64 = exclusive_sum(fixed.astype(np.int64), starts).astype(np.float64)
        grow *= scale
        one /= grow
        return one
    seg = np.floor(z / width)
    r = z - seg * width
    q = np.rint(w * np.exp(r) * scale).astype(np.int64)
    seg_i = seg.astype(np.int64)
    seg_starts = run_starts(starts, seg_i)
    s_in = exclusive_sum(q, seg_starts).astype(np.float64) / scale
    first = np.flatnonzero(seg_starts == np.arange(n))  # first row of each segment
    last = np.empty_like(first)
    last[:-1] = first[1:] - 1
    last[-1] = n - 1
    total = s_in[last] + q[last] / scale
    m = len(first)
    run_first = starts[first] == first
    rank = np.arange(m) - np.maximum.accumulate(np.where(run_first, np.arange(m), 0))
    carry = np.zeros(m)
    todo = np.flatnonzero(rank > 0)
    if len(todo):
        todo = todo[np.argsort(rank[todo], kind="stable")]
        bounds = np.flatnonzero(np.diff(rank[todo])) + 1
        gap = (seg[first[1:]] - seg[first[:-1]]) * width  # nats between consecutive segments
        for idx in np.split(todo, bounds):  # segments of one rank depend on the rank before
            carry[idx] = (carry[idx - 1] + total[idx - 1]) * np.exp(-gap[idx - 1])
    seg_of_row = np.cumsum(seg_starts == np.arange(n)) - 1
    out: F64 = (s_in + carry[seg_of_row]) * np.exp(-r)
    return out


# ---------------------------------------------------------------- catalogue lookup
@dataclass(frozen=True)
class Catalogue:
    """The video catalogue as lookup arrays (built once per ETL run).

    ``ids`` sorted video_idx (int64); ``creator`` int32, ``upload_us`` int64 with
    ``upload_known``, and each video's distinct tags ``tag_values[tag_offsets[i]:tag_offsets[i+1]]``
    (ascending), all aligned with ``ids``. ``dense`` says ``ids == arange(len(ids))``.
    ``tag_matrix`` (optional) holds the same tags as one row per video, padded with -1 on the
    right: built when no tag is negative and padding at most quadruples the tag count.
    """

    ids: I64
    creator: npt.NDArray[np.int32]
    upload_us: I64
    upload_known: Mask
    tag_offsets: I64
    tag_values: npt.NDArray[np.int32]
    dense: bool
    tag_matrix: npt.NDArray[np.int32] | None = None

    @staticmethod
    def from_frame(videos: pl.DataFrame) -> Catalogue:
        """From a frame with ``video_idx, creator_idx, tags, upload_ts``."""
        v = videos.select(
            pl.col(S.VIDEO_IDX).cast(pl.Int64),
            S.CREATOR_IDX,
            ts_us(S.UPLOAD_TS).alias("_up"),
            pl.col(S.TAGS).list.drop_nulls().list.unique().list.sort(),
        ).sort(S.VIDEO_IDX)
        ids = v[S.VIDEO_IDX].to_numpy().astype(np.int64)
        lens = v[S.TAGS].list.len().to_numpy().astype(np.int64)
        offsets = np.zeros(len(lens) + 1, dtype=np.int64)
        np.cumsum(lens, out=offsets[1:])
        up = v["_up"]
        values = v[S.TAGS].explode().drop_nulls().to_numpy().astype(np.int32)
        width = int(lens.max()) if len(lens) else 0
        matrix = None
        if len(values) and int(values.min()) >= 0 and width * len(lens) <= 4 * len(values):
            matrix = np.full((len(lens), width), -1, dtype=np.int32)
            at = np.arange(len(values), dtype=np.int64) - np.repeat(offsets[:-1], lens)
            matrix[np.repeat(np.arange(len(lens)), lens), at] = values
        return Catalogue(
            ids=ids,
            creator=v[S.CREATOR_IDX].to_numpy().astype(np.int32),
            upload_us=up.fill_null(0).to_numpy().astype(np.int64),
            upload_known=up.is_not_null().to_numpy(),
            tag_offsets=offsets,
            tag_values=values,
            dense=bool(len(ids) == 0 or (ids[0] == 0 and ids[-1] == len(ids) - 1)),
            tag_matrix=matrix,
        )

    def rows(self, video: npt.NDArray[np.integer]) -> tuple[I64, Mask]:
        """Catalogue row of each ``video_idx`` and whether it is in the catalogue."""
        v = video.astype(np.int64)
        if self.dense:
            found = (v >= 0) & (v < len(self.ids))
            return np.where(found, v, 0), found
        pos = np.minimum(np.searchsorted(self.ids, v), max(len(self.ids) - 1, 0))
        found = self.ids[pos] == v if len(self.ids) else np.zeros(len(v), dtype=bool)
        return pos.astype(np.int64), found

    def explode_tags(self, row: I64) -> tuple[I64, npt.NDArray[np.int32]]:
        """For events with catalogue rows ``row``: (event index, tag) per distinct tag, in event
        order.

        With ``tag_matrix``: one gather of each event's padded row (one cache line for a few
        tags, where the offsets take two random reads and four passes over the exploded rows),
        then the non-padding cells in row-major order (~4x faster on ``large``).
        """
        if self.tag_matrix is not None:
            width = self.tag_matrix.shape[1]
            cells = np.take(self.tag_matrix, row, axis=0).ravel()
            at = np.flatnonzero(cells >= 0)
            return at // width, cells[at]
        lo = self.tag_offsets[row]
        k = self.tag_offsets[row + 1] - lo
        ev = np.repeat(np.arange(len(row), dtype=np.int64), k)
        # exploded row i of event e reads tag_values[lo_e + (i - first exploded row of e)]
        pos = np.arange(len(ev), dtype=np.int64)
        pos += np.repeat(lo - (np.cumsum(k) - k), k)
        return ev, self.tag_values[pos]


# ---------------------------------------------------------------- cleaning
def dedupe(events: pl.DataFrame) -> pl.DataFrame:
    """Keep one row per ``event_id``: the earliest by ``(ts, video_idx, watch_time_s)``.

    Duplicates are expected from at-least-once delivery and are normally identical copies; the
    tie-break only makes the choice deterministic when they are not. Without duplicates the
    frame is returned as is (checked by a sort of the ids when they are not already increasing).
    """
    eid = events[S.EVENT_ID].to_numpy()
    if len(eid) < 2 or bool((eid[1:] > eid[:-1]).all()):
        return events
    s = np.sort(eid)
    if bool((s[1:] != s[:-1]).all()):
        return events
    dup = pl.col(S.EVENT_ID).is_duplicated()
    fixed = (
        events.filter(dup)
        .sort([S.EVENT_ID, S.TS, S.VIDEO_IDX, S.WATCH_TIME_S], nulls_last=True)
        .unique(subset=S.EVENT_ID, keep="first", maintain_order=True)
    )
    return pl.concat([events.filter(~dup), fixed], how="vertical")


def sessionise(
    user: npt.NDArray[np.int32],
    t_us: I64,
    event_id: I64,
    session: pl.Series,
    position: pl.Series,
    gap_s: float,
    sid_base: int,
) -> tuple[I64, npt.NDArray[np.int32]]:
    """Fill ``session_id`` and ``position`` where the source has none; rows in user order.

    Rows (sorted by ``(user_idx, ts, event_id)``) with a session id keep it and their position;
    a missing position becomes the 0-based rank in the session by ``(ts, event_id)``. Rows
    without one are grouped per user: a new session starts at the user's first such row and
    after every gap longer than ``gap_s`` seconds. Its id is ``sid_base + event_id of its first
    impression`` (so it never depends on later events), unique because sessions are disjoint
    and ``sid_base`` exceeds every existing session id. Returns (session_id, position).
    """
    gap_us = round(gap_s * 1e6)
    sid = session.fill_null(-1).to_numpy().astype(np.int64)
    pos = position.fill_null(-1).to_numpy().astype(np.int32)
    missing = session.is_null().to_numpy()
    if missing.any():
        sub = np.flatnonzero(missing)
        u, t = user[sub], t_us[sub]
        new = np.ones(len(sub), dtype=bool)
        new[1:] = (u[1:] != u[:-1]) | (t[1:] - t[:-1] > gap_us)
        start = np.maximum.accumulate(np.where(new, np.arange(len(sub)), 0))
        sid[sub] = sid_base + event_id[sub][start]
        pos[sub] = (np.arange(len(sub)) - start).astype(np.int32)
    no_pos = ~missing & (pos < 0)
    if no_pos.any():
        sub = np.flatnonzero(~missing)
        order = np.lexsort((sid[sub], user[sub]))  # stable: keeps (ts, event_id) inside
        rows = sub[order]
        start = run_starts(user[rows], sid[rows])
        fill = no_pos[rows]
        pos[rows[fill]] = (np.arange(len(rows)) - start)[fill].astype(np.int32)
    return sid, pos


def session_order(user: npt.NDArray[np.int32], sid: I64) -> I64 | None:
    """A stable permutation making each (user, session) contiguous, or None if already so.

    Rows are in user order; a session is contiguous when no (user, session) pair starts two
    runs, checked on the run starts only.
    """
    first = np.ones(len(sid), dtype=bool)
    first[1:] = (user[1:] != user[:-1]) | (sid[1:] != sid[:-1])
    ru, rs = user[first], sid[first]
    o = np.lexsort((rs, ru))
    if not bool(((ru[o][1:] == ru[o][:-1]) & (rs[o][1:] == rs[o][:-1])).any()):
        return None
    return np.lexsort((sid, user)).astype(np.int64)


def split_labels(codes: npt.NDArray[np.int8]) -> pl.Series:
    """Split codes 0/1/2 as the strings train/valid/test (schema.SPLITS): a gather from the
    three labels (~5x faster than ``replace_strict``)."""
    return pl.Series(list(S.SPLITS), dtype=pl.String).gather(codes.astype(np.uint32))


def label_columns(complete_ratio: float) -> list[pl.Expr]:
    """The labels (engage, complete, like) as expressions over ``watch_ratio/skipped/liked``.

    engage = not skipped, where a null ``skipped`` (a logged interaction without watch data,
    e.g. MovieLens) counts as engaged; complete = ``watch_ratio >= complete_ratio`` (null without
    watch data); like = ``liked`` (null stays null).
    """
    return [
        (~pl.col(S.SKIPPED).fill_null(False)).alias(S.ENGAGE),
        (pl.col(S.WATCH_RATIO) >= complete_ratio).alias(S.COMPLETE),
        pl.col(S.LIKED).alias(S.LIKE),
    ]


def indicator_columns() -> list[pl.Expr]:
    """The integer indicators of :data:`INDICATORS` from ``engage, watch_ratio, like`` and the
    private ``_skn`` (skipped is known).

    Flags are Int8 and the watch ratio Int64 micro-units. Indicators of unknown values are 0
    and their ``*n`` companion says whether the value was known, so rates are null-aware
    (skipped = known and not engaged).
    """
    wr = pl.col(S.WATCH_RATIO)
    eng = pl.col(S.ENGAGE)
    return [
        eng.cast(pl.Int8).alias(ENG),
        (wr.cast(pl.Float64) * WR_SCALE).round().cast(pl.Int64).fill_null(0).alias(WR),
        wr.is_not_null().cast(pl.Int8).alias(WRN),
        (pl.col(SKN) & ~eng).cast(pl.Int8).alias(SK),
        pl.col(SKN).cast(pl.Int8).alias(SKN),
        pl.col(S.LIKE).fill_null(False).cast(pl.Int8).alias(LK),
        pl.col(S.LIKE).is_not_null().cast(pl.Int8).alias(LKN),
    ]


# ---------------------------------------------------------------- tag affinity
def tag_affinity_pit(
    events: pl.DataFrame, half_life_days: float, state: pl.DataFrame | None = None
) -> pl.DataFrame:
    """Point-in-time mean tag affinity of each impression: ``(event_id, f_tag_affinity)``.

    ``events`` has ``event_id, user_idx, ts, tags`` and the engaged indicator ``_eng``. For user
    u, tag g and time t the affinity is ``A(u, g, t) = sum_j e_j * 2^(-(t - t_j) / half_life)``
    over the user's engaged impressions j strictly before t in ``(ts, event_id)`` order whose
    video has g; the feature is the mean of ``A`` over the impressed video's distinct tags (0
    without tags). ``state`` (``user_idx, tag_idx, affinity, _last_ts``: affinities at an earlier
    time, from a previous increment) adds ``affinity * 2^(-(t - _last_ts) / half_life)``.
    Rows come back in the input order.
    """
    perm = sort_perm(
        events[S.USER_IDX].to_numpy(), us_of(events[S.TS]), events[S.EVENT_ID].to_numpy()
    )
    ordered = events if perm is None else events[perm]
    lists = ordered[S.TAGS].list.drop_nulls().list.unique().list.sort()
    lens = lists.list.len().to_numpy().astype(np.int64)
    ev = np.repeat(np.arange(ordered.height, dtype=np.int64), lens)
    tags = lists.explode().drop_nulls().to_numpy().astype(np.int32)
    aff, _ = user_tag_affinity(ordered, ev, tags, half_life_days, state)
    if perm is not None:
        back = np.empty_like(aff)
        back[perm] = aff
        aff = back
    return pl.DataFrame(
        {S.EVENT_ID: events[S.EVENT_ID], S.F_TAG_AFFINITY: pl.Series(aff, dtype=pl.Float32)}
    )


@dataclass(frozen=True)
class TagRuns:
    """The exploded (user, tag) rows in ``(user, tag, ts, event_id)`` order (one run per pair)
    with each row's point-in-time affinity ``a`` (float64) and engaged weight ``w``; ``starts``
    is each row's run start (:func:`run_starts`) and ``firsts`` the first row of each run."""

    user: npt.NDArray[np.int32]
    tag: npt.NDArray[np.int32]
    t_us: I64
    w: npt.NDArray[np.integer]
    a: F64
    starts: I64
    firsts: I64


def user_tag_affinity(
    events: pl.DataFrame,
    ev: I64,
    tags: npt.NDArray[np.int32],
    half_life_days: float,
    state: pl.DataFrame | None = None,
) -> tuple[F64, TagRuns]:
    """The mean point-in-time tag affinity of each event (float64 (n,)) and the (user, tag) runs.

    ``events`` (``user_idx, ts, _eng``) must be sorted by ``(user_idx, ts, event_id)``;
    ``(ev, tags)`` are the exploded (event row, distinct tag) pairs in event order (see
    :func:`tag_affinity_pit` for the formula). One stable sort by (user, tag) puts the pairs in
    ``(user, tag, ts, event_id)`` order, then :func:`decayed_prefix` does every pair at once.
    """
    lam = decay_rate_per_us(half_life_days)
    user = events[S.USER_IDX].to_numpy()
    t = us_of(events[S.TS])
    eng = events[ENG].to_numpy()  # integer weights, gathered at their own width
    n, m = events.height, len(ev)
    urank = np.zeros(n, dtype=np.int64)  # dense user rank (events sorted)
    if n > 1:
        np.cumsum(user[1:] != user[:-1], out=urank[1:])
    span = int(tags.max()) + 1 if m else 1
    key = urank[ev]
    key *= span
    key += tags
    order = stable_argsort(key)  # pairs in event order: now (user, tag, ts, event_id)
    ev, tg = np.take(ev, order), tags[order]
    firsts = run_firsts(np.take(key, order)) if m else np.zeros(0, dtype=np.int64)
    starts = np.repeat(firsts, run_lengths(firsts, m))
    eu, et, w = user[ev], np.take(t, ev), eng[ev]
    a = decayed_prefix(et, w, starts, lam)
    if state is not None and state.height:
        a = a + _state_carry(state, eu, tg, et, lam)
    counts = np.bincount(ev, minlength=n)
    sums = np.bincount(ev, weights=a, minlength=n)
    mean: F64 = np.divide(sums, counts, out=np.zeros(n), where=counts > 0)
    return mean, TagRuns(user=eu, tag=tg, t_us=et, w=w, a=a, starts=starts, firsts=firsts)


def _state_carry(
    state: pl.DataFrame, user: npt.NDArray[np.int32], tag: npt.NDArray[np.int32], t: I64, lam: float
) -> F64:
    """``affinity * exp(-lam (t - _last_ts))`` of each (user, tag) row found in ``state``."""
    st = state.sort([S.USER_IDX, S.TAG_IDX])
    su = st[S.USER_IDX].to_numpy().astype(np.int64)
    sg = st[S.TAG_IDX].to_numpy().astype(np.int64)
    span = int(max(int(sg.max()), int(tag.max()) if len(tag) else 0)) + 1
    skey = su * span + sg
    key = user.astype(np.int64) * span + tag
    pos = np.minimum(np.searchsorted(skey, key), len(skey) - 1)
    found = skey[pos] == key
    last = us_of(st[STATE_LAST_TS])[pos]
    aff = st[S.AFFINITY].cast(pl.Float64).to_numpy()[pos]
    out: F64 = np.where(found, aff * np.exp(-(t - last).astype(np.float64) * lam), 0.0)
    return out


def online_tag_affinity(runs: TagRuns, as_of_us: int, half_life_days: float) -> pl.DataFrame:
    """``schema.USER_TAG_AFFINITY`` from the train rows of :class:`TagRuns` (``ts < as_of``).

    ``affinity = sum_j e_j * 2^(-(as_of - t_j) / half_life)`` over the user's train impressions
    of videos with the tag (e_j: engaged), and ``tag_impressions`` counts them undecayed.
    """
    lam = decay_rate_per_us(half_life_days)
    first = runs.firsts
    n_g, m = len(first), len(runs.t_us)
    lens = run_lengths(first, m)
    train = runs.t_us < as_of_us
    seen = np.zeros(m + 1, dtype=np.int64)  # train rows before each row
    np.cumsum(train, out=seen[1:])
    count = seen[first + lens] - seen[first]
    # Every row is weighted, with a weight of exactly 0 after as_of, rather than selecting the
    # train rows (boolean gathers cost more than the arithmetic): adding 0.0 leaves each run's
    # sum unchanged, and a train row's term is computed as w * exp(-(as_of - t) lam) was, since
    # float(t - as_of) = -float(as_of - t). The exponent is clipped at 0 so that no exp overflows.
    ago = runs.t_us - as_of_us
    np.minimum(ago, 0, out=ago)
    decay = ago.astype(np.float64)
    decay *= lam
    np.exp(decay, out=decay)
    weight = np.where(train, runs.w, 0) * decay
    gid = np.repeat(np.arange(n_g, dtype=np.int64), lens)
    aff = np.bincount(gid, weights=weight, minlength=n_g)
    keep = count > 0
    return pl.DataFrame(
        {
            S.USER_IDX: pl.Series(runs.user[first][keep], dtype=pl.Int32),
            S.TAG_IDX: pl.Series(runs.tag[first][keep], dtype=pl.Int32),
            S.AFFINITY: pl.Series(aff[keep], dtype=pl.Float32),
            S.TAG_IMPRESSIONS: pl.Series(count[keep], dtype=pl.Int64),
        }
    )


# ---------------------------------------------------------------- online tables (train only)
def histories(train: pl.DataFrame, history_len: int) -> pl.DataFrame:
    """``schema.HISTORIES``: per user, the last ``history_len`` engaged train impressions.

    ``train`` holds the train rows sorted by ``(user_idx, ts, event_id)`` with ``_eng``.
    """
    per_user = train.group_by(S.USER_IDX, maintain_order=True).agg(
        pl.len().cast(pl.Int64).alias(S.TRAIN_IMPRESSIONS),
        pl.col(ENG).sum().cast(pl.Int64).alias(S.TRAIN_ENGAGED),
    )
    lists = (
        train.filter(pl.col(ENG) == 1)
        .group_by(S.USER_IDX, maintain_order=True)
        .agg(
            pl.col(S.VIDEO_IDX).tail(history_len).alias(S.HIST_VIDEO_IDX),
            pl.col(S.TS).tail(history_len).alias(S.HIST_TS),
        )
    )
    return (
        per_user.join(lists, on=S.USER_IDX, how="left", maintain_order="left")
        .with_columns(
            pl.col(S.HIST_VIDEO_IDX).fill_null(pl.lit([], dtype=pl.List(pl.Int32))),
            pl.col(S.HIST_TS).fill_null(pl.lit([], dtype=pl.List(S.UTC_TS))),
        )
        .select(S.HISTORIES.names)
    )


# ---------------------------------------------------------------- sufficient statistics
def stat_sums(prefix: str) -> list[pl.Expr]:
    """Aggregations of the sufficient statistics, named ``prefix + n`` and ``prefix + ind``."""
    return [pl.len().cast(pl.Int64).alias(prefix + N)] + [
        pl.col(i).cast(pl.Int64).sum().alias(prefix + i) for i in INDICATORS
    ]


@dataclass(frozen=True)
class KeySums:
    """:func:`key_sums` of one key: per-row point-in-time sums and per-key train sums."""

    prior: dict[str, npt.NDArray[np.integer]]
    keys: npt.NDArray[np.integer]
    train: dict[str, I64]


def key_sums(
    ind: dict[str, npt.NDArray[np.integer]],
    order: I64,
    key_sorted: npt.NDArray[np.integer],
    prefix: str,
    train: Mask | None = None,
) -> KeySums:
    """Sufficient statistics of the rows of the same key strictly before each row, and of
    each key's train rows.

    ``ind`` maps each of :data:`INDICATORS` to its per-row values; ``order`` puts the rows in
    ``(key, ts, event_id)`` order and ``key_sorted`` is the key in that order. ``prior`` is
    ``{prefix + n: ..., prefix + ind: ...}`` aligned with the input rows (int64 for the watch
    ratio, int32 for counts of flags, which cannot exceed the row count). A constant indicator
    (e.g. every watch ratio known) is that constant times the count, without a scan.

    With ``train`` (a mask over the input rows), ``keys`` are the keys with train rows,
    ascending, and ``train`` the int64 sums ``{prefix + n: ..., prefix + ind: ...}`` of their
    train rows: what ``group_by(key).agg(stat_sums(prefix))`` over the train rows gives, summed
    run by run from the same sorted values (integer sums, exact in any order). Without it
    both are empty.

    Flags (0/1 indicators) are scanned several at once: each takes a field of ``bits(n)``
    bits in one int64 (three fields up to 2^21 rows, two up to 2^31). No field of a running
    total or of its difference can exceed ``n``, so nothing carries between fields and the
    unpacked sums are exact; one gather, scan and scatter then serves up to three flags.
    """
    n = len(order)
    inv = np.empty(n, dtype=np.int64)
    inv[order] = np.arange(n, dtype=np.int64)
    firsts = run_firsts(key_sorted)
    starts = np.repeat(firsts, run_lengths(firsts, n))
    count = np.take(np.arange(n, dtype=np.int64) - starts, inv)
    in_train: Mask = np.take(train, order) if train is not None else np.zeros(n, dtype=bool)

    def run_totals(sorted_values: npt.NDArray[np.integer]) -> I64:
        """Per run, the sum over its train rows."""
        if n == 0:
            return np.zeros(0, dtype=np.int64)
        kept = np.where(in_train, sorted_values, 0)
        total: I64 = np.add.reduceat(kept, firsts, dtype=np.int64)
        return total

    sums: dict[str, npt.NDArray[np.integer]] = {}
    totals: dict[str, I64] = {}
    n_train = None if train is None else run_totals(np.ones(n, dtype=np.int64))
    flags = []
    for name, x in ind.items():
        lo, hi = (int(x.min()), int(x.max())) if n else (0, 0)
        if lo == hi:
            sums[name] = count * lo
            if n_train is not None:
                totals[name] = n_train * lo
        elif name != WR and lo >= 0 and hi <= 1:
            flags.append(name)
        else:
            dtype = np.int64 if name == WR else np.int32
            x_sorted = x[order]
            sums[name] = np.take(exclusive_sum(x_sorted, starts, dtype), inv)
            if n_train is not None:
                totals[name] = run_totals(x_sorted)
    bits = max(n.bit_length(), 1)
    per = 63 // bits
    mask = (1 << bits) - 1
    for i in range(0, len(flags), per):
        group = flags[i : i + per]
        packed = ind[group[0]].astype(np.int64)
        for j, name in enumerate(group[1:], start=1):
            packed |= ind[name].astype(np.int64) << (j * bits)
        packed_sorted = np.take(packed, order)
        scanned = np.take(exclusive_sum(packed_sorted, starts), inv)
        for j, name in enumerate(group):
            sums[name] = ((scanned >> (j * bits)) & mask).astype(np.int32)
        if n_train is not None:
            run_sums = run_totals(packed_sorted)  # fields of at most a run's length
            for j, name in enumerate(group):
                totals[name] = (run_sums >> (j * bits)) & mask
    prior = {prefix + N: count} | {prefix + name: sums[name] for name in ind}
    if n_train is None:
        return KeySums(prior, key_sorted[:0], {})
    keep = n_train > 0
    return KeySums(
        prior,
        key_sorted[firsts[keep]],
        {prefix + N: n_train[keep]} | {prefix + name: totals[name][keep] for name in ind},
    )


def global_prior_table(hourly: pl.DataFrame, prefix: str) -> pl.DataFrame:
    """Cumulative global sums by hour: row ``h`` holds the sums of every event with hour <= h.

    ``hourly`` has ``_hour`` and the sums ``prefix + n / ind`` per hour (possibly several rows
    per hour, one per bucket, which are added). Hours without events are filled in, so row
    ``hour(ts) - 1`` gives the global statistics of every event in an earlier hour: strictly
    before the impression, and independent of anything at or after it.
    """
    cols = [prefix + N] + [prefix + i for i in INDICATORS]
    merged = hourly.group_by(HOUR).agg(pl.col(c).sum() for c in cols)
    if merged.height == 0:
        return merged
    lo, hi = int(merged[HOUR].min()), int(merged[HOUR].max())  # type: ignore[arg-type]
    hours = pl.DataFrame({HOUR: pl.int_range(lo, hi + 1, dtype=pl.Int64, eager=True)})
    return (
        hours.join(merged, on=HOUR, how="left")
        .sort(HOUR)
        .with_columns(pl.col(c).fill_null(0).cum_sum() for c in cols)
    )


def hour_of(col: str = S.TS) -> pl.Expr:
    """Hour index since the epoch of a UTC timestamp column."""
    return ts_us(col) // _HOUR_US


def prior_at(global_tab: pl.DataFrame, t_us: I64, prefix: str) -> dict[str, F64]:
    """The global sums of every event in an hour before ``hour(t)``, per row, as float64 (NaN
    in the first hour, where nothing is known): a positional lookup into
    :func:`global_prior_table` (sums below 2^53 are exact in float64)."""
    cols = [prefix + N] + [prefix + i for i in INDICATORS]
    if global_tab.height == 0:
        return {c: np.full(len(t_us), np.nan) for c in cols}
    idx = t_us // _HOUR_US - 1 - int(global_tab[HOUR][0])
    ok = idx >= 0
    safe = np.where(ok, idx, 0)
    return {
        c: np.where(ok, global_tab[c].to_numpy().astype(np.float64)[safe], np.nan) for c in cols
    }


def prior_rates_at(global_tab: pl.DataFrame, t_us: I64, prefix: str) -> dict[str, F64]:
    """The global prior rate ``p0 = sum k / scale / sum n`` of each of :data:`RATES` (keyed by
    its numerator indicator) over every event in an hour before ``hour(t)``, per row: float64,
    NaN in the first hour or where ``sum n`` is 0. The same values as dividing the sums of
    :func:`prior_at`, but divided once per hour of :func:`global_prior_table` rather than once
    per row and rate."""
    if global_tab.height == 0:
        return {k: np.full(len(t_us), np.nan) for k, _, _ in RATES}
    idx = t_us // _HOUR_US - 1 - int(global_tab[HOUR][0])
    ok = idx >= 0
    safe = np.where(ok, idx, 0)
    out: dict[str, F64] = {}
    for k, n, scale in RATES:
        gk = global_tab[prefix + k].to_numpy().astype(np.float64)
        gn = global_tab[prefix + n].to_numpy().astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            p0 = np.where(gn > 0, gk / scale / gn, np.nan)
        out[k] = np.where(ok, p0[safe], np.nan)
    return out


def smooth_np(
    k: npt.NDArray[np.number],
    n: npt.NDArray[np.number],
    p0: F64,
    m: float,
    scale: float = 1.0,
) -> pl.Series:
    """:func:`smooth` of the rate ``k / n`` (``k`` in ``scale`` units) toward ``p0`` (per row,
    NaN where the prior is unknown, see :func:`prior_rates_at`) over numpy arrays; Float32,
    null where the rate is undefined."""
    kf = k.astype(np.float64)
    if scale != 1.0:
        kf /= scale
    nf = n.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = (kf + m * p0) / (nf + m)  # NaN where p0 is
        unknown = np.isnan(p0)
        if unknown.any():  # the raw rate where no prior is known (null when n == 0)
            out[unknown] = np.where(nf[unknown] > 0, kf[unknown] / nf[unknown], np.nan)
        if m <= 0:  # without pseudo-counts a row with n + m == 0 takes the prior
            empty = ~unknown & ~(nf + m > 0)
            out[empty] = p0[empty]
    return pl.Series(out.astype(np.float32), nan_to_null=True)


def _ratio(k: pl.Expr, n: pl.Expr) -> pl.Expr:
    return pl.when(n > 0).then(k.cast(pl.Float64) / n.cast(pl.Float64))


def smooth(k: pl.Expr, n: pl.Expr, p0: pl.Expr, m: float) -> pl.Expr:
    """Empirical-Bayes shrinkage ``(k + m p0) / (n + m)`` toward the global mean ``p0``.

    For a rate this is the posterior mean under a Beta(m p0, m (1 - p0)) prior (the
    beta-binomial model; e.g. Gelman et al., *Bayesian Data Analysis*, ch. 5); the same
    pseudo-count form shrinks the mean watch ratio. Without a known ``p0`` the raw ratio
    ``k / n`` is used (null when ``n == 0``).
    """
    kf, nf = k.cast(pl.Float64), n.cast(pl.Float64)
    return (
        pl.when(p0.is_null())
        .then(_ratio(kf, nf))
        .when(nf + m > 0)
        .then((kf + m * p0) / (nf + m))
        .otherwise(p0)
    )


def smoothed_rates(p: str, g: str, m: float) -> tuple[pl.Expr, pl.Expr, pl.Expr, pl.Expr]:
    """(engage, watch ratio, skip, like) smoothed from sums ``p*`` toward global sums ``g*``."""

    def c(prefix: str, name: str) -> pl.Expr:
        return pl.col(prefix + name)

    def rate(k: str, n: str, scale: float = 1.0) -> pl.Expr:
        p0 = _ratio(c(g, k), c(g, n)) / scale
        return smooth(c(p, k).cast(pl.Float64) / scale, c(p, n), p0, m).cast(pl.Float32)

    return rate(ENG, N), rate(WR, WRN, WR_SCALE), rate(SK, SKN), rate(LK, LKN)
