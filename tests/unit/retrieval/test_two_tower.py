from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from retrieval_world import World

from shortrec import schema as S
from shortrec.config import RetrievalConfig
from shortrec.retrieval.features import positive_expr
from shortrec.retrieval.pipeline import temporal_holdout
from shortrec.retrieval.two_tower import (
    Positives,
    TrainedTwoTower,
    left_pad,
    sampled_softmax_loss,
    train_two_tower,
)


def test_sampled_softmax_loss_with_logq_by_hand() -> None:
    u = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    v = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    log_q = torch.log(torch.tensor([0.5, 0.25]))
    loss = sampled_softmax_loss(u, v, torch.tensor([3, 7]), log_q, temperature=1.0)
    s = np.array([[1.0, 0.6], [0.0, 0.8]]) - np.log([0.5, 0.25])[None, :]
    expect = -np.mean([s[i, i] - np.log(np.exp(s[i]).sum()) for i in range(2)])
    assert float(loss) == pytest.approx(expect, rel=1e-6)
    # the same video in two rows is not a negative for either: loss is 0 for identical rows
    same = sampled_softmax_loss(
        u[:1].repeat(2, 1), v[:1].repeat(2, 1), torch.tensor([3, 3]), None, 1.0
    )
    assert float(same) == pytest.approx(0.0, abs=1e-7)


def test_positives_histories_are_strictly_before_and_per_user() -> None:
    pos = Positives(
        user=np.array([0, 0, 0, 1, 1]),
        video=np.array([5, 6, 7, 8, 9]),
        start=np.array([0, 0, 0, 3, 3]),
    )
    h = pos.histories(np.arange(5), length=2, pad=99)
    assert h.tolist() == [[99, 99], [99, 5], [5, 6], [99, 99], [99, 8]]
    assert {u: v.tolist() for u, v in pos.last(2, 99).items()} == {0: [6, 7], 1: [8, 9]}
    assert left_pad([1, 2, 3], 2, 0).tolist() == [2, 3]


def test_two_tower_beats_popularity_and_embeds_new_videos(
    world: World, trained: TrainedTwoTower
) -> None:
    assert trained.video_emb.shape == (world.videos.height, 16)
    np.testing.assert_allclose(np.linalg.norm(trained.video_emb, axis=1), 1.0, rtol=1e-5)
    assert trained.metrics["valid_recall"] > 0.3
    assert trained.metrics["samples_per_s"] > 0
    # a never-shown video sits nearer the videos of its own topic (from tags/category/creator)
    new = world.videos.height - 1
    sims = trained.video_emb[: -world.n_fresh] @ trained.video_emb[new]
    same = np.arange(sims.shape[0]) % world.n_topics == new % world.n_topics
    assert sims[same].mean() > sims[~same].mean()


def test_training_is_deterministic_and_round_trips(
    world: World, config: RetrievalConfig, trained: TrainedTwoTower, tmp_path: Path
) -> None:
    train, valid = temporal_holdout(world.events, 0.2)
    cfg = config.two_tower.model_copy(update={"max_epochs": 1})
    args = (train, valid, world.videos, world.users, cfg, positive_expr(config.engagement))
    a, b = train_two_tower(*args, seed=3), train_two_tower(*args, seed=3)
    np.testing.assert_array_equal(a.video_emb, b.video_emb)
    c = train_two_tower(*args, seed=4)
    assert not np.array_equal(a.video_emb, c.video_emb)
    trained.save(tmp_path)
    back = TrainedTwoTower.load(tmp_path)
    np.testing.assert_array_equal(back.video_emb, trained.video_emb)
    np.testing.assert_allclose(
        back.user_embedding([1, 5], "US"), trained.user_embedding([1, 5], "US"), rtol=1e-6
    )
    # unknown ids and an empty history still give a unit vector
    v = trained.user_embedding([10**6, -1])
    assert math.isclose(float(np.linalg.norm(v)), 1.0, rel_tol=1e-5)


def test_training_rejects_bad_input(world: World, config: RetrievalConfig) -> None:
    pos = positive_expr(config.engagement)
    bad = world.events.with_columns(pl.lit(10**5, dtype=pl.Int32).alias(S.VIDEO_IDX))
    with pytest.raises(S.BadInput, match="not in the catalogue"):
        train_two_tower(bad, bad, world.videos, world.users, config.two_tower, pos)
    none = world.events.with_columns(pl.lit(True).alias(S.SKIPPED))
    with pytest.raises(S.BadInput, match="no positive"):
        train_two_tower(none, none, world.videos, world.users, config.two_tower, pos)


def test_numpy_user_tower_matches_the_torch_module(trained: TrainedTwoTower) -> None:
    rng = np.random.default_rng(0)
    v = trained.vocab
    pad = v.n_videos
    length = trained.config.history_len
    hist = rng.integers(0, v.n_videos, size=(64, length))
    n_pad = rng.integers(0, length + 1, size=64)  # from full histories to empty ones
    hist[np.arange(length)[None, :] < n_pad[:, None]] = pad
    sizes = (len(v.regions) + 1, len(v.age_buckets) + 1, len(v.devices) + 1)
    prof = np.stack([rng.integers(0, s, 64) for s in sizes], axis=1)
    with torch.inference_mode():
        want = trained.model.user(torch.from_numpy(hist), torch.from_numpy(prof)).numpy()
    got = trained.user_embeddings(hist, prof)
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-5)
    one = trained.user_embedding([3, 1, 4, 10**9, -5], "US", None, "ios")  # unknown ids dropped
    np.testing.assert_allclose(np.linalg.norm(one), 1.0, rtol=1e-5)
    with torch.inference_mode():
        ref = trained.model.user(
            torch.from_numpy(left_pad([3, 1, 4], length, pad)[None, :]),
            torch.from_numpy(trained.profile_codes("US", None, "ios")[None, :]),
        )[0].numpy()
    np.testing.assert_allclose(one, ref, atol=1e-5)
    with pytest.raises(IndexError):
        trained.user_embeddings(np.full((1, length), pad + 1), prof[:1])
    with pytest.raises(IndexError):
        trained.user_embeddings(hist[:1], np.array([[0, 0, sizes[2]]]))
