"""Fixture builders for the ETL tests: a dataset directory from hand-made or random events."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from shortrec import schema as S
from shortrec.data import io

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
T0_US = int(T0.timestamp() * 1_000_000)


def write_dataset(root: Path, events: pl.DataFrame, videos: pl.DataFrame, n_parts: int = 1) -> Path:
    """Write a minimal dataset directory (manifest, videos, users, events in parts)."""
    root.mkdir(parents=True, exist_ok=True)
    ev = S.conform(events, S.EVENTS)
    vid = S.conform(videos, S.VIDEOS)
    users = pl.DataFrame({S.USER_IDX: ev[S.USER_IDX].unique().sort()})
    io.write_parquet_atomic(S.conform(users, S.USERS), root / io.USERS_FILE)
    io.write_parquet_atomic(vid, root / io.VIDEOS_FILE)
    edir = root / io.EVENTS_DIR
    edir.mkdir(exist_ok=True)
    for f in edir.glob("*.parquet"):
        f.unlink()
    size = max(1, -(-ev.height // n_parts))
    for i, part in enumerate(ev.iter_slices(size)):
        io.write_parquet_atomic(part, edir / f"part-{i:05d}.parquet")
    io.write_json_atomic({"source": "test", "skip_threshold_s": 2.0}, root / io.MANIFEST)
    return root


def random_world(
    rng: np.random.Generator,
    n_events: int = 2_000,
    n_users: int = 40,
    n_videos: int = 60,
    n_creators: int = 9,
    n_tags: int = 12,
    days: float = 20.0,
    with_sessions: bool = False,
    null_watch: bool = False,
    dup_frac: float = 0.02,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Random events and videos: (events, videos) frames in schema.EVENTS / schema.VIDEOS."""
    tags = [
        sorted(rng.choice(n_tags, size=int(rng.integers(0, 4)), replace=False).tolist())
        for _ in range(n_videos)
    ]
    videos = pl.DataFrame(
        {
            S.VIDEO_IDX: np.arange(n_videos, dtype=np.int32),
            S.CREATOR_IDX: rng.integers(0, n_creators, n_videos).astype(np.int32),
            S.TAGS: pl.Series(tags, dtype=pl.List(pl.Int32)),
            S.DURATION_S: rng.uniform(5, 60, n_videos).astype(np.float32),
            S.UPLOAD_TS: pl.Series(
                T0_US - rng.integers(0, 5 * 86_400_000_000, n_videos), dtype=pl.Int64
            ).cast(S.UTC_TS),
        }
    )
    # timestamps on a coarse grid (whole minutes) so ties in ts occur and exercise event_id order
    ts = T0_US + rng.integers(0, int(days * 1440), n_events) * 60_000_000
    wr = rng.gamma(1.0, 0.6, n_events).astype(np.float32)
    cols: dict[str, Any] = {
        S.EVENT_ID: rng.permutation(n_events).astype(np.int64) * 3 + 7,
        S.USER_IDX: rng.integers(0, n_users, n_events).astype(np.int32),
        S.VIDEO_IDX: rng.integers(0, n_videos, n_events).astype(np.int32),
        S.TS: pl.Series(ts, dtype=pl.Int64).cast(S.UTC_TS),
        S.WATCH_RATIO: wr,
        S.WATCH_TIME_S: wr * 20,
        S.SKIPPED: wr < 0.1,
        S.LIKED: rng.random(n_events) < 0.1,
    }
    ev = pl.DataFrame(cols)
    if null_watch:
        ev = ev.with_columns(
            pl.lit(None, pl.Float32).alias(S.WATCH_RATIO),
            pl.lit(None, pl.Float32).alias(S.WATCH_TIME_S),
            pl.lit(None, pl.Boolean).alias(S.SKIPPED),
            pl.lit(None, pl.Boolean).alias(S.LIKED),
        )
    if with_sessions:
        # half the users come with source sessions of 10 impressions each
        ev = ev.sort([S.USER_IDX, S.TS, S.EVENT_ID]).with_columns(
            pl.when(pl.col(S.USER_IDX) % 2 == 0)
            .then(
                pl.col(S.USER_IDX).cast(pl.Int64) * 1000
                + pl.int_range(pl.len()).over(S.USER_IDX) // 10
            )
            .alias(S.SESSION_ID),
            pl.when(pl.col(S.USER_IDX) % 2 == 0)
            .then(pl.int_range(pl.len()).over(S.USER_IDX) % 10)
            .cast(pl.Int32)
            .alias(S.POSITION),
        )
    ev = S.conform(ev, S.EVENTS)
    n_dup = int(dup_frac * n_events)
    if n_dup:
        ev = pl.concat([ev, ev.sample(n_dup, seed=int(rng.integers(1 << 30)))])
    return ev.sample(fraction=1.0, shuffle=True, seed=int(rng.integers(1 << 30))), videos
