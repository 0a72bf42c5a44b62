from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import numpy as np
import polars as pl
import pytest

from shortrec import schema as S
from shortrec.config import EngagementConfig
from shortrec.retrieval import features as fx

H = 3_600 * 1_000_000
T0 = int(dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp() * 1_000_000)


def _events(rows: Sequence[tuple[int, int, int, float | None, bool | None, bool]]) -> pl.DataFrame:
    """rows: (user, video, ts_us, watch_ratio, skipped, liked)."""
    df = pl.DataFrame(
        rows,
        schema=[S.USER_IDX, S.VIDEO_IDX, "t", S.WATCH_RATIO, S.SKIPPED, S.LIKED],
        orient="row",
    ).with_columns(
        pl.int_range(pl.len()).alias(S.EVENT_ID),
        pl.col("t").cast(pl.Datetime("us", "UTC")).alias(S.TS),
    )
    return S.conform(df, S.EVENTS)


def test_engagement_and_positive_agree_with_numpy_twin() -> None:
    cfg = EngagementConfig(like_weight=1.0, watch_ratio_cap=2.0, min_positive_watch_ratio=0.3)
    ev = _events(
        [
            (0, 0, T0, 3.0, False, True),
            (0, 1, T0, 0.2, False, False),
            (0, 2, T0, 0.9, True, True),
            (0, 3, T0, None, None, False),
        ]
    )
    got = ev.select(fx.engagement_expr(cfg), fx.positive_expr(cfg).alias("pos"))
    # capped watch ratio + like; below-threshold view; skip = 0; missing ratio counts as 1
    assert got.get_column(fx.ENGAGEMENT).to_list() == pytest.approx([3.0, 0.2, 0.0, 1.0])
    assert got.get_column("pos").to_list() == [True, False, False, True]
    wr = np.array([3.0, 0.2, 0.9, np.nan], dtype=np.float32)
    sk = np.array([False, False, True, False])
    assert fx.positive_mask(wr, sk, 4, cfg).tolist() == [True, False, False, True]


def test_decayed_engagement_halves_per_half_life_and_splits_by_region() -> None:
    cfg = EngagementConfig()
    users = S.conform(pl.DataFrame({S.USER_IDX: [0, 1, 2], S.REGION: ["US", "BR", None]}), S.USERS)
    ev = _events(
        [
            (0, 7, T0, 1.0, False, False),
            (1, 7, T0 + 2 * H, 1.0, False, False),
            (2, 8, T0 + 2 * H, 0.5, False, False),
            (0, 9, T0 + 5 * H, 1.0, False, False),
        ]
    )
    now = T0 + 2 * H  # the event at +5 h is in the future and must not count
    out = fx.decayed_engagement(ev.lazy(), users.lazy(), now, 2 * 3600.0, cfg, per_region=True)
    got = {(r, v): s for r, v, s in out.iter_rows()}
    assert got == pytest.approx(
        {("*", 7): 0.5 + 1.0, ("*", 8): 0.5, ("US", 7): 0.5, ("BR", 7): 1.0}
    )


def test_advance_decayed_equals_rebuild() -> None:
    cfg = EngagementConfig()
    users = S.conform(pl.DataFrame({S.USER_IDX: [0, 1], S.REGION: ["US", "BR"]}), S.USERS)
    rng = np.random.default_rng(1)
    rows = [
        (
            int(rng.integers(2)),
            int(rng.integers(5)),
            T0 + int(rng.integers(0, 10 * H)),
            float(rng.random()),
            False,
            bool(rng.random() < 0.2),
        )
        for _ in range(60)
    ]
    ev = _events(rows)
    mid, end, h = T0 + 4 * H, T0 + 10 * H, 3 * 3600.0
    old = fx.decayed_engagement(ev.lazy(), users.lazy(), mid, h, cfg, True)
    new = fx.decayed_engagement(
        ev.lazy().filter(pl.col(S.TS).dt.epoch("us") > mid), users.lazy(), end, h, cfg, True
    )
    inc = fx.advance_decayed(old, mid, new, end, h).sort(S.REGION, S.VIDEO_IDX)
    full = fx.decayed_engagement(ev.lazy(), users.lazy(), end, h, cfg, True).sort(
        S.REGION, S.VIDEO_IDX
    )
    assert inc.get_column(S.VIDEO_IDX).to_list() == full.get_column(S.VIDEO_IDX).to_list()
    np.testing.assert_allclose(inc.get_column(fx.SCORE), full.get_column(fx.SCORE), rtol=1e-9)
    with pytest.raises(ValueError, match="back in time"):
        fx.advance_decayed(old, end, new, mid, h)


def test_user_tag_affinity_is_decayed_shared_and_normalised() -> None:
    videos = S.conform(
        pl.DataFrame({S.VIDEO_IDX: [0, 1], S.CREATOR_IDX: [0, 0], S.TAGS: [[10, 11], [11]]}),
        S.VIDEOS,
    )
    ev = _events(
        [
            (0, 0, T0, 1.0, False, False),
            (0, 1, T0 + 24 * H, 1.0, False, False),
            (1, 0, T0, 1.0, True, False),
        ]
    )
    out = fx.user_tag_affinity(
        ev.lazy(), videos.lazy(), T0 + 24 * H, 86_400.0, EngagementConfig(), max_tags=5
    )
    # user 0: video 0 one half-life old (0.5 split over 2 tags), video 1 fresh (1.0 on tag 11)
    w = {t: x for u, t, x in out.iter_rows() if u == 0}
    assert w == pytest.approx({11: 1.25 / 1.5, 10: 0.25 / 1.5}, rel=1e-6)
    assert 1 not in out.get_column(S.USER_IDX).to_list()  # only a skip: no affinity


def test_smoothed_engagement_and_per_tag_top() -> None:
    stats = pl.DataFrame(
        {S.VIDEO_IDX: [0, 1, 2], fx.IMPRESSIONS: [100, 1, 0], fx.ENGAGEMENT: [80.0, 1.0, 0.0]}
    )
    sc = fx.smoothed_engagement(stats, prior_strength=10.0)
    mu = 81.0 / 101.0
    exp0 = (80 + 10 * mu) / 110 * np.log1p(100)
    exp1 = (1 + 10 * mu) / 11 * np.log1p(1)
    assert sc.get_column(fx.SCORE).to_list() == pytest.approx([exp0, exp1, 0.0])
    videos = S.conform(
        pl.DataFrame(
            {S.VIDEO_IDX: [0, 1, 2], S.CREATOR_IDX: [0, 0, 0], S.TAGS: [[5], [5, 6], [6]]}
        ),
        S.VIDEOS,
    )
    top = fx.per_tag_top(videos, sc, top_n=1)
    assert top.select(S.TAG_IDX, S.VIDEO_IDX).rows() == [(5, 0), (6, 1)]  # 2 has no evidence


def test_user_histories_order_and_seen() -> None:
    ev = _events(
        [
            (0, 3, T0 + 2, 1.0, False, False),
            (0, 1, T0, 0.1, True, False),
            (0, 2, T0 + 1, 1.0, False, False),
            (0, 9, T0 + 99 * H, 1.0, False, False),
        ]
    )
    h = fx.user_histories(ev.lazy(), T0 + 5, length=2).row(0, named=True)
    assert h["history"] == [2, 3]
    assert sorted(h["seen"]) == [1, 2, 3]
