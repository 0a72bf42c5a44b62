"""Merging source candidates: per-source quotas, dedupe, seen-filter, provenance.

Quota phase: sources in order of decreasing quota (ties: the order given) each admit their best
not-yet-admitted, unseen candidates until ``round(quota * total)`` of their own are in (largest
remainder rounding, so the slots add up). Fill phase: slots left over (quotas that sum below 1,
or a source with too few) go to the remaining candidates of all sources by fused score. The
result is ordered by weighted reciprocal-rank fusion, ``sum_s w_s / (rrf_k + rank_s(v))`` with
``rank`` from 1 (Cormack, Clarke & Buettcher, SIGIR 2009) and ``w_s`` the source's fusion
weight (its quota unless ``weights`` are given); every candidate records, as a bit mask, each
source whose list contained it.

Quotas reserve slots; fusion weights decide the rest. With small quotas (reserves for sources
that must be represented, such as new uploads) and deep lists, most slots go to the videos that
several sources rank high, which fixed shares cannot find (see docs/retrieval.md#merge).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from shortrec.retrieval.types import Candidates, MergedCandidates


def quota_slots(quotas: Mapping[str, float], total: int) -> dict[str, int]:
    """Slots per source: ``quota * total`` rounded by largest remainder (sum preserved)."""
    want = {s: q * total for s, q in quotas.items()}
    slots = {s: math.floor(w) for s, w in want.items()}
    left = min(total, round(sum(want.values()))) - sum(slots.values())
    for s in sorted(want, key=lambda s: -(want[s] - slots[s]))[: max(0, left)]:
        slots[s] += 1
    return slots


def merge(
    lists: Sequence[Candidates],
    quotas: Mapping[str, float],
    total: int,
    seen: npt.ArrayLike = (),
    rrf_k: float = 60.0,
    weights: Mapping[str, float] | None = None,
) -> MergedCandidates:
    """Merge source lists into at most ``total`` unique, unseen candidates (see module doc).

    ``lists``: one :class:`Candidates` per source (distinct source names; a source missing
    from ``quotas`` gets no quota slots); ``weights``: fusion weight per source (default:
    ``quotas``; a source with weight 0 or none only fills after every weighted candidate);
    ``seen``: video_idx never returned.
    """
    fusion = quotas if weights is None else weights
    names = tuple(c.source for c in lists)
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate source names in {names}")
    n_src = len(names)
    lens = np.array([c.video_idx.shape[0] for c in lists], np.int64)  # (S,)
    if n_src == 0 or total <= 0 or lens.sum() == 0:
        return _empty(names)
    vid = np.concatenate([c.video_idx for c in lists]).astype(np.int64)  # (N,) all lists
    n = vid.shape[0]
    src = np.repeat(np.arange(n_src, dtype=np.int64), lens)  # (N,) list of each entry
    # one sort by (video, list, position) serves the per-list dedupe, the seen filter and the
    # union's grouping; entries are concatenated list by list, so the key is unique
    order = np.argsort(vid * n + np.arange(n))  # (N,)
    v_sorted, s_sorted = vid[order], src[order]
    drop = np.zeros(n + 1, np.int64)
    seen_arr = np.asarray(seen, dtype=np.int64).ravel()
    if seen_arr.shape[0]:  # each seen video blocks its run of sorted entries
        lo = np.searchsorted(v_sorted, seen_arr, side="left")
        hi = np.searchsorted(v_sorted, seen_arr, side="right")
        drop = np.bincount(lo, minlength=n + 1) - np.bincount(hi, minlength=n + 1)
    drop_sorted = np.cumsum(drop[:n]) > 0  # (N,) in sorted order
    # a source list should already be unique; keep each video's first (best) position
    drop_sorted[1:] |= (v_sorted[1:] == v_sorted[:-1]) & (s_sorted[1:] == s_sorted[:-1])
    keep = np.empty(n, np.bool_)
    keep[order] = ~drop_sorted
    kept_idx = np.flatnonzero(keep)  # (M,) the kept entries in list order
    if kept_idx.shape[0] == 0:
        return _empty(names)
    # union: sorted unique videos, each kept entry's position in it, provenance bits
    in_sorted = order[~drop_sorted]  # kept entries sorted by (video, list)
    vs = vid[in_sorted]
    new = np.ones(vs.shape[0], np.bool_)
    new[1:] = vs[1:] != vs[:-1]
    first = np.flatnonzero(new)
    uniq = vs[first]  # (U,)
    group = np.empty(n, np.int64)
    group[in_sorted] = np.cumsum(new) - 1
    inv = group[kept_idx]  # (M,)
    bits = np.left_shift(1, src[in_sorted]).astype(np.uint16)
    mask = np.bitwise_or.reduceat(bits, first)  # (U,)
    # rank of each kept entry within its own list (from 1), and its list's quota weight
    kept_lens = np.bincount(src[kept_idx], minlength=n_src)  # (S,)
    starts = np.cumsum(kept_lens) - kept_lens
    ranks = (np.arange(kept_idx.shape[0]) - np.repeat(starts, kept_lens) + 1).astype(np.float64)
    weight = np.repeat([fusion.get(s, 0.0) for s in names], kept_lens).astype(np.float64)
    # fused score; both sums accumulate in list order, exactly like two ufunc.at passes:
    # sources that only fill (weight 0) still need an order among themselves: tiny epsilon
    fused = np.bincount(
        np.concatenate([inv, inv]),
        weights=np.concatenate([weight / (rrf_k + ranks), 1e-9 / (rrf_k + ranks)]),
        minlength=uniq.shape[0],
    )
    # best first; uniq is sorted, so the stable sort breaks ties by video_idx ascending
    by_score = np.argsort(-fused, kind="stable")  # (U,)

    taken = np.zeros(uniq.shape[0], dtype=np.bool_)
    slots = quota_slots({s: quotas.get(s, 0.0) for s in names}, total)
    by_quota = sorted(range(n_src), key=lambda i: -quotas.get(names[i], 0.0))
    n_taken = 0
    bounds = np.concatenate([starts, [kept_idx.shape[0]]]).tolist()
    for i in by_quota:
        want = min(slots[names[i]], total - n_taken)
        if want <= 0:
            continue
        pos = inv[bounds[i] : bounds[i + 1]]  # this list's videos, as positions in uniq
        free = pos[~taken[pos]][:want]
        taken[free] = True
        n_taken += free.shape[0]
    if n_taken < total:  # fill: best remaining by fused score
        rest = by_score[~taken[by_score]][: total - n_taken]
        taken[rest] = True
    sel = by_score[taken[by_score]]
    return MergedCandidates(
        uniq[sel].astype(np.int32), fused[sel].astype(np.float32), mask[sel], names
    )


def _empty(names: tuple[str, ...]) -> MergedCandidates:
    return MergedCandidates(
        np.zeros(0, np.int32), np.zeros(0, np.float32), np.zeros(0, np.uint16), names
    )
