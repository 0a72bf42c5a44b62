"""Diversity re-ranking: MMR, greedy DPP MAP inference, calibrated re-ranking to the user's
topics, creator/topic caps (pure numpy).

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
* Calibrated re-ranking (Steck, "Calibrated Recommendations", RecSys 2018): pick greedily
  ``argmax trade_off r_i - (1 - trade_off) KL(p || q~(P + i))``, ``p`` the user's topic
  distribution (:func:`user_topic_distribution`), ``q~`` the page's, mixed with ``alpha p``.
  Diversity is spent where the user's history has it: a one-topic user keeps a one-topic page,
  a three-topic user gets the three. :func:`rerank` uses it when the caller passes ``p``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from shortrec.config import RerankConfig
from shortrec.rerank.kernels import (
    calibrated_kernel,
    content_similarity_kernel,
    dpp_greedy_kernel,
    tag_jaccard_kernel,
)
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
    binary vectors; Gower 1971). Compiled (``kernels.tag_jaccard_kernel``): a merge walk of
    the two sorted tag sets per pair, O(n^2 T), no dense matrix product (whose BLAS threads
    make the request path's latency erratic on a busy machine) and no per-call NumPy overhead.
    """
    t = np.asarray(tags)
    if t.ndim != 2:
        raise RerankInputError(f"tags: expected shape (n, T), got {t.shape}")
    return tag_jaccard_kernel(np.ascontiguousarray(t, np.int64))


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
    t = np.asarray(tags)
    if t.ndim != 2:
        raise RerankInputError(f"tags: expected shape (n, T), got {t.shape}")
    # compiled: one pass over the pairs, the terms added in the order of the formula
    return content_similarity_kernel(
        np.ascontiguousarray(t, np.int64),
        np.ascontiguousarray(creators, np.int64),
        np.ascontiguousarray(topics, np.int64),
        w["tag"] / total,
        w["topic"] / total,
        w["creator"] / total,
    )


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

    def arrays(self) -> tuple[I64, I64, int, I64, I64, int]:
        """The caps as the compiled selectors take them: per kind (creator, then topic) each
        item's group (``-1``: unknown, never capped), the groups' counts so far (a fresh array
        the selector updates) and the cap (``-1``: none)."""
        out: list[I64 | int] = []
        for arr, cap, count in (
            (self.creators, self.max_per_creator, self.creator_count),
            (self.topics, self.max_per_topic, self.topic_count),
        ):
            known = arr >= 0
            keys, inv = np.unique(arr[known], return_inverse=True)
            group = np.full(arr.shape[0], -1, np.int64)
            group[known] = inv
            out += [group, np.array([count.get(int(k), 0) for k in keys], np.int64)]
            out.append(-1 if cap is None else int(cap))
        cg, cc, ccap, tg, tc, tcap = out
        return cg, cc, ccap, tg, tc, tcap  # type: ignore[return-value]

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
    kernel = np.zeros((n, n))
    greedy = trade_off < 1.0 and n > 0
    if greedy:
        span = r.max() - r.min()
        rn = (r - r.min()) / span if span > 0 else np.zeros(n)
        alpha = trade_off / (2.0 * (1.0 - trade_off))
        q = np.exp(alpha * rn)  # (n,) quality
        kernel = q[:, None] * s * q[None, :]  # (n, n) L = diag(q) S diag(q)
    # the greedy loop compiled (kernels.dpp_greedy_kernel): k steps of O(n k) each
    return dpp_greedy_kernel(kernel, r, k, epsilon, greedy, *_cap_arrays(caps, n))


def _cap_arrays(caps: Caps | None, n: int) -> tuple[I64, I64, int, I64, I64, int]:
    """``caps.arrays()``, or no caps for ``n`` items."""
    if caps is not None:
        return caps.arrays()
    none = np.full(n, -1, np.int64)
    return none, np.zeros(0, np.int64), -1, none, np.zeros(0, np.int64), -1


