"""Leakage-free ETL: ``shortrec etl DIR`` -> ``DIR/etl/`` (see ``docs/etl.md``).

Phases (DESIGN.md section 3b; each phase is a map over buckets plus a small merge):

0. *Scan*: dtype check of every event file from its footer; for small data, a check that
   duplicate deliveries share ``user_idx``.
1. *Shuffle by user bucket* (``user_idx % B``): one read per event file, fused with value
   validation (small data) and the time range; skipped when ``B == 1``.
2. *Per user bucket* — :func:`process_user_bucket`, a pure function
   ``(events, prior_state) -> (features, new_state)``: dedupe, sessionise, splits, labels,
   per-user point-in-time features, tag affinities, histories; plus hourly sufficient statistics
   and train totals that are merged across buckets by addition. Its user-side sample rows go
   to creator buckets (``creator_idx % B``).
3. *Per creator bucket* (a creator bucket holds every impression of its videos):
   :func:`process_creator_bucket` adds point-in-time video and creator statistics,
   :func:`_assemble_samples` smooths them toward the point-in-time global prior and the samples
   are written; the train sums give the stats tables.

Everything is written under a temporary sibling of ``DIR/etl`` and renamed into place.
"""

from __future__ import annotations

import ctypes
import datetime as dt
import hashlib
import json
import math
import multiprocessing as mp
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import polars as pl
import pyarrow as pa
import pyarrow.ipc as pa_ipc

from shortrec import schema as S
from shortrec.config import EtlConfig
from shortrec.data import etl_steps as T
from shortrec.data import io

EVENTS_SUBDIR = "events"
SAMPLES_SUBDIR = "samples"
VIDEO_STATS_FILE = "video_stats.parquet"
CREATOR_STATS_FILE = "creator_stats.parquet"
AFFINITY_FILE = "user_tag_affinity.parquet"
HISTORIES_FILE = "histories.parquet"

_WORK = "_work"
_G = "_g"  # prefix of the global prior sums
_V = "_v"  # prefix of the video prior sums
_C = "_c"  # prefix of the creator prior sums
_U = "_u"  # prefix of per-user train sums (train totals)
#: Session ids made by the ETL are this plus the event id of the session's first impression;
#: source session ids and event ids must stay below it.
GENERATED_SESSION_BASE = 1 << 62
_EVENTS_NO_UNIQUE = replace(S.EVENTS, unique=())  # duplicates are input the ETL removes


class EtlInputError(S.BadInput):
    """The dataset cannot be processed (the message names the file and field)."""


# ---------------------------------------------------------------- bucket function
@dataclass(frozen=True)
class Cutoffs:
    """Split cut-offs in int microseconds since the epoch (UTC)."""

    valid_start_us: int
    test_start_us: int

    @staticmethod
    def from_range(t_min_us: int, t_max_us: int, config: EtlConfig) -> Cutoffs:
        """Fractions of the time range: ``test_start = t_max - test_frac * span`` and
        ``valid_start = test_start - valid_frac * span`` (not quantiles of event time, so the
        cut-offs are fixed times that an online A/B period can be aligned with)."""
        span = t_max_us - t_min_us
        test = t_max_us - math.floor(config.test_frac * span)
        valid = test - math.floor(config.valid_frac * span)
        return Cutoffs(valid_start_us=valid, test_start_us=test)


@dataclass(frozen=True)
class UserState:
    """Running per-user state after a bucket's events, carried to the next increment.

    ``users``: ``user_idx, _last_ts, f_user_impressions, _u_eng`` (counts so far);
    ``tags``: ``user_idx, tag_idx, affinity, _last_ts`` (decayed affinity at the user's last
    impression, that impression included). Sessions and leave-last-out are not carried: they
    are computed within the events given.
    """

    users: pl.DataFrame
    tags: pl.DataFrame


@dataclass(frozen=True)
class BucketContext:
    """What a bucket needs besides its events: the catalogue and global constants.

    ``source`` names the events in error messages (the dataset's events directory).
    """

    videos: pl.LazyFrame  # video_idx, creator_idx, tags, upload_ts
    cutoffs: Cutoffs
    sid_base: int
    config: EtlConfig
    source: str = "events"

    @cached_property
    def catalogue(self) -> T.Catalogue:
        """The catalogue as lookup arrays, built once per context."""
        return T.Catalogue.from_frame(self.videos.collect())


@dataclass(frozen=True)
class UserBucketOutput:
    """Phase-2 output of one user bucket.

    ``events``: schema.ETL_EVENTS sorted by ``(user_idx, ts, event_id)``; ``samples``: sample
    ids, labels and user-side features (private ``_u_eng`` and ``_skn`` included) in the same
    order; ``hourly``: global sufficient statistics per hour; ``train_totals``: one row of train
    sums; ``affinity``/``histories``: online tables.
    """

    events: pl.DataFrame
    samples: pl.DataFrame
    hourly: pl.DataFrame
    train_totals: pl.DataFrame
    affinity: pl.DataFrame
    histories: pl.DataFrame


_USER_SIDE = [
    S.EVENT_ID, S.USER_IDX, S.VIDEO_IDX, S.CREATOR_IDX, S.SESSION_ID, S.TS, S.SPLIT,
    S.LOO_SPLIT, S.ENGAGE, S.COMPLETE, S.LIKE, S.WATCH_RATIO, S.F_USER_IMPRESSIONS, T.U_ENG,
    S.F_TAG_AFFINITY, S.F_VIDEO_AGE_H, S.F_SESSION_POSITION, S.F_SESSION_SKIPS,
    S.F_SINCE_PREV_S, T.SKN,
]  # fmt: skip


def process_user_bucket(
    events: pl.LazyFrame | pl.DataFrame, prior_state: UserState | None, ctx: BucketContext
) -> tuple[UserBucketOutput, UserState]:
    """The per-user work of the ETL over one user bucket; pure (no I/O).

    ``events`` are raw ``schema.EVENTS`` rows of a set of users (all of each user's events);
    ``prior_state`` the running state of an earlier increment (its events must all be older
    than these) or None. The result depends only on each user's own events, so the union over
    buckets does not depend on how users are bucketed. Every per-user window is a scan over the
    rows sorted once by ``(user_idx, ts, event_id)`` (see ``etl_steps``).
    """
    out, state = _user_bucket(events, prior_state, ctx, with_state=True)
    if state is None:  # pragma: no cover - with_state=True always builds it
        raise RuntimeError("no state built")
    return out, state


