from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from retrieval_world import DAY, World

from shortrec import schema as S
from shortrec.artifacts import BundleError, read_manifest
from shortrec.config import RetrievalConfig
from shortrec.domain import Recommender, TrainingData
from shortrec.retrieval.model import RetrievalModel
from shortrec.retrieval.pipeline import retrieval_recommenders, train_retrieval
from shortrec.retrieval.types import RetrievalRequest


def _etl(world: World) -> pl.DataFrame:
    """ETL_EVENTS-shaped events: the last 2 days are valid, then test."""
    ts = pl.col(S.TS).dt.epoch("us")
    split = (
        pl.when(ts > world.now_us - DAY)
        .then(pl.lit(S.TEST))
        .when(ts > world.now_us - 3 * DAY)
        .then(pl.lit(S.VALID))
        .otherwise(pl.lit(S.TRAIN))
    )
    return world.events.with_columns(split.alias(S.SPLIT), pl.lit(S.TRAIN).alias(S.LOO_SPLIT))


def test_train_retrieval_writes_a_loadable_component(
    world: World, config: RetrievalConfig, tmp_path: Path
) -> None:
    cfg = config.model_copy(
        update={"two_tower": config.two_tower.model_copy(update={"max_epochs": 2})}
    )
    metrics = train_retrieval(
        _etl(world),
        world.videos,
        world.users,
        cfg,
        tmp_path,
        data_fingerprint="abc",
        progress=False,
    )
    assert metrics["index_kind"] == "flat" and metrics["two_tower_samples_per_s"] > 0
    entry = read_manifest(tmp_path)["components"]["retrieval"]
    assert entry["data_fingerprint"] == "abc" and entry["metrics"] == json.loads(
        json.dumps(metrics)
    )
    model = RetrievalModel.load(tmp_path)
    assert model.config == cfg
    # statistics stop at the end of the valid period: test events are not used
    assert model.as_of_us <= world.now_us - DAY
    hist = np.array([0, 4, 8])
    req = RetrievalRequest(
        user_idx=0,
        now_us=world.now_us,
        history=hist,
        seen=hist,
        tag_idx=np.array([0]),
        tag_weight=np.array([1.0]),
        region="US",
    )
    a = model.retrieve(req)
    assert len(a) == 40 and not set(a.video_idx.tolist()) & set(hist.tolist())
    # a second write replaces the component atomically; the loaded model answers the same
    train_retrieval(_etl(world), world.videos, world.users, cfg, tmp_path, "abc", progress=False)
    b = RetrievalModel.load(tmp_path).retrieve(req)
    assert a.video_idx.tolist() == b.video_idx.tolist()


def test_train_retrieval_rejects_non_etl_input(
    world: World, config: RetrievalConfig, tmp_path: Path
) -> None:
    with pytest.raises(S.BadInput, match="split"):
        train_retrieval(
            world.events, world.videos, world.users, config, tmp_path, "x", progress=False
        )
    with pytest.raises(BundleError, match="no component"):
        RetrievalModel.load(tmp_path)


def test_cold_user_gets_a_full_candidate_set(world: World, model: RetrievalModel) -> None:
    req = RetrievalRequest(user_idx=10**6, now_us=world.now_us)
    m = model.retrieve(req, total=40)
    assert len(m) == 40
    names = {n for i in range(len(m)) for n in m.sources_of(i)}
    assert names <= {"trending", "explore", "fresh"} and {"trending", "explore"} <= names
    cats = {v % world.n_topics for v in m.video_idx.tolist()}
    assert cats == set(range(world.n_topics))  # exploration spans every topic


def test_merged_warm_request_mixes_sources_and_drops_seen(
    world: World, model: RetrievalModel
) -> None:
    seen = np.arange(0, 60, dtype=np.int32)
    req = RetrievalRequest(
        user_idx=1,
        now_us=world.now_us,
        history=np.array([1, 5, 9]),
        seen=seen,
        tag_idx=np.array([2, 3]),
        tag_weight=np.array([0.5, 0.5]),
    )
    m = model.retrieve(req, total=40)
    assert len(m) == 40 and not set(m.video_idx.tolist()) & set(seen.tolist())
    proposed = {n for i in range(len(m)) for n in m.sources_of(i)}
    assert {"two_tower", "tags", "fresh"} <= proposed


def test_recommender_adapters_share_one_fit(world: World, config: RetrievalConfig) -> None:
    recs = retrieval_recommenders(config, seed=0)
    assert set(recs) == {
        "trending",
        "tags",
        "two_tower",
        "covisit",
        "fresh",
        "explore",
        "merged",
    }
    data = TrainingData(
        interactions=world.events,
        videos=world.videos,
        users=world.users,
        n_users=world.users.height,
        n_items=world.videos.height,
        cutoff_us=world.now_us,
        skip_threshold_s=2.0,
    )
    users = np.array([0, 1, 2, 10**5 % world.users.height], dtype=np.int64)
    seen = world.events.filter(pl.col(S.USER_IDX) == 0).get_column(S.VIDEO_IDX).unique()
    for name, rec in recs.items():
        assert isinstance(rec, Recommender)
        assert rec.fit(data) is rec
        s = rec.score(users)
        assert s.shape == (4, world.videos.height) and s.dtype == np.float32
        finite = np.isfinite(s)
        assert finite.sum(axis=1).max() <= config.n_candidates
        assert not finite[0, seen.to_numpy()].any(), name  # seen videos never proposed
        if name in ("trending", "two_tower", "covisit", "merged", "explore"):
            assert finite.sum(axis=1).min() > 0, name
    assert recs["two_tower"]._shared is recs["merged"]._shared  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="unknown"):
        retrieval_recommenders(config, names=("nope",))
