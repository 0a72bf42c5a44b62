"""Candidate similarities of the re-ranker: hand-computed values, PSD, config, trade-off sweeps."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from shortrec.config import RerankConfig
from shortrec.rerank import (
    RerankInputError,
    content_similarity,
    dpp_greedy,
    rerank,
    rerank_similarity,
    same_group,
    tag_jaccard,
)

W = {"tag": 0.5, "topic": 0.25, "creator": 0.25}


def _jaccard_reference(tags: np.ndarray) -> np.ndarray:
    sets = [{int(x) for x in row if x >= 0} for row in tags]
    n = len(sets)
    out = np.eye(n)
    for i in range(n):
        for j in range(n):
            if i != j and sets[i] | sets[j]:
                out[i, j] = len(sets[i] & sets[j]) / len(sets[i] | sets[j])
    return out


def test_tag_jaccard_hand_computed_and_set_reference() -> None:
    sim = tag_jaccard(np.array([[1, 2, -1], [2, 3, -1], [-1, -1, -1], [-1, -1, -1]]))
    np.testing.assert_allclose(
        sim, [[1, 1 / 3, 0, 0], [1 / 3, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]
    )
    rng = np.random.default_rng(0)
    tags = rng.integers(-1, 12, size=(40, 6))
    tags[3] = -1  # an untagged video
    tags[4] = [5, 5, 5, -1, -1, -1]  # a repeated tag counts once: {5}
    got = tag_jaccard(tags)
    np.testing.assert_allclose(got, _jaccard_reference(tags))
    np.testing.assert_array_equal(got, got.T)


def test_content_similarity_hand_computed() -> None:
    tags = np.array([[1, 2, -1], [2, 3, -1], [7, -1, -1], [8, -1, -1], [9, -1, -1]])
    creators = np.array([0, 1, 0, -1, -1])
    topics = np.array([3, 3, 4, -1, -1])
    sim = content_similarity(tags, creators, topics, {"tag": 2.0, "topic": 1.0, "creator": 1.0})
    assert sim[0, 1] == pytest.approx(0.5 / 3 + 0.25)  # a shared tag, same topic
    assert sim[0, 2] == pytest.approx(0.25)  # same creator, nothing else
    assert sim[1, 2] == 0.0  # disjoint
    assert sim[3, 4] == 0.0  # unknown creator and topic never match
    np.testing.assert_array_equal(np.diag(sim), np.ones(5))
    np.testing.assert_array_equal(sim, sim.T)
    # missing parts weigh 0: creator alone is the same-creator indicator
    np.testing.assert_array_equal(
        content_similarity(tags, creators, topics, {"creator": 3.0}), same_group(creators)
    )


@pytest.mark.parametrize("seed", range(6))
def test_content_similarity_is_psd_and_in_unit_interval(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 120))
    tags = rng.integers(-1, int(rng.integers(2, 30)), size=(n, 4))
    creators = rng.integers(-1, 8, n)
    topics = rng.integers(-1, 4, n)
    w = dict(zip(("tag", "topic", "creator"), rng.random(3), strict=True))
    for sim in (
        tag_jaccard(tags),
        same_group(creators),
        content_similarity(tags, creators, topics, w),
    ):
        assert np.linalg.eigvalsh(sim).min() >= -1e-9
        assert sim.min() >= 0.0 and sim.max() <= 1.0 + 1e-12
        np.testing.assert_allclose(np.diag(sim), 1.0)


def test_dpp_cholesky_is_stable_with_content_similarity() -> None:
    # many near-duplicates (a rank-deficient kernel): the incremental factor must neither
    # produce NaN nor repeat an item, and greedy steps match brute-force log det
    rng = np.random.default_rng(1)
    n = 150
    tags = rng.integers(-1, 6, size=(n, 3))
    creators, topics = rng.integers(0, 5, n), rng.integers(0, 3, n)
    sim = content_similarity(tags, creators, topics, W)
    rel = rng.random(n)
    out = dpp_greedy(rel, sim, n, 0.5)
    assert sorted(out.tolist()) == list(range(n))
    small = np.arange(14)
    s, r, theta = sim[np.ix_(small, small)], rel[small], 0.6
    got = dpp_greedy(r, s, 6, theta)
    q = np.exp(theta / (2 * (1 - theta)) * (r - r.min()) / (r.max() - r.min()))
    kernel = q[:, None] * s * q[None, :]
    chosen: list[int] = []
    for _ in range(6):
        chosen.append(
            max(
                (i for i in small.tolist() if i not in chosen),
                key=lambda i: np.linalg.slogdet(kernel[np.ix_([*chosen, i], [*chosen, i])])[1],
            )
        )
    np.testing.assert_array_equal(got, chosen)


def test_config_similarity_fields() -> None:
    assert RerankConfig().similarity == "content"
    RerankConfig(similarity_weights={"creator": 1.0})
    with pytest.raises(ValidationError, match=r"similarity_weights: unknown key\(s\) \['genre'\]"):
        RerankConfig(similarity_weights={"tag": 1.0, "genre": 1.0})
    for bad in ({"tag": -0.1, "creator": 1.0}, {"tag": 0.0}, {"tag": float("nan")}):
        with pytest.raises(ValidationError, match="similarity_weights"):
            RerankConfig(similarity_weights=bad)
    with pytest.raises(ValidationError, match="similarity"):
        RerankConfig(similarity="embedding")  # type: ignore[arg-type]
    with pytest.raises(RerankInputError, match="weights"):
        content_similarity(np.zeros((2, 1)), np.zeros(2), np.zeros(2), {"tags": 1.0})
    with pytest.raises(RerankInputError, match="topics"):
        content_similarity(np.zeros((2, 1)), np.zeros(2), np.zeros(3), W)


def test_rerank_similarity_follows_the_config() -> None:
    tags = np.array([[1, -1], [2, -1], [1, 2]])
    creators, topics = np.array([0, 0, 1]), np.array([0, 1, 1])
    cfg = RerankConfig(similarity="tags")
    np.testing.assert_array_equal(rerank_similarity(cfg, tags, creators, topics), tag_jaccard(tags))
    cfg = RerankConfig(similarity_weights=W)
    np.testing.assert_array_equal(
        rerank_similarity(cfg, tags, creators, topics),
        content_similarity(tags, creators, topics, W),
    )


def _pool(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """60 candidates with (near-)disjoint tags; the 20 most relevant share creator 0 and
    topic 0, the rest come from creators 1..12 and topics 1..5."""
    rng = np.random.default_rng(seed)
    n = 60
    tags = rng.choice(400, size=(n, 3), replace=False)  # no tag shared between candidates
    rel = np.concatenate([rng.uniform(0.8, 1.0, 20), rng.uniform(0.0, 0.8, n - 20)])
    creators = np.concatenate([np.zeros(20, np.int64), rng.integers(1, 13, n - 20)])
    topics = np.concatenate([np.zeros(20, np.int64), rng.integers(1, 6, n - 20)])
    return rel, tags, creators, topics


def _distinct(method: str, theta: float, similarity: str) -> tuple[int, int]:
    rel, tags, creators, topics = _pool()
    cfg = RerankConfig(
        method=method,  # type: ignore[arg-type]
        k=10,
        trade_off=theta,
        max_per_creator=None,
        max_per_topic=None,
        similarity=similarity,  # type: ignore[arg-type]
        similarity_weights=W,
    )
    page = rerank(rel, rerank_similarity(cfg, tags, creators, topics), cfg, creators, topics)
    return len(set(creators[page].tolist())), len(set(topics[page].tolist()))


def test_dpp_trade_off_moves_diversity_with_content_similarity_only() -> None:
    thetas = (0.1, 0.3, 0.5, 0.7, 0.9, 0.99)
    content = [_distinct("dpp", t, "content") for t in thetas]
    creators = [c for c, _ in content]
    topics = [t for _, t in content]
    # more diverse at lower theta: non-increasing along the sweep, and a real range
    assert creators == sorted(creators, reverse=True) and creators[0] >= creators[-1] + 4
    assert topics == sorted(topics, reverse=True) and topics[0] > topics[-1]
    # disjoint tags: the tag-only similarity is the identity and theta changes nothing
    tags_only = {_distinct("dpp", t, "tags") for t in thetas[:-1]}
    assert tags_only == {(1, 1)}


def test_mmr_with_content_similarity_diversifies() -> None:
    assert _distinct("mmr", 1.0, "content") == (1, 1)
    lo, hi = _distinct("mmr", 0.3, "content"), _distinct("mmr", 0.8, "content")
    assert lo[0] >= hi[0] and lo[0] >= 5