def _user_bucket(
    events: pl.LazyFrame | pl.DataFrame,
    prior_state: UserState | None,
    ctx: BucketContext,
    with_state: bool,
    coded_splits: bool = False,
) -> tuple[UserBucketOutput, UserState | None]:
    """:func:`process_user_bucket`; ``with_state=False`` skips building the new state (a
    one-shot run discards it) and returns None for it. ``coded_splits=True`` leaves the
    samples' ``split`` and ``loo_split`` as Int8 codes (the index in ``schema.SPLITS``), the
    form in which they travel to the creator buckets: a string costs ~13 bytes a row to gather,
    write and read back (and Arrow's take of strings is ~8x slower than of a fixed-width
    column), a code one."""
    cfg, cut, cat = ctx.config, ctx.cutoffs, ctx.catalogue
    raw = events.collect() if isinstance(events, pl.LazyFrame) else events
    df = T.dedupe(raw)
    perm = T.sort_perm(df[S.USER_IDX].to_numpy(), T.us_of(df[S.TS]), df[S.EVENT_ID].to_numpy())
    if perm is not None:
        df = df[perm]
    n = df.height
    user = df[S.USER_IDX].to_numpy()
    t = T.us_of(df[S.TS])
    eid = df[S.EVENT_ID].to_numpy().astype(np.int64)
    vrow, found = cat.rows(df[S.VIDEO_IDX].to_numpy())
    if not found.all():
        bad = np.unique(df[S.VIDEO_IDX].to_numpy()[~found])
        raise EtlInputError(
            f"{ctx.source}: events.{S.VIDEO_IDX}: {len(bad)} value(s) not in {io.VIDEOS_FILE} "
            f"(e.g. {bad[:3].tolist()})"
        )
    firsts = T.run_firsts(user)
    lens = T.run_lengths(firsts, n)
    starts = np.repeat(firsts, lens)
    r = np.arange(n, dtype=np.int64) - starts
    sid, pos = T.sessionise(
        user, t, eid, df[S.SESSION_ID], df[S.POSITION], cfg.session_gap_s, ctx.sid_base
    )
    # split codes: 0 (train) before valid_start, else 1 (valid) before test_start, else 2
    split = (t >= cut.test_start_us).astype(np.int8)
    split += 1
    split *= t >= cut.valid_start_us
    # leave-last-out: a user's last impression is test (2) from 2 impressions on, the one
    # before it valid (1) from 3 on
    last = firsts + lens - 1
    loo = np.zeros(n, dtype=np.int8)
    loo[last[lens >= 2]] = 2
    loo[last[lens >= 3] - 1] = 1
    df = df.with_columns(
        pl.Series(S.SESSION_ID, sid),
        pl.Series(S.POSITION, pos),
        T.split_labels(split).alias(S.SPLIT),
        T.split_labels(loo).alias(S.LOO_SPLIT),
    )
    labels = df.select(*T.label_columns(cfg.complete_ratio), pl.col(S.SKIPPED).is_not_null())
    eng8 = labels[S.ENGAGE].to_numpy().view(np.int8)  # bool as 0/1 bytes, no copy
    eng = eng8.astype(np.int64)
    skipped = 1 - eng  # engage is "not skipped" (a null skipped counts as engaged)
    # user counters; a prior state adds its counts and the gap to its last impression
    impressions = r
    u_eng = T.exclusive_sum(eng, starts)
    gap = np.zeros(n, dtype=np.int64)
    gap[1:] = t[1:] - t[:-1]
    has_prev = r > 0
    state_tags = None
    if prior_state is not None:
        st = _state_lookup(prior_state.users, user, t)
        impressions = r + st.impressions
        u_eng += st.engaged
        first_known = (r == 0) & st.found
        gap = np.where(first_known, t - st.last_us, gap)
        has_prev |= first_known
        state_tags = prior_state.tags
    since_prev = pl.Series(S.F_SINCE_PREV_S, (gap / 1e6).astype(np.float32))
    if not has_prev.all():
        since_prev = pl.select(pl.when(pl.Series(has_prev)).then(since_prev)).to_series()
    # skips earlier in the session: sessions are usually contiguous in user order
    sperm = T.session_order(user, sid)
    if sperm is None:
        skips = T.exclusive_sum(skipped, T.run_starts(user, sid))
    else:
        skips = np.empty(n, dtype=np.int64)
        skips[sperm] = T.exclusive_sum(skipped[sperm], T.run_starts(user[sperm], sid[sperm]))
    # tag affinity over (user, tag) runs
    ev, tags = cat.explode_tags(vrow)
    aff_in = pl.DataFrame({S.USER_IDX: user, S.TS: df[S.TS], T.ENG: eng8})
    affinity, runs = T.user_tag_affinity(aff_in, ev, tags, cfg.tag_half_life_days, state_tags)
    age_h = ((t - np.take(cat.upload_us, vrow)) / 3.6e9).astype(np.float32)
    known_up = cat.upload_known[vrow]
    lab = labels.select(S.ENGAGE, S.COMPLETE, S.LIKE, pl.col(S.SKIPPED).alias(T.SKN))
    samples = df.select(S.EVENT_ID, S.USER_IDX, S.VIDEO_IDX, S.SESSION_ID, S.TS, S.SPLIT,
                        S.LOO_SPLIT, S.WATCH_RATIO).with_columns(
        pl.Series(S.CREATOR_IDX, cat.creator[vrow]),
        lab.get_column(S.ENGAGE),
        lab.get_column(S.COMPLETE),
        lab.get_column(S.LIKE),
        lab.get_column(T.SKN),
        pl.Series(S.F_USER_IMPRESSIONS, impressions),
        pl.Series(T.U_ENG, u_eng),
        pl.Series(S.F_TAG_AFFINITY, affinity.astype(np.float32)),
        pl.select(pl.when(pl.Series(known_up)).then(pl.Series(age_h))).to_series().alias(
            S.F_VIDEO_AGE_H),
        pl.Series(S.F_SESSION_POSITION, pos),
        pl.Series(S.F_SESSION_SKIPS, skips.astype(np.int32)),
        since_prev,
    ).select(_USER_SIDE)  # fmt: skip
    is_train = pl.Series(split == 0)
    ind = samples.select(pl.col(S.TS), *T.indicator_columns())
    hourly = ind.group_by(T.hour_of().alias(T.HOUR)).agg(T.stat_sums(_G))
    totals = ind.filter(is_train).select(T.stat_sums(_U))
    if coded_splits:
        samples = samples.with_columns(pl.Series(S.SPLIT, split), pl.Series(S.LOO_SPLIT, loo))
    online = T.online_tag_affinity(runs, cut.valid_start_us, cfg.tag_half_life_days)
    train = df.select(S.USER_IDX, S.VIDEO_IDX, S.TS, pl.Series(T.ENG, eng)).filter(is_train)
    hist = T.histories(train, cfg.history_len)
    events_out = df.select(S.ETL_EVENTS.names)
    new_state = (
        _new_state(user, t, eng, starts, runs, prior_state, cfg.tag_half_life_days)
        if with_state
        else None
    )
    return (
        UserBucketOutput(
            events=events_out, samples=samples, hourly=hourly, train_totals=totals,
            affinity=online, histories=hist,
        ),
        new_state,
    )  # fmt: skip


