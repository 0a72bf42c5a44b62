"""Ranking metrics used for validation and early stopping (pure numpy).

Kept local to ``ranking/`` because the import rules forbid depending on ``evaluation/``.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy.stats import rankdata


def auc(scores: npt.NDArray[np.floating], labels: npt.NDArray[np.floating]) -> float:
    """ROC AUC by the Mann-Whitney U statistic with average ranks for ties.

    ``scores`` and ``labels`` are 1-D of the same length; labels are binarised at 0.5. Returns
    NaN when only one class is present.
    """
    y = np.asarray(labels) >= 0.5
    n_pos = int(y.sum())
    n_neg = int(y.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(np.asarray(scores, dtype=np.float64))
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def ndcg_at_k(
    scores: npt.NDArray[np.floating],
    gains: npt.NDArray[np.floating],
    valid: npt.NDArray[np.bool_],
    k: int,
) -> float:
    """Mean NDCG@k over lists (Järvelin & Kekäläinen, 2002), exponential-free linear gains.

    ``scores``, ``gains`` (graded relevance >= 0) and ``valid`` are (n_lists, C). DCG@k =
    ``sum_{r<k} gain_r / log2(r + 2)`` in score order (ties broken by position); lists whose
    ideal DCG is 0 are left out. Returns NaN when no list has a positive gain.
    """
    s = np.where(valid, scores, -np.inf)
    g = np.where(valid, gains, 0.0)
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    disc = 1.0 / np.log2(np.arange(2, order.shape[1] + 2))
    dcg = (np.take_along_axis(g, order, axis=1) * disc).sum(axis=1)
    ideal = (-np.sort(-g, axis=1)[:, :k] * disc).sum(axis=1)
    use = ideal > 0
    if not use.any():
        return float("nan")
    return float((dcg[use] / ideal[use]).mean())
