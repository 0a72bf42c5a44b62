"""Diversity re-ranking: MMR, greedy DPP MAP inference, creator/topic caps (pure numpy).

All selectors take the ranked candidates' relevance ``r`` (n,), a similarity matrix ``sim``
(n, n) with values in [0, 1] and ``sim_ii = 1``, and return the indices of the chosen ``k``
items in page order. Caps restrict every greedy step to items whose creator and topic have not
yet reached their per-page limit, counting what the session already served (look-back).
:func:`rerank_similarity` builds the similarity a ``RerankConfig`` asks for: tag Jaccard, or
(default) :func:`content_similarity`, a PSD mix of tag Jaccard, same topic and same creator.

* MMR (Carbonell & Goldstein, SIGIR 1998): pick ``argmax lambda r_i - (1 - lambda) max_{j in
  P} sim_ij`` over the not-yet-picked items, ``P`` the page so far.
* DPP (Chen, Zhang & Zhou, "Fast Greedy MAP Inference for Determinantal Point Process to
  Improve Recommendation Diversity", NeurIPS 2018, Algorithm 1): kernel
  ``L = diag(q) S diag(q)``, ``q_i = exp(alpha r_i)``, ``alpha = theta / (2 (1 - theta))``
  (section 4), with ``r`` min-max scaled to [0, 1]; each step adds the item with the largest
  marginal gain in ``log det L_P``, maintained by an incremental Cholesky factor in O(n k)
  per step (O(n k^2) in all).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from shortrec.config import RerankConfig
from shortrec.schema import BadInput

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


class RerankInputError(BadInput):
    """Inputs of a re-ranker with inconsistent shapes or invalid values (names the field)."""


# ---------------------------------------------------------------- similarity
#: Parts of :func:`content_similarity`, the keys of ``RerankConfig.similarity_weights``.
SIMILARITY_PARTS = ("tag", "topic", "creator")


def tag_jaccard(tags: npt.NDArray[np.integer]) -> F64:
    """Jaccard similarity of tag sets: ``tags`` (n, T) with ``-1`` padding -> (n, n).

    A repeated tag counts once; the diagonal is 1 (an item is identical to itself, tagged or
    not), two untagged items have similarity 0. Positive semi-definite (the Tanimoto kernel on
    binary vectors; Gower 1971). The intersections are counted from the pairs of items sharing
    each tag, O(n T log(n T) + sum_tag m_tag^2 + n^2) for ``m_tag`` items carrying a tag: no
    dense matrix product, whose BLAS threads make the request path's latency erratic on a busy
    machine.
    """
    t = np.asarray(tags)
    if t.ndim != 2:
        raise RerankInputError(f"tags: expected shape (n, T), got {t.shape}")
    n = t.shape[0]
    srt = np.sort(t, axis=1)  # (n, T) repeats side by side, padding first
    keep = srt >= 0
    keep[:, 1:] &= srt[:, 1:] != srt[:, :-1]  # a repeated tag counts once
    cnt = keep.sum(axis=1)  # (n,) distinct tags
    order = np.argsort(srt[keep], kind="stable")
    item = np.repeat(np.arange(n), cnt)[order]  # (E,) one entry per (item, tag), by tag
    tag = srt[keep][order]  # (E,)
    # entries with equal tags form runs: pair every entry with each entry of its run
    start = np.flatnonzero(np.r_[True, tag[1:] != tag[:-1]])  # (G,) run starts
    size = np.diff(np.r_[start, tag.shape[0]])  # (G,)
    run = np.repeat(np.arange(start.shape[0]), size)  # (E,) run of each entry
    m = size[run]  # (E,)
    left = np.repeat(np.arange(tag.shape[0]), m)  # (P,) P = sum of squared run sizes
    right = start[run[left]] + np.arange(left.shape[0]) - np.repeat(np.cumsum(m) - m, m)
    pairs = item[left] * n + item[right]  # (P,) flat (i, j)
    inter = np.bincount(pairs, minlength=n * n).reshape(n, n).astype(np.float64)
    union = (cnt[:, None] + cnt[None, :]).astype(np.float64) - inter
    sim: F64 = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    np.fill_diagonal(sim, 1.0)
    return sim


def same_group(groups: npt.NDArray[np.integer]) -> F64:
    """1 where two items share a known group (creator, topic), else 0: (n,) -> (n, n).

    Unknown (``-1``) never matches another item; the diagonal is 1. Positive semi-definite:
    a block-diagonal matrix of all-ones blocks, up to a permutation.
    """
    same: F64 = _same_mask(groups).astype(np.float64)
    return same


def _same_mask(groups: npt.NDArray[np.integer]) -> npt.NDArray[np.bool_]:
    """(n, n) boolean form of :func:`same_group`."""
    g = np.asarray(groups)
    if g.ndim != 1:
        raise RerankInputError(f"groups: expected shape (n,), got {g.shape}")
    same: npt.NDArray[np.bool_] = (g[:, None] == g[None, :]) & (g >= 0)[:, None]  # (n, n)
    np.fill_diagonal(same, True)
    return same


def content_similarity(
    tags: npt.NDArray[np.integer],
    creators: npt.NDArray[np.integer],
    topics: npt.NDArray[np.integer],
    weights: Mapping[str, float],
) -> F64:
    """Content similarity (n, n): ``w_tag J + w_topic [same topic] + w_creator [same creator]``.

    ``tags`` (n, T) with ``-1`` padding, ``creators`` / ``topics`` (n,) with ``-1`` for
    unknown (never matches); ``weights`` by part (:data:`SIMILARITY_PARTS`, missing parts weigh
    0) are normalised to sum 1, so values lie in [0, 1] and the diagonal is 1. A convex
    combination of PSD matrices, hence PSD: a valid DPP kernel.
    """
    w = {p: float(weights.get(p, 0.0)) for p in SIMILARITY_PARTS}
    unknown = sorted(set(weights) - set(SIMILARITY_PARTS))
    total = sum(w.values())
    if unknown or any(not 0 <= v < np.inf for v in w.values()) or not total > 0:
        raise RerankInputError(
            f"weights: expected finite values >= 0 for {SIMILARITY_PARTS} with a positive sum,"
            f" got {dict(weights)}"
        )
    n = np.asarray(tags).shape[0]
    for name, arr in (("creators", creators), ("topics", topics)):
        if np.shape(arr) != (n,):
            raise RerankInputError(f"{name}: shape {np.shape(arr)}, expected ({n},)")
    # in place, adding the indicators' weights under boolean masks: no (n, n) float
    # temporaries, which matter at n = 200 on the request path
    sim = tag_jaccard(tags) if w["tag"] > 0 else np.zeros((n, n))
    sim *= w["tag"] / total
    for part, groups in (("topic", topics), ("creator", creators)):
        if w[part] > 0:
            np.add(sim, w[part] / total, out=sim, where=_same_mask(groups))
    np.fill_diagonal(sim, 1.0)  # exactly 1 despite rounding in the weights
    return sim


def rerank_similarity(
    config: RerankConfig,
    tags: npt.NDArray[np.integer],
    creators: npt.NDArray[np.integer],
    topics: npt.NDArray[np.integer],
) -> F64:
    """The candidate similarity ``config.similarity`` asks for (n, n); inputs as for
    :func:`content_similarity`."""
    if config.similarity == "tags":
        return tag_jaccard(tags)
    return content_similarity(tags, creators, topics, config.similarity_weights)


def cosine_similarity(emb: npt.NDArray[np.floating]) -> F64:
    """Cosine similarity of embeddings (n, d), clipped to [0, 1], diagonal 1 -> (n, n)."""
    e = np.asarray(emb, np.float64)
    if e.ndim != 2:
        raise RerankInputError(f"embeddings: expected shape (n, d), got {e.shape}")
    z = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    sim: F64 = np.clip(z @ z.T, 0.0, 1.0)
    np.fill_diagonal(sim, 1.0)
    return sim


# ---------------------------------------------------------------- caps
@dataclass
class Caps:
    """Per-page caps on creator and topic repetition with session look-back.

    ``creators`` / ``topics`` (n,) per candidate (``-1``: unknown, never capped); the counts
    start from the session's last ``lookback`` served items (``served_creators`` /
    ``served_topics``, oldest first), so a creator the user just saw twice is already at a cap
    of 2 on the next page. Count picks with :meth:`add` (it keeps the mask of
    :meth:`allowed` up to date instead of recomputing it at every step).
    """

    creators: I64
    topics: I64
    max_per_creator: int | None
    max_per_topic: int | None
    creator_count: Counter[int] = field(default_factory=Counter)
    topic_count: Counter[int] = field(default_factory=Counter)
    # (n,) allowed mask, built on first use from the counts and kept up to date by ``add``
    _ok: npt.NDArray[np.bool_] | None = field(default=None, init=False, repr=False, compare=False)

    @staticmethod
    def build(
        creators: npt.NDArray[np.integer] | None,
        topics: npt.NDArray[np.integer] | None,
        n: int,
        config: RerankConfig,
        served_creators: Sequence[int] = (),
        served_topics: Sequence[int] = (),
    ) -> Caps:
        c = np.full(n, -1, np.int64) if creators is None else np.asarray(creators, np.int64)
        t = np.full(n, -1, np.int64) if topics is None else np.asarray(topics, np.int64)
        for name, arr in (("creators", c), ("topics", t)):
            if arr.shape != (n,):
                raise RerankInputError(f"{name}: shape {arr.shape}, expected ({n},)")
        look = config.lookback
        sc = list(served_creators)[-look:] if look else []
        st = list(served_topics)[-look:] if look else []
        return Caps(
            c,
            t,
            config.max_per_creator,
            config.max_per_topic,
            Counter(int(x) for x in sc if x >= 0),
            Counter(int(x) for x in st if x >= 0),
        )

    def allowed(self) -> npt.NDArray[np.bool_]:
        """(n,) True where adding the item keeps both caps (read-only; updated by ``add``)."""
        if self._ok is None:
            ok = np.ones(self.creators.shape[0], bool)
            for arr, cap, count in (
                (self.creators, self.max_per_creator, self.creator_count),
                (self.topics, self.max_per_topic, self.topic_count),
            ):
                if cap is None:
                    continue
                full = [k for k, v in count.items() if v >= cap]
                if full:
                    ok &= ~np.isin(arr, full)
            ok.flags.writeable = False
            self._ok = ok
        return self._ok

    def add(self, i: int) -> None:
        c, t = int(self.creators[i]), int(self.topics[i])
        if c >= 0:
            self.creator_count[c] += 1
            self._block(self.creators, c, self.creator_count[c], self.max_per_creator)
        if t >= 0:
            self.topic_count[t] += 1
            self._block(self.topics, t, self.topic_count[t], self.max_per_topic)

    def _block(self, arr: I64, key: int, count: int, cap: int | None) -> None:
        # counts only grow: a key is blocked from the moment its count reaches the cap
        if self._ok is not None and cap is not None and count >= cap:
            ok = self._ok & (arr != key)
            ok.flags.writeable = False
            self._ok = ok


def _check(
    relevance: npt.NDArray[np.floating],
    sim: npt.NDArray[np.floating],
    k: int,
) -> tuple[F64, F64, int]:
    r = np.asarray(relevance, np.float64)
    s = np.asarray(sim, np.float64)
    n = r.shape[0]
    if r.ndim != 1:
        raise RerankInputError(f"relevance: expected shape (n,), got {r.shape}")
    if s.shape != (n, n):
        raise RerankInputError(f"sim: shape {s.shape}, expected ({n}, {n})")
    if not np.all(np.isfinite(r)):
        raise RerankInputError("relevance: non-finite values")
    if k < 0:
        raise RerankInputError(f"k: must be >= 0, got {k}")
    return r, s, min(k, n)


def _pick(gain: F64, avail: npt.NDArray[np.bool_], caps: Caps | None) -> int:
    """Best available item by ``gain`` among those that keep the caps; when the caps exclude
    every available item, the best available item (caps are best-effort so a page is always
    full)."""
    g = np.where(avail, gain, -np.inf)
    if caps is not None:
        capped = np.where(caps.allowed(), g, -np.inf)
        if np.isfinite(capped).any():
            return int(np.argmax(capped))
    return int(np.argmax(g))


# ---------------------------------------------------------------- selectors
def mmr(
    relevance: npt.NDArray[np.floating],
    sim: npt.NDArray[np.floating],
    k: int,
    trade_off: float,
    caps: Caps | None = None,
) -> I64:
    """Maximal Marginal Relevance: ``k`` indices in page order.

    ``trade_off`` = lambda in [0, 1]: 1 is pure relevance order, 0 pure dissimilarity.
    """
    r, s, k = _check(relevance, sim, k)
    n = r.shape[0]
    avail = np.ones(n, bool)  # (n,) not picked yet
    max_sim = np.zeros(n)  # (n,) max similarity to the page so far
    out = np.empty(k, np.int64)
    for step in range(k):
        gain = trade_off * r - (1.0 - trade_off) * max_sim
        i = _pick(gain, avail, caps)
        out[step] = i
        avail[i] = False
        np.maximum(max_sim, s[i], out=max_sim)
        if caps is not None:
            caps.add(i)
    return out


def dpp_greedy(
    relevance: npt.NDArray[np.floating],
    sim: npt.NDArray[np.floating],
    k: int,
    trade_off: float,
    epsilon: float = 1e-6,
    caps: Caps | None = None,
) -> I64:
    """Greedy MAP inference of a DPP (Chen et al. 2018, Algorithm 1): ``k`` indices.

    ``trade_off`` = theta in [0, 1] (1: relevance order; 0: quality ignored). When the
    remaining marginal gain ``d_i^2`` of every item falls below ``epsilon`` (the page so far
    spans the similarity space), the rest of the page is filled in relevance order.
    """
    r, s, k = _check(relevance, sim, k)
    n = r.shape[0]
    out = np.empty(k, np.int64)
    avail = np.ones(n, bool)  # (n,) not picked yet
    if trade_off >= 1.0 or n == 0:
        return _fill(avail, out, 0, caps, r)
    span = r.max() - r.min()
    rn = (r - r.min()) / span if span > 0 else np.zeros(n)
    alpha = trade_off / (2.0 * (1.0 - trade_off))
    q = np.exp(alpha * rn)  # (n,) quality
    kernel = q[:, None] * s * q[None, :]  # (n, n) L = diag(q) S diag(q)
    d2 = np.diag(kernel).copy()  # (n,) marginal gains d_i^2 (-inf once picked)
    cis = np.zeros((k, n))  # incremental Cholesky rows
    log_d2 = np.empty(n)
    # score of an item without gain: below every gain while available, -inf once picked
    floor = np.full(n, -1e300)
    for step in range(k):
        # gain log d_i^2 where d_i^2 > epsilon; picked items never have one (d2 = -inf)
        np.log(np.maximum(d2, epsilon, out=log_d2), out=log_d2)
        has_gain = (d2 > epsilon) & np.isfinite(log_d2)  # (n,)
        if not has_gain.any():
            return _fill(avail, out, step, caps, r)
        gain = np.where(has_gain, log_d2, floor)
        if caps is not None:
            # capped-out items must not be picked while an allowed item is available
            ok = caps.allowed() & avail
            if ok.any():
                gain = np.where(ok, gain, -np.inf)
        j = int(np.argmax(gain))
        out[step] = j
        avail[j] = False
        floor[j] = -np.inf
        if caps is not None:
            caps.add(j)
        if d2[j] > epsilon:
            e = (kernel[j] - cis[:step, j] @ cis[:step]) / np.sqrt(d2[j])  # (n,)
            cis[step] = e
            d2 -= e * e
        # else: chosen for the caps without gain; it leaves the Cholesky factor unchanged
        d2[j] = -np.inf
    return out


def _fill(avail: npt.NDArray[np.bool_], out: I64, start: int, caps: Caps | None, r: F64) -> I64:
    """Fill ``out[start:]`` with available items in relevance order, honouring caps if
    possible (``avail`` is updated)."""
    for step in range(start, out.shape[0]):
        i = _pick(r, avail, caps)
        out[step] = i
        avail[i] = False
        if caps is not None:
            caps.add(i)
    return out


def rerank(
    relevance: npt.NDArray[np.floating],
    sim: npt.NDArray[np.floating],
    config: RerankConfig,
    creators: npt.NDArray[np.integer] | None = None,
    topics: npt.NDArray[np.integer] | None = None,
    served_creators: Sequence[int] = (),
    served_topics: Sequence[int] = (),
) -> I64:
    """Re-rank candidates with ``config.method`` and caps; returns ``config.k`` indices in
    ``config.page_order``."""
    n = int(np.asarray(relevance).shape[0])
    caps = Caps.build(creators, topics, n, config, served_creators, served_topics)
    if config.method == "mmr":
        page = mmr(relevance, sim, config.k, config.trade_off, caps)
    elif config.method == "dpp":
        page = dpp_greedy(relevance, sim, config.k, config.trade_off, config.dpp_epsilon, caps)
    else:
        r, _, k = _check(relevance, sim, config.k)
        page = _fill(np.ones(n, bool), np.empty(k, np.int64), 0, caps, r)
    if config.page_order == "relevance":
        r = np.asarray(relevance, np.float64)
        for s in range(0, page.shape[0], config.page_size):
            block = page[s : s + config.page_size]  # a view: sorted in place
            block[:] = block[np.argsort(-r[block], kind="stable")]  # ties keep pick order
    return page