@dataclass(frozen=True)
class _StateRows:
    found: npt.NDArray[np.bool_]
    last_us: npt.NDArray[np.int64]
    impressions: npt.NDArray[np.int64]
    engaged: npt.NDArray[np.int64]


def _state_lookup(
    users: pl.DataFrame, user: npt.NDArray[np.int32], t: npt.NDArray[np.int64]
) -> _StateRows:
    """Each row's prior-state user counters (zeros where the user is new); checks that every
    event is after its user's last state time."""
    st = users.sort(S.USER_IDX)
    su = st[S.USER_IDX].to_numpy()
    if len(su) == 0:
        z = np.zeros(len(user), dtype=np.int64)
        return _StateRows(np.zeros(len(user), dtype=bool), z, z, z)
    pos = np.minimum(np.searchsorted(su, user), len(su) - 1)
    found = su[pos] == user
    last = T.us_of(st[T.STATE_LAST_TS])[pos]
    bad = found & (t <= last)
    if bad.any():
        users_bad = np.unique(user[bad])
        raise EtlInputError(
            f"events.{S.TS}: {len(users_bad)} user(s) have events not after their prior state "
            f"(e.g. user_idx {users_bad[:3].tolist()})"
        )
    imp = st[S.F_USER_IMPRESSIONS].to_numpy().astype(np.int64)[pos]
    eng = st[T.U_ENG].to_numpy().astype(np.int64)[pos]
    return _StateRows(found, last, np.where(found, imp, 0), np.where(found, eng, 0))


def _new_state(
    user: npt.NDArray[np.int32],
    t: npt.NDArray[np.int64],
    eng: npt.NDArray[np.int64],
    starts: npt.NDArray[np.int64],
    runs: T.TagRuns,
    prior: UserState | None,
    half_life_days: float,
) -> UserState:
    n = len(user)
    first = np.flatnonzero(starts == np.arange(n))
    last = np.r_[first[1:], n] - 1
    cs = np.cumsum(eng)
    eng_sum = cs[last] - cs[first] + eng[first]
    users = pl.DataFrame(
        {
            S.USER_IDX: user[first],
            T.STATE_LAST_TS: pl.Series(t[last]).cast(S.UTC_TS),
            S.F_USER_IMPRESSIONS: (last - first + 1).astype(np.int64),
            T.U_ENG: eng_sum.astype(np.int64),
        }
    )
    # the affinity of each (user, tag) run at the user's last impression, that one included
    lam = T.decay_rate_per_us(half_life_days)
    m = len(runs.starts)
    rfirst = runs.firsts
    rlast = np.r_[rfirst[1:], m] - 1
    ru = runs.user[rlast]
    u_last = t[last][np.searchsorted(user[first], ru)]
    at_end = (runs.a[rlast] + runs.w[rlast]) * np.exp(-(u_last - runs.t_us[rlast]) * lam)
    tags = pl.DataFrame({S.USER_IDX: ru, S.TAG_IDX: runs.tag[rlast], S.AFFINITY: at_end})
    if prior is not None:
        users = (
            pl.concat([prior.users, users], how="vertical_relaxed")
            .group_by(S.USER_IDX)
            .agg(
                pl.col(T.STATE_LAST_TS).max(),
                pl.col(S.F_USER_IMPRESSIONS).sum(),
                pl.col(T.U_ENG).sum(),
            )
        )
        # pairs without new impressions decay to their user's (possibly new) last time
        old = (
            prior.tags.join(tags, on=[S.USER_IDX, S.TAG_IDX], how="anti")
            .join(users.select(S.USER_IDX, pl.col(T.STATE_LAST_TS).alias("_now")), on=S.USER_IDX)
            .with_columns(
                (
                    pl.col(S.AFFINITY).cast(pl.Float64)
                    * (-(T.ts_us("_now") - T.ts_us(T.STATE_LAST_TS)).cast(pl.Float64) * lam).exp()
                ).alias(S.AFFINITY)
            )
            .select(S.USER_IDX, S.TAG_IDX, S.AFFINITY)
        )
        tags = pl.concat([tags, old], how="vertical_relaxed")
    tags = tags.join(users.select(S.USER_IDX, T.STATE_LAST_TS), on=S.USER_IDX).sort(
        [S.USER_IDX, S.TAG_IDX]
    )
    return UserState(users=users.sort(S.USER_IDX), tags=tags)


