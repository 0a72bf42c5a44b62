"""Fixtures of the retrieval tests: the tiny world of ``retrieval_world`` and a model on it."""

from __future__ import annotations

import pytest
from retrieval_world import World, make_world

from shortrec.config import MergeConfig, RetrievalConfig, TwoTowerConfig
from shortrec.retrieval.features import positive_expr
from shortrec.retrieval.model import RetrievalModel
from shortrec.retrieval.pipeline import fit_sources, temporal_holdout
from shortrec.retrieval.two_tower import TrainedTwoTower, train_two_tower


@pytest.fixture(scope="session")
def world() -> World:
    return make_world()


SMALL_TT = TwoTowerConfig(
    dim=16,
    hidden=32,
    batch_size=128,
    max_epochs=6,
    patience=2,
    history_len=20,
    eval_k=20,
    threads=1,
)


@pytest.fixture(scope="session")
def config() -> RetrievalConfig:
    return RetrievalConfig(two_tower=SMALL_TT, n_candidates=40, merge=MergeConfig(total=40))


@pytest.fixture(scope="session")
def trained(world: World, config: RetrievalConfig) -> TrainedTwoTower:
    train, valid = temporal_holdout(world.events, 0.2)
    return train_two_tower(
        train,
        valid,
        world.videos,
        world.users,
        config.two_tower,
        positive_expr(config.engagement),
        seed=0,
    )


@pytest.fixture(scope="session")
def model(world: World, config: RetrievalConfig, trained: TrainedTwoTower) -> RetrievalModel:
    return fit_sources(world.events, world.videos, world.users, world.now_us, config, trained)
