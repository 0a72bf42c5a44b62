"""Merging source candidates: per-source quotas, dedupe, seen-filter, provenance.

Quota phase: sources in order of decreasing quota (ties: the order given) each admit their best
not-yet-admitted, unseen candidates until ``round(quota * total)`` of their own are in (largest
remainder rounding, so the slots add up). Fill phase: slots left over (a source had too few)
go to the remaining candidates of all sources by fused score. The result is ordered by weighted
reciprocal-rank fusion, ``sum_s w_s / (rrf_k + rank_s(v))`` with ``rank`` from 1 (Cormack,
Clarke & Buettcher, SIGIR 2009), ``w_s`` the source's quota; every candidate records, as a
bit mask, each source whose list contained it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from shortrec.retrieval.types import Candidates, MergedCandidates

Idx32 = npt.NDArray[np.int32]


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
) -> MergedCandidates:
    """Merge source lists into at most ``total`` unique, unseen candidates (see module doc).

    ``lists``: one :class:`Candidates` per source (distinct source names; a source missing
    from ``quotas`` gets no quota slots but may fill leftover ones with fusion weight 0...
    so it only fills after every weighted candidate); ``seen``: video_idx never returned.
    """
    names = tuple(c.source for c in lists)
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate source names in {names}")
    seen_arr = np.asarray(seen, dtype=np.int32).ravel()
    kept: list[Idx32] = []
    for c in lists:
        v = c.video_idx
        # a source list should already be unique; keep each video's first (best) position
        _, first = np.unique(v, return_index=True)
        v = v[np.sort(first)]
        kept.append(v[~np.isin(v, seen_arr)] if seen_arr.shape[0] else v)

    all_v = np.concatenate(kept) if kept else np.zeros(0, np.int32)
    if all_v.shape[0] == 0 or total <= 0:
        return MergedCandidates(
            np.zeros(0, np.int32), np.zeros(0, np.float32), np.zeros(0, np.uint16), names
        )
    bits = np.concatenate([np.full(v.shape[0], 1 << b, np.uint16) for b, v in enumerate(kept)])
    ranks = np.concatenate([np.arange(1, v.shape[0] + 1, dtype=np.float64) for v in kept])
    weight = np.concatenate(
        [np.full(v.shape[0], quotas.get(n, 0.0)) for n, v in zip(names, kept, strict=True)]
    )
    uniq, inv = np.unique(all_v, return_inverse=True)
    fused = np.zeros(uniq.shape[0], dtype=np.float64)
    np.add.at(fused, inv, weight / (rrf_k + ranks))
    # sources that only fill (weight 0) still need an order among themselves: tiny epsilon
    np.add.at(fused, inv, 1e-9 / (rrf_k + ranks))
    mask = np.zeros(uniq.shape[0], dtype=np.uint16)
    np.bitwise_or.at(mask, inv, bits)

    taken = np.zeros(uniq.shape[0], dtype=np.bool_)
    slots = quota_slots({n: quotas.get(n, 0.0) for n in names}, total)
    order = sorted(range(len(names)), key=lambda i: -quotas.get(names[i], 0.0))
    n_taken = 0
    for i in order:
        want = min(slots[names[i]], total - n_taken)
        if want <= 0:
            continue
        pos = np.searchsorted(uniq, kept[i])  # positions of this source's videos in uniq
        free = pos[~taken[pos]][:want]
        taken[free] = True
        n_taken += free.shape[0]
    if n_taken < total:  # fill: best remaining by fused score
        rest = np.flatnonzero(~taken)
        rest = rest[np.lexsort((uniq[rest], -fused[rest]))][: total - n_taken]
        taken[rest] = True
    sel = np.flatnonzero(taken)
    sel = sel[np.lexsort((uniq[sel], -fused[sel]))]
    return MergedCandidates(
        uniq[sel].astype(np.int32), fused[sel].astype(np.float32), mask[sel], names
    )
