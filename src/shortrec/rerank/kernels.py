"""Compiled (numba) kernels of the request path's re-ranking: candidate similarity.

The NumPy forms in :mod:`shortrec.rerank.diversify` build a pool's similarity from a dozen
array operations, each a few microseconds of call overhead at the pool sizes serving uses
(tens of candidates). These kernels compute the same values, in the same floating-point
order, in one pass over the pairs; :func:`shortrec.rerank.diversify.content_similarity` and
:func:`~shortrec.rerank.diversify.tag_jaccard` call them after validating their inputs.
"""

from __future__ import annotations

import numba
import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


@numba.njit(cache=True, nogil=True)
def _distinct_sorted(tags: I64) -> tuple[I64, I64]:
    """Each row's distinct tags (``-1`` padding dropped), sorted: ``(values (n, T), count (n,))``
    with each row's first ``count`` entries used."""
    n, t = tags.shape
    out = np.empty((n, t), np.int64)
    cnt = np.zeros(n, np.int64)
    for i in range(n):
        row = np.sort(tags[i])
        c = 0
        for x in row:
            if x >= 0 and (c == 0 or out[i, c - 1] != x):
                out[i, c] = x
                c += 1
        cnt[i] = c
    return out, cnt


@numba.njit(cache=True, nogil=True)
def tag_jaccard_kernel(tags: I64) -> F64:
    """Jaccard similarity of tag sets, ``tags`` (n, T) int64 with ``-1`` padding -> (n, n):
    a repeated tag counts once, two untagged items have 0, the diagonal is 1. Intersections
    are counted per tag over the items carrying it (O(n T log(n T) + sum_tag m_tag^2 + n^2)
    for ``m_tag`` items with a tag), then divided by the unions."""
    n = tags.shape[0]
    vals, cnt = _distinct_sorted(tags)
    e = int(cnt.sum())
    tag_of = np.empty(e, np.int64)
    item_of = np.empty(e, np.int64)
    x = 0
    for i in range(n):
        for a in range(cnt[i]):
            tag_of[x] = vals[i, a]
            item_of[x] = i
            x += 1
    order = np.argsort(tag_of)
    inter = np.zeros((n, n))
    start = 0
    while start < e:  # each run of one tag: every ordered pair of its items shares it
        stop = start + 1
        while stop < e and tag_of[order[stop]] == tag_of[order[start]]:
            stop += 1
        for a in range(start, stop):
            for b in range(start, stop):
                if a != b:
                    inter[item_of[order[a]], item_of[order[b]]] += 1.0
        start = stop
    for i in range(n):
        for j in range(n):
            union = cnt[i] + cnt[j] - inter[i, j]
            inter[i, j] = inter[i, j] / union if union > 0 else 0.0
        inter[i, i] = 1.0
    return inter


@numba.njit(cache=True, nogil=True)
def content_similarity_kernel(
    tags: I64, creators: I64, topics: I64, w_tag: float, w_topic: float, w_creator: float
) -> F64:
    """``w_tag J + w_topic [same topic] + w_creator [same creator]`` with weights already
    normalised: the Jaccard term first, then the topic term, then the creator term (the
    order :func:`~shortrec.rerank.diversify.content_similarity` adds them in); unknown
    (``-1``) groups never match; the diagonal is 1."""
    n = tags.shape[0]
    sim = tag_jaccard_kernel(tags) if w_tag > 0 else np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            v = sim[i, j] * w_tag
            if w_topic > 0 and topics[i] >= 0 and topics[i] == topics[j]:
                v = v + w_topic
            if w_creator > 0 and creators[i] >= 0 and creators[i] == creators[j]:
                v = v + w_creator
            sim[i, j] = v
        sim[i, i] = 1.0
    return sim


@numba.njit(cache=True, nogil=True)
def _allowed(i: int, cg: I64, c_count: I64, c_cap: int, tg: I64, t_count: I64, t_cap: int) -> bool:
    """Whether adding item ``i`` keeps both caps (a cap < 0 is no cap; group -1 never
    counts)."""
    if c_cap >= 0 and cg[i] >= 0 and c_count[cg[i]] >= c_cap:
        return False
    return not (t_cap >= 0 and tg[i] >= 0 and t_count[tg[i]] >= t_cap)


@numba.njit(cache=True, nogil=True)
def _take(i: int, cg: I64, c_count: I64, tg: I64, t_count: I64) -> None:
    if cg[i] >= 0:
        c_count[cg[i]] += 1
    if tg[i] >= 0:
        t_count[tg[i]] += 1


