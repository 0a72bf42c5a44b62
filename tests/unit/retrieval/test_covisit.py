"""The co-visitation source: hand-computed tables, a brute-force reference, request rules,
persistence and its place in the merge."""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from retrieval_world import T0, World

from shortrec import schema as S
from shortrec.config import CovisitConfig, EngagementConfig, MergeConfig, RetrievalConfig
from shortrec.retrieval.model import COVISIT_FILE, RetrievalModel
from shortrec.retrieval.sources import CovisitSource, covisit_table
from shortrec.retrieval.types import RetrievalRequest

ENG = EngagementConfig()
NOW = T0 + 10**9


def _events(rows: list[tuple[int, int, bool]]) -> pl.DataFrame:
    """EVENTS rows ``(user, video, skipped)``, one second apart in list order."""
    n = len(rows)
    df = pl.DataFrame(
        {
            S.EVENT_ID: np.arange(n),
            S.USER_IDX: [r[0] for r in rows],
            S.VIDEO_IDX: [r[1] for r in rows],
            S.TS: pl.Series(T0 + np.arange(n) * 1_000_000).cast(S.UTC_TS),
            S.WATCH_TIME_S: [0.5 if r[2] else 20.0 for r in rows],
            S.WATCH_RATIO: [0.02 if r[2] else 1.0 for r in rows],
            S.SKIPPED: [r[2] for r in rows],
            S.LIKED: [False] * n,
        }
    )
    return S.conform(df, S.EVENTS)


def _seqs(seqs: dict[int, list[int]]) -> pl.DataFrame:
    return _events([(u, v, False) for u, vs in seqs.items() for v in vs])


def _src(
    events: pl.DataFrame, n_videos: int = 10, now_us: int = NOW, **cfg: object
) -> CovisitSource:
    return CovisitSource.from_frames(events, n_videos, now_us, CovisitConfig(**cfg), ENG)  # type: ignore[arg-type]


def _world_src(world: World, **cfg: object) -> CovisitSource:
    return _src(world.events, world.videos.height, world.now_us, **cfg)


def _row(src: CovisitSource, v: int) -> dict[int, float]:
    a, b = src.ptr[v], src.ptr[v + 1]
    return dict(zip(src.nbr[a:b].tolist(), src.score[a:b].tolist(), strict=True))


def _req(history: list[int], **kw: object) -> RetrievalRequest:
    return RetrievalRequest(user_idx=0, now_us=NOW, history=np.array(history), **kw)  # type: ignore[arg-type]


# 0 and 1 are always watched next to each other
ABC = {0: [0, 1, 2], 1: [0, 1, 3], 2: [1, 0, 4]}


def test_known_table_and_answer() -> None:
    src = _src(_seqs(ABC), window=1)
    # counts n = {0: 3, 1: 3, 2: 1, 3: 1, 4: 1}; c01 = 3 -> 3 / sqrt(3 * 3) = 1
    third = 1 / math.sqrt(3)
    assert _row(src, 0) == pytest.approx({1: 1.0, 4: third})
    assert _row(src, 1) == pytest.approx({0: 1.0, 2: third, 3: third})
    assert src.nbr[src.ptr[1] : src.ptr[2]].tolist() == [0, 2, 3]  # best first, ties by id
    c = src.candidates(_req([0]), 10)
    assert c.source == "covisit" and c.video_idx.tolist() == [1, 4]
    np.testing.assert_allclose(c.score, [1.0, third], rtol=1e-6)


def test_pairs_weigh_one_over_distance_within_the_window() -> None:
    src = _src(_seqs({0: [5, 6, 7, 8]}), window=2, distance_exponent=1.0)
    # 5-6 at distance 1, 5-7 at distance 2, 5-8 beyond the window; every video seen once
    assert _row(src, 5) == pytest.approx({6: 1.0, 7: 0.5})
    sqrt = _src(_seqs({0: [5, 6, 7, 8]}), window=2)  # the default exponent 0.5
    assert _row(sqrt, 5) == pytest.approx({6: 1.0, 7: 2**-0.5})
    flat = _src(_seqs({0: [5, 6, 7, 8]}), window=2, distance_exponent=0.0)
    assert _row(flat, 5) == pytest.approx({6: 1.0, 7: 1.0})


