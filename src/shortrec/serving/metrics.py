"""Every Prometheus metric of the service, by name (the contract with ``deploy/``).

The names and labels are fixed by the metric-name contract (docs/api.md, "Metrics"); alert
rules and dashboards use exactly these. The registry is injected (no global registry), so
tests and several apps in one process never share state. Label values are bounded: routes
are templates (``/v1/feed``), arms come from the loaded experiment config, stages, sources,
heads and reasons from the fixed tuples below.

Several worker processes (``shortrec serve --workers W``) share their metrics through
prometheus_client's multiprocess mode: when ``PROMETHEUS_MULTIPROC_DIR`` is set (``serve`` sets
it to a fresh directory before it starts the workers), every value lives in a memory-mapped file
of that directory and ``render`` aggregates all workers, so any worker answering a scrape
reports the whole service (counters and histograms summed; gauges by the ``multiprocess_mode``
given below).

Hot paths avoid per-call label lookups: stage and score-head children are resolved once
(``Metrics.child``), and :func:`observe_many` records a whole array of values
in one call.

This is the only module that imports ``prometheus_client``.
"""

from __future__ import annotations

import bisect
import math
import os
from collections.abc import Iterable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

#: most labelled children ``Metrics.child`` keeps
MAX_CACHED_CHILDREN = 4_096
_ARM_CHILDREN = object()  # cache key of ``Metrics.arm_children`` tuples
#: environment variable of prometheus_client's multiprocess mode (a directory)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

STAGES = (
    "assignment",
    "store_read",
    "source_trending",
    "source_tags",
    "source_vector",
    "source_covisit",
    "source_fresh",
    "source_explore",
    "merge",
    "features",
    "ranking",
    "rerank",
    "total",
)
FALLBACK_REASONS = (
    "ranking_error",
    "ranking_timeout",
    "store_unavailable",
    "source_error",
    "cold_start",
)
REJECT_REASONS = ("validation", "duplicate", "store_unavailable")
SCORE_HEADS = ("final", "engage", "complete", "like", "diversity")
NO_ARM = "none"

# seconds; dense below 50 ms where the latency budget lives
_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.03,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)
_UNIT_BUCKETS = tuple(i / 20 for i in range(1, 21))
_COUNT_BUCKETS = (0, 1, 5, 10, 25, 50, 100, 200, 300, 500, 750, 1000, 2000)
_BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64)
_LAG_BUCKETS = (0.1, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600, 86_400)


