"""Calibrated re-ranking to the user's topics (Steck 2018) and its use by ``rerank``."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from pydantic import ValidationError

from shortrec.config import RerankConfig
from shortrec.rerank import (
    Caps,
    RerankInputError,
    calibrated,
    cosine_similarity,
    rerank,
    topic_log_affinity,
    user_topic_distribution,
)

# 30 candidates, 10 per topic; topic 0 holds the 10 most relevant, then topic 1, then topic 2
TOPICS = np.repeat(np.arange(3), 10)
REL = np.linspace(1.0, 0.0, 30)
NO_CAPS = {"max_per_creator": None, "max_per_topic": None}


def _kl(p: np.ndarray, page_topics: np.ndarray, alpha: float) -> float:
    q = np.bincount(page_topics[page_topics >= 0], minlength=p.shape[0]) / page_topics.shape[0]
    qt = (1 - alpha) * q + alpha * p
    m = p > 0
    return float((p[m] * np.log(p[m] / qt[m])).sum())


def test_one_topic_user_gets_a_narrower_page_than_a_three_topic_user() -> None:
    cfg = RerankConfig(k=6, **NO_CAPS)
    one = user_topic_distribution(np.zeros(40, np.int64), 3)  # 40 events of topic 0
    three = user_topic_distribution(np.repeat(np.arange(3), 12), 3)  # 12 events each
    sim = np.eye(30)
    page_one = rerank(REL, sim, cfg, topics=TOPICS, user_topics=one)
    page_three = rerank(REL, sim, cfg, topics=TOPICS, user_topics=three)
    assert set(TOPICS[page_one].tolist()) == {0}
    assert set(TOPICS[page_three].tolist()) == {0, 1, 2}
    # within each topic, the topic's most relevant candidates
    for t in range(3):
        picked = sorted(page_three[TOPICS[page_three] == t].tolist())
        assert picked == list(range(10 * t, 10 * t + len(picked)))
    # at trade-off 0: the history's proportions, two of each topic
    cal = cfg.model_copy(update={"calibration_trade_off": 0.0})
    page_cal = rerank(REL, sim, cal, topics=TOPICS, user_topics=three)
    assert sorted(page_cal.tolist()) == [0, 1, 10, 11, 20, 21]
    # without the user's topics the default DPP runs as before
    no_p = rerank(REL, sim, cfg, topics=TOPICS)
    dpp = rerank(REL, sim, cfg.model_copy(update={"personalise": "none"}), topics=TOPICS)
    np.testing.assert_array_equal(no_p, dpp)


def test_calibration_follows_the_history_proportions_at_trade_off_0() -> None:
    p = np.array([0.5, 0.3, 0.2])
    page = calibrated(REL, TOPICS, p, 10, trade_off=0.0, alpha=0.01)
    np.testing.assert_array_equal(np.bincount(TOPICS[page], minlength=3), [5, 3, 2])


@pytest.mark.parametrize("seed", range(6))
def test_trade_off_1_is_the_relevance_order(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 40
    rel = rng.random(n)
    topics = rng.integers(-1, 5, n)
    p = rng.dirichlet(np.ones(5))
    got = calibrated(rel, topics, p, 12, trade_off=1.0)
    np.testing.assert_array_equal(got, np.argsort(-rel, kind="stable")[:12])
    cfg = RerankConfig(
        k=12, calibration_trade_off=1.0, topic_affinity=0.0, page_order="greedy", **NO_CAPS
    )
    out = rerank(rel, np.eye(n), cfg, topics=topics, user_topics=p)
    np.testing.assert_array_equal(out, np.argsort(-rel, kind="stable")[:12])


@pytest.mark.parametrize("seed", range(10))
def test_each_greedy_step_maximises_the_calibrated_objective(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, t = int(rng.integers(2, 30)), int(rng.integers(1, 6))
    rel = rng.random(n)
    topics = rng.integers(-1, t, n)
    p = rng.dirichlet(np.ones(t))
    p[rng.random(t) < 0.3] = 0.0  # topics the user never watched
    if p.sum() == 0:
        p[0] = 1.0
    p /= p.sum()
    lam, alpha, k = float(rng.choice([0.2, 0.5, 0.9])), float(rng.choice([0.01, 0.2])), 8
    got = calibrated(rel, topics, p, k, 1.0 - lam, alpha)
    chosen: list[int] = []
    for _ in range(min(k, n)):
        free = [i for i in range(n) if i not in chosen]
        best = max(
            free,
            key=lambda i: (
                (1 - lam) * rel[[*chosen, i]].sum() - lam * _kl(p, topics[[*chosen, i]], alpha),
                -i,
            ),
        )
        chosen.append(best)
    np.testing.assert_array_equal(got, chosen)


def test_caps_hold_in_calibrated_pages() -> None:
    creators = np.arange(30) % 2  # two creators alternate
    cfg = RerankConfig(k=6, max_per_creator=3, max_per_topic=None)
    p = np.array([1.0, 0.0, 0.0])
    caps = Caps.build(creators, TOPICS, 30, cfg)
    page = calibrated(REL, TOPICS, p, 6, 0.5, caps=caps)
    assert np.bincount(creators[page]).max() <= 3 and len(set(page.tolist())) == 6


def test_page_order_puts_the_users_topics_first_within_a_page() -> None:
    # one page of two items: topic 1 slightly less relevant but the user's main topic
    rel = np.array([1.0, 0.95])
    topics = np.array([0, 1])
    p = np.array([0.1, 0.9])
    base = RerankConfig(k=2, calibration_trade_off=1.0, topic_affinity=0.0, **NO_CAPS)
    np.testing.assert_array_equal(
        rerank(rel, np.eye(2), base, topics=topics, user_topics=p), [0, 1]
    )
    tilted = base.model_copy(update={"topic_affinity": 0.1})  # 0.1 * log 9 > 0.05
    np.testing.assert_array_equal(
        rerank(rel, np.eye(2), tilted, topics=topics, user_topics=p), [1, 0]
    )
    # method "none" turns all re-ranking off, personalisation included
    off = tilted.model_copy(update={"method": "none"})
    np.testing.assert_array_equal(rerank(rel, np.eye(2), off, topics=topics, user_topics=p), [0, 1])


def test_without_user_topics_rerank_is_unchanged() -> None:
    rng = np.random.default_rng(1)
    for method in ("mmr", "dpp", "none"):
        n = 25
        rel = rng.random(n)
        sim = cosine_similarity(rng.normal(size=(n, 3)))
        topics = rng.integers(0, 4, n)
        creators = rng.integers(0, 6, n)
        new = RerankConfig(method=method, k=8, trade_off=0.6)
        old = new.model_copy(update={"personalise": "none"})
        p = rng.dirichlet(np.ones(4))
        want = rerank(rel, sim, old, creators, topics, user_topics=p)  # "none" ignores p
        np.testing.assert_array_equal(rerank(rel, sim, new, creators, topics), want)


def test_user_topic_distribution_hand_computed() -> None:
    topics = np.array([0, 0, 1, -1])
    np.testing.assert_allclose(user_topic_distribution(topics, 2), [2.5 / 4, 1.5 / 4])
    skipped_first = np.array([0.0, 1.0, 1.0, 1.0])  # weights: unknown topic ignored
    np.testing.assert_allclose(user_topic_distribution(topics, 2, skipped_first), [0.5, 0.5])
    np.testing.assert_allclose(user_topic_distribution(np.zeros(0, np.int64), 4), [0.25] * 4)
    np.testing.assert_allclose(user_topic_distribution(np.array([1, 1]), 2, prior=0.0), [0.0, 1.0])
    np.testing.assert_allclose(
        topic_log_affinity(np.array([1, -1]), np.array([0.2, 0.8])), np.log([0.8, 0.5])
    )


def test_inputs_are_validated_and_name_the_field() -> None:
    p = np.array([0.5, 0.5])
    t = np.array([0, 1, 0])
    r = np.array([0.3, 0.2, 0.1])
    cases: list[tuple[str, Callable[[], object]]] = [
        ("user_topics", lambda: calibrated(r, t, np.array([[0.5, 0.5]]), 2, 0.5)),
        ("user_topics", lambda: calibrated(r, t, np.array([0.5, -0.1]), 2, 0.5)),
        ("user_topics", lambda: calibrated(r, t, np.zeros(2), 2, 0.5)),
        ("user_topics", lambda: calibrated(r, t, np.array([np.nan, 1.0]), 2, 0.5)),
        ("topics", lambda: calibrated(r, np.array([0, 2, 0]), p, 2, 0.5)),
        ("topics", lambda: calibrated(r, np.array([0, 1]), p, 2, 0.5)),
        ("topics", lambda: calibrated(r, np.array([0.0, 1.0, 0.0]), p, 2, 0.5)),
        ("relevance", lambda: calibrated(np.array([0.1, np.inf, 0.0]), t, p, 2, 0.5)),
        ("alpha", lambda: calibrated(r, t, p, 2, 0.5, alpha=0.0)),
        ("k", lambda: calibrated(r, t, p, -1, 0.5)),
        ("topics", lambda: rerank(r, np.eye(3), RerankConfig(), user_topics=p)),
        ("weights", lambda: user_topic_distribution(t, 2, np.array([1.0, -1.0, 1.0]))),
        ("weights", lambda: user_topic_distribution(t, 2, np.ones(2))),
        ("topics", lambda: user_topic_distribution(t, 1)),
        ("n_topics", lambda: user_topic_distribution(t, 0)),
        ("prior", lambda: user_topic_distribution(t, 2, prior=-1.0)),
        ("topics", lambda: user_topic_distribution(np.zeros(0, np.int64), 2, prior=0.0)),
    ]
    for field, call in cases:
        with pytest.raises(RerankInputError, match=field):
            call()
    for bad in (
        {"calibration_trade_off": 1.5},
        {"calibration_alpha": 0.0},
        {"topic_affinity": -0.1},
        {"topic_prior": -1.0},
        {"personalise": "xquad"},
    ):
        with pytest.raises(ValidationError, match=next(iter(bad))):
            RerankConfig(**bad)
