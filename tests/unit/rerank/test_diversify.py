"""MMR, greedy DPP and caps on hand-computed cases, plus properties."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from shortrec.config import RerankConfig
from shortrec.rerank import (
    Caps,
    RerankInputError,
    cosine_similarity,
    dpp_greedy,
    mmr,
    rerank,
    tag_jaccard,
)

# items 0 and 1 are duplicates, 2 is different and a bit less relevant
REL = np.array([1.0, 0.95, 0.8])
SIM = np.array([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])


def test_mmr_hand_computed() -> None:
    # pure relevance keeps the order; lambda 0.5: after 0, item 1 scores 0.475-0.5 < 0.4
    np.testing.assert_array_equal(mmr(REL, SIM, 3, 1.0), [0, 1, 2])
    np.testing.assert_array_equal(mmr(REL, SIM, 3, 0.5), [0, 2, 1])


def test_dpp_hand_computed_and_matches_brute_force_log_det() -> None:
    np.testing.assert_array_equal(dpp_greedy(REL, SIM, 2, 1.0), [0, 1])
    np.testing.assert_array_equal(dpp_greedy(REL, SIM, 2, 0.5), [0, 2])
    # greedy steps equal the argmax of log det over one-item extensions (brute force)
    rng = np.random.default_rng(0)
    n, theta = 12, 0.6
    rel = rng.random(n)
    sim = cosine_similarity(rng.normal(size=(n, 6)))
    got = dpp_greedy(rel, sim, 5, theta)
    rn = (rel - rel.min()) / (rel.max() - rel.min())
    q = np.exp(theta / (2 * (1 - theta)) * rn)
    kernel = q[:, None] * sim * q[None, :]
    chosen: list[int] = []
    for _ in range(5):
        best = max(
            (i for i in range(n) if i not in chosen),
            key=lambda i: np.linalg.slogdet(kernel[np.ix_([*chosen, i], [*chosen, i])])[1],
        )
        chosen.append(best)
    np.testing.assert_array_equal(got, chosen)


def test_dpp_fills_in_relevance_order_when_the_space_is_spanned() -> None:
    # rank-1 similarity: after one pick no item adds volume; the rest follow relevance
    sim = np.ones((4, 4))
    np.testing.assert_array_equal(
        dpp_greedy(np.array([0.1, 0.9, 0.5, 0.7]), sim, 4, 0.5), [1, 3, 2, 0]
    )


@pytest.mark.parametrize("method", ["mmr", "dpp", "none"])
def test_caps_with_session_lookback(method: str) -> None:
    n = 10
    rel = np.linspace(1.0, 0.1, n)
    creators = np.array([0, 0, 0, 1, 1, 2, 3, 4, 5, 6])
    topics = np.array([0, 0, 1, 1, 2, 2, 3, 3, 4, 4])
    cfg = RerankConfig(
        method=method, k=5, trade_off=0.9, max_per_creator=1, max_per_topic=2, lookback=3
    )
    # creator 1 was served in the session's last 3 items (creator 0 only longer ago)
    out = rerank(
        rel, np.eye(n), cfg, creators, topics, served_creators=[0, 1, 9, 9], served_topics=[5]
    )
    assert len(set(out.tolist())) == 5
    assert np.bincount(creators[out]).max() <= 1
    assert 3 not in out and 4 not in out  # creator 1 is at its cap from the look-back
    assert out[0] == 0  # creator 0 fell out of the 3-item look-back window


def test_caps_are_best_effort_so_the_page_is_full() -> None:
    cfg = RerankConfig(method="mmr", k=4, max_per_creator=1, max_per_topic=None)
    out = rerank(np.array([0.9, 0.8, 0.7, 0.6]), np.eye(4), cfg, np.zeros(4, np.int64))
    np.testing.assert_array_equal(out, [0, 1, 2, 3])


def test_caps_build_checks_shapes() -> None:
    with pytest.raises(RerankInputError, match="creators"):
        Caps.build(np.zeros(3), None, 4, RerankConfig())
    with pytest.raises(RerankInputError, match="sim"):
        mmr(np.zeros(3), np.eye(4), 2, 0.5)
    with pytest.raises(RerankInputError, match="relevance"):
        dpp_greedy(np.array([0.0, np.nan]), np.eye(2), 2, 0.5)


def test_similarities() -> None:
    sim = tag_jaccard(np.array([[1, 2, -1], [2, 3, -1], [-1, -1, -1]]))
    np.testing.assert_allclose(sim, [[1, 1 / 3, 0], [1 / 3, 1, 0], [0, 0, 1]])
    cos = cosine_similarity(np.array([[1.0, 0.0], [1.0, 1.0], [-1.0, 0.0]]))
    np.testing.assert_allclose(cos, [[1, np.sqrt(0.5), 0], [np.sqrt(0.5), 1, 0], [0, 0, 1]])


@pytest.mark.parametrize(
    "method,theta", list(itertools.product(["mmr", "dpp"], [0.0, 0.3, 0.7, 1.0]))
)
def test_property_distinct_indices_and_diversity_grows_as_trade_off_falls(
    method: str, theta: float
) -> None:
    rng = np.random.default_rng(int(theta * 10))
    n, k = 60, 10
    rel = rng.random(n)
    sim = cosine_similarity(rng.normal(size=(n, 4)))
    cfg = RerankConfig(
        method=method, k=k, trade_off=theta, max_per_creator=None, max_per_topic=None
    )
    out = rerank(rel, sim, cfg)
    assert out.shape == (k,) and len(set(out.tolist())) == k
    if theta == 1.0:
        np.testing.assert_array_equal(out, np.argsort(-rel)[:k])
    top = np.argsort(-rel)[:k]

    def mean_sim(idx: np.ndarray) -> float:
        s = sim[np.ix_(idx, idx)]
        return float((s.sum() - k) / (k * (k - 1)))

    if theta <= 0.3:
        assert mean_sim(out) < mean_sim(top)
