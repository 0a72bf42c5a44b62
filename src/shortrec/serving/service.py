"""The HTTP-free feed service: one feed request and one event batch, end to end.

``FeedService.feed`` runs the online flow of DESIGN.md section 2 with a declared fallback chain:

    assignment -> store read (history, seen, session, affinities; one round trip)
      -> sources (vector, covisit, tags, trending, fresh, explore)
      -> merge (quotas, dedupe, drop seen)
      -> features (in-process catalogue) -> rank (ONNX Runtime, micro-batched)
      -> session adjustment (topic skip penalty) -> diversify (DPP/MMR + caps) -> page

* Store down (``StoreUnavailable``): the request is served from the in-process snapshot
  (bundle trending/fresh/explore lists, vector recall without live history); the service
  marks itself degraded, stops calling the store and probes it every
  ``health_interval_s`` until it answers, then recovers on its own.
* Ranking error or deadline: retrieval (fused rank) order. A source error: that source is
  skipped. Every fallback is counted in ``shortrec_fallbacks_total{reason}``.

``ingest_events`` validates a batch, acknowledges only after ``enqueue_events`` returned (the
durable queue), applies it at once so the very next feed sees it (idempotent per user and
``event_id``), and a background drainer applies whatever is queued but not yet applied.
The A/B simulator and the demo call these methods in process, without HTTP.

The feed pipeline is one generator (``_feed_steps``) that yields where it waits for the
ranker's model call (the batcher's thread): :meth:`FeedService.feed` drives it blocking,
:meth:`FeedService.feed_async` (the HTTP app) on the event loop, so the loop runs the Python
work and only the model call leaves it.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import math
import os
import secrets
import threading
import time
from collections.abc import Callable, Generator, Hashable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from shortrec import schema as S
from shortrec.config import ArmOverrides, RerankConfig, ServingConfig
from shortrec.experiments.spec import ExperimentSource, ReloadStatus
from shortrec.monitoring.drift import (
    CANDIDATE_ENGAGE_RATE,
    HISTORY_LEN,
    SCORE_ENGAGE,
    SCORE_FINAL,
    VIDEO_AGE_HOURS,
    DriftMonitor,
)
from shortrec.ranking.blend import blend_with_retrieval
from shortrec.ranking.predictor import CandidateSet, History, Scores
from shortrec.rerank import (
    personalised,
    rerank,
    rerank_similarity,
    tag_jaccard,
    user_topic_distribution,
)
from shortrec.retrieval.merge import merge
from shortrec.retrieval.types import Candidates, MergedCandidates, RetrievalRequest
from shortrec.serving.api import EventIn, VideoIn
from shortrec.serving.batcher import RankBatcher
from shortrec.serving.exposure import ExposureLog, OutcomeLog, outcome_record
from shortrec.serving.metrics import NO_ARM, Metrics
from shortrec.serving.names import CatalogueNames, VideoInfo, describe, load_names
from shortrec.serving.snapshot import Bundle
from shortrec.store import (
    NO_TS,
    OnlineStore,
    RequestContext,
    ScoredList,
    StoreError,
    StoreEvent,
    StoreUnavailable,
)
from shortrec.store import codec as store_codec

log = logging.getLogger(__name__)
T = TypeVar("T")
F32 = npt.NDArray[np.float32]
US_PER_S = 1_000_000

#: stage name of each source in ``shortrec_stage_duration_seconds``
SOURCE_STAGE = {
    "trending": "source_trending",
    "tags": "source_tags",
    "two_tower": "source_vector",
    "covisit": "source_covisit",
    "fresh": "source_fresh",
    "explore": "source_explore",
}
_REASONS = {
    "two_tower": "similar to videos you watched",
    "covisit": "watched by people who watched what you watched",
    "tags": "matches topics you like",
    "trending": "trending now",
    "fresh": "new upload",
    "explore": "something different to explore",
}
_REASON_ORDER = ("two_tower", "covisit", "tags", "fresh", "trending", "explore")


class ServiceUnavailable(RuntimeError):
    """The request needs the store and the store is down (HTTP 503, retry later)."""


class EventValidationError(S.BadInput):
    """Events of a batch failed validation; ``errors`` lists ``(index, field, message)``."""

    def __init__(self, errors: list[tuple[int, str, str]]) -> None:
        self.errors = errors
        text = "; ".join(f"events[{i}].{f}: {m}" for i, f, m in errors[:5])
        more = f" (+{len(errors) - 5} more)" if len(errors) > 5 else ""
        super().__init__(f"{len(errors)} invalid event(s): {text}{more}")


@dataclass(frozen=True)
class ServedItem:
    """One video of a page: final score (after the session adjustment), head scores, the
    sources that proposed it and a short reason."""

    video_idx: int
    position: int
    score: float
    heads: dict[str, float]
    sources: tuple[str, ...]
    reason: str


@dataclass(frozen=True)
class FeedResult:
    """One served page with everything the response and the exposure log need."""

    request_id: int
    user_id: str
    session_id: int
    model_version: str
    arms: dict[str, str]
    degraded: bool
    fallbacks: tuple[str, ...]
    items: tuple[ServedItem, ...]
    stage_ms: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class IngestResult:
    """Outcome of one event batch (all ``received`` events are durably queued or were
    ingested before)."""

    received: int
    queued: int
    applied: int
    duplicates: int


@dataclass(frozen=True)
class FeedContext:
    """Optional request context: profile (None: unknown) and videos the client holds."""

    region: str | None = None
    age_bucket: str | None = None
    device: str | None = None
    exclude: tuple[int, ...] = ()


class TTLCache:
    """A tiny thread-safe cache of shared results with a per-entry time to live (seconds).

    Bounded by ``max_entries`` (the oldest entry is dropped); lookups are counted in
    ``shortrec_cache_requests_total{cache,result}``.
    """

    def __init__(
        self,
        name: str,
        metrics: Metrics,
        max_entries: int = 1_024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self._m = metrics
        self._max = max_entries
        self._clock = clock
        self._data: collections.OrderedDict[Hashable, tuple[float, Any]] = collections.OrderedDict()
        self._lock = threading.Lock()
        self._hit = metrics.cache_requests.labels(name, "hit")
        self._miss = metrics.cache_requests.labels(name, "miss")

    def get(self, key: Hashable, ttl_s: float, load: Callable[[], T]) -> T:
        hit = self.lookup(key)
        if hit is not None:
            value: T = hit[0]
            return value
        value = load()
        self.put(key, ttl_s, value)
        return value

    def lookup(self, key: Hashable) -> tuple[Any] | None:
        """``(value,)`` while ``key`` is fresh, else None (counted as a hit or a miss)."""
        now = self._clock()
        with self._lock:
            hit = self._data.get(key)
        if hit is not None and hit[0] > now:
            self._hit.inc()
            return (hit[1],)
        self._miss.inc()
        return None

    def put(self, key: Hashable, ttl_s: float, value: object) -> None:
        """Store ``value`` under ``key`` for ``ttl_s`` seconds (the oldest entry goes when full)."""
        now = self._clock()
        with self._lock:
            self._data[key] = (now + ttl_s, value)
            self._data.move_to_end(key)
            while len(self._data) > self._max:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


#: a feed pipeline written as a generator: it yields ``(future, timeout_s)`` where it waits
#: for the ranker's model call and is sent the :class:`Scores` (or thrown the exception)
FeedSteps = Generator[tuple["Future[Scores]", float], Scores, T]


def drive(steps: FeedSteps[T]) -> T:
    """Run ``steps`` to the end in this thread, blocking on each ranking future."""
    try:
        fut, timeout_s = next(steps)
        while True:
            try:
                scores = fut.result(timeout=timeout_s)
            except Exception as e:  # a timeout or the ranker's error, handled by the steps
                fut, timeout_s = steps.throw(e)
            else:
                fut, timeout_s = steps.send(scores)
    except StopIteration as stop:
        result: T = stop.value
        return result


async def drive_async(steps: FeedSteps[T]) -> T:
    """Run ``steps`` on the running event loop: the Python work runs in the loop's thread, each
    ranking future is awaited (the model call runs in the batcher's thread meanwhile, with the
    GIL released, while the loop serves other requests)."""
    try:
        fut, timeout_s = next(steps)
        while True:
            try:
                scores = await asyncio.wait_for(asyncio.wrap_future(fut), timeout_s)
            except Exception as e:
                fut, timeout_s = steps.throw(e)
            else:
                fut, timeout_s = steps.send(scores)
    except StopIteration as stop:
        result: T = stop.value
        return result


class _Timer:
    """Records stage durations into the histogram and into a dict (milliseconds)."""

    def __init__(self, metrics: Metrics, budget_s: float) -> None:
        self._m = metrics
        self.ms: dict[str, float] = {}
        self.deadline = time.perf_counter() + budget_s  # end of the request's whole budget

    def left(self, stage_s: float) -> float:
        """Seconds this stage may take: its own deadline, capped by the budget left."""
        return max(0.0, min(stage_s, self.deadline - time.perf_counter()))

    def record(self, stage: str, t0: float) -> float:
        dt = time.perf_counter() - t0
        self._m.stage(stage).observe(dt)
        self.ms[stage] = self.ms.get(stage, 0.0) + dt * 1e3
        return dt


def _arm_labels(arms: dict[str, str]) -> list[str]:
    return [f"{e}:{a}" for e, a in sorted(arms.items())] or [NO_ARM]


def _wall_us() -> int:
    return time.time_ns() // 1_000


class FeedService:
    """Feed and event handling over one bundle, one online store and one metrics registry.

    ``clock`` returns the current time in µs UTC (injected for simulations and tests);
    ``experiments`` (optional) assigns users to arms. Call :meth:`start` to run the
    background maintenance (store probe while degraded, event drainer) and :meth:`close` to
    stop it.
    """

    def __init__(
        self,
        config: ServingConfig,
        bundle: Bundle,
        store: OnlineStore,
        metrics: Metrics,
        experiments: ExperimentSource | None = None,
        clock: Callable[[], int] = _wall_us,
    ) -> None:
        self.config = config
        self._bundle = bundle
        self.store = store
        self.metrics = metrics
        self.experiments = experiments
        self.clock = clock
        self._degraded = False
        self._state_lock = threading.Lock()
        self._reload_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._batcher = RankBatcher(
            config.rank_max_batch, config.rank_batching, metrics.rank_batch_size.observe
        )
        self._lists = TTLCache("shared_lists", metrics)
        self._cold = TTLCache("cold_page", metrics)
        self._rerank_cfgs: dict[tuple[Any, ...], tuple[RerankConfig, RerankConfig]] = {}
        self._recent_events: collections.OrderedDict[tuple[str, int], None] = (
            collections.OrderedDict()
        )
        self._events_lock = threading.Lock()
        self._consumer = f"serve-{os.getpid()}-{secrets.token_hex(3)}"
        self._drift = self._monitor(bundle)
        log_dir = Path(config.exposure_log_dir) if config.exposure_log_dir else None
        # the experiment logs: served pages and the outcomes applied (serving/exposure.py)
        self._exposures = ExposureLog(log_dir) if log_dir is not None else None
        self._outcomes = OutcomeLog(log_dir) if log_dir is not None else None
        # arm bundles: experiments switch the whole model (retrieval + ranker) per arm
        self._arm_bundles: dict[str, Bundle] = {
            label: Bundle.load(Path(path), catalogue_from=bundle, rank_threads=config.rank_threads)
            for label, path in config.models.items()
        }
        self._names: CatalogueNames | None = load_names(bundle.path)
        metrics.set_model(bundle.model_version, bundle.backend)
        metrics.degraded.set(0)
        self._publish_allocation()

    # ------------------------------------------------------------ state
    @property
    def bundle(self) -> Bundle:
        return self._bundle

    @property
    def degraded(self) -> bool:
        return self._degraded

    def _set_degraded(self, value: bool) -> None:
        with self._state_lock:
            if self._degraded == value:
                return
            self._degraded = value
        self.metrics.degraded.set(1 if value else 0)
        self._lists.clear()
        self._cold.clear()
        log.warning(
            "store %s: %s",
            "unavailable" if value else "back",
            "serving from the in-process snapshot" if value else "leaving degraded mode",
        )

    def _store(self, op: str, fn: Callable[[], T]) -> T:
        """Call the store (``op`` names it in metrics); a ``StoreUnavailable`` switches the
        service to degraded mode and is re-raised."""
        if self._degraded:
            raise StoreUnavailable("store marked unavailable; waiting for the probe")
        t0 = time.perf_counter()
        try:
            return fn()
        except StoreUnavailable:
            self.metrics.store_errors.labels(op).inc()
            self._set_degraded(True)
            raise
        except StoreError:
            self.metrics.store_errors.labels(op).inc()
            raise
        finally:
            self.metrics.store_duration.labels(op).observe(time.perf_counter() - t0)

    def probe_store(self) -> bool:
        """Ping the store now; leave degraded mode when it answers. Returns reachability."""
        ok = self.store.ping()
        if ok and self._degraded:
            self._set_degraded(False)
        elif not ok and not self._degraded:
            self._set_degraded(True)
        return ok

    # ------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start the maintenance thread (probe while degraded; drain queued events)."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._maintain, name="feed-maintenance", daemon=True
            )
            self._thread.start()

    def close(self) -> None:
        """Stop background work (the store is owned by the caller)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._batcher.close()
        if self._exposures is not None:
            self._exposures.close()
        if self._outcomes is not None:
            self._outcomes.close()

    def _maintain(self) -> None:
        cfg = self.config
        next_drain = time.monotonic()
        while not self._stop.wait(cfg.health_interval_s):
            try:
                if self._degraded:
                    self.probe_store()
                    continue
                if time.monotonic() >= next_drain:
                    next_drain = time.monotonic() + cfg.drain_interval_s
                    while not self._stop.is_set():
                        done, _ = self._store(
                            "drain_events",
                            lambda: self.store.drain_events(self._consumer, cfg.drain_batch),
                        )
                        if done < cfg.drain_batch:
                            break
            except StoreError:
                continue  # counted by _store; the probe takes over when unavailable
            except Exception:  # never let the maintenance thread die
                log.exception("maintenance step failed")

    # ------------------------------------------------------------ drift
    def _monitor(self, bundle: Bundle) -> DriftMonitor | None:
        if bundle.drift is None:
            return None
        return DriftMonitor(bundle.drift, self.config.drift_window)

    def export_drift(self) -> None:
        """Publish the current PSI/KS of every drift feature (called on each scrape)."""
        mon = self._drift
        if mon is not None:
            self.metrics.set_drift(mon.snapshot())

    def _observe_drift(
        self,
        bundle: Bundle,
        score: npt.NDArray[np.float64],
        heads: dict[str, npt.NDArray[np.float64]],
        vids: npt.NDArray[np.int64],
        meta: Any,
        order: npt.NDArray[np.int64],
        req: RetrievalRequest,
    ) -> None:
        """Feed the served page to the drift monitor: the scores the response reports, and
        the key ranker inputs (history length as the ranker sees it, video age, the served
        videos' smoothed engage rate from the bundle's statistics)."""
        mon = self._drift
        if mon is None or order.shape[0] == 0:
            return
        have = set(mon.features)
        pred = bundle.predictor
        values: dict[str, npt.ArrayLike] = {
            SCORE_FINAL: score[order],
            HISTORY_LEN: [float(min(req.history.shape[0], pred.config.history_len))],
        }
        if "engage" in heads:
            values[SCORE_ENGAGE] = heads["engage"][order]
        up = meta.upload_us[order]
        values[VIDEO_AGE_HOURS] = (req.now_us - up[up >= 0]) / (3_600 * US_PER_S)
        if CANDIDATE_ENGAGE_RATE in have:
            served = vids[order]
            served = served[served < bundle.catalogue.n_bundle]
            if served.shape[0]:
                values[CANDIDATE_ENGAGE_RATE] = pred.latest_stats(served)[:, 0]
        for name, v in values.items():
            if name in have:
                mon.observe(name, v)

    # ------------------------------------------------------------ experiments
    def _publish_allocation(self) -> None:
        if self.experiments is None:
            self.metrics.set_allocation({})
            return
        shares: dict[tuple[str, str], float] = {}
        for e in self.experiments.current.experiments:
            total = sum(a.weight for a in e.arms)
            for a in e.arms:
                shares[(e.name, a.name)] = a.weight / total
        self.metrics.set_allocation(shares)

    def reload_experiments(self) -> ReloadStatus | None:
        """Re-read the experiment file (a bad file keeps the old set; see ``ReloadStatus``)."""
        if self.experiments is None:
            return None
        status = self.experiments.reload()
        if status.changed:
            self._publish_allocation()
            self._cold.clear()
        return status

    def _assign(self, user_id: str) -> tuple[dict[str, str], ArmOverrides]:
        if self.experiments is None:
            return {}, ArmOverrides()
        a = self.experiments.current.assign_full(user_id)
        return dict(a.arms), a.overrides

    # ------------------------------------------------------------ reload
    def reload(self, art: Path | None = None) -> tuple[Bundle, bool]:
        """Load and validate the bundle at ``art`` (default: the current path) and swap it in
        atomically; in-flight requests finish on the bundle they started with. A bad bundle
        raises ``BundleError`` and the current one keeps serving. Returns the live bundle and
        whether it changed."""
        with self._reload_lock:
            cur = self._bundle
            new = Bundle.load(
                Path(art) if art is not None else cur.path,
                catalogue_from=cur,
                rank_threads=self.config.rank_threads,
            )
            names = load_names(new.path)  # a broken names component rejects the bundle
            self._drift = self._monitor(new)
            self._bundle, self._names = new, names
            self._cold.clear()
            self.metrics.set_model(new.model_version, new.backend)
            return new, new.model_version != cur.model_version

    # ------------------------------------------------------------ new uploads
    def add_video(self, video: VideoIn) -> None:
        """Add a new upload to the catalogue and the fresh pool, before any retraining.

        The in-process catalogue learns it at once; the store's live version gets its
        features and a fresh-pool entry (other replicas learn it from there).
        Raises ``ServiceUnavailable`` if the store cannot take it.
        """
        up = (
            int(video.upload_ts.timestamp() * US_PER_S)
            if video.upload_ts is not None
            else self.clock()
        )
        cat = self._bundle.catalogue
        cat.add(
            video.video_idx,
            video.creator_idx,
            video.category,
            tuple(video.tags),
            video.duration_s,
            up,
        )
        blob = store_codec.encode_video(
            store_codec.VideoRecord(
                creator_idx=video.creator_idx,
                category=-1 if video.category is None else video.category,
                tags=tuple(video.tags),
                duration_s=video.duration_s,
                upload_us=up,
                impressions=0,
                engage_rate=math.nan,
                watch_ratio_mean=math.nan,
                skip_rate=math.nan,
                like_rate=math.nan,
            ),
            self.store_cfg_max_tags(),
        )

        def write() -> None:
            version, _ = self.store.current_version()
            if version == 0:
                return  # nothing published: the in-process catalogue is the only home
            pool = self.store.fresh(100_000)
            vids = np.concatenate([pool.video_idx.astype(np.int64), [video.video_idx]])
            score = np.concatenate([pool.score, [float(up)]])
            vids, first = np.unique(vids[::-1], return_index=True)
            self.store.write_videos(version, [(video.video_idx, blob)])
            self.store.write_ranked(version, "fresh", "", vids, score[::-1][first])

        try:
            self._store("add_video", write)
        except StoreUnavailable as e:
            raise ServiceUnavailable(f"store unavailable: {e}") from e
        self._lists.clear()
        self._cold.clear()

    def store_cfg_max_tags(self) -> int:
        cfg = getattr(self.store, "cfg", None)
        return int(getattr(cfg, "max_video_tags", 16))

    # ------------------------------------------------------------ names (demo page)
    def videos(self, video_idx: Sequence[int]) -> tuple[list[VideoInfo], list[int]]:
        """Human-readable metadata of videos (see :func:`~shortrec.serving.names.describe`):
        ``(infos in the order asked, ids the catalogue does not know)``."""
        return describe(self._bundle.catalogue, self._names, list(video_idx))

    def sample_users(self, n: int) -> tuple[list[str], bool]:
        """Up to ``n`` known user ids from the bundle's names component (the users with the
        longest histories), and whether the bundle has one (False: no known users to offer)."""
        names = self._names
        if names is None:
            return [], False
        return list(names.users[:n]), True

    # ------------------------------------------------------------ readiness
    def ready(self) -> dict[str, Any]:
        """Readiness: a bundle is loaded and the store answers or degraded mode is declared."""
        reachable = False if self._degraded else self.store.ping()
        if not reachable and not self._degraded:
            self._set_degraded(True)
        return {
            "status": "ready",
            "model_version": self._bundle.model_version,
            "store": "ok" if reachable else "unavailable",
            "degraded": self._degraded,
        }

    # ------------------------------------------------------------ feed
    def feed(
        self,
        user_id: str,
        session_id: int = 0,
        n: int | None = None,
        context: FeedContext | None = None,
        now_us: int | None = None,
    ) -> FeedResult:
        """The next ``n`` videos for ``user_id`` (see the module doc for the flow).

        Never fails for an unknown user (cold start) or a down store (degraded mode); raises
        ``ValueError`` only for ``n`` outside 1..100.
        """
        return drive(self._feed_steps(user_id, session_id, n, context, now_us))

    async def feed_async(
        self,
        user_id: str,
        session_id: int = 0,
        n: int | None = None,
        context: FeedContext | None = None,
        now_us: int | None = None,
    ) -> FeedResult:
        """:meth:`feed` on an event loop (what the HTTP app calls): the pipeline runs in the
        loop's thread and only the ranker's model call leaves it (see :func:`drive_async`).
        Thread hand-offs per request cost more CPU than the whole pipeline's blocking: one
        worker thread per request made a feed request cost ~30 % more CPU (docs/api.md)."""
        return await drive_async(self._feed_steps(user_id, session_id, n, context, now_us))

    def _feed_steps(
        self,
        user_id: str,
        session_id: int,
        n: int | None,
        context: FeedContext | None,
        now_us: int | None,
    ) -> FeedSteps[FeedResult]:
        cfg = self.config
        n = cfg.n_default if n is None else n
        if not 1 <= n <= 100:
            raise ValueError(f"n must be in 1..100, got {n}")
        ctx_in = context or FeedContext()
        now = self.clock() if now_us is None else now_us
        bundle = self._bundle  # one bundle for the whole request, even across a reload
        t_all = time.perf_counter()
        timer = _Timer(self.metrics, cfg.budget_ms / 1e3)
        fallbacks: list[str] = []

        t0 = time.perf_counter()
        arms, ov = self._assign(user_id)
        if ov.model_version is not None and ov.model_version != bundle.model_version:
            # the arm's model; an unknown label keeps the default bundle (declared fallback)
            bundle = self._arm_bundles.get(ov.model_version, bundle)
        timer.record("assignment", t0)

        t0 = time.perf_counter()
        ctx: RequestContext | None = None
        try:
            ctx = self._store(
                "read_request_context",
                lambda: self.store.read_request_context(user_id, session_id, now),
            )
        except StoreError:
            fallbacks.append("store_unavailable")
        timer.record("store_read", t0)
        degraded = ctx is None

        req = self._retrieval_request(bundle, ctx, ctx_in, now)
        cold = req.is_cold
        if cold:
            fallbacks.append("cold_start")
        cacheable = cold and req.seen.shape[0] == 0
        if cacheable:
            key = (
                bundle.model_version,
                degraded,
                n,
                ctx_in.region,
                ctx_in.age_bucket,
                ctx_in.device,
                ov.model_dump_json(),
            )
            hit = self._cold.lookup(key)
            if hit is None:
                page = yield from self._page(bundle, req, ctx, n, ov, degraded, timer)
                self._cold.put(key, cfg.cold_cache_ttl_s, page)
            else:
                page = hit[0]
            items, page_fb = page
        else:
            items, page_fb = yield from self._page(bundle, req, ctx, n, ov, degraded, timer)
        fallbacks.extend(page_fb)
        timer.record("total", t_all)

        result = FeedResult(
            request_id=secrets.randbits(53),
            user_id=user_id,
            session_id=session_id,
            model_version=bundle.model_version,
            arms=arms,
            degraded=degraded,
            fallbacks=tuple(dict.fromkeys(fallbacks)),
            items=items,
            stage_ms=timer.ms,
        )
        self._observe_page(result, bundle)
        if self._exposures is not None:
            self._log_exposure(result, now)
        return result

    def _log_exposure(self, r: FeedResult, now_us: int) -> None:
        """One exposure-log line: the page, its arms and the experiments' config version."""
        sink = self._exposures
        if sink is None:
            return
        version = self.experiments.current.version if self.experiments is not None else None
        sink.write(
            {
                "request_id": r.request_id,
                "user_id": r.user_id,
                "session_id": r.session_id,
                "ts_us": now_us,
                "model_version": r.model_version,
                "config_version": version,
                "degraded": r.degraded,
                "arms": [{"experiment": e, "arm": a} for e, a in sorted(r.arms.items())],
                "items": [
                    {
                        "video_idx": i.video_idx,
                        "rank": i.position,
                        "score": i.score,
                        "sources": list(i.sources),
                    }
                    for i in r.items
                ],
            }
        )

    def _retrieval_request(
        self, bundle: Bundle, ctx: RequestContext | None, ci: FeedContext, now: int
    ) -> RetrievalRequest:
        exclude = np.asarray(ci.exclude, np.int32)
        if ctx is None:
            return RetrievalRequest(
                user_idx=-1,
                now_us=now,
                seen=exclude,
                region=ci.region,
                age_bucket=ci.age_bucket,
                device=ci.device,
            )
        sess = ctx.session.recent_video_idx
        return RetrievalRequest(
            user_idx=-1,
            now_us=now,
            history=ctx.history,
            watch_ratio=ctx.watch_ratio,
            skipped=ctx.skipped,
            tag_idx=ctx.tag_idx,
            tag_weight=ctx.tag_weight,
            seen=np.concatenate([ctx.seen, sess, exclude]).astype(np.int32),
            region=ci.region,
            age_bucket=ci.age_bucket,
            device=ci.device,
        )

    # ------------------------------------------------------------ sources
    def _source(
        self, bundle: Bundle, name: str, req: RetrievalRequest, k: int, degraded: bool
    ) -> Candidates:
        ttl = self.config
        kf = self._shared_k(bundle)  # shared lists are fetched once, at the largest size
        if name == "trending" and not degraded:
            region = req.region or "*"
            lst = self._lists.get(
                ("trending", bundle.model_version, region),
                ttl.trending_cache_ttl_s,
                lambda: self._store(
                    "trending", lambda: self.store.trending(kf, req.now_us, region)
                ),
            )
            if len(lst) == 0 and region != "*":
                lst = self._lists.get(
                    ("trending", bundle.model_version, "*"),
                    ttl.trending_cache_ttl_s,
                    lambda: self._store("trending", lambda: self.store.trending(kf, req.now_us)),
                )
            if len(lst):
                return Candidates(name, lst.video_idx[:k], lst.score[:k].astype(np.float32))
        if name == "fresh":
            return self._fresh(bundle, req, k, degraded)
        src = bundle.retrieval.sources.get(name)
        if src is None:
            return Candidates.empty(name)
        if name == "two_tower":  # the tower knows only the bundle's videos
            keep = req.history < bundle.catalogue.n_bundle
            if not keep.all():
                req = RetrievalRequest(
                    user_idx=req.user_idx,
                    now_us=req.now_us,
                    history=req.history[keep],
                    watch_ratio=None if req.watch_ratio is None else req.watch_ratio[keep],
                    skipped=None if req.skipped is None else req.skipped[keep],
                    region=req.region,
                    age_bucket=req.age_bucket,
                    device=req.device,
                )
        return src.candidates(req, k)

    def _shared_k(self, bundle: Bundle) -> int:
        """Size of the shared trending/fresh lists: the most any request asks one source for
        (every candidate slot plus the seen-video slack), so one cached list serves all."""
        mcfg = bundle.retrieval.config.merge
        share = max(mcfg.oversample, mcfg.depth)  # the largest share plan() can ask for
        return math.ceil(self.config.n_candidates * share) + mcfg.seen_slack

    def _fresh(self, bundle: Bundle, req: RetrievalRequest, k: int, degraded: bool) -> Candidates:
        """The store's live fresh pool (new uploads included), newest first; in degraded mode
        (or with an empty store pool) the bundle's fresh source plus uploads seen here."""
        lst: ScoredList | None = None
        if not degraded:
            lst = self._lists.get(
                ("fresh",),
                self.config.fresh_cache_ttl_s,
                lambda: self._store("fresh", lambda: self.store.fresh(self._shared_k(bundle))),
            )
        if lst is not None and len(lst):
            up = lst.score
            ok = up <= req.now_us  # never propose a video "uploaded" after now
            vids, up = lst.video_idx[ok][:k], up[ok][:k]
            window = bundle.retrieval.config.fresh.window_days * 86_400.0 * US_PER_S
            score = np.clip(1.0 - (req.now_us - up) / window, 0.0, 1.0).astype(np.float32)
            return Candidates("fresh", vids, score)
        base = bundle.retrieval.fresh.candidates(req, k)
        extra = bundle.catalogue.extra_fresh()
        if not extra:
            return base
        ev = np.array([v for v, u in extra if u <= req.now_us], np.int32)
        vids = np.concatenate([ev, base.video_idx])[:k]
        _, first = np.unique(vids, return_index=True)
        vids = vids[np.sort(first)]
        return Candidates("fresh", vids, np.linspace(1.0, 0.5, vids.shape[0], dtype=np.float32))

    def _candidates(
        self,
        bundle: Bundle,
        req: RetrievalRequest,
        ov: ArmOverrides,
        degraded: bool,
        timer: _Timer,
        fallbacks: list[str],
    ) -> MergedCandidates:
        mcfg = bundle.retrieval.config.merge
        total = self.config.n_candidates
        slack = min(int(np.unique(req.seen).shape[0]), mcfg.seen_slack)
        quotas, weights, sizes = mcfg.plan(total, slack, req.is_cold, ov.source_quotas)
        deadline = time.perf_counter() + timer.left(self.config.deadline_sources_ms / 1e3)
        lists: list[Candidates] = []
        for name, k in sizes.items():
            if time.perf_counter() > deadline:
                fallbacks.append("source_error")  # out of time: later sources are skipped
                break
            t0 = time.perf_counter()
            try:
                c = self._source(bundle, name, req, k, degraded)
            except Exception as e:  # a broken source must not fail the request
                log.warning("source %s failed: %s", name, e)
                fallbacks.append("source_error")
                c = Candidates.empty(name)
            timer.record(SOURCE_STAGE.get(name, f"source_{name}"), t0)
            self.metrics.candidates_child(name).observe(len(c))
            lists.append(c)
        t0 = time.perf_counter()
        merged = merge(lists, quotas, total, req.seen, mcfg.rrf_k, weights)
        timer.record("merge", t0)
        self.metrics.candidates_child("merged").observe(len(merged))
        return merged

    # ------------------------------------------------------------ one page
    def _page(
        self,
        bundle: Bundle,
        req: RetrievalRequest,
        ctx: RequestContext | None,
        n: int,
        ov: ArmOverrides,
        degraded: bool,
        timer: _Timer,
    ) -> FeedSteps[tuple[tuple[ServedItem, ...], list[str]]]:
        fallbacks: list[str] = []
        merged = self._candidates(bundle, req, ov, degraded, timer, fallbacks)
        cat = bundle.catalogue
        # a video exists only from its upload time on: sources built offline (trending, the
        # index, explore) know the whole catalogue, so drop what is not uploaded yet at `now`
        live = cat.meta(merged.video_idx.astype(np.int64)).upload_us <= req.now_us
        if not live.all():
            merged = MergedCandidates(
                merged.video_idx[live],
                merged.score[live],
                merged.sources[live],
                merged.source_names,
            )
        if len(merged) == 0:
            return (), fallbacks
        t0 = time.perf_counter()
        vids = merged.video_idx.astype(np.int64)
        meta = cat.meta(vids)
        known = vids < cat.n_bundle
        pred = bundle.predictor
        src = np.stack(
            [
                merged.from_source(s) if s in merged.source_names else np.zeros(len(merged), bool)
                for s in pred.config.source_names
            ],
            axis=1,
        )
        history = self._history(ctx, req, cat.n_bundle)
        cands = CandidateSet(vids[known], sources=src[known])
        timer.record("features", t0)

        t0 = time.perf_counter()
        final, heads = yield from self._rank(
            bundle,
            history,
            cands,
            merged,
            known,
            fallbacks,
            timer.left(self.config.deadline_ranking_ms / 1e3),
        )
        timer.record("ranking", t0)

        t0 = time.perf_counter()
        ranked = not any(f.startswith("ranking") for f in fallbacks)
        w = self.config.retrieval_blend
        # candidates come best-first by fused score; a ranking fallback already is that order
        adjusted = blend_with_retrieval(final, w) if ranked and w > 0 else final.astype(np.float64)
        if ctx is not None and self.config.skip_penalty > 0:
            adjusted = adjusted - self.config.skip_penalty * self._topic_skips(ctx, cat, meta)
        try:
            order = self._diversify(adjusted, meta, ctx, cat, n, ov)
        except Exception as e:  # diversification is an optimisation: fall back to score order
            log.warning("rerank failed: %s", e)
            fallbacks.append("ranking_error")
            order = np.argsort(-adjusted, kind="stable")[:n]
        order = self._fresh_slots(order, merged, meta, n)
        timer.record("rerank", t0)
        if ranked:  # the drift reference holds the ranker's own scores of served pages
            self._observe_drift(bundle, final, heads, vids, meta, order, req)

        items = []
        for pos, i in enumerate(order.tolist()):
            srcs = merged.sources_of(i)
            primary = next((s for s in _REASON_ORDER if s in srcs), None)
            items.append(
                ServedItem(
                    video_idx=int(vids[i]),
                    position=pos,
                    score=float(adjusted[i]),
                    heads={h: float(v[i]) for h, v in heads.items()},
                    sources=srcs,
                    reason=_REASONS.get(primary, "recommended") if primary else "recommended",
                )
            )
        return tuple(items), fallbacks

    def _fresh_slots(
        self, order: npt.NDArray[np.int64], merged: MergedCandidates, meta: Any, n: int
    ) -> npt.NDArray[np.int64]:
        """Put the ``fresh_slots`` newest fresh-pool candidates on the page: those missing
        replace the last places (exploration for new uploads, which neither the ranker nor
        the two-tower model has seen; the rest of the page keeps its ranked order)."""
        want = min(self.config.fresh_slots, n)
        if want == 0 or "fresh" not in merged.source_names:
            return order
        fresh = np.flatnonzero(merged.from_source("fresh"))
        if fresh.shape[0] == 0:
            return order
        newest = fresh[np.lexsort((merged.video_idx[fresh], -meta.upload_us[fresh]))][:want]
        # pages are short (n <= 100): Python sets beat np.isin's sorting here
        on_page = set(order.tolist())
        new_list = newest.tolist()
        missing = [i for i in new_list if i not in on_page]
        if not missing:
            return order
        room = max(0, min(n, order.shape[0] + len(missing)) - len(missing))
        is_new = set(new_list)
        page = order.tolist()
        keep = [i for i in page if i in is_new]
        rest = [i for i in page if i not in is_new][: max(0, room - len(keep))]
        chosen = set(keep) | set(rest)
        head = [i for i in page if i in chosen]
        out: npt.NDArray[np.int64] = np.asarray(head + missing, np.int64)
        return out

    def _history(self, ctx: RequestContext | None, req: RetrievalRequest, n_known: int) -> History:
        profile = (req.region, req.age_bucket, req.device)
        if ctx is None:
            return dataclasses.replace(History.empty(req.now_us), profile=profile)
        keep = ctx.history < n_known
        sess = ctx.session
        return History(
            video_idx=ctx.history[keep].astype(np.int64),
            ts_us=ctx.history_ts[keep],
            watch_ratio=ctx.watch_ratio[keep],
            skipped=ctx.skipped[keep],
            liked=np.zeros(int(keep.sum()), bool),
            request_us=req.now_us,
            position=sess.n_served,
            session_start_us=None if sess.started_us == NO_TS else sess.started_us,
            profile=profile,
        )

    def _rank(
        self,
        bundle: Bundle,
        history: History,
        cands: CandidateSet,
        merged: MergedCandidates,
        known: npt.NDArray[np.bool_],
        fallbacks: list[str],
        timeout_s: float,
    ) -> FeedSteps[tuple[npt.NDArray[np.float64], dict[str, npt.NDArray[np.float64]]]]:
        """Final score (C,) and head scores for every merged candidate; on a ranker error or
        deadline, the fused retrieval score scaled to [0, 1] (retrieval order)."""
        c = len(merged)
        fused = merged.score.astype(np.float64)
        span = fused.max() - fused.min()
        fallback = (fused - fused.min()) / span if span > 0 else np.ones(c)
        if not known.any():
            return fallback, {}
        fut = self._batcher.submit(bundle.predictor, history, cands)
        try:
            scores = yield fut, timeout_s
        except TimeoutError:  # concurrent.futures' and asyncio's timeouts alike
            fut.cancel()
            fallbacks.append("ranking_timeout")
            return fallback, {}
        except Exception as e:
            log.warning("ranking failed: %s", e)
            fallbacks.append("ranking_error")
            return fallback, {}
        final = np.empty(c, np.float64)
        final[known] = scores.final
        # new uploads the ranker has never seen: an exploration prior, the median known score
        final[~known] = float(np.median(scores.final)) if scores.final.size else 0.0
        heads = {}
        for h, v in scores.heads.items():
            full = np.full(c, np.nan, np.float64)
            full[known] = v
            heads[h] = full
        return final, heads

    @staticmethod
    def _topic_skips(ctx: RequestContext, cat: Any, meta: Any) -> npt.NDArray[np.float64]:
        """Per candidate: how often this session skipped a video of its topic."""
        sess = ctx.session
        skipped = sess.recent_video_idx[sess.recent_skipped]
        if skipped.shape[0] == 0:
            return np.zeros(meta.category.shape[0])
        topics = cat.meta(skipped).category
        topics = topics[topics >= 0]
        if topics.shape[0] == 0:
            return np.zeros(meta.category.shape[0])
        counts = np.bincount(topics, minlength=int(max(topics.max(), meta.category.max())) + 1)
        c = meta.category
        out = np.zeros(c.shape[0])
        ok = c >= 0
        out[ok] = counts[c[ok]]
        return out

    def _diversify(
        self,
        score: npt.NDArray[np.float64],
        meta: Any,
        ctx: RequestContext | None,
        cat: Any,
        n: int,
        ov: ArmOverrides,
    ) -> npt.NDArray[np.int64]:
        pool = np.argsort(-score, kind="stable")[: max(self.config.rerank_pool, n)]
        rcfg = self._rerank_config(min(n, pool.shape[0]), ov.reranker, ov.diversity_trade_off)
        served_c: list[int] = []
        served_t: list[int] = []
        if ctx is not None and ctx.session.recent_video_idx.shape[0]:
            sm = cat.meta(ctx.session.recent_video_idx)
            served_c, served_t = sm.creator.tolist(), sm.category.tolist()
        rel = score[pool]
        span = rel.max() - rel.min()
        rel = (rel - rel.min()) / span if span > 0 else np.ones_like(rel)
        creator, topic = meta.creator[pool], meta.category[pool]
        p = self._user_topics(ctx, cat, rcfg)
        if p is not None:  # calibration: topics the catalogue does not know count as unknown
            topic = np.where(topic < p.shape[0], topic, -1)
            sim = np.zeros((0, 0))  # not read by the personalised re-ranker
        else:
            sim = rerank_similarity(rcfg, meta.tags[pool], creator, topic)
        picked = rerank(rel, sim, rcfg, creator, topic, served_c, served_t, user_topics=p)
        out: npt.NDArray[np.int64] = pool[np.asarray(picked, np.int64)]
        return out

    @staticmethod
    def _user_topics(
        ctx: RequestContext | None, cat: Any, rcfg: RerankConfig
    ) -> npt.NDArray[np.float64] | None:
        """The user's topic distribution for the personalised re-ranker, as offline
        (``fullpipeline``): the topics of the history's views that were not skipped, smoothed
        with ``topic_prior`` pseudo-events; online the history is the store's capped one.
        None without a store context (degraded) or when the config does not personalise."""
        if ctx is None or not personalised(rcfg):
            return None
        n_topics = cat.n_categories
        topics = cat.meta(ctx.history).category  # (h,) -1 unknown
        topics = np.where(topics < n_topics, topics, -1)
        engaged = ~np.asarray(ctx.skipped, bool) & (topics >= 0)
        if rcfg.topic_prior == 0 and not engaged.any():
            return None  # no evidence and no prior: the unpersonalised re-ranker
        return user_topic_distribution(
            topics, n_topics, weights=engaged.astype(np.float64), prior=rcfg.topic_prior
        )

    def _rerank_config(self, k: int, method: str | None, trade_off: float | None) -> RerankConfig:
        """The re-rank config of a page of ``k`` with an arm's overrides (memoised: a pydantic
        copy per request costs more than the page's similarity)."""
        base = self.config.rerank
        key = (k, method, trade_off)
        got = self._rerank_cfgs.get(key)
        if got is not None and got[0] is base:  # (a config replaced since is recomputed)
            return got[1]
        upd: dict[str, Any] = {"k": k}
        # an arm that sets the selector or its diversity trade-off runs that selector
        # (MMR / DPP), unpersonalised: the knobs keep the meaning they always had
        if method is not None:
            upd["method"] = method
            upd["personalise"] = "none"
        if trade_off is not None:
            upd["trade_off"] = trade_off
            upd["personalise"] = "none"
        cfg = base.model_copy(update=upd)
        if len(self._rerank_cfgs) < 256:  # arms and page sizes are few
            self._rerank_cfgs[key] = (base, cfg)
        return cfg

    def _observe_page(self, r: FeedResult, bundle: Bundle) -> None:
        m = self.metrics
        if r.degraded:
            m.degraded_responses.inc()
        for reason in r.fallbacks:
            m.child(m.fallbacks, reason).inc()
        for label in _arm_labels(r.arms):
            m.arm_children(label)[0].inc()
        for e, a in r.arms.items():
            m.experiment_assignments.labels(e, a).inc()
        if not r.items:
            return
        rows = {"final": [it.score for it in r.items]}
        for h in r.items[0].heads:
            rows[h] = [it.heads.get(h, math.nan) for it in r.items]
        m.observe_scores(rows)
        m.feed_fresh_share.observe(sum("fresh" in it.sources for it in r.items) / len(r.items))
        if len(r.items) > 1:
            tags = bundle.catalogue.meta([it.video_idx for it in r.items]).tags
            sim = tag_jaccard(tags)
            k = sim.shape[0]
            m.feed_diversity.observe(float((1.0 - sim).sum() / (k * (k - 1))))

    # ------------------------------------------------------------ events
    def ingest_events(self, events: Sequence[EventIn], now_us: int | None = None) -> IngestResult:
        """Validate, durably queue and apply a batch of feed outcomes.

        Raises :class:`EventValidationError` (nothing queued) when any event is invalid,
        :class:`ServiceUnavailable` when the store cannot queue them (nothing acknowledged).
        Replays (same user and ``event_id``) are acknowledged and change nothing. With
        ``exposure_log_dir`` set, the batch's new events go to the outcome log (one write;
        ``serving/exposure.py``), replays do not.
        """
        cfg = self.config
        now = self.clock() if now_us is None else now_us
        m = self.metrics
        errors: list[tuple[int, str, str]] = []
        if len(events) > cfg.max_events_per_batch:
            m.events_rejected.labels("validation").inc(len(events))
            raise EventValidationError(
                [
                    (
                        cfg.max_events_per_batch,
                        "",
                        f"at most {cfg.max_events_per_batch} events per batch",
                    )
                ]
            )
        lo = now - int(cfg.max_event_age_s * US_PER_S)
        hi = now + int(cfg.max_event_future_s * US_PER_S)
        ts: list[int] = []
        for i, ev in enumerate(events):
            t = now if ev.ts is None else int(ev.ts.timestamp() * US_PER_S)
            if ev.ts is not None and ev.ts.tzinfo is None:
                errors.append((i, S.TS, "must carry a time zone (UTC)"))
            elif not lo <= t <= hi:
                errors.append(
                    (
                        i,
                        S.TS,
                        f"outside [now - {cfg.max_event_age_s:g} s, "
                        f"now + {cfg.max_event_future_s:g} s]",
                    )
                )
            ts.append(t)
        if errors:
            m.events_rejected.labels("validation").inc(len(events))
            raise EventValidationError(errors)

        with self._events_lock:
            fresh_idx: list[int] = []
            batch_keys: set[tuple[str, int]] = set()
            for i, ev in enumerate(events):
                key = (ev.user_id, ev.event_id)
                if key in self._recent_events or key in batch_keys:
                    continue
                batch_keys.add(key)
                fresh_idx.append(i)
        pre_dups = len(events) - len(fresh_idx)
        bundle = self._bundle
        store_events = [self._store_event(events[i], ts[i], bundle) for i in fresh_idx]
        if store_events:
            try:
                self._store("enqueue_events", lambda: self.store.enqueue_events(store_events))
            except StoreError as e:
                m.events_rejected.labels("store_unavailable").inc(len(events))
                raise ServiceUnavailable(f"events not queued: {e}") from e
        applied = 0
        replayed = False  # the store recognised every event of the batch as already applied
        if store_events:
            try:
                applied = self._store("apply_events", lambda: self.store.apply_events(store_events))
                dups = pre_dups + len(store_events) - applied
                replayed = applied == 0
            except StoreError:
                # queued durably: the drainer applies them once the store answers again
                dups = pre_dups
        else:
            dups = pre_dups
        if self._outcomes is not None and store_events and not replayed:
            # a batch the store saw whole before (a retry that reached another worker) is not
            # logged again; a partly replayed one is logged whole (collect keeps an event's
            # first line). A failed write fails the request like a failed exposure line.
            self._log_outcomes(events, fresh_idx, store_events)
        with self._events_lock:
            for key in ((events[i].user_id, events[i].event_id) for i in fresh_idx):
                self._recent_events[key] = None
            while len(self._recent_events) > cfg.event_dedup_cache:
                self._recent_events.popitem(last=False)
        m.events_ingested.inc(applied)
        m.child(m.events_rejected, "duplicate").inc(dups)
        # behaviour counters per arm: summed over the batch first, one update per arm label
        labels_of: dict[str, list[str]] = {}
        totals: dict[str, list[float]] = {}  # label -> [impressions, watch s, skips, likes]
        lag = [max(0.0, (now - ts[i]) / US_PER_S) for i in fresh_idx]
        m.observe_many(m.event_lag, lag)
        for i, sev in zip(fresh_idx, store_events, strict=True):
            ev = events[i]
            labels = labels_of.get(ev.user_id)
            if labels is None:
                labels = labels_of[ev.user_id] = _arm_labels(self._assign(ev.user_id)[0])
            for label in labels:
                acc = totals.setdefault(label, [0.0, 0.0, 0.0, 0.0])
                acc[0] += 1
                acc[1] += ev.watch_time_s
                acc[2] += sev.skipped
                acc[3] += ev.liked
        for label, (imp, watch, skips, likes) in totals.items():
            _, c_imp, c_watch, c_skips, c_likes = m.arm_children(label)
            c_imp.inc(imp)
            c_watch.inc(watch)
            if skips:
                c_skips.inc(skips)
            if likes:
                c_likes.inc(likes)
        return IngestResult(len(events), len(store_events), applied, dups)

    def _log_outcomes(
        self, events: Sequence[EventIn], fresh_idx: list[int], store_events: list[StoreEvent]
    ) -> None:
        """One outcome-log line per new event of the batch, written in one call."""
        sink = self._outcomes
        if sink is None:
            return
        sink.write_many(
            outcome_record(
                sev.event_id,
                events[i].request_id,
                sev.user_id,
                sev.session_id,
                sev.video_idx,
                sev.ts_us,
                events[i].watch_time_s,
                sev.watch_ratio,
                sev.skipped,
                sev.liked,
                sev.shared,
                sev.followed,
            )
            for i, sev in zip(fresh_idx, store_events, strict=True)
        )

    def _store_event(self, ev: EventIn, ts_us: int, bundle: Bundle) -> StoreEvent:
        wr = ev.watch_ratio
        if wr is None:
            d = float(bundle.catalogue.meta([ev.video_idx]).duration_s[0])
            wr = ev.watch_time_s / d if d > 0 else math.nan
        skipped = (
            ev.skipped if ev.skipped is not None else (ev.watch_time_s < S.DEFAULT_SKIP_THRESHOLD_S)
        )
        e = bundle.retrieval.config.engagement
        if skipped:
            engagement = 0.0
        else:
            w = e.missing_watch_ratio if math.isnan(wr) else wr
            engagement = (
                min(w, e.watch_ratio_cap)
                + e.like_weight * ev.liked
                + e.share_weight * ev.shared
                + e.follow_weight * ev.followed
            )
        return StoreEvent(
            event_id=ev.event_id,
            user_id=ev.user_id,
            session_id=ev.session_id,
            video_idx=ev.video_idx,
            ts_us=ts_us,
            watch_ratio=wr,
            skipped=bool(skipped),
            liked=ev.liked,
            shared=ev.shared,
            followed=ev.followed,
            engagement=engagement,
            region=ev.region,
        )
