"""publish(): input checks happen before anything is visible; defaults of optional columns."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from shortrec import schema as S
from shortrec.config import StoreConfig
from shortrec.store import MemoryStore, Snapshot, StoreInputError, publish

T0 = 1_700_000_000_000_000


def _videos(n: int = 3) -> pl.DataFrame:
    return pl.DataFrame(
        {
            S.VIDEO_IDX: pl.Series(range(n), dtype=pl.Int32),
            S.CREATOR_IDX: pl.Series([0] * n, dtype=pl.Int32),
            S.CATEGORY: pl.Series([1] * n, dtype=pl.Int16),
            S.TAGS: pl.Series([[1]] * n, dtype=pl.List(pl.Int32)),
            S.DURATION_S: pl.Series([5.0] * n, dtype=pl.Float32),
            S.UPLOAD_TS: pl.Series([T0] * (n - 1) + [None], dtype=pl.Int64).cast(S.UTC_TS),
        }
    )


VOCAB = pl.DataFrame({S.IDX: pl.Series([0], dtype=pl.Int32), S.ID: ["alice"]})


@pytest.mark.parametrize(
    ("snap", "match"),
    [
        (Snapshot(T0, _videos().drop(S.TAGS)), "videos: missing column"),
        (Snapshot(T0, pl.concat([_videos(), _videos()])), "duplicate video_idx"),
        (Snapshot(T0, _videos(), fresh=np.array([2])), "without upload time"),
        (Snapshot(T0, _videos(), fresh=np.array([7])), "not in videos"),
        (
            Snapshot(
                T0,
                _videos(),
                user_vocab=VOCAB,
                histories=pl.DataFrame(
                    {
                        S.USER_IDX: pl.Series([0], dtype=pl.Int32),
                        S.HIST_VIDEO_IDX: pl.Series([[1, 2]], dtype=pl.List(pl.Int32)),
                        S.SKIPPED: pl.Series([[True]], dtype=pl.List(pl.Boolean)),
                    }
                ),
            ),
            "user_idx 0: list sk differs",
        ),
        (
            Snapshot(
                T0,
                _videos(),
                user_vocab=VOCAB,
                affinities=pl.DataFrame(
                    {
                        S.USER_IDX: pl.Series([0], dtype=pl.Int32),
                        S.TAG_IDX: pl.Series([1], dtype=pl.Int32),
                        S.AFFINITY: pl.Series([-1.0], dtype=pl.Float32),
                    }
                ),
            ),
            "affinity",
        ),
        (
            Snapshot(
                T0,
                _videos(),
                user_vocab=VOCAB,
                affinities=pl.DataFrame(
                    {
                        S.USER_IDX: pl.Series([3], dtype=pl.Int32),
                        S.TAG_IDX: pl.Series([1], dtype=pl.Int32),
                        S.AFFINITY: pl.Series([1.0], dtype=pl.Float32),
                    }
                ),
            ),
            "no id for user_idx 3",
        ),
    ],
)
def test_bad_snapshots_are_refused_before_any_write(snap: Snapshot, match: str) -> None:
    store = MemoryStore()
    with pytest.raises(StoreInputError, match=match):
        publish(store, snap, StoreConfig())
    assert store.key_ttls() == {}


def test_history_without_times_and_signals_defaults() -> None:
    store = MemoryStore()
    snap = Snapshot(
        T0,
        _videos(),
        user_vocab=VOCAB,
        histories=pl.DataFrame(
            {
                S.USER_IDX: pl.Series([0], dtype=pl.Int32),
                S.HIST_VIDEO_IDX: pl.Series([list(range(150))], dtype=pl.List(pl.Int32)),
            }
        ),
    )
    publish(store, snap, StoreConfig(history_cap=100))
    ctx = store.read_request_context("alice", 1, T0)
    assert ctx.history.tolist() == list(range(50, 150))
    assert (ctx.history_ts == T0).all() and np.isnan(ctx.watch_ratio).all()
    assert not ctx.skipped.any()
    assert store.video_features(np.array([0])).impressions.tolist() == [0]
