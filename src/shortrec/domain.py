"""Immutable value types and small protocols that flow between stages.

This module sits in the bottom layer: it imports nothing from the package except ``schema``.
Times in numpy arrays are int64 microseconds since the Unix epoch (UTC).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
import polars as pl

IntArray = npt.NDArray[np.int64]
Idx32 = npt.NDArray[np.int32]
FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class ExpectedResponse:
    """A user's expected response to videos, each array of shape ``(n_users, k)``.

    ``watch_ratio`` is the expected watch ratio (replays included, so it may exceed 1);
    ``p_skip`` the probability of a fast swipe; ``p_like`` the probability of a like;
    ``watch_time_s`` the expected seconds watched.
    """

    watch_ratio: FloatArray
    p_skip: FloatArray
    p_like: FloatArray
    watch_time_s: FloatArray


@runtime_checkable
class Oracle(Protocol):
    """Ground truth of a synthetic world: any user's expected response to any video.

    Implemented by the simulator's world; consumed by evaluation (oracle protocol) and
    experiments without either importing the other.
    """

    def expected_response(
        self, user_idx: IntArray, video_idx: IntArray, ts_us: IntArray
    ) -> ExpectedResponse:
        """Response of user ``user_idx[i]`` (shape (n,)) to ``video_idx[i, j]`` (shape (n, k))
        at time ``ts_us[i]`` (shape (n,)), at the start of a fresh session."""
        ...


@dataclass(frozen=True)
class TrainingData:
    """What a recommender may learn from: interactions strictly before the evaluation point.

    ``interactions`` has the columns of ``schema.EVENTS`` (chronological per user);
    ``videos``/``users`` are the full catalogue tables; ``n_users``/``n_items`` size the
    dense index spaces; ``cutoff_us`` is the time at which recommendations are made (for
    protocols without one global cut-off, the latest training timestamp).
    """

    interactions: pl.DataFrame
    videos: pl.DataFrame
    users: pl.DataFrame
    n_users: int
    n_items: int
    cutoff_us: int
    skip_threshold_s: float


@runtime_checkable
class Recommender(Protocol):
    """Anything the evaluation runner can evaluate: baselines, retrieval, the full pipeline.

    ``fit`` learns from training data and returns self. ``score`` returns float32 scores of
    shape ``(len(user_idx), n_items)`` over the whole catalogue (higher is better; ``-inf``
    for items the recommender will not propose). The runner excludes already-seen items.
    """

    name: str

    def fit(self, data: TrainingData) -> Recommender: ...

    def score(self, user_idx: IntArray) -> FloatArray: ...
