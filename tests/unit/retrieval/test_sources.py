from __future__ import annotations

import numpy as np
import polars as pl
from retrieval_world import DAY, World

from shortrec import schema as S
from shortrec.retrieval.model import RetrievalModel
from shortrec.retrieval.sources import CandidateSource, TrendingSource
from shortrec.retrieval.types import RetrievalRequest


def _req(world: World, user: int, **kw: object) -> RetrievalRequest:
    return RetrievalRequest(user_idx=user, now_us=world.now_us, **kw)  # type: ignore[arg-type]


def test_every_source_satisfies_the_protocol(model: RetrievalModel) -> None:
    assert set(model.sources) == {"trending", "tags", "fresh", "explore", "two_tower", "covisit"}
    for name, src in model.sources.items():
        assert isinstance(src, CandidateSource)
        assert src.name == name


def test_trending_ranks_by_decayed_engagement_per_region(
    world: World, model: RetrievalModel
) -> None:
    c = model.trending.candidates(_req(world, 0), 5)
    # the world's most shown videos are the low ids of each topic (popularity skew)
    assert set(c.video_idx.tolist()) <= set(range(2 * world.n_topics))
    assert np.all(np.diff(c.score) <= 0)
    # a region list exists and differs from the global one only by blending
    us = model.trending.candidates(_req(world, 0, region="US"), 50)
    assert "US" in model.trending.lists and len(us) == 50


def test_trending_known_answer_and_refresh_equals_rebuild(
    world: World, model: RetrievalModel
) -> None:
    users, cfg, eng = world.users, model.config.trending, model.config.engagement
    old_now = world.now_us - 3 * DAY
    ev_old = world.events.filter(pl.col(S.TS).dt.epoch("us") <= old_now)
    src = TrendingSource.from_frames(ev_old, users, old_now, cfg, eng)
    # a burst of full views on a never-shown video makes it trend globally
    burst = world.events.head(50).with_columns(
        pl.lit(world.videos.height - 1, dtype=pl.Int32).alias(S.VIDEO_IDX),
        pl.lit(1.0, dtype=pl.Float32).alias(S.WATCH_RATIO),
        pl.lit(False).alias(S.SKIPPED),
        (pl.col(S.EVENT_ID) + 10**6).alias(S.EVENT_ID),
        pl.lit(world.now_us - 1).cast(pl.Datetime("us", "UTC")).alias(S.TS),
    )
    new = pl.concat([world.events, burst])
    inc = src.refreshed(new, users, world.now_us)
    full = TrendingSource.from_frames(new, users, world.now_us, cfg, eng)
    req = _req(world, 0)
    a, b = inc.candidates(req, 30), full.candidates(req, 30)
    assert a.video_idx.tolist() == b.video_idx.tolist()
    np.testing.assert_allclose(a.score, b.score, rtol=1e-5)
    assert a.video_idx[0] == world.videos.height - 1


def test_tags_source_returns_the_users_topic(world: World, model: RetrievalModel) -> None:
    t = 2
    c = model.tags.candidates(_req(world, 0, tag_idx=[2 * t, 2 * t + 1], tag_weight=[0.5, 0.5]), 10)
    assert len(c) == 10
    assert all(v % world.n_topics == t for v in c.video_idx.tolist())
    assert len(model.tags.candidates(_req(world, 0), 10)) == 0  # no affinities, no tags


def test_fresh_source_proposes_unshown_new_uploads(world: World, model: RetrievalModel) -> None:
    fresh_ids = set(range(world.videos.height - world.n_fresh, world.videos.height))
    shown = set(world.events.get_column(S.VIDEO_IDX).to_list())
    assert not fresh_ids & shown
    cold = model.fresh.candidates(_req(world, 0), 100)
    assert set(cold.video_idx.tolist()) == fresh_ids
    t = 1
    warm = model.fresh.candidates(_req(world, 0, tag_idx=[2 * t], tag_weight=[1.0]), 100)
    top = [v for v in warm.video_idx.tolist()][: sum(v % world.n_topics == t for v in fresh_ids)]
    assert all(v % world.n_topics == t for v in top)  # matched topic first
    # before the uploads happened there is nothing fresh to propose
    early = RetrievalRequest(user_idx=0, now_us=world.now_us - 5 * DAY)
    assert not set(model.fresh.candidates(early, 100).video_idx.tolist()) & fresh_ids


def test_explore_covers_every_category_first(world: World, model: RetrievalModel) -> None:
    c = model.explore.candidates(_req(world, 0), world.n_topics)
    assert sorted(v % world.n_topics for v in c.video_idx.tolist()) == list(range(world.n_topics))


def test_vector_source_finds_the_users_topic(world: World, model: RetrievalModel) -> None:
    hits = 0
    for u in range(world.n_topics * 3):
        hist = world.events.filter((pl.col(S.USER_IDX) == u) & ~pl.col(S.SKIPPED)).sort(S.TS)
        c = model.sources["two_tower"].candidates(
            _req(world, u, history=hist.get_column(S.VIDEO_IDX).to_numpy()), 10
        )
        hits += sum(v % world.n_topics == world.topic_of_user(u) for v in c.video_idx.tolist())
    assert hits / (world.n_topics * 3 * 10) > 0.8


def test_request_history_skips_are_ignored_by_the_user_tower(
    world: World, model: RetrievalModel
) -> None:
    vec = model.vector
    assert vec is not None
    base = vec.user_vector(_req(world, 0, history=[0, 4]))
    with_skips = vec.user_vector(
        _req(world, 0, history=[0, 1, 4, 3], skipped=[False, True, False, True])
    )
    np.testing.assert_allclose(base, with_skips, rtol=1e-6)