@numba.njit(cache=True, nogil=True)
def dpp_greedy_kernel(
    kernel: F64,
    relevance: F64,
    k: int,
    epsilon: float,
    greedy: bool,
    cg: I64,
    c_count: I64,
    c_cap: int,
    tg: I64,
    t_count: I64,
    t_cap: int,
) -> I64:
    """Greedy MAP inference of the DPP with kernel ``L`` = ``kernel`` (n, n) (Chen et al.
    2018, Algorithm 1) under caps: ``k`` indices in pick order.

    ``cg`` / ``tg`` (n,) each item's creator / topic group (``-1``: never capped), ``c_count``
    / ``t_count`` the groups' counts so far (updated in place), ``c_cap`` / ``t_cap`` the
    caps (``-1``: none). An item is picked by largest ``log d_i^2`` among the available items
    that keep the caps (when none does, among all available: caps are best-effort); items
    without gain (``d_i^2 <= epsilon``) rank below every gain, first index first. Once no item
    has gain, or with ``greedy`` False, the rest of the page is filled by ``relevance``.
    """
    n = relevance.shape[0]
    out = np.empty(k, np.int64)
    avail = np.ones(n, np.bool_)
    d2 = np.empty(n)
    for i in range(n):
        d2[i] = kernel[i, i]
    cis = np.zeros((k, n))
    gain = np.empty(n)
    step = 0
    while greedy and step < k:
        any_gain = False
        for i in range(n):
            # items without gain rank below every gain; picked items are never available
            gain[i] = np.log(d2[i]) if d2[i] > epsilon else -1e300
            any_gain |= avail[i] and d2[i] > epsilon and np.isfinite(gain[i])
        if not any_gain:
            break
        j = _pick(gain, avail, out, step, cg, c_count, c_cap, tg, t_count, t_cap)
        if d2[j] > epsilon:  # one more row of the incremental Cholesky factor
            norm = np.sqrt(d2[j])
            for c in range(n):
                acc = 0.0
                for t in range(step):
                    acc += cis[t, j] * cis[t, c]
                e = (kernel[j, c] - acc) / norm
                cis[step, c] = e
                d2[c] -= e * e
        d2[j] = -np.inf
        step += 1
    while step < k:  # relevance order, honouring the caps where possible
        _pick(relevance, avail, out, step, cg, c_count, c_cap, tg, t_count, t_cap)
        step += 1
    return out


@numba.njit(cache=True, nogil=True)
def _pick(
    gain: F64,
    avail: npt.NDArray[np.bool_],
    out: I64,
    step: int,
    cg: I64,
    c_count: I64,
    c_cap: int,
    tg: I64,
    t_count: I64,
    t_cap: int,
) -> int:
    """Pick the available item of largest ``gain`` (first index among equals) among those
    that keep the caps, or among all available ones when none does (caps are best-effort):
    it becomes ``out[step]``, unavailable, and counts towards its groups' caps."""
    n = gain.shape[0]
    any_ok = False
    for i in range(n):
        if avail[i] and _allowed(i, cg, c_count, c_cap, tg, t_count, t_cap):
            any_ok = True
            break
    best, j = -np.inf, -1
    for i in range(n):
        if not avail[i] or (any_ok and not _allowed(i, cg, c_count, c_cap, tg, t_count, t_cap)):
            continue
        if j < 0 or gain[i] > best:
            best, j = gain[i], i
    out[step] = j
    avail[j] = False
    _take(j, cg, c_count, tg, t_count)
    return j


@numba.njit(cache=True, nogil=True)
def calibrated_kernel(
    relevance: F64,
    topics: I64,
    user_topics: F64,
    k: int,
    trade_off: float,
    alpha: float,
    cg: I64,
    c_count: I64,
    c_cap: int,
    tg: I64,
    t_count: I64,
    t_cap: int,
) -> I64:
    """Greedy calibrated re-ranking (Steck 2018) under caps, inputs as validated by
    :func:`shortrec.rerank.diversify.calibrated` (``user_topics`` normalised), caps as in
    :func:`dpp_greedy_kernel`: ``k`` indices in pick order."""
    n = relevance.shape[0]
    n_t = user_topics.shape[0]
    out = np.empty(k, np.int64)
    avail = np.ones(n, np.bool_)
    count = np.zeros(n_t)
    lp = np.zeros(n_t)
    for x in range(n_t):
        if user_topics[x] > 0:
            lp[x] = np.log(user_topics[x])
    stay = np.empty(n_t)
    grow = np.empty(n_t)
    gain = np.empty(n)
    for step in range(k):
        if trade_off >= 1.0:
            for i in range(n):
                gain[i] = relevance[i]
        else:
            m = step + 1.0  # page size after this pick
            base = 0.0
            for x in range(n_t):  # each topic's KL term if the new item is / is not of it
                p = user_topics[x]
                if p > 0:
                    q0 = (1.0 - alpha) * (count[x] / m) + alpha * p
                    q1 = (1.0 - alpha) * ((count[x] + 1.0) / m) + alpha * p
                    stay[x] = p * (lp[x] - np.log(q0))
                    grow[x] = p * (lp[x] - np.log(q1))
                else:
                    stay[x] = 0.0
                    grow[x] = 0.0
                base += stay[x]
            for i in range(n):
                kl = base
                if topics[i] >= 0:
                    kl = base - stay[topics[i]] + grow[topics[i]]
                gain[i] = trade_off * relevance[i] - (1.0 - trade_off) * kl
        j = _pick(gain, avail, out, step, cg, c_count, c_cap, tg, t_count, t_cap)
        if topics[j] >= 0:
            count[topics[j]] += 1.0
    return out
