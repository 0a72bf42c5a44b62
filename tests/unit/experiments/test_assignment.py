"""Assignment: hashing, allocation, layers, holdout, forced users (statistical over 1M ids)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from scipy import stats

from shortrec.config import (
    ArmConfig,
    ArmOverrides,
    ExperimentConfig,
    ExperimentsConfig,
    HoldoutConfig,
)
from shortrec.experiments.assignment import (
    NOT_ASSIGNED,
    ExperimentSet,
    arm_edges,
    bucket,
    buckets,
)

N = 1_000_000


@pytest.fixture(scope="module")
def million() -> tuple[np.ndarray, np.ndarray]:
    ids = [f"user-{i}" for i in range(N)]
    return buckets("salt-a", ids), buckets("salt-b", ids)


def _exp(
    name: str,
    layer: str = "default",
    lo: int = 0,
    hi: int = 10_000,
    weights: tuple[float, ...] = (1.0, 1.0),
    **kw: object,
) -> ExperimentConfig:
    arms = tuple(ArmConfig(name=f"a{i}", weight=w) for i, w in enumerate(weights))
    return ExperimentConfig(name=name, layer=layer, buckets=(lo, hi), arms=arms, **kw)  # type: ignore[arg-type]


def test_bucket_is_the_documented_blake2b_formula() -> None:
    digest = hashlib.blake2b(b"s:42", digest_size=8).digest()
    assert bucket("s", 42) == int.from_bytes(digest, "big") % 10_000
    assert bucket("s", 42) == bucket("s", "42")
    assert bucket("s", 42) != bucket("t", 42) or bucket("s", 43) != bucket("t", 43)


def test_vectorised_buckets_match_scalar() -> None:
    ids = [f"u{i}" for i in range(500)] + list(range(500))
    np.testing.assert_array_equal(buckets("x", ids), [bucket("x", u) for u in ids])


def test_buckets_uniform_over_a_million_ids(million: tuple[np.ndarray, np.ndarray]) -> None:
    a, _ = million
    assert a.min() >= 0 and a.max() < 10_000
    counts = np.bincount(a, minlength=10_000)
    assert stats.chisquare(counts).pvalue > 1e-3


def test_salts_are_independent(million: tuple[np.ndarray, np.ndarray]) -> None:
    a, b = million
    table = np.zeros((20, 20), dtype=np.int64)
    np.add.at(table, (a % 20, b % 20), 1)
    assert stats.chi2_contingency(table).pvalue > 1e-3
    assert abs(np.corrcoef(a, b)[0, 1]) < 0.005


def test_arm_edges() -> None:
    np.testing.assert_array_equal(arm_edges([1, 1]), [5_000, 10_000])
    np.testing.assert_array_equal(arm_edges([1, 3]), [2_500, 10_000])


def test_allocation_follows_weights() -> None:
    s = ExperimentSet(ExperimentsConfig(experiments=(_exp("e", weights=(1.0, 3.0)),)))
    arm = s.assign_many([f"u{i}" for i in range(200_000)])["e"]
    counts = np.bincount(arm, minlength=2)
    assert stats.chisquare(counts, [50_000, 150_000]).pvalue > 1e-3


def test_one_layer_is_exclusive_and_layers_are_orthogonal() -> None:
    cfg = ExperimentsConfig(
        experiments=(
            _exp("x1", "L1", 0, 5_000),
            _exp("x2", "L1", 5_000, 10_000),
            _exp("y", "L2"),
        )
    )
    s = ExperimentSet(cfg)
    out = s.assign_many([f"u{i}" for i in range(100_000)])
    in1, in2 = out["x1"] != NOT_ASSIGNED, out["x2"] != NOT_ASSIGNED
    assert not np.any(in1 & in2)
    assert np.all(in1 | in2)
    assert abs(in1.mean() - 0.5) < 0.01
    # layer L2 arm independent of the L1 experiment and of its arm
    table = np.zeros((3, 2), dtype=np.int64)
    l1 = np.where(in1, out["x1"], 2)
    np.add.at(table, (l1, out["y"]), 1)
    assert stats.chi2_contingency(table).pvalue > 1e-3


def test_holdout_users_get_nothing() -> None:
    cfg = ExperimentsConfig(holdout=HoldoutConfig(salt="h", fraction=0.1), experiments=(_exp("e"),))
    s = ExperimentSet(cfg)
    ids = [f"u{i}" for i in range(50_000)]
    arm = s.assign_many(ids)["e"]
    held = np.asarray([bucket("h", u) < 1_000 for u in ids])
    assert np.all(arm[held] == NOT_ASSIGNED)
    assert np.all(arm[~held] != NOT_ASSIGNED)
    assert abs(held.mean() - 0.1) < 0.01
    first_held = ids[int(np.argmax(held))]
    full = s.assign_full(first_held)
    assert full.holdout and full.arms == {}


def test_forced_users_win_and_take_their_layer_slot() -> None:
    ids = [f"u{i}" for i in range(2_000)]
    base = ExperimentSet(
        ExperimentsConfig(experiments=(_exp("x1", "L1", 0, 5_000), _exp("x2", "L1", 5_000, 10_000)))
    )
    in_x2 = next(u for u in ids if "x2" in base.assign(u))
    cfg = ExperimentsConfig(
        holdout=HoldoutConfig(fraction=0.5),
        experiments=(
            _exp("x1", "L1", 0, 5_000, forced={in_x2: "a1"}),
            _exp("x2", "L1", 5_000, 10_000),
        ),
    )
    s = ExperimentSet(cfg)
    assert s.assign(in_x2) == {"x1": "a1"}
    many = s.assign_many([in_x2])
    assert many["x1"][0] == 1 and many["x2"][0] == NOT_ASSIGNED


def test_assign_many_agrees_with_assign() -> None:
    cfg = ExperimentsConfig(
        holdout=HoldoutConfig(fraction=0.05),
        experiments=(
            _exp("x1", "L1", 0, 3_000, weights=(1, 2, 1)),
            _exp("x2", "L1", 3_000, 9_000),
            _exp("y", "L2", forced={"u7": "a0"}),
            _exp("off", "L3", enabled=False),
        ),
    )
    s = ExperimentSet(cfg)
    ids = [f"u{i}" for i in range(3_000)]
    many = s.assign_many(ids)
    assert "off" not in many
    for i, u in enumerate(ids):
        want = s.assign(u)
        for e in s.experiments:
            got = many[e.name][i]
            arm = e.arms[got].name if got != NOT_ASSIGNED else None
            assert arm == want.get(e.name), (u, e.name)


def test_merged_overrides_of_the_users_arms() -> None:
    ranker = ExperimentConfig(
        name="r",
        layer="rank",
        arms=(
            ArmConfig(name="c", weight=1e-9),
            ArmConfig(name="t", overrides=ArmOverrides(model_version="v2")),
        ),
    )
    div = ExperimentConfig(
        name="d",
        layer="div",
        arms=(
            ArmConfig(name="c", weight=1e-9),
            ArmConfig(
                name="t", overrides=ArmOverrides(diversity_trade_off=0.5, params={"boost": 2})
            ),
        ),
    )
    s = ExperimentSet(ExperimentsConfig(experiments=(ranker, div)))
    full = s.assign_full("anyone")
    assert full.arms == {"r": "t", "d": "t"}
    assert full.overrides.model_version == "v2"
    assert full.overrides.diversity_trade_off == 0.5
    assert full.overrides.params == {"boost": 2}
    assert full.overrides.reranker is None