def test_skipped_events_are_ignored_at_fit_and_request_time() -> None:
    noisy = [(u, v, False) for u, vs in ABC.items() for v in vs]
    noisy += [(9, v, True) for v in [0, 7, 0, 7, 0, 7]]  # skips never pair 0 with 7
    src = _src(_events(noisy), window=3)
    assert 7 not in _row(src, 0)
    assert _row(src, 0) == _row(_src(_seqs(ABC), window=3), 0)
    # a skipped history item contributes nothing (and a watched one after it still does)
    base = src.candidates(_req([0]), 10)
    skip = src.candidates(_req([0, 2], skipped=[False, True]), 10)
    assert skip.video_idx.tolist() == [v for v in base.video_idx.tolist() if v != 2]


def test_history_is_never_returned_and_recent_items_weigh_more() -> None:
    src = _src(_seqs({0: [0, 1], 1: [2, 3]}), window=1)
    c = src.candidates(_req([0, 2]), 10)
    assert c.video_idx.tolist() == [3, 1]  # the most recent (2) ranks its neighbour first
    np.testing.assert_allclose(c.score, [1.0, 0.9], rtol=1e-6)
    # unknown and newer-than-the-table videos in the history are ignored, not an error
    assert src.candidates(_req([0, 2, 10**6]), 10).video_idx.tolist() == [3, 1]
    assert not set(src.candidates(_req([0, 1, 2]), 10).video_idx.tolist()) & {0, 1, 2}


def test_cold_user_gets_nothing() -> None:
    src = _src(_seqs(ABC))
    assert len(src.candidates(_req([]), 10)) == 0
    assert len(src.candidates(_req([0], skipped=[True]), 10)) == 0
    assert len(src.candidates(_req([0]), 0)) == 0


def test_pruning_keeps_the_best_m_neighbours(world: World) -> None:
    n = world.videos.height
    full = _world_src(world, neighbours=1_000)
    top2 = _world_src(world, neighbours=2)
    lens = np.diff(top2.ptr)
    assert lens.max() == 2 and np.all(lens == np.minimum(np.diff(full.ptr), 2))
    for v in range(n):
        a = full.ptr[v]
        b = min(full.ptr[v + 1], a + 2)
        assert _row(top2, v) == dict(
            zip(full.nbr[a:b].tolist(), full.score[a:b].tolist(), strict=True)
        )


def test_chunked_build_equals_one_block(world: World) -> None:
    one = _world_src(world, chunk_pairs=10**9)
    many = _world_src(world, chunk_pairs=1_024)
    assert one.nbr.shape[0] > 1_000  # several blocks of about 1,024 pairs
    # a viral video (0) with 3,000 pairs is summed from several pieces
    viral = _seqs({u: [u % 9 + 1, 0, u % 4 + 10] for u in range(1_500)})
    one = _src(viral, 20, window=2, chunk_pairs=10**9)
    many = _src(viral, 20, window=2, chunk_pairs=1_024)
    assert _row(many, 0) == pytest.approx(_row(one, 0), rel=1e-6) and len(_row(one, 0)) == 13
    np.testing.assert_array_equal(one.ptr, many.ptr)
    np.testing.assert_array_equal(one.nbr, many.nbr)
    np.testing.assert_allclose(one.score, many.score, rtol=1e-6)


def _brute(seqs: list[list[int]], window: int, n_videos: int) -> dict[tuple[int, int], float]:
    count: dict[tuple[int, int], float] = defaultdict(float)
    freq = np.zeros(n_videos)
    for seq in seqs:
        for i, a in enumerate(seq):
            freq[a] += 1
            for j in range(i + 1, min(len(seq), i + window + 1)):
                if seq[j] != a:
                    count[a, seq[j]] += 1.0 / (j - i)
                    count[seq[j], a] += 1.0 / (j - i)
    return {p: c / math.sqrt(freq[p[0]] * freq[p[1]]) for p, c in count.items()}


@settings(max_examples=40, deadline=None)
@given(
    seqs=st.lists(st.lists(st.integers(0, 7), max_size=12), min_size=1, max_size=6),
    window=st.integers(1, 5),
    chunk=st.sampled_from([1_024, 10**9]),
)
def test_table_matches_a_brute_force_reference(
    seqs: list[list[int]], window: int, chunk: int
) -> None:
    user = np.repeat(np.arange(len(seqs)), [len(s) for s in seqs]).astype(np.int64)
    video = np.array([v for s in seqs for v in s], np.int32)
    cfg = CovisitConfig(window=window, distance_exponent=1.0, neighbours=100, chunk_pairs=chunk)
    ptr, nbr, score = covisit_table(user, video, 8, cfg)
    got = {(v, int(nbr[i])): float(score[i]) for v in range(8) for i in range(ptr[v], ptr[v + 1])}
    assert got == pytest.approx(_brute(seqs, window, 8), rel=1e-5)
    for v in range(8):  # rows best first
        assert np.all(np.diff(score[ptr[v] : ptr[v + 1]]) <= 0)


