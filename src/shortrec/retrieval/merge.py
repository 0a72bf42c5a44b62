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

import numba
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
    seen_arr = np.unique(np.asarray(seen, dtype=np.int64).ravel())  # sorted, unique
    weight = np.array([fusion.get(s, 0.0) for s in names], np.float64)  # (S,)
    slots_of = quota_slots({s: quotas.get(s, 0.0) for s in names}, total)
    slots = np.array([slots_of[s] for s in names], np.int64)  # (S,)
    by_quota = np.array(sorted(range(n_src), key=lambda i: -quotas.get(names[i], 0.0)))
    uniq, fused, mask = _merge_kernel(
        vid, lens, seen_arr, weight, float(rrf_k), slots, by_quota, int(total)
    )
    if uniq.shape[0] == 0:
        return _empty(names)
    return MergedCandidates(uniq.astype(np.int32), fused.astype(np.float32), mask, names)


@numba.njit(cache=True, nogil=True)
def _merge_kernel(
    vid: npt.NDArray[np.int64],
    lens: npt.NDArray[np.int64],
    seen: npt.NDArray[np.int64],
    weight: npt.NDArray[np.float64],
    rrf_k: float,
    slots: npt.NDArray[np.int64],
    by_quota: npt.NDArray[np.int64],
    total: int,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.uint16]]:
    """The merge after validation, compiled (one pass per phase instead of tens of NumPy
    calls per request): ``vid`` (N,) the lists concatenated, ``lens`` (S,) their lengths,
    ``seen`` sorted unique, ``weight`` / ``slots`` (S,) per list, ``by_quota`` the lists in
    quota order. Returns the selected videos, fused scores and provenance bits, best first.
    """
    n = vid.shape[0]
    n_src = lens.shape[0]
    src = np.empty(n, np.int64)  # (N,) list of each entry
    pos = 0
    for s in range(n_src):
        for _ in range(lens[s]):
            src[pos] = s
            pos += 1
    # one sort by (video, list, position) groups the videos and puts each list's repeats of
    # a video side by side; entries are concatenated list by list, so the key is unique
    order = np.argsort(vid * n + np.arange(n))
    group = np.full(n, -1, np.int64)  # (N,) each kept entry's video, as a position in uniq
    uniq = np.empty(n, np.int64)
    mask = np.zeros(n, np.uint16)
    n_uniq = 0
    j = 0  # seen pointer (both sorted)
    prev_v, prev_s = -1, -1
    for t in range(n):
        e = order[t]
        v, s = vid[e], src[e]
        repeat = v == prev_v and s == prev_s  # a later position of the same video in a list
        prev_v, prev_s = v, s
        while j < seen.shape[0] and seen[j] < v:
            j += 1
        if repeat or (j < seen.shape[0] and seen[j] == v):
            continue
        if n_uniq == 0 or uniq[n_uniq - 1] != v:
            uniq[n_uniq] = v
            n_uniq += 1
        group[e] = n_uniq - 1
        mask[n_uniq - 1] |= np.uint16(1) << np.uint16(s)
    # weighted reciprocal-rank fusion, rank = position among the list's kept entries (from
    # 1); the weighted terms, then the epsilon terms that order the lists without weight,
    # each summed in list order (the order the documented formula adds them in)
    fused = np.zeros(n_uniq)
    for phase in range(2):
        rank = 0
        cur = -1
        for e in range(n):
            if src[e] != cur:
                cur, rank = src[e], 0
            g = group[e]
            if g < 0:
                continue
            rank += 1
            w = weight[cur] if phase == 0 else 1e-9
            fused[g] += w / (rrf_k + rank)
    # best first; uniq is sorted, so the stable sort breaks ties by video_idx ascending
    by_score = np.argsort(-fused, kind="mergesort")
    taken = np.zeros(n_uniq, np.bool_)
    n_taken = 0
    starts = np.zeros(n_src + 1, np.int64)
    for s in range(n_src):
        starts[s + 1] = starts[s] + lens[s]
    for s in by_quota:  # quota phase: each list's best not-yet-taken entries
        want = min(slots[s], total - n_taken)
        e = starts[s]
        while want > 0 and e < starts[s + 1]:
            g = group[e]
            if g >= 0 and not taken[g]:
                taken[g] = True
                n_taken += 1
                want -= 1
            e += 1
    for g in by_score:  # fill: the best remaining by fused score
        if n_taken >= total:
            break
        if not taken[g]:
            taken[g] = True
            n_taken += 1
    sel = np.empty(n_taken, np.int64)
    k = 0
    for g in by_score:
        if taken[g]:
            sel[k] = g
            k += 1
    return uniq[sel], fused[sel], mask[sel]


def _empty(names: tuple[str, ...]) -> MergedCandidates:
    return MergedCandidates(
        np.zeros(0, np.int32), np.zeros(0, np.float32), np.zeros(0, np.uint16), names
    )
