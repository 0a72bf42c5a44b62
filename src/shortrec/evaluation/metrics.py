"""Offline evaluation metrics: pure numpy, vectorised over users.

Conventions shared by every list metric (the runner builds these arrays per user batch):

* ``topk``: ``(n_users, K)`` int64, the recommended item indices in rank order; ``-1`` marks an
  empty slot (the recommender proposed fewer than ``K`` items).
* ``gains``: ``(n_users, K)`` float, the relevance gain of the item at each rank (0 = not
  relevant; empty slots have gain 0). Gains may be graded (e.g. a watch ratio).
* ``ideal``: ``(n_users, K)`` float, each user's relevance gains sorted in descending order and
  zero-padded: the gains of the best possible list.
* ``k``: the cut-off; metrics read only the first ``k`` columns (``k <= K``).

Per-user metrics return float64 arrays of shape ``(n_users,)`` (``NaN`` where the metric is
undefined for that user, e.g. diversity of a list with fewer than two items); the runner takes
the mean over users with ``np.nanmean``. Catalogue-level metrics return one float.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
AnyFloat = npt.NDArray[np.floating]
AnyInt = npt.NDArray[np.integer]
Bool = npt.NDArray[np.bool_]

#: Bound on the elements of one temporary in the pairwise (intra-list) metrics.
_PAIRWISE_BUDGET = 1 << 23


def _check_k(arr: npt.NDArray[np.generic], k: int) -> None:
    if arr.ndim != 2:
        raise ValueError(f"expected a 2-d (n_users, K) array, got shape {arr.shape}")
    if not 1 <= k <= arr.shape[1]:
        raise ValueError(f"k={k} must be in [1, {arr.shape[1]}] for an array of shape {arr.shape}")


# ---------------------------------------------------------------- accuracy
def discounts(k: int) -> F64:
    """Logarithmic position discounts ``1 / log2(rank + 1)`` for ranks ``1..k``, shape (k,)."""
    return 1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64))


def dcg_at_k(gains: AnyFloat, k: int) -> F64:
    """Discounted cumulative gain ``DCG@k = sum_{r=1..k} gain_r / log2(r + 1)``, shape (n,).

    Linear gains, as in Järvelin & Kekäläinen (2002), "Cumulated gain-based evaluation of IR
    techniques", ACM TOIS 20(4), and scikit-learn's ``dcg_score``.
    """
    _check_k(gains, k)
    return np.asarray(np.asarray(gains[:, :k], dtype=np.float64) @ discounts(k))


def ndcg_at_k(gains: AnyFloat, ideal: AnyFloat, k: int) -> F64:
    """Normalised DCG ``NDCG@k = DCG@k(list) / DCG@k(ideal list)``, shape (n,), in [0, 1].

    Graded relevance with linear gains (Järvelin & Kekäläinen 2002); 0 for users whose ideal
    DCG is 0 (no relevant item). Matches ``sklearn.metrics.ndcg_score`` when the list is the
    arg-sort of the scores.
    """
    _check_k(ideal, k)
    dcg = dcg_at_k(gains, k)
    idcg = dcg_at_k(ideal, k)
    return np.asarray(np.divide(dcg, idcg, out=np.zeros_like(dcg), where=idcg > 0))


def hit_at_k(gains: AnyFloat, k: int) -> F64:
    """Hit rate ``Hit@k = 1[any relevant item in the top k]``, shape (n,).

    The "HR@k" of the sequential-recommendation literature (e.g. Kang & McAuley 2018, SASRec).
    """
    _check_k(gains, k)
    return np.asarray((gains[:, :k] > 0).any(axis=1), dtype=np.float64)


def recall_at_k(gains: AnyFloat, n_relevant: AnyInt, k: int) -> F64:
    """``Recall@k = |relevant in top k| / |relevant|``, shape (n,); 0 when nothing is relevant.

    The plain definition (Manning, Raghavan & Schütze 2008, ch. 8), not the ``min(k, |rel|)``
    normalised variant.
    """
    _check_k(gains, k)
    hits = (gains[:, :k] > 0).sum(axis=1).astype(np.float64)
    rel = np.asarray(n_relevant, dtype=np.float64)
    return np.asarray(np.divide(hits, rel, out=np.zeros_like(hits), where=rel > 0))


def mrr_at_k(gains: AnyFloat, k: int) -> F64:
    """Reciprocal rank of the first relevant item within the top k (0 if none), shape (n,).

    ``MRR@k = 1 / min{r <= k : gain_r > 0}`` (Voorhees 1999, TREC-8 QA track); the runner
    averages it over users.
    """
    _check_k(gains, k)
    rel = gains[:, :k] > 0
    first = rel.argmax(axis=1)
    return np.where(rel.any(axis=1), 1.0 / (first + 1.0), 0.0)


def group_auc(
    scores: AnyFloat, labels: npt.NDArray[np.bool_] | AnyInt, groups: AnyInt
) -> tuple[I64, F64, F64]:
    """Per-group ROC AUC by the Mann-Whitney U statistic, ties counted one half.

    ``AUC_g = (R_g - P_g (P_g + 1) / 2) / (P_g N_g)`` where ``R_g`` is the sum of the (tie-
    averaged) ranks of the positives within group ``g`` and ``P_g``/``N_g`` count positives and
    negatives (Hanley & McNeil 1982, Radiology 143(1)). All inputs have shape (m,).
    Returns ``(group_ids, auc, weight)`` for the groups that have both classes, with
    ``weight`` = the group's number of rows (impressions).
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels).astype(bool)
    g = np.asarray(groups, dtype=np.int64)
    if not (s.shape == y.shape == g.shape) or s.ndim != 1:
        raise ValueError(
            f"scores, labels, groups must be 1-d of one shape: {s.shape}, {y.shape}, {g.shape}"
        )
    if s.size == 0:
        empty = np.zeros(0, dtype=np.float64)
        return np.zeros(0, dtype=np.int64), empty, empty
    if np.isnan(s).any():
        raise ValueError("scores contain NaN")
    order = np.lexsort((s, g))
    s, y, g = s[order], y[order], g[order]
    m = s.size
    new_group = np.ones(m, dtype=bool)
    new_group[1:] = g[1:] != g[:-1]
    group_start = np.maximum.accumulate(np.where(new_group, np.arange(m), 0))
    # A run is a maximal block of equal (group, score): its members share the average rank.
    new_run = new_group.copy()
    new_run[1:] |= s[1:] != s[:-1]
    run_id = np.cumsum(new_run) - 1
    run_start = np.flatnonzero(new_run)
    run_end = np.append(run_start[1:], m) - 1
    avg_pos = ((run_start + run_end) / 2.0)[run_id]
    rank = avg_pos - group_start + 1.0
    gid_idx = np.cumsum(new_group) - 1
    n_groups = int(gid_idx[-1]) + 1
    n_pos = np.bincount(gid_idx, weights=y, minlength=n_groups)
    n_all = np.bincount(gid_idx, minlength=n_groups).astype(np.float64)
    n_neg = n_all - n_pos
    r_pos = np.bincount(gid_idx, weights=np.where(y, rank, 0.0), minlength=n_groups)
    ok = (n_pos > 0) & (n_neg > 0)
    auc = (r_pos[ok] - n_pos[ok] * (n_pos[ok] + 1) / 2.0) / (n_pos[ok] * n_neg[ok])
    return g[new_group][ok], auc, n_all[ok]


