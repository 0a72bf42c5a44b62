"""Batches on a tiny world, training to a known AUC, bundle round trip, ONNX parity."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import torch

from shortrec import schema as S
from shortrec.artifacts import read_manifest
from shortrec.config import RankerConfig
from shortrec.ranking.batches import (
    END_OF_TIME,
    RankerDataError,
    VideoStats,
    VideoTable,
    build_lists,
    candidate_features,
    event_labels,
    history_features,
    sample_negatives,
    tag_novelty,
)
from shortrec.ranking.metrics import auc, ndcg_at_k
from shortrec.ranking.predictor import CandidateSet, History, Predictor
from shortrec.ranking.train import fit_model, train_ranker

T0 = int(dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp() * 1_000_000)


def tiny_world(
    seed: int = 0,
    n_users: int = 150,
    n_videos: int = 300,
    n_topics: int = 6,
    pages: int = 6,
    page: int = 8,
) -> tuple[pl.DataFrame, pl.DataFrame, np.ndarray]:
    """A world whose right answer is known: each user engages with probability
    sigmoid(3 * [topic in the user's 2 topics] - 1.5), so the oracle engage AUC is ~0.80.

    Topic t owns tags 2t and 2t+1; pages mix 50% videos of the user's topics with 50% uniform.
    """
    rng = np.random.default_rng(seed)
    topic = rng.integers(0, n_topics, n_videos)
    tags = [
        sorted({int(2 * t + rng.integers(0, 2)), *([2 * int(t) + 1] if rng.random() < 0.5 else [])})
        for t in topic
    ]
    videos = pl.DataFrame(
        {
            S.VIDEO_IDX: np.arange(n_videos, dtype=np.int32),
            S.CREATOR_IDX: rng.integers(0, 30, n_videos).astype(np.int32),
            S.CATEGORY: topic.astype(np.int16),
            S.TAGS: pl.Series(tags, dtype=pl.List(pl.Int32)),
            S.DURATION_S: rng.uniform(5, 60, n_videos).astype(np.float32),
            S.UPLOAD_TS: pl.Series([dt.datetime(2025, 12, 1, tzinfo=dt.UTC)] * n_videos),
            S.TITLE: [f"v{i}" for i in range(n_videos)],
        }
    )
    videos = S.conform(videos, S.VIDEOS)
    prefs = [rng.choice(n_topics, 2, replace=False) for _ in range(n_users)]
    rows: list[tuple[Any, ...]] = []
    eid = req = 0
    for u in range(n_users):
        t = T0 + int(rng.integers(0, 3_600_000_000))
        liked_pool = np.flatnonzero(np.isin(topic, prefs[u]))
        for p in range(pages):
            for j in range(page):
                v = (
                    int(rng.choice(liked_pool))
                    if rng.random() < 0.5
                    else int(rng.integers(0, n_videos))
                )
                match = bool(np.isin(topic[v], prefs[u]))
                eng = rng.random() < 1 / (1 + np.exp(-(3.0 * match - 1.5)))
                if eng:
                    wr = rng.uniform(0.8, 1.2) if rng.random() < 0.6 else rng.uniform(0.1, 0.7)
                else:
                    wr = rng.uniform(0, 0.05)
                rows.append(
                    (
                        eid,
                        req,
                        u * 100 + p,
                        u,
                        v,
                        t,
                        p * page + j,
                        float(wr) * 20,
                        float(wr),
                        not eng,
                        bool(eng and match and rng.random() < 0.4),
                        "trending" if j % 2 else "interest",
                    )
                )
                eid += 1
                t += int(rng.integers(2_000_000, 30_000_000))
            req += 1
            t += 6 * 3_600_000_000
    cols = [
        S.EVENT_ID,
        S.REQUEST_ID,
        S.SESSION_ID,
        S.USER_IDX,
        S.VIDEO_IDX,
        S.TS,
        S.POSITION,
        S.WATCH_TIME_S,
        S.WATCH_RATIO,
        S.SKIPPED,
        S.LIKED,
        S.POLICY,
    ]
    ev = pl.DataFrame(rows, schema=cols, orient="row").with_columns(
        pl.col(S.TS).cast(pl.Datetime("us", "UTC"))
    )
    ev = S.check(S.conform(ev, S.EVENTS), S.EVENTS, "tiny world")
    cut = ev.get_column(S.TS).quantile(0.8)
    ev = ev.with_columns(
        pl.when(pl.col(S.TS) < cut).then(pl.lit(S.TRAIN)).otherwise(pl.lit(S.VALID)).alias(S.SPLIT)
    )
    return ev, videos, topic


SMALL = dict(
    history_len=20,
    d_model=32,
    n_heads=2,
    n_layers=1,
    head_hidden=32,
    dropout=0.0,
    max_id_buckets=1,
    lr=5e-3,
    batch_size=32,
    max_epochs=12,
    patience=4,
    threads=1,
)


@pytest.fixture(scope="module")
def world() -> tuple[pl.DataFrame, pl.DataFrame, np.ndarray]:
    return tiny_world()


@pytest.fixture(scope="module")
def bundle(
    world: tuple[pl.DataFrame, pl.DataFrame, np.ndarray], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, Any]]:
    ev, videos, _ = world
    art = tmp_path_factory.mktemp("art")
    metrics = train_ranker(ev, videos, RankerConfig(**SMALL), art, "fp-test", seed=0)  # type: ignore[arg-type]
    return art, metrics


# ---------------------------------------------------------------- batches
def test_lists_group_requests_and_history_is_strictly_before(world: Any) -> None:
    ev, videos, _ = world
    cfg = RankerConfig(history_len=20)
    vt = VideoTable.from_frame(videos, cfg)
    lists = build_lists(ev, vt, cfg, np.random.default_rng(0))
    assert lists.n_lists == ev.get_column(S.REQUEST_ID).n_unique()
    assert lists.cand.shape[1] == 8  # one page of 8 impressions, no sampled negatives
    first_ts = ev.group_by(S.REQUEST_ID).agg(pl.col(S.TS).min().dt.epoch("us"))
    assert set(lists.request_us.tolist()) <= set(first_ts.get_column(S.TS).to_list())
    ok = lists.hist_idx >= 0
    hist_ts = np.where(ok, lists.ev_ts[np.maximum(lists.hist_idx, 0)], -1)
    assert np.all(hist_ts[ok] < np.broadcast_to(lists.request_us[:, None], ok.shape)[ok])
    # right-aligned: padding only before real events
    assert np.all(np.diff(ok.astype(int), axis=1) >= 0)
    # the first page of every user has an empty history, the second a full page of it
    assert (ok.sum(axis=1) == 0).sum() == 150
    assert (ok.sum(axis=1) == 8).sum() == 150
    # engage label = not skipped
    skipped = ev.sort(S.REQUEST_ID, S.TS).get_column(S.SKIPPED).to_numpy()
    assert lists.labels[..., 0].sum() == (~skipped).sum()
    # the logging policy fills the source flag where its name is a source name
    trending = cfg.source_names.index("trending")
    assert lists.sources.sum() == lists.sources[..., trending].sum() == ev.height / 2


def test_sampled_negatives_for_logs_without_impressions(world: Any) -> None:
    ev, videos, _ = world
    pos = ev.filter(~pl.col(S.SKIPPED)).with_columns(
        pl.lit(None, dtype=pl.Boolean).alias(S.SKIPPED),
        pl.lit(None, dtype=pl.Int64).alias(S.REQUEST_ID),
    )
    cfg = RankerConfig(history_len=10, n_sampled_negatives=5)
    lists = build_lists(pos, VideoTable.from_frame(videos, cfg), cfg, np.random.default_rng(1))
    assert lists.n_lists == pos.height and lists.cand.shape[1] == 6
    np.testing.assert_array_equal(lists.labels[:, 0, 0], 1.0)
    np.testing.assert_array_equal(lists.labels[:, 1:, :3], 0.0)
    np.testing.assert_array_equal(lists.label_mask[:, :, 0], 1.0)
    assert lists.sources.sum() == 0  # sources unknown for sampled items: never a give-away


def test_negative_sampling_modes_follow_popularity() -> None:
    # video 0 engaged 900 times, 1 engaged 100 times, 2..99 never
    engaged = np.r_[np.zeros(900, np.int64), np.ones(100, np.int64)]
    n, draws = 100, 20_000

    def sample(mode: str, power: float = 1.0) -> np.ndarray:
        cfg = RankerConfig(negative_sampling=mode, negative_pop_power=power)
        return sample_negatives(engaged, n, draws, cfg, np.random.default_rng(0))

    pop = sample("popularity")
    assert set(np.unique(pop).tolist()) == {0, 1}  # never-engaged videos get no mass
    assert abs((pop == 0).mean() - 0.9) < 0.02
    flat = sample("popularity", power=0.0)  # power 0: every engaged video alike
    assert abs((flat == 0).mean() - 0.5) < 0.02
    uni = sample("uniform")
    assert np.unique(uni).size == n and abs((uni == 0).mean() - 0.01) < 0.01
    mixed = sample("mixed")
    assert abs((mixed == 0).mean() - (0.5 * 0.9 + 0.5 * 0.01)) < 0.02
    assert np.isin(np.arange(2, n), mixed).all()  # the uniform half still reaches the tail
    # nothing engaged: the popularity part falls back to uniform
    cfg = RankerConfig(negative_sampling="popularity")
    empty = sample_negatives(np.zeros(0, np.int64), n, 1000, cfg, np.random.default_rng(0))
    assert empty.min() >= 0 and empty.max() < n and np.unique(empty).size > 50


def test_video_stats_are_point_in_time() -> None:
    ev = pl.DataFrame(
        {S.EVENT_ID: [0, 1, 2, 3], S.VIDEO_IDX: [5, 5, 5, 7], S.TS: [10, 20, 20, 30]}
    ).with_columns(pl.col(S.TS).cast(pl.Datetime("us", "UTC")))
    labels = np.array([[1, 1, 0], [0, 0, 0], [1, 0, 1], [1, 1, 1]], np.float32)
    st = VideoStats.build(ev, labels, np.ones_like(labels), strength=2.0)
    prior = labels.mean(0)
    rank = st.anchor_rank(np.array([10, 20, 20, 31]), np.array([0, 1, 2, 9]))
    np.testing.assert_array_equal(rank, [0, 1, 2, 4])
    f = st.features(np.array([[5], [5], [5], [7]]), rank)
    np.testing.assert_allclose(f[0, 0, :3], prior, rtol=1e-6)  # nothing before: the prior
    np.testing.assert_allclose(f[2, 0, :3], (labels[:2].sum(0) + 2 * prior) / 4, rtol=1e-6)
    np.testing.assert_allclose(f[2, 0, 3], np.log1p(2) / 10, rtol=1e-6)
    end = st.features(np.array([[5, -1]]), np.array([END_OF_TIME]))
    np.testing.assert_allclose(end[0, 0, :3], (labels[:3].sum(0) + 2 * prior) / 5, rtol=1e-6)
    np.testing.assert_array_equal(end[0, 1], 0.0)


def test_tag_novelty_and_labels() -> None:
    nov = tag_novelty(
        np.array([[1, 2, 0], [3, 0, 0]]), np.array([[[1, 2, 0], [0, 0, 0]], [[1, 0, 0], [0, 0, 0]]])
    )
    np.testing.assert_allclose(nov, [0.0, 1.0])
    ev = pl.DataFrame(
        {
            S.SKIPPED: [True, False, None],
            S.WATCH_RATIO: [0.0, 0.9, None],
            S.LIKED: [False, True, None],
        },
        schema={S.SKIPPED: pl.Boolean, S.WATCH_RATIO: pl.Float32, S.LIKED: pl.Boolean},
    )
    lab, mask = event_labels(ev, RankerConfig())
    np.testing.assert_array_equal(lab, [[0, 0, 0], [1, 1, 1], [1, 0, 0]])
    np.testing.assert_array_equal(mask, [[1, 1, 1], [1, 1, 1], [1, 0, 0]])


def test_bad_input_names_the_field(world: Any) -> None:
    ev, videos, _ = world
    cfg = RankerConfig()
    vt = VideoTable.from_frame(videos, cfg)
    bad = ev.with_columns(
        pl.when(pl.col(S.EVENT_ID) == 3)
        .then(999)
        .otherwise(pl.col(S.VIDEO_IDX))
        .cast(pl.Int32)
        .alias(S.VIDEO_IDX)
    )
    with pytest.raises(RankerDataError, match=r"events\.video_idx.*999"):
        build_lists(bad, vt, cfg, np.random.default_rng(0))
    with pytest.raises(RankerDataError, match="split"):
        build_lists(ev.drop(S.SPLIT), vt, cfg, np.random.default_rng(0))


def test_metrics_hand_computed() -> None:
    assert auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == 0.75
    scores = np.array([[3.0, 2.0, 1.0]])
    gains = np.array([[0.0, 1.0, 0.0]])
    np.testing.assert_allclose(ndcg_at_k(scores, gains, np.ones((1, 3), bool), 10), 1 / np.log2(3))


# ---------------------------------------------------------------- training and bundle
def test_training_reaches_known_auc(bundle: tuple[Path, dict[str, Any]]) -> None:
    _, metrics = bundle
    # oracle AUC of engage on this world is ~0.80, chance is 0.5
    assert metrics["valid_auc_engage"] > 0.65, metrics["history"]
    assert metrics["valid_ndcg@10"] > 0.78
    assert metrics["onnx_max_abs_error"] < 1e-4
    assert metrics["onnx_content_max_abs_error"] < 1e-4  # the serving form


def _random_history(rng: np.random.Generator, n: int, **kw: Any) -> History:
    """``n`` random past events of videos 0..299, 10 s apart, ranked at ``T0 + 1000 s``."""
    return History(
        video_idx=rng.integers(0, 300, n),
        ts_us=T0 + np.arange(n) * 10**7,
        watch_ratio=rng.random(n).astype(np.float32),
        skipped=rng.random(n) < 0.3,
        liked=rng.random(n) < 0.1,
        request_us=T0 + 10**9,
        **kw,
    )


def test_bundle_round_trip_and_onnx_matches_torch(
    bundle: tuple[Path, dict[str, Any]], world: Any
) -> None:
    art, metrics = bundle
    entry = read_manifest(art)["components"]["ranker"]
    assert entry["data_fingerprint"] == "fp-test"
    assert entry["metrics"]["valid_auc_engage"] == metrics["valid_auc_engage"]
    assert {
        "model.pt",
        "model.onnx",
        "model_content.onnx",
        "videos.npz",
        "stats.npz",
        "meta.json",
        "checkpoint.pt",
    } <= {p.name for p in (art / "ranker").iterdir()}
    onnx_p = Predictor.load(art)
    torch_p = Predictor.load(art, backend="torch")
    assert onnx_p.backend == "onnx" and torch_p.backend == "torch"
    # ONNX serves the content form: one embedding per video plus a zero padding row
    table = onnx_p.content_table
    assert table is not None and torch_p.content_table is None
    assert table.shape == (onnx_p.videos.n_videos + 1, onnx_p.config.d_model)
    assert not table[-1].any()
    rng = np.random.default_rng(7)
    hist = _random_history(rng, 30, position=3, session_start_us=T0, profile=("US", None, "ios"))
    cands = CandidateSet(video_idx=rng.integers(0, 300, 100))
    a, b = onnx_p.score(hist, cands), torch_p.score(hist, cands)
    assert a.final.shape == (100,) and set(a.heads) == {"engage", "complete", "like", "diversity"}
    np.testing.assert_allclose(a.final, b.final, atol=1e-4)
    # batch scoring equals one-by-one scoring, with differently sized candidate sets
    hists = [hist, History.empty(T0), hist]
    sets = [
        cands,
        CandidateSet(video_idx=np.array([1, 2, 3])),
        CandidateSet(video_idx=cands.video_idx[:10]),
    ]
    batch = onnx_p.score_batch(hists, sets, batch_size=2)
    for h, c, got in zip(hists, sets, batch, strict=True):
        np.testing.assert_allclose(got.final, onnx_p.score(h, c).final, atol=1e-5)
    np.testing.assert_allclose(batch[2].final, a.final[:10], atol=1e-5)
    meta = json.loads((art / "ranker" / "meta.json").read_text())
    assert meta["tasks"] == ["engage", "complete", "like", "diversity"]
    with pytest.raises(RankerDataError, match=r"candidates\[0\]\.video_idx"):
        onnx_p.score(hist, CandidateSet(video_idx=np.array([300])))


def test_source_flags_never_set_in_training_are_not_fed(
    bundle: tuple[Path, dict[str, Any]],
) -> None:
    """The tiny world's logging policy is "trending" or unnamed: only that flag is trained; a
    retrieval flag the logs never set (weights at their random initialisation) must not move
    a score, the trained one must."""
    art, metrics = bundle
    assert metrics["trained_sources"] == ["trending"]
    meta = json.loads((art / "ranker" / "meta.json").read_text())
    assert meta["trained_sources"] == ["trending"]
    p = Predictor.load(art)
    names = p.config.source_names
    rng = np.random.default_rng(3)
    hist = _random_history(rng, 20)
    vids = rng.integers(0, 300, 50)

    def final(*flagged: str) -> np.ndarray:
        src = np.zeros((50, len(names)), np.float32)
        for n in flagged:
            src[:, names.index(n)] = 1.0
        return p.score(hist, CandidateSet(video_idx=vids, sources=src)).final

    plain = final()
    np.testing.assert_array_equal(final("two_tower", "tags", "covisit", "fresh"), plain)
    assert np.abs(final("trending") - plain).max() > 1e-4
    # a bundle from before the record feeds every flag, as it did
    legacy = Predictor(p.config, p.model, p.videos, p.stats, None)
    assert legacy.source_mask is None and p.source_mask is not None


def test_trained_model_prefers_the_users_topics(bundle: Any, world: Any) -> None:
    art, _ = bundle
    _, _, topic = world
    pred = Predictor.load(art)
    # a user who engaged with topic 0 and skipped topic 1
    vids = np.concatenate([np.flatnonzero(topic == 0)[:10], np.flatnonzero(topic == 1)[:10]])
    hist = History(
        video_idx=vids,
        ts_us=T0 + np.arange(20) * 10**7,
        watch_ratio=np.r_[np.ones(10), np.zeros(10)].astype(np.float32),
        skipped=np.r_[np.zeros(10, bool), np.ones(10, bool)],
        liked=np.zeros(20, bool),
        request_us=T0 + 10**9,
    )
    c0, c1 = np.flatnonzero(topic == 0)[10:30], np.flatnonzero(topic == 1)[10:30]
    s = pred.score(hist, CandidateSet(video_idx=np.r_[c0, c1])).heads["engage"]
    assert s[:20].mean() > s[20:].mean()


def test_training_is_deterministic_and_ablations_run(world: Any) -> None:
    ev, videos, _ = world
    small = {**SMALL, "max_epochs": 1, "max_train_lists": 200}
    runs = [
        fit_model(ev, videos, RankerConfig(**small), seed=3)[3]  # type: ignore[arg-type]
        for _ in range(2)
    ]
    assert runs[0]["valid_ndcg@10"] == runs[1]["valid_ndcg@10"]
    for kw in (
        {"encoder": "mean"},
        {"tasks": ("engage",)},
        {"diversity_lambda": 0.0},
        {"diversity_similarity": "embedding"},
        {"complete_mode": "regression"},
    ):
        model, *_, m = fit_model(ev, videos, RankerConfig(**{**small, **kw}), seed=0)  # type: ignore[arg-type]
        assert np.isfinite(m["valid_ndcg@10"])
        assert all(torch.isfinite(p).all() for p in model.parameters())


def test_serving_statistics_table_and_features_equal_the_general_path(
    bundle: tuple[Path, dict[str, Any]],
) -> None:
    art, _ = bundle
    pred = Predictor.load(art, backend="torch")
    n = pred.videos.n_videos
    table = pred.stats.latest_table(n)
    want = pred.stats.features(np.arange(n)[None, :], np.array([END_OF_TIME]))[0]
    np.testing.assert_array_equal(table[:n], want)
    np.testing.assert_array_equal(table[-1], 0.0)  # row -1: padding
    np.testing.assert_array_equal(pred.latest_stats([4, -1, 2]), table[[4, n, 2]])
    with pytest.raises(RankerDataError, match="video_idx"):
        pred.latest_stats([n])
    # the serving feature path (stats by lookup, no-op masks skipped) equals explicit stats
    rng = np.random.default_rng(3)
    hist = History(
        video_idx=rng.integers(0, n, 25),
        ts_us=T0 + rng.permutation(25) * 10**7,
        watch_ratio=np.where(rng.random(25) < 0.2, np.nan, rng.random(25)).astype(np.float32),
        skipped=rng.random(25) < 0.3,
        liked=rng.random(25) < 0.1,
        request_us=T0 + 10**9,
    )
    sets = [rng.integers(0, n, 40), rng.integers(0, n, 7)]  # the second one is padded
    plain = pred._features([hist, History.empty(T0)], [CandidateSet(v) for v in sets])
    explicit = pred._features(
        [hist, History.empty(T0)],
        [
            CandidateSet(v, stats=pred.stats.features(v[None, :], np.array([END_OF_TIME]))[0])
            for v in sets
        ],
    )
    assert plain.keys() == explicit.keys()
    for k in plain:
        assert plain[k].dtype == explicit[k].dtype
        np.testing.assert_array_equal(plain[k], explicit[k])


def test_padding_is_zeroed_and_full_rows_are_unchanged() -> None:
    cfg = RankerConfig(max_tags=3)
    vt = VideoTable(
        video=np.array([1, 2, 3], np.int64),
        tags=np.array([[1, 2, 0], [3, 0, 0], [2, 3, 4]], np.int64),
        creator=np.array([1, 1, 2], np.int64),
        duration=np.array([1, 2, 3], np.int64),
        upload_us=np.array([T0, -1, T0 - 3_600_000_000], np.int64),
        category=np.array([0, 1, -1], np.int64),
        n_tags=4,
        n_video_buckets=3,
        n_creator_buckets=2,
        n_duration_buckets=4,
    )
    vid = np.array([[0, 2, 1], [2, -1, -1]])
    req = np.array([T0 + 3_600_000_000, T0])
    stats = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    src = np.ones((2, 3, 2), np.float32)
    padded = candidate_features(vt, vid, req, stats, src)
    full = candidate_features(vt, vid[:, :1], req, stats[:, :1], src[:, :1])
    for k, v in padded.items():
        assert v.dtype == full[k].dtype
        np.testing.assert_array_equal(v[:, :1], full[k])  # rows without padding: unchanged
        np.testing.assert_array_equal(v[1, 1:], 0)  # padding: zeros
    assert padded["cand_video"].dtype == np.int64 and padded["cand_num"].dtype == np.float32
    np.testing.assert_allclose(padded["cand_num"][0, 0, 0], np.log1p(1.0) / 8.0)
    hv = np.array([[-1, 0, 2]])
    wr = np.array([[np.nan, np.nan, 0.5]], np.float32)
    z = np.zeros((1, 3), np.float32)
    h = history_features(vt, hv, wr, z, z, z, cfg)
    np.testing.assert_array_equal(h["hist_action"][0, 0], 0.0)  # NaN of a padded slot: zeroed
    np.testing.assert_array_equal(h["hist_tags"][0], [[0, 0, 0], [1, 2, 0], [2, 3, 4]])
    assert h["hist_action"].dtype == np.float32 and h["hist_video"].dtype == np.int64
    h_full = history_features(vt, hv[:, 1:], wr[:, 1:], z[:, 1:], z[:, 1:], z[:, 1:], cfg)
    for k, v in h_full.items():
        np.testing.assert_array_equal(h[k][:, 1:], v)


def test_bundle_without_the_content_form_serves_the_full_graph(
    bundle: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    """A bundle trained before the content form existed (no model_content.onnx) still serves
    with ONNX Runtime, on the full graph, with the same scores."""
    import shutil

    art, _ = bundle
    old = tmp_path / "art"
    shutil.copytree(art, old)
    (old / "ranker" / "model_content.onnx").unlink()
    full, content = Predictor.load(old), Predictor.load(art)
    assert full.backend == "onnx" and full.content_table is None
    assert content.content_table is not None
    rng = np.random.default_rng(11)
    hist = _random_history(rng, 20)
    cands = CandidateSet(video_idx=rng.integers(0, 300, 64))
    a, b = full.score(hist, cands), content.score(hist, cands)
    np.testing.assert_allclose(a.final, b.final, atol=1e-5)
    for h in a.heads:
        np.testing.assert_allclose(a.heads[h], b.heads[h], atol=1e-5)
