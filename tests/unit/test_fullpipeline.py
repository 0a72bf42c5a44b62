"""The full pipeline (retrieval -> ranker -> re-rank) as one Recommender, on the tiny world."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from pydantic import ValidationError

from shortrec import pipelines
from shortrec import schema as S
from shortrec.config import EvalConfig, RankerConfig, RetrievalConfig, TwoTowerConfig
from shortrec.data import etl as etl_mod
from shortrec.data import io
from shortrec.domain import Recommender
from shortrec.evaluation.protocols import EvalTask, build_task
from shortrec.evaluation.runner import evaluate
from shortrec.fullpipeline import (
    FitCache,
    FullPipelineConfig,
    FullPipelineRecommender,
    variant,
)

Frames = tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]

# small and fast: ID embeddings off on the tiny world (they only overfit it)
CONFIG = FullPipelineConfig(
    retrieval=RetrievalConfig(two_tower=TwoTowerConfig(max_epochs=1, dim=16, hidden=32, threads=1)),
    ranker=RankerConfig(
        max_epochs=1, d_model=16, head_hidden=16, max_train_lists=300, threads=1, max_id_buckets=1
    ),
    n_candidates=80,
    rerank_pool=40,
)


@pytest.fixture(scope="module")
def frames(tmp_path_factory: pytest.TempPathFactory) -> Frames:
    root = Path(tmp_path_factory.mktemp("fullpipeline")) / "tiny"
    pipelines.generate("tiny", 0, root, report=False, progress=False)
    pipelines.etl(root, progress=False)
    ds = io.Dataset.open(root)
    events = etl_mod.read_etl_events(root).collect()
    return events, ds.videos().collect(), ds.users().collect()


def _task(frames: Frames, protocol: str) -> EvalTask:
    events, videos, users = frames
    return build_task(events, videos, users, EvalConfig(protocol=protocol), 2.0, False)


@pytest.fixture(scope="module")
def temporal(frames: Frames) -> EvalTask:
    return _task(frames, "temporal")


@pytest.fixture(scope="module")
def fitted(temporal: EvalTask) -> FullPipelineRecommender:
    return FullPipelineRecommender(CONFIG, seed=3).fit(temporal.train)


def test_is_a_recommender_named_shortrec(fitted: FullPipelineRecommender) -> None:
    assert isinstance(fitted, Recommender) and fitted.name == "shortrec" and fitted.is_fitted
    assert fitted.ranker_metrics["n_train_lists"] > 0


def test_scores_rank_page_then_candidates_and_never_seen_items(
    fitted: FullPipelineRecommender, temporal: EvalTask
) -> None:
    users = temporal.users[:40]
    scores = fitted.score(users)
    assert scores.shape == (users.size, temporal.n_items) and scores.dtype == np.float32
    seen = temporal.seen
    creators = temporal.train.videos.sort(S.VIDEO_IDX).get_column(S.CREATOR_IDX).to_numpy()
    for r in range(users.size):
        proposed = np.flatnonzero(np.isfinite(scores[r]))
        assert 0 < proposed.size <= CONFIG.n_candidates
        row_seen = seen.indices[seen.indptr[r] : seen.indptr[r + 1]]
        assert not set(proposed.tolist()) & set(row_seen.tolist())
        # rank scores: distinct, n..1
        vals = np.sort(scores[r, proposed])[::-1]
        assert vals.tolist() == list(range(proposed.size, 0, -1))
        # the page honours the creator cap (80 candidates leave room for it)
        page = np.argsort(-scores[r], kind="stable")[: CONFIG.rerank.k]
        cap = CONFIG.rerank.max_per_creator
        assert cap is not None and max(Counter(creators[page].tolist()).values()) <= cap


def test_deterministic_for_a_seed(temporal: EvalTask, fitted: FullPipelineRecommender) -> None:
    users = temporal.users[:20]
    again = FullPipelineRecommender(CONFIG, seed=3).fit(temporal.train)
    np.testing.assert_array_equal(again.score(users), fitted.score(users))


def test_stages_share_fits_and_differ_only_in_order(temporal: EvalTask) -> None:
    cache = FitCache()
    full = FullPipelineRecommender(CONFIG, seed=1, cache=cache).fit(temporal.train)
    ranker = FullPipelineRecommender(variant(CONFIG, stages="ranker"), 1, "r", cache).fit(
        temporal.train
    )
    retr = FullPipelineRecommender(variant(CONFIG, stages="retrieval"), 1, "q", cache).fit(
        temporal.train
    )
    relevance_only = {"trade_off": 1.0, "max_per_creator": None, "max_per_topic": None}
    soft = FullPipelineRecommender(
        variant(CONFIG, rerank_cfg={**relevance_only, "personalise": "none"}), 1, "s", cache
    ).fit(temporal.train)
    # calibrated re-ranking at trade-off 1 without the topic-affinity order: relevance too
    calm = FullPipelineRecommender(
        variant(
            CONFIG,
            rerank_cfg={**relevance_only, "calibration_trade_off": 1.0, "topic_affinity": 0.0},
        ),
        1,
        "c",
        cache,
    ).fit(temporal.train)
    # one retrieval and one ranker training for all four
    assert ranker.ranker_metrics == full.ranker_metrics and retr.ranker_metrics == {}
    assert ranker.retrieval_fit_s == full.retrieval_fit_s
    users = temporal.users[:30]
    a, b, c, d = (x.score(users) for x in (full, ranker, retr, soft))
    # same candidate set in every stage
    np.testing.assert_array_equal(np.isfinite(a), np.isfinite(c))
    np.testing.assert_array_equal(np.isfinite(b), np.isfinite(c))
    # DPP at trade-off 1 without caps is pure relevance order: identical to the ranker stage
    np.testing.assert_array_equal(d, b)
    np.testing.assert_array_equal(calm.score(users), b)
    assert not np.array_equal(a, b)  # re-ranking changes some page
    # retrieval stage: the fused scores are positive and their order is the candidates' order
    assert (c[np.isfinite(c)] > 0).all()


def test_runner_fits_and_scores_under_temporal_and_loo(frames: Frames) -> None:
    events, videos, users = frames
    for protocol in ("temporal", "loo-full"):
        rec = FullPipelineRecommender(CONFIG, seed=0)
        rep = evaluate(
            events,
            videos,
            users,
            [rec],
            EvalConfig(protocol=protocol, max_users=60),
            progress=False,
        )
        m = rep.metrics["shortrec"]
        assert rep.recommender_info["shortrec"]["fit_by_runner"]
        assert 0.0 <= m["ndcg@10"] <= 1.0 and np.isfinite(m["hit@10"])


def test_loo_training_data_is_what_the_pipeline_learns(frames: Frames) -> None:
    task = _task(frames, "loo-full")
    rec = FullPipelineRecommender(CONFIG, seed=0).fit(task.train)
    scores = rec.score(task.users[:30])
    seen = task.seen
    for r in range(30):
        row_seen = seen.indices[seen.indptr[r] : seen.indptr[r + 1]]
        assert np.all(np.isneginf(scores[r, row_seen]))


def test_pages_follow_the_users_history_topics(
    fitted: FullPipelineRecommender, temporal: EvalTask
) -> None:
    # the default calibrates each page to the user's (non-skipped) history topics
    assert fitted.config.rerank.personalise == "calibrated"
    users = temporal.users[:40]
    plain = FullPipelineRecommender(
        variant(CONFIG, rerank_cfg={"personalise": "none"}), seed=3, cache=fitted.cache
    ).fit(temporal.train)
    a, b = fitted.score(users), plain.score(users)
    np.testing.assert_array_equal(np.isfinite(a), np.isfinite(b))  # same candidates
    assert not np.array_equal(a, b)
    hist = temporal.train.interactions
    topic = temporal.train.videos.sort(S.VIDEO_IDX).get_column(S.CATEGORY).cast(pl.Int64).to_numpy()
    u = int(users[0])
    p = fitted._user_topics(u)
    assert p is not None and p.shape == (int(topic.max()) + 1,)
    np.testing.assert_allclose(p.sum(), 1.0)
    rows = hist.filter((pl.col(S.USER_IDX) == u) & ~pl.col(S.SKIPPED).fill_null(False))
    counts = np.bincount(topic[rows.get_column(S.VIDEO_IDX).to_numpy()], minlength=p.shape[0])
    prior = CONFIG.rerank.topic_prior
    np.testing.assert_allclose(p, (counts + prior / p.shape[0]) / (counts.sum() + prior))


def test_score_before_fit_and_bad_variants_raise() -> None:
    with pytest.raises(RuntimeError, match="before fit"):
        FullPipelineRecommender(CONFIG).score(np.array([0]))
    with pytest.raises(ValidationError):
        variant(CONFIG, ranker={"encoder": "lstm"})
    with pytest.raises(ValidationError):
        variant(CONFIG, no_such_field=1)
    with pytest.raises(ValidationError):
        variant(CONFIG, retrieval_blend=1.5)
