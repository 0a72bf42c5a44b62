"""Baselines: hand-computed scores on tiny logs, item-kNN against a dense brute force."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
from evalworld import etl_frame, ts, us, users_frame, videos_frame

from shortrec import schema as S
from shortrec.domain import Recommender, TrainingData
from shortrec.evaluation.baselines import (
    ItemKNN,
    MostPopular,
    RandomRecommender,
    Trending,
    default_baselines,
)


def _data(
    rows: Sequence[tuple[int, int, float, bool | None]],
    n_users: int,
    n_items: int,
    cutoff_day: float = 10.0,
) -> TrainingData:
    """Training data from (user, video, day, skipped) tuples."""
    ev = etl_frame(
        [{S.USER_IDX: u, S.VIDEO_IDX: v, S.TS: ts(d), S.SKIPPED: sk} for u, v, d, sk in rows]
    )
    return TrainingData(
        interactions=ev.select(S.EVENTS.names),
        videos=videos_frame(n_items),
        users=users_frame(n_users),
        n_users=n_users,
        n_items=n_items,
        cutoff_us=us(cutoff_day),
        skip_threshold_s=2.0,
    )


def test_most_popular_counts_distinct_engaged_users() -> None:
    data = _data(
        [
            (0, 1, 0, False),
            (0, 1, 1, False),
            (1, 1, 1, None),
            (2, 1, 2, True),
            (0, 2, 1, False),
            (1, 3, 1, True),
        ],
        n_users=3,
        n_items=4,
    )
    rec = MostPopular().fit(data)
    s = rec.score(np.array([0, 2]))
    assert s.shape == (2, 4) and s.dtype == np.float32
    # video 1: users 0 (twice) and 1 (skipped null = engaged); user 2 skipped -> 2
    assert s[0].tolist() == [0.0, 2.0, 1.0, 0.0]
    assert s[1].tolist() == s[0].tolist()


def test_trending_decays_with_half_life() -> None:
    data = _data(
        [(0, 0, 9.0, False), (1, 0, 8.0, False), (0, 1, 10.0, False), (1, 2, 10.0, True)],
        n_users=2,
        n_items=3,
        cutoff_day=10.0,
    )
    rec = Trending(half_life_days=1.0).fit(data)
    s = rec.score(np.array([0]))[0]
    assert s[0] == pytest.approx(0.5 + 0.25)
    assert s[1] == pytest.approx(1.0)
    assert s[2] == 0.0
    with pytest.raises(ValueError, match="half_life"):
        Trending(half_life_days=0.0)


def test_item_knn_matches_dense_cosine() -> None:
    rng = np.random.default_rng(0)
    n_users, n_items = 30, 25
    rows = [
        (u, v, float(rng.random()), False)
        for u in range(n_users)
        for v in range(n_items)
        if rng.random() < 0.2
    ]
    rows += [(0, 3, 1.0, True)]  # a skip never counts
    data = _data(rows, n_users, n_items)
    x = np.zeros((n_users, n_items))
    for u, v, _, sk in rows:
        if not sk:
            x[u, v] = 1.0
    norm = np.sqrt(x.sum(axis=0))
    xn = np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)
    sim = xn.T @ xn
    np.fill_diagonal(sim, 0.0)
    want = x @ sim
    rec = ItemKNN(n_neighbours=n_items, block=7).fit(data)
    got = rec.score(np.arange(n_users))
    # the popularity tie-breaker is below 1e-6
    np.testing.assert_allclose(got, want, atol=2e-6)


def test_item_knn_keeps_top_neighbours_only() -> None:
    # item 0 co-occurs with 1 (3 users), 2 (2 users), 3 (1 user)
    rows = [
        (0, 0, 0, False),
        (0, 1, 0, False),
        (1, 0, 0, False),
        (1, 1, 0, False),
        (2, 0, 0, False),
        (2, 1, 0, False),
        (2, 2, 0, False),
        (3, 0, 0, False),
        (3, 2, 0, False),
        (4, 0, 0, False),
        (4, 3, 0, False),
        (5, 4, 0, False),
    ]
    # a user who saw only item 0 gets item 0's single best neighbour (item 1)
    extra = _data([*rows, (6, 0, 0, False)], n_users=7, n_items=5)
    knn = ItemKNN(n_neighbours=1).fit(extra)
    s = knn.score(np.array([6]))[0]
    assert s[1] > 1e-3
    assert s[2] < 1e-5 and s[3] < 1e-5
    # cold user: only the popularity tie-breaker, most popular item first
    cold = knn.score(np.array([5]))[0]
    assert cold.max() < 1e-5
    assert int(np.argmax(cold)) == 0


def test_random_is_per_user_deterministic_and_batch_independent() -> None:
    data = _data([(0, 0, 0, False)], n_users=5, n_items=50)
    a = RandomRecommender(seed=3).fit(data)
    b = RandomRecommender(seed=3).fit(data)
    whole = a.score(np.arange(5))
    parts = np.concatenate([b.score(np.array([0, 1])), b.score(np.array([2, 3, 4]))])
    np.testing.assert_array_equal(whole, parts)
    other = RandomRecommender(seed=4).fit(data).score(np.arange(5))
    assert not np.array_equal(whole, other)
    assert ((whole >= 0) & (whole < 1)).all()


def test_score_before_fit_raises() -> None:
    for rec in default_baselines(0):
        with pytest.raises(RuntimeError, match="before fit"):
            rec.score(np.array([0]))


def test_default_baselines_are_fresh_recommenders() -> None:
    a, b = default_baselines(1), default_baselines(1)
    names = [r.name for r in a]
    assert names == ["random", "most-popular", "trending", "item-knn"]
    assert all(isinstance(r, Recommender) for r in a)
    assert all(x is not y for x, y in zip(a, b, strict=True))
    assert not any(getattr(r, "is_fitted", True) for r in a)