class Metrics:
    """All metrics of one service instance, registered in ``registry``.

    Attribute names follow the metric names without the ``shortrec_`` prefix (and without
    ``_total`` for counters).
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        r = registry
        # HTTP
        self.http_requests = Counter(
            "shortrec_http_requests",
            "HTTP requests by route template, method and status.",
            ("route", "method", "status"),
            registry=r,
        )
        self.http_request_duration = Histogram(
            "shortrec_http_request_duration_seconds",
            "HTTP request latency.",
            ("route", "method"),
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.http_in_flight = Gauge(
            "shortrec_http_requests_in_flight",
            "HTTP requests being served.",
            registry=r,
            multiprocess_mode="livesum",
        )
        # pipeline
        self.stage_duration = Histogram(
            "shortrec_stage_duration_seconds",
            "Duration of one feed pipeline stage.",
            ("stage",),
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.candidates = Histogram(
            "shortrec_candidates",
            "Candidates per source per request (source=merged: after dedupe and seen filter).",
            ("source",),
            buckets=_COUNT_BUCKETS,
            registry=r,
        )
        self.fallbacks = Counter(
            "shortrec_fallbacks", "Declared fallbacks taken, by reason.", ("reason",), registry=r
        )
        self.degraded_responses = Counter(
            "shortrec_degraded_responses", "Feed responses served in degraded mode.", registry=r
        )
        self.degraded = Gauge(
            "shortrec_degraded",
            "1 while serving from the in-process snapshot (any worker).",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.store_errors = Counter(
            "shortrec_store_errors", "Online store errors by operation.", ("op",), registry=r
        )
        self.store_duration = Histogram(
            "shortrec_store_duration_seconds",
            "Online store call latency by operation.",
            ("op",),
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.cache_requests = Counter(
            "shortrec_cache_requests",
            "In-process cache lookups.",
            ("cache", "result"),
            registry=r,
        )
        self.rank_batch_size = Histogram(
            "shortrec_rank_batch_size",
            "Requests per ranking model call.",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        # model
        self.model_info = Gauge(
            "shortrec_model_info",
            "The loaded bundle (value 1).",
            ("model_version", "ranker_backend"),
            registry=r,
            multiprocess_mode="liveall",  # one series per worker (label pid)
        )
        self.model_ready = Gauge(
            "shortrec_model_ready",
            "1 when a bundle is loaded (in every worker).",
            registry=r,
            multiprocess_mode="livemin",
        )
        self.score = Histogram(
            "shortrec_score",
            "Scores of served items by head.",
            ("head",),
            buckets=_UNIT_BUCKETS,
            registry=r,
        )
        self.feed_diversity = Histogram(
            "shortrec_feed_diversity",
            "Intra-list diversity of a served page (tag Jaccard).",
            buckets=_UNIT_BUCKETS,
            registry=r,
        )
        self.feed_fresh_share = Histogram(
            "shortrec_feed_fresh_share",
            "Share of fresh-source videos per served page.",
            buckets=_UNIT_BUCKETS,
            registry=r,
        )
        self.feeds_served = Counter(
            "shortrec_feeds_served",
            "Feed pages served by experiment arm.",
            ("arm",),
            registry=r,
        )
        # behaviour
        self.impressions = Counter(
            "shortrec_impressions", "Impressions reported by clients.", ("arm",), registry=r
        )
        self.skips = Counter("shortrec_skips", "Skips reported.", ("arm",), registry=r)
        self.likes = Counter("shortrec_likes", "Likes reported.", ("arm",), registry=r)
        self.watch_seconds = Counter(
            "shortrec_watch_seconds", "Seconds watched.", ("arm",), registry=r
        )
        self.events_ingested = Counter(
            "shortrec_events_ingested", "Events newly applied to the store.", registry=r
        )
        self.events_rejected = Counter(
            "shortrec_events_rejected",
            "Events not ingested, by reason.",
            ("reason",),
            registry=r,
        )
        self.event_lag = Histogram(
            "shortrec_event_lag_seconds",
            "Receive time minus event time.",
            buckets=_LAG_BUCKETS,
            registry=r,
        )
        # drift
        self.drift_psi = Gauge(
            "shortrec_drift_psi",
            "Population stability index vs the training reference.",
            ("feature",),
            registry=r,
            multiprocess_mode="livemostrecent",  # the worker that computed it last
        )
        self.drift_ks = Gauge(
            "shortrec_drift_ks",
            "Kolmogorov-Smirnov statistic vs the training reference.",
            ("feature",),
            registry=r,
            multiprocess_mode="livemostrecent",
        )
        # experiments
        self.experiment_assignments = Counter(
            "shortrec_experiment_assignments",
            "Feed requests per experiment arm (for SRM).",
            ("experiment", "arm"),
            registry=r,
        )
        self.experiment_allocation = Gauge(
            "shortrec_experiment_allocation",
            "Expected traffic share of an arm (0..1).",
            ("experiment", "arm"),
            registry=r,
            multiprocess_mode="livemax",
        )
        # every fixed label value exists from the start, so rates are 0 rather than absent
        for reason in FALLBACK_REASONS:
            self.fallbacks.labels(reason)
        for reason in REJECT_REASONS:
            self.events_rejected.labels(reason)
        self.degraded_responses.inc(0)
        self.events_ingested.inc(0)
        self.feeds_served.labels(NO_ARM)
        for m in (self.impressions, self.skips, self.likes, self.watch_seconds):
            m.labels(NO_ARM)
        # labelled children resolved once for the hot paths (see ``child``)
        self._children: dict[tuple[object, tuple[str, ...]], Any] = {}
        for stage in STAGES:
            self.child(self.stage_duration, stage)
        for head in SCORE_HEADS:
            self.child(self.score, head)
        self._model_labels: tuple[str, str] | None = None
        self._allocation: set[tuple[str, str]] = set()

    def child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, cached: the hot paths skip prometheus_client's label
        validation and lock. Only for metrics that are never cleared; the cache stops growing
        at ``MAX_CACHED_CHILDREN`` (label values such as HTTP methods come from clients)."""
        key = (metric, labels)
        got = self._children.get(key)
        if got is None:
            got = metric.labels(*labels)
            if len(self._children) < MAX_CACHED_CHILDREN:
                self._children[key] = got
        return got

    def observe_many(self, child: Histogram, values: Iterable[float]) -> None:
        """:func:`observe_many` (a method, so a metrics stand-in can replace it)."""
        observe_many(child, values)

    def observe_scores(self, rows: dict[str, list[float]]) -> None:
        """``shortrec_score`` for one page: ``{head: the page's values}``; the same buckets and
        sums as one ``observe`` per finite value (pinned by a test), one increment per bucket
        touched."""
        for h, values in rows.items():
            self.observe_many(self.child(self.score, h), values)

    def arm_children(self, arm: str) -> tuple[Counter, Counter, Counter, Counter, Counter]:
        """(feeds served, impressions, watch seconds, skips, likes) children of an arm label
        (the tuple cached like the children)."""
        key = (_ARM_CHILDREN, (arm,))
        got = self._children.get(key)
        if got is None:
            got = self._children[key] = tuple(
                self.child(m, arm)
                for m in (
                    self.feeds_served,
                    self.impressions,
                    self.watch_seconds,
                    self.skips,
                    self.likes,
                )
            )
        return got

    def stage(self, stage: str) -> Histogram:
        """The stage-duration child of ``stage``."""
        child: Histogram = self.child(self.stage_duration, stage)
        return child

    def candidates_child(self, source: str) -> Histogram:
        """The candidates-per-request child of ``source``."""
        child: Histogram = self.child(self.candidates, source)
        return child

    def set_model(self, model_version: str, backend: str) -> None:
        """Mark ``model_version`` (served with ``backend``) as the one loaded bundle."""
        if self._model_labels is not None:  # multiprocess files keep cleared series: zero it
            self.model_info.labels(*self._model_labels).set(0)
        self.model_info.clear()
        self._model_labels = (model_version, backend)
        self.model_info.labels(model_version, backend).set(1)
        self.model_ready.set(1)

    def set_allocation(self, shares: dict[tuple[str, str], float]) -> None:
        """Replace the expected arm shares with ``{(experiment, arm): share}``."""
        for exp, arm in self._allocation - set(shares):  # see set_model
            self.experiment_allocation.labels(exp, arm).set(0)
        self.experiment_allocation.clear()
        self._allocation = set(shares)
        for (exp, arm), share in shares.items():
            self.experiment_allocation.labels(exp, arm).set(share)

    def set_drift(self, values: dict[str, tuple[float, float]]) -> None:
        """Publish ``{feature: (psi, ks)}`` as computed by ``shortrec.monitoring``."""
        for feature, (psi, ks) in values.items():
            self.drift_psi.labels(feature).set(psi)
            self.drift_ks.labels(feature).set(ks)

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition and its content type: this registry, or in
        multiprocess mode every worker's values aggregated from the shared directory."""
        if multiprocess_dir() is None:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        agg = CollectorRegistry()
        multiprocess.MultiProcessCollector(agg)  # type: ignore[no-untyped-call]
        return generate_latest(agg), CONTENT_TYPE_LATEST