def auc(scores: AnyFloat, labels: npt.NDArray[np.bool_] | AnyInt) -> float:
    """ROC AUC of ``scores`` for binary ``labels`` (shape (m,)); NaN if one class is absent.

    Mann-Whitney formulation, ties counted one half (Hanley & McNeil 1982); equals
    ``sklearn.metrics.roc_auc_score``.
    """
    s = np.asarray(scores)
    _, a, _ = group_auc(s, labels, np.zeros(s.shape, dtype=np.int64))
    return float(a[0]) if a.size else float("nan")


def gauc(scores: AnyFloat, labels: npt.NDArray[np.bool_] | AnyInt, groups: AnyInt) -> float:
    """Group AUC: per-user AUC averaged with impression-count weights, over users with both
    classes: ``GAUC = sum_g n_g AUC_g / sum_g n_g``.

    Zhu et al. (2017), "Optimized cost per click in Taobao display advertising", KDD; Zhou et
    al. (2018), "Deep Interest Network", KDD, eq. (9). NaN when no group has both classes.
    """
    _, a, w = group_auc(scores, labels, groups)
    return float(np.dot(a, w) / w.sum()) if a.size else float("nan")


# ---------------------------------------------------------------- beyond accuracy
def tag_bitsets(offsets: AnyInt, tags: AnyInt, n_items: int) -> npt.NDArray[np.uint64]:
    """Pack each item's tag set into uint64 words: shape ``(n_items, ceil(n_tags / 64))``.

    ``tags[offsets[i]:offsets[i + 1]]`` are the tags of item ``i`` (CSR layout, shape
    ``(n_items + 1,)`` for ``offsets``). Tag ids are first re-numbered densely over the tags
    that occur, so the width depends only on the number of distinct tags used.
    """
    off = np.asarray(offsets, dtype=np.int64)
    if off.shape != (n_items + 1,):
        raise ValueError(f"offsets must have shape ({n_items + 1},), got {off.shape}")
    t = np.asarray(tags, dtype=np.int64)
    uniq, dense = np.unique(t, return_inverse=True)
    words = max(1, -(-uniq.size // 64))
    out = np.zeros((n_items, words), dtype=np.uint64)
    item = np.repeat(np.arange(n_items), np.diff(off))
    bit = np.left_shift(np.uint64(1), (dense % 64).astype(np.uint64))
    np.bitwise_or.at(out, (item, dense // 64), bit)
    return out


def _pair_mean(sim: F64, valid: Bool) -> F64:
    """Mean of ``sim[:, i, j]`` over pairs ``i < j`` of valid slots; NaN with < 2 valid."""
    k = sim.shape[1]
    upper = np.triu(np.ones((k, k), dtype=bool), 1)
    pair = valid[:, :, None] & valid[:, None, :] & upper
    n_pairs = pair.sum(axis=(1, 2))
    total = np.where(pair, sim, 0.0).sum(axis=(1, 2))
    return np.asarray(
        np.divide(total, n_pairs, out=np.full(total.shape, np.nan), where=n_pairs > 0)
    )


def ild_jaccard_at_k(topk: AnyInt, bitsets: npt.NDArray[np.uint64], k: int) -> F64:
    """Intra-list diversity by tag Jaccard distance, shape (n,):
    ``ILD@k = 1 - mean_{i<j} |T_i ∩ T_j| / |T_i ∪ T_j|`` over the pairs of the top k.

    Smyth & McClave (2001), "Similarity vs. diversity", ICCBR; Ziegler et al. (2005), "Improving
    recommendation lists through topic diversification", WWW. Two untagged items have
    similarity 0. NaN for lists with fewer than two items.
    """
    _check_k(topk, k)
    top = np.asarray(topk[:, :k], dtype=np.int64)
    out = np.empty(top.shape[0], dtype=np.float64)
    step = max(1, _PAIRWISE_BUDGET // (k * k * bitsets.shape[1]))
    for lo in range(0, top.shape[0], step):
        t = top[lo : lo + step]
        valid = t >= 0
        b = bitsets[np.where(valid, t, 0)]  # (u, k, W)
        size = np.bitwise_count(b).sum(axis=2, dtype=np.int64)  # (u, k)
        inter = np.bitwise_count(b[:, :, None, :] & b[:, None, :, :]).sum(axis=3, dtype=np.int64)
        union = size[:, :, None] + size[:, None, :] - inter
        sim = np.divide(inter, union, out=np.zeros(inter.shape), where=union > 0)
        out[lo : lo + t.shape[0]] = 1.0 - _pair_mean(sim, valid)
    return out


def ild_cosine_at_k(topk: AnyInt, embeddings: AnyFloat, k: int) -> F64:
    """Intra-list diversity by embedding cosine, shape (n,):
    ``ILD@k = 1 - mean_{i<j} cos(e_i, e_j)`` over the pairs of the top k.

    Ziegler et al. (2005); Vargas & Castells (2011), "Rank and relevance in novelty and
    diversity metrics", RecSys. Zero vectors have cosine 0 with everything. NaN for lists with
    fewer than two items.
    """
    _check_k(topk, k)
    e = np.asarray(embeddings, dtype=np.float64)
    norm = np.linalg.norm(e, axis=1, keepdims=True)
    unit = np.divide(e, norm, out=np.zeros_like(e), where=norm > 0)
    top = np.asarray(topk[:, :k], dtype=np.int64)
    out = np.empty(top.shape[0], dtype=np.float64)
    step = max(1, _PAIRWISE_BUDGET // max(1, k * max(k, e.shape[1])))
    for lo in range(0, top.shape[0], step):
        t = top[lo : lo + step]
        valid = t >= 0
        v = unit[np.where(valid, t, 0)]  # (u, k, d)
        sim = v @ v.transpose(0, 2, 1)  # (u, k, k)
        out[lo : lo + t.shape[0]] = 1.0 - _pair_mean(sim, valid)
    return out


def self_information(interaction_users: AnyInt | AnyFloat, n_users: int) -> F64:
    """Add-one smoothed self-information of each item, ``log2((U + 1) / (u_i + 1))``, shape
    (n_items,), where ``u_i`` = number of training users who interacted with item ``i`` and
    ``U`` = number of training users.

    Zhou et al. (2010), "Solving the apparent diversity-accuracy dilemma of recommender
    systems", PNAS 107(10) (novelty ``log2(U / k_i)``); the +1 keeps unseen items finite.
    """
    c = np.asarray(interaction_users, dtype=np.float64)
    return np.log2((n_users + 1.0) / (c + 1.0))


def mean_item_value_at_k(topk: AnyInt, values: AnyFloat, k: int) -> F64:
    """Mean of a per-item value over the non-empty slots of each top-k list, shape (n,).

    With ``values = self_information(...)`` this is novelty@k (mean self-information, Zhou et
    al. 2010); with ``values = popularity_percentile(...)`` it is the mean popularity
    percentile (popularity bias; cf. Abdollahpouri et al. 2019, "The unfairness of popularity
    bias in recommendation", whose ARP uses raw popularity). NaN for an empty list.
    """
    _check_k(topk, k)
    top = np.asarray(topk[:, :k], dtype=np.int64)
    valid = top >= 0
    v = np.where(valid, np.asarray(values, dtype=np.float64)[np.where(valid, top, 0)], 0.0)
    n = valid.sum(axis=1)
    return np.asarray(np.divide(v.sum(axis=1), n, out=np.full(n.shape, np.nan), where=n > 0))


def popularity_percentile(popularity: AnyFloat) -> F64:
    """Percentile of each item's popularity in the catalogue, shape (n_items,), in [0, 1]:
    ``(avg_rank_i - 1) / (n_items - 1)`` with tie-averaged ascending ranks (1 = most popular).
    """
    p = np.asarray(popularity, dtype=np.float64)
    n = p.size
    if n == 1:
        return np.full(1, 0.5)
    order = np.argsort(p, kind="stable")
    sp = p[order]
    new = np.ones(n, dtype=bool)
    new[1:] = sp[1:] != sp[:-1]
    start = np.flatnonzero(new)
    end = np.append(start[1:], n) - 1
    run = np.cumsum(new) - 1
    avg = ((start + end) / 2.0)[run]
    out = np.empty(n, dtype=np.float64)
    out[order] = avg / (n - 1)
    return out


def distinct_share_at_k(topk: AnyInt, group_of_item: AnyInt, k: int) -> F64:
    """Share of distinct groups (e.g. creators) in each top-k list: ``|{g(i)}| / |list|``,
    shape (n,); 1 = every item from a different creator. NaN for an empty list."""
    _check_k(topk, k)
    top = np.asarray(topk[:, :k], dtype=np.int64)
    valid = top >= 0
    g = np.where(valid, np.asarray(group_of_item, dtype=np.int64)[np.where(valid, top, 0)], -1)
    g.sort(axis=1)
    new = np.ones(g.shape, dtype=bool)
    new[:, 1:] = g[:, 1:] != g[:, :-1]
    distinct = (new & (g >= 0)).sum(axis=1)
    n = valid.sum(axis=1)
    return np.asarray(np.divide(distinct, n, out=np.full(n.shape, np.nan), where=n > 0))


def coverage(exposure: AnyFloat | AnyInt, n_eligible: int) -> float:
    """Catalogue coverage: share of eligible items that appear in at least one list,
    ``|∪_u L_u| / n_eligible`` (Ge, Delgado-Battenfeld & Jannach 2010, "Beyond accuracy",
    RecSys). ``exposure`` has shape (n_items,): times each item was recommended."""
    if n_eligible <= 0:
        return float("nan")
    return float(np.count_nonzero(np.asarray(exposure))) / float(n_eligible)


def gini(counts: AnyFloat | AnyInt) -> float:
    """Gini coefficient of a non-negative distribution, shape (n,), in [0, 1 - 1/n]:
    ``G = sum_i (2 i - n - 1) x_(i) / (n sum_i x_i)`` with ``x`` sorted ascending, ``i = 1..n``.

    Used for creator concentration of exposure, after Fleder & Hosanagar (2009), "Blockbuster
    culture's next rise or fall", Management Science 55(5). NaN when all counts are 0.
    """
    x = np.sort(np.asarray(counts, dtype=np.float64))
    n = x.size
    total = x.sum()
    if n == 0 or total <= 0:
        return float("nan")
    i = np.arange(1, n + 1, dtype=np.float64)
    return float(np.dot(2.0 * i - n - 1.0, x) / (n * total))


# ---------------------------------------------------------------- short-video feed statistics
def logged_feed_stats(
    skipped: npt.NDArray[np.float64],
    watch_ratio: npt.NDArray[np.float64],
    watch_time_s: npt.NDArray[np.float64],
    session_id: npt.NDArray[np.float64],
) -> dict[str, float]:
    """Feed statistics observed in a log of impressions (all shape (m,), NaN = unknown):
    skip rate (share of impressions skipped), mean watch ratio and watch time per impression,
    and mean session length (impressions per session). Each mean ignores unknown values; a
    statistic with no known value is NaN.
    """

    def _mean(a: npt.NDArray[np.float64]) -> float:
        known = a[~np.isnan(a)]
        return float(known.mean()) if known.size else float("nan")

    sess = session_id[~np.isnan(session_id)]
    n_sess = np.unique(sess).size
    return {
        "skip_rate": _mean(skipped),
        "watch_ratio": _mean(watch_ratio),
        "watch_time_s": _mean(watch_time_s),
        "session_length": float(sess.size / n_sess) if n_sess else float("nan"),
        "impressions": float(skipped.size),
    }