def calibrated(
    relevance: npt.NDArray[np.floating],
    topics: npt.NDArray[np.integer],
    user_topics: npt.NDArray[np.floating],
    k: int,
    trade_off: float,
    alpha: float = 0.01,
    caps: Caps | None = None,
) -> I64:
    """Calibrated re-ranking (Steck, "Calibrated Recommendations", RecSys 2018): ``k`` indices.

    Greedily maximises ``trade_off * sum_{i in P} r_i - (1 - trade_off) * KL(p || q~(P))``
    over the page ``P``, one item at a time (the paper's greedy maximisation),
    where ``p`` (T,) is the user's topic distribution (``user_topics``, e.g. from
    :func:`user_topic_distribution`; any non-negative weights, normalised here),
    ``q(P)_t = |{i in P: topics_i = t}| / |P|`` the page's, and ``q~ = (1 - alpha) q + alpha p``
    keeps the divergence finite (Steck's ``alpha``, 0.01 there). The page thus shows the
    user's topics in about the proportions of their history: a user with one topic gets a
    page of that topic, one with three topics a page of the three. ``trade_off`` = 1 is the
    relevance order; an item of unknown topic (``-1``) counts in ``|P|`` but in no topic.
    ``relevance`` (n,), ``topics`` (n,) with values in ``[-1, T)``.
    """
    r, t, p = _check_calibration(relevance, topics, user_topics, alpha)
    if k < 0:
        raise RerankInputError(f"k: must be >= 0, got {k}")
    n = r.shape[0]
    # compiled (kernels.calibrated_kernel): per step each topic's KL term with and without the
    # new item, then every item's gain from its topic's two terms, O(k (n + T))
    return calibrated_kernel(r, t, p, min(k, n), trade_off, alpha, *_cap_arrays(caps, n))


def _check_calibration(
    relevance: npt.NDArray[np.floating],
    topics: npt.NDArray[np.integer],
    user_topics: npt.NDArray[np.floating],
    alpha: float,
) -> tuple[F64, I64, F64]:
    """Validated (relevance, topics, normalised user topic distribution); names the field."""
    r = np.asarray(relevance, np.float64)
    if r.ndim != 1:
        raise RerankInputError(f"relevance: expected shape (n,), got {r.shape}")
    if not np.all(np.isfinite(r)):
        raise RerankInputError("relevance: non-finite values")
    t = np.asarray(topics)
    if t.shape != r.shape or not np.issubdtype(t.dtype, np.integer):
        raise RerankInputError(f"topics: expected integer shape {r.shape}, got {t.dtype} {t.shape}")
    p = np.asarray(user_topics, np.float64)
    if p.ndim != 1 or p.shape[0] == 0:
        raise RerankInputError(f"user_topics: expected shape (T,) with T >= 1, got {p.shape}")
    if not np.all(np.isfinite(p)) or (p < 0).any() or not p.sum() > 0:
        raise RerankInputError("user_topics: expected finite weights >= 0 with a positive sum")
    if t.size and (t.min() < -1 or t.max() >= p.shape[0]):
        raise RerankInputError(
            f"topics: values must lie in [-1, {p.shape[0]}) (the length of user_topics)"
        )
    if not 0.0 < alpha <= 1.0:
        raise RerankInputError(f"alpha: must lie in (0, 1], got {alpha}")
    return r, t.astype(np.int64), p / p.sum()