def test_config_bounds_are_enforced() -> None:
    for bad in ({"window": 0}, {"neighbours": 0}, {"history_items": 0}, {"history_decay": 0.0}):
        with pytest.raises(ValidationError, match=next(iter(bad))):
            CovisitConfig(**bad)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="history_decay"):
        CovisitConfig(history_decay=1.5)
    with pytest.raises(ValidationError, match="extra"):
        CovisitConfig(windw=3)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="sum to"):
        MergeConfig(quotas={"two_tower": 0.8, "covisit": 0.3})


# ---------------------------------------------------------------- in the retrieval model
def test_model_covisit_stays_in_the_users_topic(world: World, model: RetrievalModel) -> None:
    assert model.covisit is not None and model.sources["covisit"] is model.covisit
    u = 3
    hist = world.events.filter(pl.col(S.USER_IDX) == u).sort(S.TS)
    req = RetrievalRequest(
        user_idx=u,
        now_us=world.now_us,
        history=hist.get_column(S.VIDEO_IDX).to_numpy(),
        skipped=hist.get_column(S.SKIPPED).to_numpy(),
    )
    c = model.covisit.candidates(req, 10)
    assert len(c) == 10
    # only positives pair, and in this world a user's positives are all of its topic
    assert all(v % world.n_topics == world.topic_of_user(u) for v in c.video_idx.tolist())


def test_merged_includes_covisit_and_never_returns_seen(
    world: World, model: RetrievalModel
) -> None:
    hist = np.array([1, 5, 9, 13], np.int32)
    seen = np.concatenate([hist, np.arange(17, 60, 4)]).astype(np.int32)
    req = RetrievalRequest(user_idx=1, now_us=world.now_us, history=hist, seen=seen)
    assert len(model.covisit.candidates(req, 100)) > 0  # type: ignore[union-attr]
    m = model.retrieve(req, total=40)
    assert len(m) == 40 and not set(m.video_idx.tolist()) & set(seen.tolist())
    assert m.from_source("covisit").any()
    cold = model.retrieve(RetrievalRequest(user_idx=2, now_us=world.now_us, seen=seen), total=40)
    assert len(cold) == 40 and "covisit" not in cold.source_names  # not asked at all
    assert len(model.covisit.candidates(RetrievalRequest(0, world.now_us), 40)) == 0  # type: ignore[union-attr]


def _warm(world: World) -> RetrievalRequest:
    return RetrievalRequest(
        user_idx=0,
        now_us=world.now_us,
        history=np.array([0, 4, 8, 12]),
        seen=np.array([0, 4, 8, 12]),
        tag_idx=np.array([0]),
        tag_weight=np.array([1.0]),
    )


def test_save_load_round_trip(world: World, model: RetrievalModel, tmp_path: Path) -> None:
    model.save(tmp_path)
    back = RetrievalModel.load_dir(tmp_path, model.config)
    assert back.covisit is not None and model.covisit is not None
    req = _warm(world)
    a, b = model.covisit.candidates(req, 50), back.covisit.candidates(req, 50)
    assert a.video_idx.tolist() == b.video_idx.tolist()
    np.testing.assert_array_equal(a.score, b.score)
    assert model.retrieve(req).video_idx.tolist() == back.retrieve(req).video_idx.tolist()


def test_bundle_without_covisit_loads(world: World, model: RetrievalModel, tmp_path: Path) -> None:
    model.save(tmp_path)
    (tmp_path / COVISIT_FILE).unlink()
    back = RetrievalModel.load_dir(tmp_path, model.config)
    assert back.covisit is None and "covisit" not in back.sources
    m = back.retrieve(_warm(world))  # its quota goes to the other sources
    assert len(m) == model.config.merge.total and "covisit" not in m.source_names
    # a model without the source also saves and loads without it
    old = dataclasses.replace(model, covisit=None)
    old.save(tmp_path / "old")
    assert RetrievalModel.load_dir(tmp_path / "old", model.config).covisit is None


def test_config_carries_covisit() -> None:
    cfg = RetrievalConfig.model_validate({"covisit": {"window": 7}})
    assert cfg.covisit.window == 7 and cfg.merge.weights and "covisit" in cfg.merge.weights
