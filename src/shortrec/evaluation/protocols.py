"""Evaluation protocols: from ETL events to one :class:`EvalTask` the runner can execute.

Every protocol yields the same things: the training data recommenders learn from, the users to
evaluate with the time at which each is served, the items each must not be offered again
(its training interactions), each user's relevant items with graded gains, and, for the sampled
protocol, the candidate set. See ``docs/evaluation.md`` for the choices made here.

* ``temporal``: train = ETL ``split`` in {train, valid} (valid is for model selection, which is
  done before calling the runner, so the final fit uses it); evaluated on ``split == test``.
  Everyone is served at the test cut-off (the first test timestamp). Relevance = engaged test
  views (``skipped`` not True; null counts as engaged), gain = watch ratio clipped to
  ``[0, relevance_cap]`` (null -> 1), the best view of a (user, video) pair counting.
* ``loo-full`` / ``loo-sampled``: train = ``loo_split`` in {train, valid}; the held-out item is
  the user's ``loo_split == test`` row, relevant (gain 1) only if engaged; served at its time.
  ``loo-sampled`` ranks it against ``n_negatives`` sampled items (uniform or by popularity).
* ``oracle``: train as in ``temporal``; every user is served at the test cut-off and relevance
  comes from the oracle, not the log.

Relevant items that no recommender may propose (already in the user's training history, or
uploaded after the serving time) are dropped from the relevant set; users left with nothing
relevant are not evaluated.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import polars as pl
import scipy.sparse as sp

from shortrec import schema as S
from shortrec.config import EvalConfig
from shortrec.domain import IntArray, TrainingData
from shortrec.evaluation.metrics import logged_feed_stats

F64 = npt.NDArray[np.float64]
NO_UPLOAD = np.iinfo(np.int64).min

_EVENT_COLUMNS = (
    S.EVENT_ID,
    S.USER_IDX,
    S.VIDEO_IDX,
    S.TS,
    S.SKIPPED,
    S.WATCH_RATIO,
    S.WATCH_TIME_S,
    S.SESSION_ID,
)


class ProtocolError(S.BadInput):
    """The events cannot support the requested protocol (the message says why)."""


@dataclass(frozen=True)
class Impressions:
    """Logged test impressions of the evaluated users, one per (user row, video) pair (the
    first by time), sorted by ``key = row * n_items + video``; NaN marks unknown values."""

    key: IntArray
    skipped: F64
    watch_ratio: F64
    watch_time_s: F64


@dataclass(frozen=True)
class EvalTask:
    """Everything the runner needs for one protocol. Row ``r`` of every per-user structure
    belongs to user ``users[r]``.

    ``seen``/``relevant`` are ``(n_eval, n_items)`` CSR matrices (sorted indices): training
    interactions (excluded from ranking) and relevance gains. ``upload_us`` is each item's
    upload time (``NO_UPLOAD`` when unknown: always eligible). ``candidates`` is
    ``(n_eval, 1 + n_negatives)`` for the sampled protocol.
    """

    protocol: str
    train: TrainingData
    users: IntArray
    eval_ts_us: IntArray
    seen: sp.csr_array
    relevant: sp.csr_array
    upload_us: IntArray
    candidates: IntArray | None = None
    impressions: Impressions | None = None
    logged: dict[str, float] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    @property
    def n_items(self) -> int:
        return self.train.n_items

    @property
    def sampled(self) -> bool:
        return self.candidates is not None


# ---------------------------------------------------------------- input checks
def require_columns(
    df: pl.DataFrame, schema: S.TableSchema, names: tuple[str, ...], source: str
) -> None:
    """Raise :class:`schema.SchemaError` unless ``df`` has ``names`` with the schema's dtypes
    and no nulls where the schema forbids them."""
    problems: list[S.Violation] = []
    for name in names:
        col = schema.column(name)
        if name not in df.columns:
            problems.append(S.Violation(schema.name, name, "missing column", 0))
            continue
        s = df.get_column(name)
        if s.dtype != col.dtype:
            problems.append(
                S.Violation(schema.name, name, f"dtype {s.dtype}, expected {col.dtype}", 0)
            )
        elif not col.nullable and s.null_count():
            problems.append(
                S.Violation(schema.name, name, "null values in a required column", s.null_count())
            )
    if problems:
        raise S.SchemaError(source, problems)


def _ts_us(col: str) -> pl.Expr:
    return pl.col(col).dt.epoch("us").cast(pl.Int64)


def _engaged() -> pl.Expr:
    return pl.col(S.SKIPPED).fill_null(False).not_()


# ---------------------------------------------------------------- building blocks
def _training_data(
    train: pl.DataFrame,
    videos: pl.DataFrame,
    users: pl.DataFrame,
    n_users: int,
    n_items: int,
    cutoff_us: int,
    skip_threshold_s: float,
) -> TrainingData:
    inter = train.select(S.EVENTS.names).sort(S.USER_IDX, S.TS, S.EVENT_ID)
    return TrainingData(
        interactions=inter,
        videos=videos,
        users=users,
        n_users=n_users,
        n_items=n_items,
        cutoff_us=cutoff_us,
        skip_threshold_s=skip_threshold_s,
    )


def _pair_matrix(
    rows: IntArray,
    cols: IntArray,
    vals: F64,
    n_rows: int,
    n_items: int,
) -> sp.csr_array:
    """CSR ``(n_rows, n_items)`` keeping the max value of duplicate pairs; sorted indices."""
    key = rows * n_items + cols
    order = np.lexsort((-vals, key))
    key, vals = key[order], vals[order]
    first = np.ones(key.size, dtype=bool)
    first[1:] = key[1:] != key[:-1]
    key, vals = key[first], vals[first]
    m = sp.csr_array(
        (vals.astype(np.float32), (key // n_items, key % n_items)), shape=(n_rows, n_items)
    )
    m.sort_indices()
    return m


def _row_of(users: IntArray, n_users: int) -> IntArray:
    lookup = np.full(n_users, -1, dtype=np.int64)
    lookup[users] = np.arange(users.size)
    return lookup


def _subsample(users: IntArray, max_users: int | None, rng: np.random.Generator) -> IntArray:
    if max_users is None or users.size <= max_users:
        return users
    return np.sort(rng.choice(users, size=max_users, replace=False))


def _np(df: pl.DataFrame, col: str) -> IntArray:
    """A column as int64 numpy."""
    return np.asarray(df.get_column(col).to_numpy(), dtype=np.int64)


def _f64(df: pl.DataFrame, col: str) -> F64:
    """A column as float64 numpy (nulls -> NaN)."""
    return np.asarray(df.get_column(col).cast(pl.Float64).to_numpy(), dtype=np.float64)


def _seen(train: pl.DataFrame, users: IntArray, n_users: int, n_items: int) -> sp.csr_array:
    row_of = _row_of(users, n_users)
    u = _np(train, S.USER_IDX)
    v = _np(train, S.VIDEO_IDX)
    rows = row_of[u]
    keep = rows >= 0
    return _pair_matrix(rows[keep], v[keep], np.ones(int(keep.sum())), users.size, n_items)


def _drop(
    rel: sp.csr_array,
    seen: sp.csr_array,
    upload_us: IntArray,
    ts: IntArray,
) -> sp.csr_array:
    """Remove relevant pairs that are already seen or not yet uploaded at the serving time."""
    coo = rel.tocoo()
    r, c = coo.row.astype(np.int64), coo.col.astype(np.int64)
    n_items = rel.shape[1]
    ok = ~member(csr_keys(seen), r * n_items + c) & (upload_us[c] <= ts[r])
    out = sp.csr_array((coo.data[ok], (r[ok], c[ok])), shape=rel.shape)
    out.sort_indices()
    return out


def member(sorted_keys: IntArray, query: IntArray) -> npt.NDArray[np.bool_]:
    """Element-wise ``query in sorted_keys`` (any shape) by binary search."""
    if sorted_keys.size == 0:
        return np.zeros(query.shape, dtype=bool)
    pos = np.minimum(np.searchsorted(sorted_keys, query), sorted_keys.size - 1)
    return np.asarray(sorted_keys[pos] == query)


def csr_keys(m: sp.csr_array) -> IntArray:
    """Sorted ``row * n_cols + col`` keys of a CSR matrix with sorted indices."""
    rows = np.repeat(np.arange(m.shape[0], dtype=np.int64), np.diff(m.indptr))
    return np.asarray(rows * m.shape[1] + m.indices.astype(np.int64), dtype=np.int64)


def _keep_rows(m: sp.csr_array, rows: IntArray) -> sp.csr_array:
    out = m[rows]
    out = sp.csr_array(out)
    out.sort_indices()
    return out


def _impressions(
    test: pl.DataFrame,
    users: IntArray,
    n_users: int,
    n_items: int,
) -> Impressions:
    row_of = _row_of(users, n_users)
    t = test.sort(S.TS, S.EVENT_ID)
    rows = row_of[_np(t, S.USER_IDX)]
    keep = rows >= 0
    key = rows[keep] * n_items + _np(t, S.VIDEO_IDX)[keep]
    # first impression of each pair: a stable sort keeps time order inside equal keys
    order = np.argsort(key, kind="stable")
    key = key[order]
    first = np.ones(key.size, dtype=bool)
    first[1:] = key[1:] != key[:-1]
    sel = np.flatnonzero(keep)[order][first]

    def col(name: str) -> F64:
        return t.get_column(name).cast(pl.Float64).to_numpy()[sel]

    return Impressions(
        key=key[first],
        skipped=col(S.SKIPPED),
        watch_ratio=col(S.WATCH_RATIO),
        watch_time_s=col(S.WATCH_TIME_S),
    )


def _logged_stats(test: pl.DataFrame) -> dict[str, float]:
    def col(name: str) -> F64:
        return test.get_column(name).cast(pl.Float64).to_numpy()

    return logged_feed_stats(
        col(S.SKIPPED), col(S.WATCH_RATIO), col(S.WATCH_TIME_S), col(S.SESSION_ID)
    )


# ---------------------------------------------------------------- negative sampling
def sample_negatives(
    seen: sp.csr_array,
    target: IntArray,
    eligible_at: IntArray,
    upload_us: IntArray,
    n_negatives: int,
    popularity: F64 | None,
    rng: np.random.Generator,
    max_rounds: int = 200,
) -> IntArray:
    """``(n, n_negatives)`` distinct items per row, none seen by the row's user, none equal to
    its target, none uploaded after ``eligible_at[row]``; uniform over the catalogue, or
    proportional to ``popularity`` (items with 0 popularity are never drawn).

    Rejection sampling in vectorised rounds; raises :class:`ProtocolError` if some user has
    fewer than ``n_negatives`` admissible items.
    """
    n, n_items = seen.shape
    p = None
    if popularity is not None:
        total = float(popularity.sum())
        if total <= 0:
            raise ProtocolError("loo-sampled: popularity sampling needs engaged training views")
        p = popularity / total
    skey = csr_keys(seen)
    out = np.full((n, n_negatives), -1, dtype=np.int64)
    filled = np.zeros(n, dtype=np.int64)
    todo = np.arange(n)
    for _ in range(max_rounds):
        if todo.size == 0:
            return out
        draw = rng.choice(n_items, size=(todo.size, 2 * n_negatives), p=p).astype(np.int64)
        cand = np.concatenate([out[todo], draw], axis=1)
        hit = member(skey, todo[:, None] * n_items + cand)
        ok = (
            (cand >= 0)
            & ~hit
            & (cand != target[todo, None])
            & (upload_us[np.maximum(cand, 0)] <= eligible_at[todo, None])
        )
        cand = np.where(ok, cand, -1)
        # keep the first occurrence of each item in a row
        order = np.argsort(cand, axis=1, kind="stable")
        srt = np.take_along_axis(cand, order, axis=1)
        dup = np.zeros(srt.shape, dtype=bool)
        dup[:, 1:] = srt[:, 1:] == srt[:, :-1]
        dup_orig = np.empty_like(dup)
        np.put_along_axis(dup_orig, order, dup, axis=1)
        cand = np.where(dup_orig, -1, cand)
        good = cand >= 0
        rank = np.cumsum(good, axis=1)
        take = good & (rank <= n_negatives)
        new = np.full((todo.size, n_negatives), -1, dtype=np.int64)
        r, c = np.nonzero(take)
        new[r, rank[r, c] - 1] = cand[r, c]
        out[todo] = new
        filled[todo] = take.sum(axis=1)
        todo = todo[filled[todo] < n_negatives]
    raise ProtocolError(
        f"loo-sampled: {todo.size} user(s) have fewer than n_negatives={n_negatives} "
        "admissible negative items (unseen, eligible); lower EvalConfig.n_negatives"
    )


# ---------------------------------------------------------------- protocols
def build_task(
    events: pl.DataFrame,
    videos: pl.DataFrame,
    users: pl.DataFrame,
    config: EvalConfig,
    skip_threshold_s: float,
    has_oracle: bool,
) -> EvalTask:
    """Build the :class:`EvalTask` of ``config.protocol`` from ETL events (schema.ETL_EVENTS)."""
    split_col = S.LOO_SPLIT if config.protocol.startswith("loo") else S.SPLIT
    require_columns(events, S.ETL_EVENTS, (*_EVENT_COLUMNS, split_col), "events")
    require_columns(videos, S.VIDEOS, (S.VIDEO_IDX, S.CREATOR_IDX, S.TAGS, S.UPLOAD_TS), "videos")
    require_columns(users, S.USERS, (S.USER_IDX,), "users")
    if videos.height == 0:
        raise ProtocolError("videos: the catalogue is empty")
    n_items = int(videos.get_column(S.VIDEO_IDX).max()) + 1  # type: ignore[arg-type]
    if events.height:
        bad = events.filter(pl.col(S.VIDEO_IDX) >= n_items)
        if bad.height:
            raise ProtocolError(
                f"events: {bad.height} row(s) have a video_idx not in videos "
                f"(e.g. {bad.get_column(S.VIDEO_IDX)[0]}; videos has "
                f"video_idx < {n_items})"
            )
    n_users = 1 + max(
        int(users.get_column(S.USER_IDX).max() or 0) if users.height else 0,  # type: ignore[arg-type]
        int(events.get_column(S.USER_IDX).max() or 0) if events.height else 0,  # type: ignore[arg-type]
    )
    upload = np.full(n_items, NO_UPLOAD, dtype=np.int64)
    up = videos.select(pl.col(S.VIDEO_IDX), _ts_us(S.UPLOAD_TS).alias(S.UPLOAD_TS)).drop_nulls()
    upload[_np(up, S.VIDEO_IDX)] = _np(up, S.UPLOAD_TS)
    rng = np.random.default_rng(config.seed)
    ev = events.select(
        *_EVENT_COLUMNS, split_col, *[c for c in S.EVENTS.names if c not in _EVENT_COLUMNS]
    )
    if config.protocol in ("temporal", "oracle"):
        task = _temporal(
            ev, videos, users, config, skip_threshold_s, has_oracle, n_users, n_items, upload, rng
        )
    else:
        task = _loo(ev, videos, users, config, skip_threshold_s, n_users, n_items, upload, rng)
    if task.users.size == 0:
        raise ProtocolError(
            f"events: no user can be evaluated under protocol {config.protocol!r} "
            f"({'; '.join(task.notes[1:]) or 'no users'})"
        )
    return task


def _temporal(
    ev: pl.DataFrame,
    videos: pl.DataFrame,
    users: pl.DataFrame,
    config: EvalConfig,
    skip_threshold_s: float,
    has_oracle: bool,
    n_users: int,
    n_items: int,
    upload: IntArray,
    rng: np.random.Generator,
) -> EvalTask:
    is_test = pl.col(S.SPLIT) == S.TEST
    train = ev.filter(~is_test)
    test = ev.filter(is_test)
    oracle = config.protocol == "oracle"
    notes = ["train = split in {train, valid}; recommenders fit on both when evaluated on test"]
    if test.height:
        cutoff = int(test.select(_ts_us(S.TS).min()).item())
        last_train = train.select(_ts_us(S.TS).max()).item() if train.height else None
        if last_train is not None and int(last_train) > cutoff:
            raise ProtocolError(
                "events: split is not temporal: a train/valid row is later than the first "
                f"test row ({int(last_train)} > {cutoff} us); the temporal protocol needs one "
                "global cut-off"
            )
    elif oracle:
        # no held-out window: serve right after the log ends
        cutoff = int(train.select(_ts_us(S.TS).max()).item() or 0) + 1 if train.height else 0
        notes.append("no test rows: served 1 us after the last logged event")
    else:
        raise ProtocolError(
            "events: no row has split == 'test'; the temporal protocol needs "
            "a test window (run the ETL first)"
        )
    data = _training_data(
        train.select(S.EVENTS.names), videos, users, n_users, n_items, cutoff, skip_threshold_s
    )
    if oracle:
        if not has_oracle:
            raise ProtocolError(
                "protocol 'oracle' needs the simulator's oracle (synthetic "
                "worlds only); none was given"
            )
        cand = (
            np.union1d(_np(users, S.USER_IDX), _np(ev, S.USER_IDX))
            if (users.height or ev.height)
            else np.zeros(0, dtype=np.int64)
        )
        eval_users = _subsample(cand.astype(np.int64), config.max_users, rng)
        ts = np.full(eval_users.size, cutoff, dtype=np.int64)
        seen = _seen(train, eval_users, n_users, n_items)
        empty = sp.csr_array((eval_users.size, n_items), dtype=np.float32)
        notes.append("relevance = oracle expected watch ratio at the test cut-off")
        return EvalTask(
            protocol="oracle",
            train=data,
            users=eval_users,
            eval_ts_us=ts,
            seen=seen,
            relevant=empty,
            upload_us=upload,
            logged=_logged_stats(test) if test.height else {},
            notes=tuple(notes),
        )
    gain = pl.col(S.WATCH_RATIO).cast(pl.Float64).fill_null(1.0).clip(0.0, config.relevance_cap)
    pos = (
        test.filter(_engaged())
        .select(S.USER_IDX, S.VIDEO_IDX, gain.alias("g"))
        .filter(pl.col("g") > 0)
    )
    cand_users = np.unique(_np(pos, S.USER_IDX))
    all_rel_users = cand_users
    seen = _seen(train, cand_users, n_users, n_items)
    row_of = _row_of(cand_users, n_users)
    rel = _pair_matrix(
        row_of[_np(pos, S.USER_IDX)],
        _np(pos, S.VIDEO_IDX),
        _f64(pos, "g"),
        cand_users.size,
        n_items,
    )
    ts_all = np.full(cand_users.size, cutoff, dtype=np.int64)
    rel = _drop(rel, seen, upload, ts_all)
    has_rel = np.diff(rel.indptr) > 0
    eval_users = _subsample(cand_users[has_rel], config.max_users, rng)
    rows = row_of[eval_users]
    notes.append(
        f"{int((~has_rel).sum())} of {all_rel_users.size} users with engaged test "
        "views had only already-seen or not-yet-uploaded relevant items"
    )
    return EvalTask(
        protocol="temporal",
        train=data,
        users=eval_users,
        eval_ts_us=np.full(eval_users.size, cutoff, dtype=np.int64),
        seen=_keep_rows(seen, rows),
        relevant=_keep_rows(rel, rows),
        upload_us=upload,
        impressions=_impressions(test, eval_users, n_users, n_items),
        logged=_logged_stats(test),
        notes=tuple(notes),
    )


def _loo(
    ev: pl.DataFrame,
    videos: pl.DataFrame,
    users: pl.DataFrame,
    config: EvalConfig,
    skip_threshold_s: float,
    n_users: int,
    n_items: int,
    upload: IntArray,
    rng: np.random.Generator,
) -> EvalTask:
    is_test = pl.col(S.LOO_SPLIT) == S.TEST
    train = ev.filter(~is_test)
    test = ev.filter(is_test)
    if test.height == 0:
        raise ProtocolError("events: no row has loo_split == 'test'; run the ETL first")
    dup = test.filter(pl.col(S.USER_IDX).is_duplicated())
    if dup.height:
        raise ProtocolError(
            f"events: {dup.height} loo_split == 'test' rows belong to users "
            f"with more than one (e.g. user_idx {dup.get_column(S.USER_IDX)[0]}"
            "); leave-one-out holds out exactly one interaction per user"
        )
    cutoff = int(train.select(_ts_us(S.TS).max()).item() or 0) if train.height else 0
    data = _training_data(
        train.select(S.EVENTS.names), videos, users, n_users, n_items, cutoff, skip_threshold_s
    )
    held = (
        test.filter(_engaged())
        .select(S.USER_IDX, S.VIDEO_IDX, _ts_us(S.TS).alias(S.TS))
        .sort(S.USER_IDX)
    )
    cand_users = _np(held, S.USER_IDX)
    target = _np(held, S.VIDEO_IDX)
    ts = _np(held, S.TS)
    seen = _seen(train, cand_users, n_users, n_items)
    rel = sp.csr_array(
        (np.ones(cand_users.size, dtype=np.float32), (np.arange(cand_users.size), target)),
        shape=(cand_users.size, n_items),
    )
    rel.sort_indices()
    rel = _drop(rel, seen, upload, ts)
    has_rel = np.diff(rel.indptr) > 0
    pick = _subsample(np.flatnonzero(has_rel), config.max_users, rng)
    notes = [
        "train = loo_split in {train, valid}; held-out = loo_split == test, relevant if engaged",
        f"{test.height - held.height} held-out interactions were skips (users not evaluated)",
        f"{int((~has_rel).sum())} users' held-out item was already in their history",
        "training data holds other users' later interactions (the known leakage of LOO)",
    ]
    seen_k, rel_k = _keep_rows(seen, pick), _keep_rows(rel, pick)
    candidates = None
    if config.protocol == "loo-sampled":
        pop = None
        if config.negative_sampling == "popularity":
            eng = train.filter(_engaged()).select(S.USER_IDX, S.VIDEO_IDX).unique()
            pop = np.bincount(_np(eng, S.VIDEO_IDX), minlength=n_items).astype(np.float64)
        negs = sample_negatives(
            seen_k, target[pick], ts[pick], upload, config.n_negatives, pop, rng
        )
        allc = np.concatenate([target[pick, None], negs], axis=1)
        # the held-out item at a random position, so score ties are broken at random
        perm = np.argsort(rng.random(allc.shape), axis=1)
        candidates = np.take_along_axis(allc, perm, axis=1)
        notes.append(
            f"SAMPLED metrics: 1 held-out + {config.n_negatives} "
            f"{config.negative_sampling} negatives per user; not comparable with "
            "full-catalogue metrics"
        )
    return EvalTask(
        protocol=config.protocol,
        train=data,
        users=cand_users[pick],
        eval_ts_us=ts[pick],
        seen=seen_k,
        relevant=rel_k,
        upload_us=upload,
        candidates=candidates,
        notes=tuple(notes),
    )
