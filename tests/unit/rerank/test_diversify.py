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


# ---------------------------------------------------------------- reference equivalence
def _reference_rerank(
    rel: np.ndarray,
    sim: np.ndarray,
    cfg: RerankConfig,
    creators: np.ndarray,
    topics: np.ndarray,
    served_creators: list[int],
    served_topics: list[int],
) -> list[int]:
    """The selectors written plainly: the caps recounted from the page at every step (the
    fast path keeps an incremental mask and preallocated buffers and must pick the same)."""
    n = rel.shape[0]
    look = cfg.lookback
    past_c = [c for c in (served_creators[-look:] if look else []) if c >= 0]
    past_t = [t for t in (served_topics[-look:] if look else []) if t >= 0]
    page: list[int] = []

    def allowed(i: int) -> bool:
        cc = past_c + [int(creators[j]) for j in page if creators[j] >= 0]
        tt = past_t + [int(topics[j]) for j in page if topics[j] >= 0]
        c_ok = cfg.max_per_creator is None or cc.count(int(creators[i])) < cfg.max_per_creator
        t_ok = cfg.max_per_topic is None or tt.count(int(topics[i])) < cfg.max_per_topic
        return c_ok and t_ok

    def pick(gain: np.ndarray) -> int:
        free = [i for i in range(n) if i not in page]
        ok = [i for i in free if allowed(i)] or free
        return max(ok, key=lambda i: (gain[i], -i))  # the first index among equal gains

    k = min(cfg.k, n)
    if cfg.method == "mmr":
        max_sim = np.zeros(n)
        while len(page) < k:
            i = pick(cfg.trade_off * rel - (1.0 - cfg.trade_off) * max_sim)
            page.append(i)
            max_sim = np.maximum(max_sim, sim[i])
        return page
    if cfg.method == "dpp" and cfg.trade_off < 1.0 and n:
        span = rel.max() - rel.min()
        rn = (rel - rel.min()) / span if span > 0 else np.zeros(n)
        q = np.exp(cfg.trade_off / (2.0 * (1.0 - cfg.trade_off)) * rn)
        kernel = q[:, None] * sim * q[None, :]
        d2 = np.diag(kernel).copy()
        cis = np.zeros((k, n))
        eps = cfg.dpp_epsilon
        while len(page) < k:
            step = len(page)
            with np.errstate(divide="ignore", invalid="ignore"):
                gain = np.where(d2 > eps, np.log(np.maximum(d2, eps)), -np.inf)
            if not any(np.isfinite(gain[i]) for i in range(n) if i not in page):
                break
            j = pick(np.where(np.isfinite(gain), gain, -1e300))
            page.append(j)
            if d2[j] > eps:
                e = (kernel[j] - cis[:step, j] @ cis[:step]) / np.sqrt(d2[j])
                cis[step] = e
                d2 = d2 - e * e
            d2[j] = -np.inf
    while len(page) < k:  # "none", trade-off 1, or the space is spanned: relevance order
        page.append(pick(rel))
    return page


@pytest.mark.parametrize("method", ["mmr", "dpp", "none"])
@pytest.mark.parametrize("seed", range(12))
def test_rerank_equals_the_plain_reference(method: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 50))
    # coarse relevance and low-rank tag similarity: ties and a spanned space happen
    rel = rng.integers(0, 5, n) / 4.0 if seed % 3 == 0 else rng.random(n)
    tags = rng.integers(-1, 6, size=(n, 3))
    sim = tag_jaccard(tags) if seed % 2 else cosine_similarity(rng.normal(size=(n, 3)))
    creators = rng.integers(-1, 4, n)
    topics = rng.integers(-1, 3, n)
    cfg = RerankConfig(
        method=method,
        k=int(rng.integers(1, 25)),
        trade_off=float(rng.choice([0.0, 0.3, 0.7, 0.95, 1.0])),
        max_per_creator=[None, 1, 2][seed % 3],
        max_per_topic=[None, 2, 4][(seed // 3) % 3],
        lookback=int(rng.integers(0, 6)),
        page_order="greedy",  # the reference is of the selectors' pick order
    )
    served_c = rng.integers(-1, 4, int(rng.integers(0, 8))).tolist()
    served_t = rng.integers(-1, 3, len(served_c)).tolist()
    got = rerank(rel, sim, cfg, creators, topics, served_c, served_t)
    want = _reference_rerank(rel, sim, cfg, creators, topics, served_c, served_t)
    assert got.tolist() == want


def test_caps_mask_follows_adds_and_session_counts() -> None:
    cfg = RerankConfig(max_per_creator=2, max_per_topic=1, lookback=5)
    caps = Caps.build(np.array([0, 0, 1, -1]), np.array([5, 6, 6, -1]), 4, cfg, [0], [-1])
    np.testing.assert_array_equal(caps.allowed(), [True, True, True, True])
    caps.add(1)  # creator 0 reaches 2 (with the session's one), topic 6 reaches 1
    np.testing.assert_array_equal(caps.allowed(), [False, False, False, True])
    caps.add(3)  # unknown creator and topic are never capped
    np.testing.assert_array_equal(caps.allowed(), [False, False, False, True])


@pytest.mark.parametrize("method", ["mmr", "dpp"])
def test_relevance_page_order_keeps_the_chosen_set(method: str) -> None:
    rng = np.random.default_rng(0)
    reordered = 0
    for _ in range(20):
        n = 30
        r = rng.random(n)
        s = cosine_similarity(rng.normal(size=(n, 3)))
        cfg = RerankConfig(
            method=method, k=8, trade_off=0.6, max_per_creator=None, page_order="greedy"
        )
        a = rerank(r, s, cfg)
        b = rerank(r, s, cfg.model_copy(update={"page_order": "relevance", "page_size": 8}))
        assert sorted(a.tolist()) == sorted(b.tolist())  # the set the selector chose ...
        assert np.all(np.diff(r[b]) <= 0)  # ... by relevance
        reordered += a.tolist() != b.tolist()
        # pages of 3: each block of 3 picks holds the same items, by relevance
        c = rerank(r, s, cfg.model_copy(update={"page_order": "relevance", "page_size": 3}))
        for i in range(0, 8, 3):
            assert sorted(c[i : i + 3].tolist()) == sorted(a[i : i + 3].tolist())
            assert np.all(np.diff(r[c[i : i + 3]]) <= 0)
    assert reordered > 0  # the greedy pick order is not the relevance order