def user_topic_distribution(
    topics: npt.NDArray[np.integer],
    n_topics: int,
    weights: npt.NDArray[np.floating] | None = None,
    prior: float = 1.0,
) -> F64:
    """A user's topic distribution (n_topics,) from the topics of their history's videos.

    ``topics`` (m,) of the history (``-1``: unknown, ignored), ``weights`` (m,) >= 0 per event
    (default 1; e.g. 1 for an engaged view and 0 for a skip), ``prior`` pseudo-events spread
    evenly over the topics (additive smoothing): ``p_t = (c_t + prior / T) / (sum c + prior)``.
    An empty history gives the uniform distribution (``prior`` > 0) or raises.
    """
    t = np.asarray(topics)
    if t.ndim != 1 or not np.issubdtype(t.dtype, np.integer):
        raise RerankInputError(f"topics: expected an integer array (m,), got {t.dtype} {t.shape}")
    if n_topics < 1:
        raise RerankInputError(f"n_topics: must be >= 1, got {n_topics}")
    if t.size and t.max() >= n_topics:
        raise RerankInputError(f"topics: values must be < n_topics = {n_topics}")
    w = np.ones(t.shape[0]) if weights is None else np.asarray(weights, np.float64)
    if w.shape != t.shape or not np.all(np.isfinite(w)) or (w < 0).any():
        raise RerankInputError(f"weights: expected finite values >= 0 of shape {t.shape}")
    if not 0.0 <= prior < np.inf:
        raise RerankInputError(f"prior: must be finite and >= 0, got {prior}")
    ok = t >= 0
    count = np.bincount(t[ok], weights=w[ok], minlength=n_topics)  # (T,)
    total = count.sum() + prior
    if not total > 0:
        raise RerankInputError("topics: no weighted history and prior 0: no distribution")
    p: F64 = (count + prior / n_topics) / total
    return p


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
    user_topics: npt.NDArray[np.floating] | None = None,
) -> I64:
    """Re-rank candidates with ``config.method`` and caps; returns ``config.k`` indices in
    ``config.page_order``.

    ``user_topics`` (T,): the user's topic distribution (:func:`user_topic_distribution`).
    When it is given, ``config.personalise`` is ``"calibrated"`` and ``config.method`` is not
    ``"none"``, :func:`calibrated` chooses the page instead of ``config.method`` (``topics``
    then required, values in ``[-1, T)``) and the ``"relevance"`` page order sorts by
    ``r_i + config.topic_affinity * log p(topic_i)`` (unknown topic: ``log(1 / T)``): the
    user's topics rank first within each page. Without it the result is what it always was.
    ``relevance`` is assumed min-max scaled per request (the trade-offs are in its units).
    """
    n = int(np.asarray(relevance).shape[0])
    caps = Caps.build(creators, topics, n, config, served_creators, served_topics)
    order_key = np.asarray(relevance, np.float64)
    if user_topics is not None and personalised(config):
        if topics is None:
            raise RerankInputError("topics: required with user_topics")
        r, t, p = _check_calibration(relevance, topics, user_topics, config.calibration_alpha)
        page = calibrated(
            r, t, p, config.k, config.calibration_trade_off, config.calibration_alpha, caps
        )
        if config.topic_affinity > 0:
            order_key = r + config.topic_affinity * topic_log_affinity(t, p)
    elif config.method == "mmr":
        page = mmr(relevance, sim, config.k, config.trade_off, caps)
    elif config.method == "dpp":
        page = dpp_greedy(relevance, sim, config.k, config.trade_off, config.dpp_epsilon, caps)
    else:
        r, _, k = _check(relevance, sim, config.k)
        page = _fill(np.ones(n, bool), np.empty(k, np.int64), 0, caps, r)
    if config.page_order == "relevance":
        for s in range(0, page.shape[0], config.page_size):
            block = page[s : s + config.page_size]  # a view: sorted in place
            block[:] = block[np.argsort(-order_key[block], kind="stable")]  # ties: pick order
    return page


def personalised(config: RerankConfig) -> bool:
    """Whether :func:`rerank` personalises (calibration, personal page order) when given the
    user's topic distribution; it then never reads ``sim``, so callers may skip building it
    (pass an empty (0, 0) array)."""
    return config.personalise == "calibrated" and config.method != "none"


def topic_log_affinity(topics: I64, user_topics: F64) -> F64:
    """``log p(topic_i)`` per candidate (n,) for a distribution ``user_topics`` (T,) with
    positive entries where candidates have a topic; ``log(1 / T)`` (no evidence) for unknown
    (``-1``). Inputs as validated by :func:`calibrated`."""
    t = np.asarray(topics, np.int64)
    p = np.asarray(user_topics, np.float64)
    known = t >= 0
    pt = np.where(known, p[np.where(known, t, 0)], 1.0 / p.shape[0])  # (n,)
    out: F64 = np.log(np.maximum(pt, np.finfo(np.float64).tiny))  # p = 0: very negative
    return out