# ---------------------------------------------------------------- creator bucket function
def process_creator_bucket(
    events: pl.LazyFrame | pl.DataFrame, config: EtlConfig
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Point-in-time video/creator sums of every impression, and train sums per video/creator.

    ``events`` hold every impression of a set of creators: the user-side sample rows
    (``event_id, video_idx, creator_idx, ts, split`` and the labels with ``_skn``). Returns
    ``(per_event, video_train_sums, creator_train_sums)``: ``per_event`` is ``events`` with the
    sums ``_v*``/``_c*`` of the same video/creator strictly before each row in ``(ts,
    event_id)`` order (rows in the input order); all sums are integer sufficient statistics
    (smoothing happens once the global prior is known).
    """
    del config  # the sums need no parameters; kept for the uniform bucket-function shape
    df = events.collect() if isinstance(events, pl.LazyFrame) else events
    ind_df = df.select(T.indicator_columns())
    ind = {c: ind_df[c].to_numpy() for c in T.INDICATORS}
    is_train = (df[S.SPLIT] == S.TRAIN).to_numpy()
    by_time = T.time_order(T.us_of(df[S.TS]), df[S.EVENT_ID].to_numpy())
    sums: dict[str, npt.NDArray[np.integer]] = {}
    train_sums = []
    for col, prefix in ((S.VIDEO_IDX, _V), (S.CREATOR_IDX, _C)):
        key = df[col].to_numpy()[by_time]
        step = T.stable_argsort(key)
        order = np.take(by_time, step)  # (key, ts, event_id)
        ks = T.key_sums(ind, order, key[step], prefix, is_train)
        sums |= ks.prior
        train_sums.append(
            pl.DataFrame(
                [pl.Series(col, ks.keys, dtype=df.schema[col])]
                + [pl.Series(k, v, dtype=pl.Int64) for k, v in ks.train.items()]
            )
        )
    per_event = df.with_columns(pl.Series(k, v) for k, v in sums.items())
    vids, creators = train_sums
    return per_event, vids, creators


# ---------------------------------------------------------------- runner
def _log(progress: bool, msg: str) -> None:
    if progress:
        print(f"[etl] {msg}", file=sys.stderr, flush=True)


def _event_files(ds: io.Dataset) -> list[Path]:
    return sorted((ds.root / io.EVENTS_DIR).glob("*.parquet"))


def _check_file_dtypes(files: Sequence[Path]) -> int:
    """Compare each file's parquet schema with schema.EVENTS; return the total row count."""
    want = S.EVENTS.polars_schema
    total = 0
    for f in files:
        try:
            got = pl.read_parquet_schema(f)
            rows = pl.scan_parquet(f).select(pl.len()).collect().item()
        except (OSError, pl.exceptions.PolarsError) as e:
            raise EtlInputError(f"{f}: cannot read parquet: {e}") from e
        problems = [
            S.Violation("events", name, "missing column", 0) for name in want if name not in got
        ]
        problems += [
            S.Violation("events", name, f"dtype {got[name]}, expected {dtype}", 0)
            for name, dtype in want.items()
            if name in got and got[name] != dtype
        ]
        extra = [name for name in got if name not in want]
        if extra:
            problems.append(S.Violation("events", ", ".join(extra), "unexpected column(s)", 0))
        if problems:
            raise S.SchemaError(str(f), problems)
        total += int(rows)
    return total


def _check_event_id_users(ds: io.Dataset) -> None:
    """Duplicate deliveries must share ``user_idx`` (dedupe runs inside a user bucket)."""
    conflict = (
        ds.events()
        .select(S.EVENT_ID, S.USER_IDX)
        .unique()
        .group_by(S.EVENT_ID)
        .len()
        .filter(pl.col("len") > 1)
        .collect()
    )
    if conflict.height:
        raise EtlInputError(
            f"{ds.root / io.EVENTS_DIR}: events.{S.EVENT_ID}: {conflict.height} id(s) repeated "
            f"with different {S.USER_IDX} (e.g. {conflict[S.EVENT_ID].head(3).to_list()})"
        )


def _fingerprint(ds: io.Dataset, files: Sequence[Path], facts: dict[str, Any]) -> str:
    h = hashlib.sha256()
    h.update(json.dumps(ds.manifest, sort_keys=True, default=str).encode())
    for f in [*files, ds.root / io.VIDEOS_FILE, ds.root / io.USERS_FILE]:
        h.update(f"{f.relative_to(ds.root)}:{f.stat().st_size}".encode())
    h.update(json.dumps(facts, sort_keys=True, default=str).encode())
    return "sha256:" + h.hexdigest()[:32]


def _iso(us: int) -> str:
    return dt.datetime.fromtimestamp(us / 1e6, tz=dt.UTC).isoformat()


def _shuffle_file(job: _Job, i: int, f: Path) -> dict[str, int | None]:
    """Split event file ``i`` by user bucket (``user_idx % n_b``) into ``work/ub/f{i}.arrow``
    (record batch B holds bucket B, see :func:`_write_tmp_parts`).

    One read per file (validated on the way when ``job.validate``); returns the file's time
    range and largest session and event ids, so the scan needs no separate pass.
    """
    facts: dict[str, int | None] = dict.fromkeys(("t_min", "t_max", "sid_max", "eid_max"))
    df = pl.read_parquet(f)
    if job.validate:
        S.check(df, _EVENTS_NO_UNIQUE, str(f))
    _merge_facts(facts, df)
    bucket = df[S.USER_IDX].to_numpy() % job.n_b
    _write_tmp_parts(df, bucket, job.n_b, job.work / "ub" / f"f{i:06d}.arrow")
    return facts


def _merge_facts(facts: dict[str, int | None], df: pl.DataFrame | dict[str, int | None]) -> None:
    """Fold a frame's (or another facts dict's) time range and id maxima into ``facts``."""
    got = (
        df
        if isinstance(df, dict)
        else df.select(
            T.ts_us().min().alias("t_min"),
            T.ts_us().max().alias("t_max"),
            pl.col(S.SESSION_ID).max().alias("sid_max"),
            pl.col(S.EVENT_ID).max().alias("eid_max"),
        ).row(0, named=True)
    )
    for k, v in got.items():
        if v is None:
            continue
        old = facts[k]
        facts[k] = (
            int(v) if old is None else (min(old, int(v)) if k == "t_min" else max(old, int(v)))
        )


def _count_runs(sorted_keys: npt.NDArray[np.int32]) -> int:
    if len(sorted_keys) == 0:
        return 0
    return int((sorted_keys[1:] != sorted_keys[:-1]).sum()) + 1


def _write_tmp(df: pl.DataFrame, path: Path) -> None:
    """Intermediate files: uncompressed Arrow IPC (the fastest to write and read back)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    df.write_ipc(path, compression="uncompressed")


def _write_tmp_parts(
    df: pl.DataFrame, bucket: npt.NDArray[np.integer], n_b: int, path: Path
) -> None:
    """Write ``df`` split by ``bucket`` (values in ``[0, n_b)``) as one uncompressed Arrow IPC
    file whose record batch ``k`` holds the rows of bucket ``k`` in their input order.

    One file per writer rather than one per (writer, bucket): with ~100 buckets the ~10^4 small
    files cost ~3 ms each to create and read back (~15 % of the ETL's CPU time on ``large``,
    estimated). Nothing is written for an empty frame.

    Each bucket's rows are taken from the Arrow columns one bucket at a time, rather than
    gathering the whole frame into bucket order first: a frame read from Parquet has one chunk
    per row group, which makes a whole-frame gather ~2x slower (measured: 0.45 s vs 0.2 s for
    4.8M events), and the per-bucket batches reuse the same small buffers instead of a second
    copy of the frame in fresh memory.
    """
    if df.height == 0:
        return
    order = T.stable_argsort(bucket)
    ends = np.cumsum(np.bincount(bucket, minlength=n_b))
    table = df.to_arrow()
    cols = [c.combine_chunks() for c in table.columns]
    path.parent.mkdir(parents=True, exist_ok=True)
    with pa.OSFile(str(path), "wb") as sink, pa_ipc.new_file(sink, table.schema) as w:
        lo = 0
        for k in range(n_b):
            rows = order[lo : ends[k]]
            batch = [c.take(rows) for c in cols]
            w.write_batch(pa.RecordBatch.from_arrays(batch, schema=table.schema))
            lo = ends[k]


def _read_tmp_parts(d: Path, k: int) -> pl.DataFrame | None:
    """Bucket ``k`` of every file of :func:`_write_tmp_parts` in ``d``, in file-name order
    (None without rows); only that record batch of each file is read.

    The files are memory-mapped: the batches are views of the page cache, copied once into
    a frame of one chunk per column (a plain read would copy them into fresh buffers first;
    a frame of one chunk per file would be concatenated again, column by column, by every
    ``to_numpy`` and by every frame operation that adds a one-chunk column)."""
    batches = []
    for p in sorted(d.glob("*.arrow")) if d.is_dir() else []:
        with pa.memory_map(str(p), "r") as src:
            batch = pa_ipc.open_file(src).get_batch(k)
        if batch.num_rows:
            batches.append(batch)
    if not batches:
        return None
    out = pl.from_arrow(pa.Table.from_batches(batches), rechunk=True)
    if not isinstance(out, pl.DataFrame):  # pragma: no cover - a Table gives a DataFrame
        raise TypeError("expected a DataFrame")
    return out


def _merge_online_tables(work: Path, out: Path, config: EtlConfig) -> None:
    """Concatenate the user buckets' affinity and history pieces into their output files."""
    for sub, fname in (("aff", AFFINITY_FILE), ("hist", HISTORIES_FILE)):
        parts = sorted((work / sub).glob("*.arrow"))
        pl.scan_ipc(parts).sink_parquet(
            out / fname,
            compression=config.compression,
            compression_level=config.compression_level,
            statistics=_STATISTICS,
            engine="streaming",
        )


#: Parquet column statistics of the outputs: null counts, no min/max (values are unaffected).
#: Computing min/max was ~15-20 % of the CPU time of every write (the writes are a quarter of
#: the ETL's). This project's readers load the tables whole (``read_etl_events(...).collect()``,
#: ``publish``), and min/max could barely prune a scan of events or samples anyway: they are
#: in user or creator-bucket order, so every row group spans nearly the whole time range and
#: every split.
_STATISTICS = {"min": False, "max": False, "distinct_count": False, "null_count": True}


def _write(df: pl.DataFrame, path: Path, config: EtlConfig) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    df.write_parquet(
        path,
        compression=config.compression,
        compression_level=config.compression_level,
        statistics=_STATISTICS,
    )


def _train_totals(totals: pl.DataFrame) -> list[pl.Expr]:
    """The merged train sums as literal global-prior columns ``_g*``."""
    g = {f"{_G}{T.N}": totals[f"{_U}{T.N}"].item()} | {
        f"{_G}{i}": totals[f"{_U}{i}"].item() for i in T.INDICATORS
    }
    return [pl.lit(v, dtype=pl.Int64).alias(k) for k, v in g.items()]


def _stats_exprs(prefix: str, m: float) -> list[pl.Expr]:
    """Stats-table columns from train sums ``prefix*``, smoothed toward the ``_g*`` totals."""
    eng, wr, sk, lk = T.smoothed_rates(prefix, _G, m)
    return [
        pl.col(prefix + T.N).alias(S.IMPRESSIONS),
        eng.alias(S.ENGAGE_RATE),
        wr.alias(S.WATCH_RATIO_MEAN),
        sk.alias(S.SKIP_RATE),
        lk.alias(S.LIKE_RATE),
    ]


def _check_facts(ds: io.Dataset, facts: dict[str, int | None], n_in: int) -> tuple[int, int]:
    if n_in == 0 or facts["t_min"] is None or facts["t_max"] is None:
        raise EtlInputError(f"{ds.root / io.EVENTS_DIR}: no events")
    # ETL-made session ids are GENERATED_SESSION_BASE + the first event id, a constant base
    # rather than (max source id + 1), so an id never depends on later events
    for col, name in (("sid_max", S.SESSION_ID), ("eid_max", S.EVENT_ID)):
        v = facts[col]
        if v is not None and v >= GENERATED_SESSION_BASE:
            raise EtlInputError(
                f"{ds.root / io.EVENTS_DIR}: events.{name}: value {v} >= 2^62 (reserved for "
                "session ids made by the ETL)"
            )
    return facts["t_min"], facts["t_max"]


# ---------------------------------------------------------------- worker processes
R = TypeVar("R")


def resolve_workers(workers: int | None) -> int:
    """``EtlConfig.workers``, or ``min(2, os.cpu_count())`` when None."""
    return workers if workers is not None else max(1, min(2, os.cpu_count() or 1))


@dataclass
class _Job:
    """The constants of one run: sent once to each worker process (not with every task).

    ``ctx`` starts with placeholder cut-offs (they need the time range that the shuffle
    finds); tasks pass the real ones to :meth:`context`.

    Pickled (to start a worker), the context travels with its catalogue built and without the
    videos frame it is built from, which is all a worker would use that frame for: on
    ``large`` (1M videos) pickling the frame cost ~0.8 s per worker in this process, and
    unpickling and indexing it ~1.3 s in each worker; the catalogue's arrays are built once
    here and copied at memory speed.
    """

    ctx: BucketContext
    n_b: int
    work: Path  # intermediate files
    out: Path  # the temporary output directory
    validate: bool

    def context(self, cut: Cutoffs) -> BucketContext:
        """The bucket context with cut-offs ``cut``; the catalogue, once built, is kept."""
        if self.ctx.cutoffs != cut:
            built = self.ctx.__dict__.get("catalogue")
            self.ctx = replace(self.ctx, cutoffs=cut)
            if built is not None:  # it does not depend on the cut-offs
                self.ctx.__dict__["catalogue"] = built
        return self.ctx

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        catalogue = self.ctx.catalogue  # built once, here
        ctx = replace(self.ctx, videos=pl.LazyFrame(schema=self.ctx.videos.collect_schema()))
        ctx.__dict__["catalogue"] = catalogue
        state["ctx"] = ctx
        return state


_JOB: _Job | None = None  # a worker process's job, set by _init_worker


def _init_worker(job: _Job) -> None:
    global _JOB  # noqa: PLW0603 - per-process worker state, set once at start-up
    _JOB = job
    _keep_freed_memory()


#: glibc ``mallopt`` parameters (malloc.h) and the values a worker uses
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_WORKER_MMAP_THRESHOLD = 64 << 20
_WORKER_TRIM_THRESHOLD = 512 << 20


def _keep_freed_memory() -> bool:
    """Let glibc malloc keep freed memory for reuse in this (worker) process.

    A bucket allocates and frees the same large numpy arrays (tens of MB) many times. By
    default glibc returns each to the kernel (``munmap``, or a heap trim), and the next array
    takes fresh pages that the kernel must zero on first touch: on the 2-core benchmark machine
    this page-fault (system) time was a third or more of the ETL's CPU time. Arrays below 64 MB
    now come from the heap, and up to 512 MB of free heap is kept (it bounds the extra resident
    memory). Workers also put Arrow's buffers on this allocator (:data:`_WORKER_ENV`). Only
    worker processes call it: it is process-wide. Returns False where it is not glibc.
    """
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (macOS, musl)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(
        mallopt(_M_MMAP_THRESHOLD, _WORKER_MMAP_THRESHOLD)
        and mallopt(_M_TRIM_THRESHOLD, _WORKER_TRIM_THRESHOLD)
    )


def _in_worker(fn: Callable[..., R], *args: Any) -> R:
    if _JOB is None:
        raise RuntimeError("ETL worker not initialised")
    try:
        return fn(_JOB, *args)
    except EtlInputError:
        raise
    except S.BadInput as e:
        # exceptions cross back to the parent pickled; a subclass whose __init__ takes other
        # arguments (SchemaError) would not unpickle, so it travels as its message
        raise EtlInputError(str(e)) from None


#: Environment of the worker processes (where not set already), read as they import NumPy
#: and Arrow. Fresh memory is what costs on the 2-core benchmark VM, whose free memory the host
#: takes back: a page touched for the first time is faulted in from the host while the kernel
#: zeroes it. NumPy advises transparent huge pages for arrays of 4 MB and more, and Arrow's
#: default pool (mimalloc) reserves its arena with the same advice, so their memory comes as
#: 2 MB pages, zeroed whole and again whenever the allocator hands memory back and takes it
#: again. With 4 KB pages for NumPy and Arrow on the system allocator (whose freed memory
#: :func:`_keep_freed_memory` keeps in the process) the workers used ~13 % less CPU time on a
#: tenth of ``large``, and less peak memory. The ETL does no linear algebra, and OpenBLAS's
#: idle threads still spun for ~1.5 % of each worker's CPU time: one thread, none to spin.
_WORKER_ENV = {
    "NUMPY_MADVISE_HUGEPAGE": "0",
    "ARROW_DEFAULT_MEMORY_POOL": "system",
    "OPENBLAS_NUM_THREADS": "1",
}


class _Runner:
    """Maps a task ``fn(job, *args)`` over argument tuples: on ``workers`` spawned processes,
    or in this process when ``workers == 1``. Results come back in argument order.

    ``spawn``: forking a process whose Polars thread pool runs deadlocks the child, and each
    worker must start with ``POLARS_MAX_THREADS`` (cores / workers) set so that the workers do
    not oversubscribe the cores, and with :data:`_WORKER_ENV`; a ``forkserver`` would fix
    those variables once per process.
    """

    def __init__(self, job: _Job, workers: int) -> None:
        self.job, self.workers = job, workers
        self.pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> _Runner:
        if self.workers > 1:
            env = {"POLARS_MAX_THREADS": str(max(1, (os.cpu_count() or 1) // self.workers))}
            env |= {k: v for k, v in _WORKER_ENV.items() if k not in os.environ}
            old = {k: os.environ.get(k) for k in env}
            os.environ.update(env)  # inherited by the workers only
            try:
                self.pool = ProcessPoolExecutor(
                    self.workers, mp_context=mp.get_context("spawn"),
                    initializer=_init_worker, initargs=(self.job,),
                )  # fmt: skip
                # each submit starts one worker now, while the variables are set; they import
                # while this process goes on
                for _ in range(self.workers):
                    self.pool.submit(os.getpid)
            finally:
                for k, v in old.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v
        return self

    def __exit__(self, *exc: object) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)

    def map(self, fn: Callable[..., R], args: Sequence[tuple[Any, ...]]) -> list[R]:
        if self.pool is None:
            return [fn(self.job, *a) for a in args]
        futures = [self.pool.submit(_in_worker, fn, *a) for a in args]
        return [f.result() for f in futures]


@dataclass(frozen=True)
class _UserResult:
    hourly: pl.DataFrame
    totals: pl.DataFrame
    events: int
    users: int


def _user_task(job: _Job, b: int, cut: Cutoffs) -> _UserResult | None:
    """Phase 2 for user bucket ``b``: events part, online-table pieces, and the user-side
    sample rows (splits as codes) split by creator bucket into ``work/cb/u{b}.arrow``."""
    src = _read_tmp_parts(job.work / "ub", b)
    if src is None:
        return None
    cfg = job.ctx.config
    res, _ = _user_bucket(src, None, job.context(cut), with_state=False, coded_splits=True)
    del src
    _write(res.events, job.out / EVENTS_SUBDIR / f"part-{b:05d}.parquet", cfg)
    _write_tmp(res.affinity, job.work / "aff" / f"{b:05d}.arrow")
    _write_tmp(res.histories, job.work / "hist" / f"{b:05d}.arrow")
    bucket = res.samples[S.CREATOR_IDX].to_numpy() % job.n_b
    _write_tmp_parts(res.samples, bucket, job.n_b, job.work / "cb" / f"u{b:05d}.arrow")
    users = _count_runs(res.events[S.USER_IDX].to_numpy())
    return _UserResult(res.hourly, res.train_totals, res.events.height, users)


@dataclass(frozen=True)
class _CreatorResult:
    video_sums: pl.DataFrame
    creator_sums: pl.DataFrame
    samples: dict[str, int]


def _creator_task(
    job: _Job, c: int, global_tab: pl.DataFrame, src: pl.DataFrame | None = None
) -> _CreatorResult | None:
    """Phase 3 for creator bucket ``c`` (rows from ``work/cb/``, their split codes turned back
    into labels, unless ``src`` is given): point-in-time sums, smoothing,
    ``samples/part-C.parquet``; returns the train sums and the sample count per split."""
    if src is None:
        src = _read_tmp_parts(job.work / "cb", c)
        if src is None:
            return None
        codes = src[S.SPLIT].to_numpy()  # the split codes of _user_task, as labels again
        src = src.with_columns(
            T.split_labels(codes).alias(S.SPLIT),
            T.split_labels(src[S.LOO_SPLIT].to_numpy()).alias(S.LOO_SPLIT),
        )
        per_split = np.bincount(codes, minlength=len(S.SPLITS))
        counts = {s: int(k) for s, k in zip(S.SPLITS, per_split, strict=True) if k}
    else:
        counts = {str(k): int(n) for k, n in src.group_by(S.SPLIT).len().iter_rows()}
    cfg = job.ctx.config
    per_event, v, cr = process_creator_bucket(src, cfg)
    del src
    samples = _assemble_samples(per_event, global_tab, cfg.prior_strength)
    del per_event
    _write(samples, job.out / SAMPLES_SUBDIR / f"part-{c:05d}.parquet", cfg)
    return _CreatorResult(v, cr, counts)


def n_buckets_for(n_events: int, config: EtlConfig, workers: int) -> int:
    """``config.n_buckets``, or ``ceil(n_events / events_per_bucket)`` rounded up to a multiple
    of ``workers`` (so that the workers finish together). Output does not depend on it."""
    if config.n_buckets is not None:
        return config.n_buckets
    n_b = max(1, math.ceil(n_events / config.events_per_bucket))
    return n_b if n_b == 1 else -(-n_b // workers) * workers


def run_etl(dataset_root: Path, config: EtlConfig, progress: bool = True) -> dict[str, Any]:
    """Run the ETL on a dataset directory and write ``DIR/etl/`` atomically.

    Buckets run on ``config.workers`` processes when there are at least
    ``config.parallel_min_events`` events (the output does not depend on it). Returns a
    summary: counts (``events_in``, ``events``, ``duplicates``, ``users``,
    ``samples_{train,valid,test}``), ``n_buckets``, ``workers``, ``seconds`` and
    ``events_per_s`` (input events per wall-clock second). Raises
    :class:`shortrec.schema.BadInput` subclasses on bad input, naming the file and field.
    """
    t0 = time.perf_counter()
    ds = io.Dataset.open(Path(dataset_root))
    files = _event_files(ds)
    n_in = _check_file_dtypes(files)
    videos_df = S.check(ds.videos().collect(), S.VIDEOS, str(ds.root / io.VIDEOS_FILE))
    full = n_in <= config.full_validation_max_events
    if full:
        _check_event_id_users(ds)
    workers = resolve_workers(config.workers) if n_in >= config.parallel_min_events else 1
    n_b = n_buckets_for(n_in, config, workers)
    workers = min(workers, n_b)
    videos = videos_df.select(S.VIDEO_IDX, S.CREATOR_IDX, S.TAGS, S.UPLOAD_TS).lazy()
    source = str(ds.root / io.EVENTS_DIR)

    out_dir = ds.root / io.ETL_DIR
    with io.atomic_dir(out_dir) as tmp:
        work = tmp / _WORK
        # the cut-offs need the time range, which the shuffle finds: placeholders until then
        ctx = BucketContext(videos, Cutoffs(0, 0), GENERATED_SESSION_BASE, config, source)
        job = _Job(ctx, n_b, work, tmp, full)
        # the online tables' merge runs on a thread of this (otherwise idle) process while the
        # workers do phase 3
        with _Runner(job, workers) as runner, ThreadPoolExecutor(1) as background:
            merged: Future[None] | None = None
            # phase 0+1: scan (validation, time range) fused with the shuffle by user bucket
            facts: dict[str, int | None] = dict.fromkeys(("t_min", "t_max", "sid_max", "eid_max"))
            whole: pl.DataFrame | None = None
            if n_b == 1:
                frames = [pl.read_parquet(f) for f in files]
                if full:
                    for f, df in zip(files, frames, strict=True):
                        S.check(df, _EVENTS_NO_UNIQUE, str(f))
                whole = pl.concat(frames, how="vertical") if frames else None
                del frames
                if whole is not None:
                    _merge_facts(facts, whole)
            else:
                for got in runner.map(_shuffle_file, list(enumerate(files))):
                    _merge_facts(facts, got)
            t_min, t_max = _check_facts(ds, facts, n_in)
            cut = Cutoffs.from_range(t_min, t_max, config)
            ctx = job.context(cut)
            _log(progress, f"{n_in:,} events, {n_b} bucket(s), {workers} worker(s), cut-offs "
                 f"{_iso(cut.valid_start_us)} / {_iso(cut.test_start_us)}")  # fmt: skip

            # phase 2: per user bucket; the user-side rows go on to creator buckets
            user_side: pl.DataFrame | None = None
            if whole is not None:
                res, _ = _user_bucket(whole, None, ctx, with_state=False)
                whole = None
                _write(res.events, tmp / EVENTS_SUBDIR / "part-00000.parquet", config)
                _write(res.affinity, tmp / AFFINITY_FILE, config)
                _write(res.histories, tmp / HISTORIES_FILE, config)
                user_side = res.samples
                users = _count_runs(res.events[S.USER_IDX].to_numpy())
                user_res = [_UserResult(res.hourly, res.train_totals, res.events.height, users)]
                del res
            else:
                tasks = [(b, cut) for b in range(n_b)]
                user_res = [r for r in runner.map(_user_task, tasks) if r is not None]
                shutil.rmtree(work / "ub", ignore_errors=True)
                merged = background.submit(_merge_online_tables, work, tmp, config)
            _log(progress, f"{n_b} user bucket(s) done")
            n_events = sum(r.events for r in user_res)
            n_users = sum(r.users for r in user_res)
            global_tab = T.global_prior_table(pl.concat([r.hourly for r in user_res]), _G)
            train_tot = pl.concat([r.totals for r in user_res]).sum()

            # phase 3: per creator bucket: video/creator point-in-time sums, samples
            if user_side is not None:
                cre = [_creator_task(job, 0, global_tab, user_side)]
                user_side = None
            else:
                cre = runner.map(_creator_task, [(c, global_tab) for c in range(n_b)])
            creator_res = [r for r in cre if r is not None]
            if merged is not None:
                merged.result()
            _log(progress, f"{n_b} creator bucket(s) done")
        samples_count: dict[str, int] = {s: 0 for s in S.SPLITS}
        for r in creator_res:
            for k, v in r.samples.items():
                samples_count[k] += v

        # merge: stats tables (the online tables were merged during phase 3)
        m = config.prior_strength
        vs = pl.concat([r.video_sums for r in creator_res]).group_by(S.VIDEO_IDX)
        cs = pl.concat([r.creator_sums for r in creator_res]).group_by(S.CREATOR_IDX)
        vsums = vs.agg(pl.all().sum()).lazy()
        csums = cs.agg(pl.all().sum()).lazy()
        zero_v = [pl.col(_V + T.N).fill_null(0)] + [
            pl.col(_V + i).fill_null(0) for i in T.INDICATORS
        ]
        zero_c = [pl.col(_C + T.N).fill_null(0)] + [
            pl.col(_C + i).fill_null(0) for i in T.INDICATORS
        ]
        video_stats = (
            videos.select(S.VIDEO_IDX, S.CREATOR_IDX)
            .join(vsums, on=S.VIDEO_IDX, how="left")
            .with_columns(zero_v)
            .with_columns(_train_totals(train_tot))
            .with_columns(_stats_exprs(_V, m))
            .select(S.VIDEO_STATS.names)
            .sort(S.VIDEO_IDX)
            .collect()
        )
        creator_stats = (
            videos.select(S.CREATOR_IDX)
            .unique()
            .join(csums, on=S.CREATOR_IDX, how="left")
            .with_columns(zero_c)
            .with_columns(_train_totals(train_tot))
            .with_columns(_stats_exprs(_C, m))
            .select(S.CREATOR_STATS.names)
            .sort(S.CREATOR_IDX)
            .collect()
        )
        _write(video_stats, tmp / VIDEO_STATS_FILE, config)
        _write(creator_stats, tmp / CREATOR_STATS_FILE, config)
        if work.exists():
            shutil.rmtree(work)

        seconds = time.perf_counter() - t0
        summary: dict[str, Any] = {
            "events_in": n_in,
            "events": n_events,
            "duplicates": n_in - n_events,
            "users": n_users,
            "videos": video_stats.height,
            "creators": creator_stats.height,
            **{f"samples_{s}": k for s, k in samples_count.items()},
            "n_buckets": n_b,
            "workers": workers,
            "seconds": round(seconds, 3),
            "events_per_s": round(n_in / seconds, 1) if seconds > 0 else None,
        }
        facts_d = {"t_min_us": t_min, "t_max_us": t_max, "events_in": n_in}
        manifest = {
            "config": config.model_dump(exclude={"workers"}),
            "valid_start": _iso(cut.valid_start_us),
            "valid_start_us": cut.valid_start_us,
            "test_start": _iso(cut.test_start_us),
            "test_start_us": cut.test_start_us,
            "t_min": _iso(t_min),
            "t_min_us": t_min,
            "t_max": _iso(t_max),
            "t_max_us": t_max,
            "session_id_base": GENERATED_SESSION_BASE,
            "counts": {
                k: v for k, v in summary.items() if k not in ("seconds", "events_per_s", "workers")
            },
            "fingerprint": _fingerprint(ds, files, facts_d),
            "source": ds.manifest.get("source"),
        }
        io.write_json_atomic(manifest, tmp / io.MANIFEST)
    _log(progress, f"done in {summary['seconds']:.1f}s ({summary['events_per_s']:,.0f} events/s)")
    return summary


def _assemble_samples(per_event: pl.DataFrame, global_tab: pl.DataFrame, m: float) -> pl.DataFrame:
    """Smooth one creator bucket's sums toward the point-in-time global prior: schema.SAMPLES.

    The global prior of an impression is the sum over every event in an earlier hour
    (row ``hour(ts) - 1`` of ``global_prior_table``). Rows keep their order.
    """
    p0 = T.prior_rates_at(global_tab, T.us_of(per_event[S.TS]), _G)

    def col(name: str) -> npt.NDArray[np.number]:
        return per_event[name].to_numpy()

    def rates(p: str) -> list[pl.Series]:
        return [T.smooth_np(col(p + k), col(p + n), p0[k], m, scale) for k, n, scale in T.RATES]

    names_v = [S.F_VIDEO_ENGAGE_RATE, S.F_VIDEO_WATCH_RATIO, S.F_VIDEO_SKIP_RATE,
               S.F_VIDEO_LIKE_RATE]  # fmt: skip
    names_c = [S.F_CREATOR_ENGAGE_RATE, S.F_CREATOR_WATCH_RATIO, S.F_CREATOR_SKIP_RATE,
               S.F_CREATOR_LIKE_RATE]  # fmt: skip
    ueng = T.smooth_np(col(T.U_ENG), col(S.F_USER_IMPRESSIONS), p0[T.ENG], m)
    out = per_event.with_columns(
        ueng.alias(S.F_USER_ENGAGE_RATE),
        pl.col(_V + T.N).alias(S.F_VIDEO_IMPRESSIONS),
        pl.col(_C + T.N).alias(S.F_CREATOR_IMPRESSIONS),
        *[s.alias(nm) for s, nm in zip(rates(_V), names_v, strict=True)],
        *[s.alias(nm) for s, nm in zip(rates(_C), names_c, strict=True)],
    )
    return out.select([pl.col(c.name).cast(c.dtype) for c in S.SAMPLES.columns])


def read_etl_events(dataset_root: Path) -> pl.LazyFrame:
    """The ETL's events (schema.ETL_EVENTS) of a dataset, lazily; raises if the ETL has not run."""
    d = Path(dataset_root) / io.ETL_DIR / EVENTS_SUBDIR
    if not list(d.glob("*.parquet")):
        raise io.DatasetError(f"{d}: no ETL events (run `shortrec etl {dataset_root}` first)")
    return pl.scan_parquet(d / "*.parquet", schema=S.ETL_EVENTS.polars_schema)
