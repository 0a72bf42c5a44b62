"""Micro-batching: concurrent requests share model calls, errors reach every caller, and
results go back to the right caller."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import pytest

from shortrec.ranking.predictor import CandidateSet, History, Scores
from shortrec.serving.batcher import RankBatcher


class FakePredictor:
    """Scores each candidate as its video_idx * 10 + the history length; slow on purpose."""

    def __init__(self, delay_s: float = 0.02, fail: bool = False) -> None:
        self.calls: list[int] = []
        self.delay_s = delay_s
        self.fail = fail

    def score_batch(
        self, hs: list[History], cs: list[CandidateSet], batch_size: int = 64
    ) -> list[Scores]:
        self.calls.append(len(hs))
        time.sleep(self.delay_s)
        if self.fail:
            raise RuntimeError("model exploded")
        return [
            Scores(final=(np.asarray(c.video_idx) * 10 + len(h.video_idx)).astype(np.float32))
            for h, c in zip(hs, cs, strict=True)
        ]


def _hist(k: int) -> History:
    z = np.zeros(k, np.int64)
    return History(z, z, np.zeros(k, np.float32), np.zeros(k, bool), np.zeros(k, bool), 0)


def _run_concurrently(b: RankBatcher, p: Any, n: int) -> list[Scores]:
    out: list[Any] = [None] * n

    def one(i: int) -> None:
        out[i] = b.submit(p, _hist(i), CandidateSet(np.array([i, i + 1]))).result(timeout=10)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def test_concurrent_requests_are_batched_and_answered_correctly() -> None:
    p = FakePredictor()
    b = RankBatcher(max_batch=8, enabled=True)
    try:
        out = _run_concurrently(b, p, 12)
    finally:
        b.close()
    for i, s in enumerate(out):
        np.testing.assert_array_equal(s.final, [i * 10 + i, (i + 1) * 10 + i])
    assert sum(p.calls) == 12
    assert max(p.calls) > 1 and max(p.calls) <= 8  # some calls were shared, none too large


def test_disabled_batching_scores_in_the_caller() -> None:
    p = FakePredictor(delay_s=0)
    b = RankBatcher(max_batch=8, enabled=False)
    out = _run_concurrently(b, p, 5)
    assert p.calls == [1] * 5 and out[3].final[0] == 33


def test_errors_reach_every_caller_and_batch_sizes_are_reported() -> None:
    sizes: list[int] = []
    p: Any = FakePredictor(fail=True)
    b = RankBatcher(max_batch=4, enabled=True, on_batch=sizes.append)
    try:
        fut = b.submit(p, _hist(1), CandidateSet(np.array([1])))
        with pytest.raises(RuntimeError, match="exploded"):
            fut.result(timeout=10)
    finally:
        b.close()
    assert sizes == [1]
    closed = b.submit(p, _hist(1), CandidateSet(np.array([1])))
    with pytest.raises(RuntimeError, match="closed"):
        closed.result(timeout=1)
