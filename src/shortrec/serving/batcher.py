"""Ranking off the event loop, with opportunistic micro-batching of concurrent requests.

A :class:`RankBatcher` owns one worker thread. Callers submit one request's ranker inputs and
wait on a future with their deadline; the worker takes every request queued at that moment
(at most ``max_batch``) and scores them in one model call, so batching adds no waiting time:
under light load every call has batch size 1, under heavy load the model call is amortised
over the waiting requests. With ``enabled=False`` each caller scores in its own thread
(the baseline the benchmark compares against).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future

from shortrec.ranking.predictor import CandidateSet, History, Predictor, Scores

_Item = tuple[Predictor, History, CandidateSet, "Future[Scores]"]


class RankBatcher:
    """Coalesces concurrent ``score`` calls into batched model calls (see module doc)."""

    def __init__(
        self,
        max_batch: int,
        enabled: bool = True,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.max_batch = max_batch
        self.enabled = enabled
        self._on_batch = on_batch
        self._q: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False

    def _start(self) -> None:
        with self._lock:
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._loop, name="rank-batcher", daemon=True)
                self._thread.start()

    def submit(self, predictor: Predictor, history: History, cands: CandidateSet) -> Future[Scores]:
        """Schedule one request; the future holds its :class:`Scores` (or the exception)."""
        fut: Future[Scores] = Future()
        if not self.enabled:
            self._run([(predictor, history, cands, fut)])
            return fut
        if self._closed:
            fut.set_exception(RuntimeError("rank batcher is closed"))
            return fut
        self._start()
        self._q.put((predictor, history, cands, fut))
        return fut

    def _loop(self) -> None:
        while True:
            first = self._q.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    nxt = self._q.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._q.put(None)  # finish this batch, then stop
                    break
                batch.append(nxt)
            self._run(batch)

    def _run(self, batch: list[_Item]) -> None:
        # requests of one batch must share a predictor (a reload may land between two)
        groups: dict[int, list[_Item]] = {}
        for item in batch:
            groups.setdefault(id(item[0]), []).append(item)
        for items in groups.values():
            live = [it for it in items if it[3].set_running_or_notify_cancel()]
            if not live:
                continue
            if self._on_batch is not None:
                self._on_batch(len(live))
            try:
                scores = live[0][0].score_batch(
                    [it[1] for it in live], [it[2] for it in live], batch_size=len(live)
                )
            except Exception as e:  # reported to every waiting caller, who falls back
                for it in live:
                    it[3].set_exception(e)
                continue
            for it, s in zip(live, scores, strict=True):
                it[3].set_result(s)

    def close(self) -> None:
        """Stop the worker after the queued requests."""
        with self._lock:
            self._closed = True
            t = self._thread
        if t is not None:
            self._q.put(None)
            t.join(timeout=5)
