"""Metric oracles: hand-computed values on tiny inputs, independent implementations on random
inputs (scikit-learn for NDCG and AUC, plain Python sets for diversity)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from sklearn.metrics import ndcg_score, roc_auc_score

from shortrec.evaluation import metrics as M

L2 = math.log2


# ---------------------------------------------------------------- accuracy, by hand
def test_ndcg_graded_by_hand() -> None:
    gains = np.array([[3.0, 2.0, 0.0, 1.0]])
    ideal = np.array([[3.0, 2.0, 1.0, 0.0]])
    dcg = 3 + 2 / L2(3) + 0 + 1 / L2(5)
    idcg = 3 + 2 / L2(3) + 1 / L2(4)
    assert M.dcg_at_k(gains, 4)[0] == pytest.approx(dcg)
    assert M.ndcg_at_k(gains, ideal, 4)[0] == pytest.approx(dcg / idcg)
    # at k=2 the list is already ideal
    assert M.ndcg_at_k(gains, ideal, 2)[0] == pytest.approx(1.0)


def test_ndcg_zero_when_nothing_relevant() -> None:
    z = np.zeros((2, 3))
    assert M.ndcg_at_k(z, z, 3).tolist() == [0.0, 0.0]


def test_hit_recall_mrr_by_hand() -> None:
    gains = np.array(
        [
            [0.0, 0.0, 1.0, 0.0],  # first hit at rank 3
            [1.0, 0.0, 0.0, 1.0],  # hits at ranks 1 and 4
            [0.0, 0.0, 0.0, 0.0],  # none
        ]
    )
    n_rel = np.array([1, 4, 2])
    assert M.hit_at_k(gains, 2).tolist() == [0.0, 1.0, 0.0]
    assert M.hit_at_k(gains, 3).tolist() == [1.0, 1.0, 0.0]
    assert M.recall_at_k(gains, n_rel, 4).tolist() == [1.0, 0.5, 0.0]
    assert M.recall_at_k(gains, n_rel, 2).tolist() == [0.0, 0.25, 0.0]
    assert M.mrr_at_k(gains, 4).tolist() == pytest.approx([1 / 3, 1.0, 0.0])
    assert M.mrr_at_k(gains, 2).tolist() == [0.0, 1.0, 0.0]


def test_k_out_of_range_is_rejected() -> None:
    with pytest.raises(ValueError, match="k=5"):
        M.hit_at_k(np.zeros((1, 3)), 5)


# ---------------------------------------------------------------- accuracy, against sklearn
@pytest.mark.parametrize("k", [1, 3, 10, 25])
def test_ndcg_matches_sklearn_on_random_graded_input(k: int) -> None:
    rng = np.random.default_rng(k)
    n, m = 50, 25
    rel = rng.integers(0, 4, size=(n, m)).astype(np.float64) * (rng.random((n, m)) < 0.3)
    rel[0] = 0.0  # a user with nothing relevant
    scores = rng.random((n, m))
    order = np.argsort(-scores, axis=1)[:, :k]
    gains = np.take_along_axis(rel, order, axis=1)
    ideal = -np.sort(-rel, axis=1)[:, :k]
    ours = M.ndcg_at_k(gains, ideal, k)
    for i in range(n):
        ref = ndcg_score(rel[i : i + 1], scores[i : i + 1], k=k)
        assert ours[i] == pytest.approx(ref, abs=1e-12)


def test_auc_matches_sklearn_with_ties() -> None:
    rng = np.random.default_rng(7)
    for _ in range(20):
        m = int(rng.integers(5, 60))
        y = rng.random(m) < 0.4
        y[0], y[1] = True, False
        s = rng.integers(0, 5, size=m).astype(np.float64)  # many ties
        assert M.auc(s, y) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_gauc_is_impression_weighted_per_user_auc() -> None:
    rng = np.random.default_rng(3)
    groups = np.repeat(np.arange(6), [5, 8, 3, 10, 4, 6])
    y = rng.random(groups.size) < 0.5
    y[groups == 2] = True  # one class only: ignored
    s = rng.integers(0, 4, size=groups.size).astype(np.float64)
    num = den = 0.0
    for g in np.unique(groups):
        sel = groups == g
        if y[sel].all() or not y[sel].any():
            continue
        num += sel.sum() * roc_auc_score(y[sel], s[sel])
        den += sel.sum()
    assert M.gauc(s, y, groups) == pytest.approx(num / den, abs=1e-12)
    gid, a, w = M.group_auc(s, y, groups)
    assert ((a >= 0) & (a <= 1)).all() and a.size == gid.size
    assert 2 not in gid.tolist()
    assert w.sum() == den


def test_auc_by_hand_and_undefined() -> None:
    # positives 0.8, 0.4; negatives 0.4, 0.1 -> pairs: win, win, tie, win -> 3.5 / 4
    assert M.auc(np.array([0.8, 0.4, 0.4, 0.1]), np.array([1, 1, 0, 0])) == 0.875
    assert math.isnan(M.auc(np.array([0.1, 0.2]), np.array([1, 1])))
    with pytest.raises(ValueError, match="NaN"):
        M.auc(np.array([np.nan, 0.2]), np.array([1, 0]))


# ---------------------------------------------------------------- beyond accuracy
def _bitsets(tag_lists: list[list[int]]) -> np.ndarray:
    off = np.concatenate([[0], np.cumsum([len(t) for t in tag_lists])])
    flat = np.array([t for ts in tag_lists for t in ts], dtype=np.int64)
    return M.tag_bitsets(off, flat, len(tag_lists))


def test_ild_jaccard_by_hand() -> None:
    bits = _bitsets([[0, 1], [1, 2], [], [0, 1]])
    # pairs of [0, 1, 2]: J = 1/3, 0, 0 -> mean 1/9
    top = np.array([[0, 1, 2], [0, 3, -1], [2, -1, -1]])
    ild = M.ild_jaccard_at_k(top, bits, 3)
    assert ild[0] == pytest.approx(1 - 1 / 9)
    assert ild[1] == pytest.approx(0.0)  # identical tag sets; the empty slot is ignored
    assert math.isnan(ild[2])  # fewer than two items


def test_ild_jaccard_matches_python_sets_on_random_input() -> None:
    rng = np.random.default_rng(11)
    n_items = 40
    tag_lists = [
        sorted(set(rng.integers(0, 150, size=int(rng.integers(0, 5))).tolist()))
        for _ in range(n_items)
    ]
    bits = _bitsets(tag_lists)
    top = np.stack([rng.permutation(n_items)[:7] for _ in range(30)])
    top[0, 3:] = -1
    got = M.ild_jaccard_at_k(top, bits, 7)
    for u in range(top.shape[0]):
        items = [i for i in top[u].tolist() if i >= 0]
        sims = []
        for a, b in itertools.combinations(items, 2):
            sa, sb = set(tag_lists[a]), set(tag_lists[b])
            union = sa | sb
            sims.append(len(sa & sb) / len(union) if union else 0.0)
        assert got[u] == pytest.approx(1 - sum(sims) / len(sims))


def test_ild_cosine_by_hand() -> None:
    emb = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0], [0.0, 0.0]])
    top = np.array([[0, 1, 2], [0, 3, -1]])
    c = 1 / math.sqrt(2)
    ild = M.ild_cosine_at_k(top, emb, 3)
    assert ild[0] == pytest.approx(1 - (0 + c + c) / 3)
    assert ild[1] == pytest.approx(1.0)  # a zero vector is similar to nothing


def test_novelty_popularity_percentile_by_hand() -> None:
    users_per_item = np.array([0, 1, 3, 3])
    info = M.self_information(users_per_item, n_users=3)
    assert info.tolist() == pytest.approx([2.0, 1.0, 0.0, 0.0])
    pct = M.popularity_percentile(users_per_item)
    # ascending ranks 1, 2, 3.5, 3.5 -> (rank - 1) / 3
    assert pct.tolist() == pytest.approx([0.0, 1 / 3, 2.5 / 3, 2.5 / 3])
    top = np.array([[0, 1], [2, -1]])
    assert M.mean_item_value_at_k(top, info, 2).tolist() == pytest.approx([1.5, 0.0])


def test_gini_coverage_distinct_creators_by_hand() -> None:
    assert M.gini(np.array([0, 0, 0, 1])) == pytest.approx(0.75)
    assert M.gini(np.array([2, 2, 2])) == pytest.approx(0.0)
    assert math.isnan(M.gini(np.zeros(3)))
    assert M.coverage(np.array([0, 3, 1, 0]), n_eligible=3) == pytest.approx(2 / 3)
    creator = np.array([0, 0, 1, 2])
    top = np.array([[0, 1, 2], [1, 2, 3], [-1, -1, -1]])
    share = M.distinct_share_at_k(top, creator, 3)
    assert share[0] == pytest.approx(2 / 3)
    assert share[1] == pytest.approx(1.0)
    assert math.isnan(share[2])


def test_gini_matches_mean_absolute_difference_formula() -> None:
    rng = np.random.default_rng(5)
    x = rng.integers(0, 20, size=30).astype(np.float64)
    mad = np.abs(x[:, None] - x[None, :]).sum() / (2 * x.size**2 * x.mean())
    assert M.gini(x) == pytest.approx(mad)


def test_logged_feed_stats_by_hand() -> None:
    nan = np.nan
    stats = M.logged_feed_stats(
        skipped=np.array([1.0, 0.0, 0.0, nan]),
        watch_ratio=np.array([0.1, 1.0, 0.7, nan]),
        watch_time_s=np.array([1.0, 10.0, 7.0, 3.0]),
        session_id=np.array([1.0, 1.0, 2.0, nan]),
    )
    assert stats["skip_rate"] == pytest.approx(1 / 3)
    assert stats["watch_ratio"] == pytest.approx(0.6)
    assert stats["watch_time_s"] == pytest.approx(5.25)
    assert stats["session_length"] == pytest.approx(1.5)