def new_registry() -> CollectorRegistry:
    """A fresh, empty registry (one per app)."""
    return CollectorRegistry(auto_describe=True)


def multiprocess_dir() -> str | None:
    """The multiprocess directory when this process runs in multiprocess mode, else None."""
    return os.environ.get(MULTIPROC_ENV) or None


def mark_worker_dead(pid: int) -> None:
    """Drop a stopped worker's live gauges (multiprocess mode; no-op otherwise)."""
    if multiprocess_dir() is not None:
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def observe_many(child: Histogram, values: Iterable[float]) -> None:
    """Observe every finite value of ``values`` on the histogram ``child`` (a labelled child
    or an unlabelled histogram) in one go: the same buckets and sum as one ``observe`` per
    value (pinned by a test), with one increment per bucket touched instead of one bucket
    scan per value. Non-finite values are skipped. Plain Python with ``bisect``: for the
    tens of values of one request it is faster than NumPy's per-call overhead.

    Uses the histogram's bucket bounds and value cells (``_upper_bounds``, ``_buckets``,
    ``_sum``), which prometheus_client (pinned in pyproject.toml) has no public batch API for.
    """
    bounds = child._upper_bounds
    counts: dict[int, int] = {}
    total = 0.0
    for v in values:
        x = float(v)
        if not math.isfinite(x):
            continue
        # observe() puts a value in the first bucket whose bound is >= the value
        i = bisect.bisect_left(bounds, x)
        counts[i] = counts.get(i, 0) + 1
        total += x
    if not counts:
        return
    child._sum.inc(total)
    cells = child._buckets
    for i, n in counts.items():
        cells[i].inc(n)
