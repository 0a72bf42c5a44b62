"""Mixing the retrieval order into the ranker's (``retrieval_blend``), offline and online alike.

The ranker scores each candidate from its features; the merge's fused retrieval score carries
what the sources agree on, which the ranker does not see (its source flags are the logging
policy's at training time). The two live on different scales, so they are mixed as rank
percentiles: ``(1 - w) * q_ranker + w * q_retrieval`` with ``q`` = 1 for the best candidate
and ``1/C`` for the worst. Measured in docs/quality.md (``blend_*`` rows).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def _descending(n: int) -> npt.NDArray[np.float64]:
    """The percentiles of ranks 1..n: 1, 1 - 1/n, ..., 1/n."""
    out: npt.NDArray[np.float64] = 1.0 - np.arange(n) / max(n, 1)
    return out


def rank_percentile(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Rank percentile of each entry (1 = largest, ``1/n`` = smallest; ties by position)."""
    out = np.empty(x.shape[0])
    out[np.argsort(-x, kind="stable")] = _descending(x.shape[0])
    return out


def blend_with_retrieval(final: npt.ArrayLike, weight: float) -> npt.NDArray[np.float64]:
    """``(1 - weight) * rank_percentile(final) + weight * retrieval percentile`` for candidates
    given best-first by fused retrieval score (the merge's order); ``weight`` 0 returns the
    ranker's percentiles, 1 the retrieval order's."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"retrieval blend weight must be in [0, 1], got {weight}")
    f = np.asarray(final, np.float64)
    q_rank = rank_percentile(f)
    if weight == 0.0:
        return q_rank
    out: npt.NDArray[np.float64] = (1.0 - weight) * q_rank + weight * _descending(f.shape[0])
    return out
