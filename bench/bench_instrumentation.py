"""Per-request cost of the Prometheus instrumentation (and of drift monitoring).

    python -m bench.bench_instrumentation [--quick]

Builds a tiny bundle once (``bench.common.work_dir("instrumentation")``), then serves it from
two apps in one process: the real app, and the same app whose ``Metrics`` are replaced by
no-ops (every counter, gauge and histogram call does nothing; the middleware, routing and
service are unchanged). Requests alternate between the two apps (same user sequence, in-process
ASGI client), so machine noise hits both alike. Each request is timed twice: wall clock, and
the process's CPU time (``time.process_time``, all threads; other processes loading the
machine do not count), and the headline is the CPU overhead, mean instrumented CPU per
request over mean bare CPU, for ``GET /v1/feed`` and ``POST /v1/events`` (target: < 5%);
wall-clock ratios are reported beside it. Both apps run the service's production garbage-collector
settings (``ServingConfig.gc_freeze``: start-up objects frozen, a higher gen-0 threshold);
without them the collections that the instrumented app's extra allocations trigger traverse
the whole heap and are charged to it (measured: ~5% instead of ~3%).

It also times ``DriftMonitor.observe`` for one page (10 scores into each of 5 features) and
``DriftMonitor.snapshot`` on full 5,000-value windows, which the service runs per request and
per scrape.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from fastapi import FastAPI
from prometheus_client.metrics import MetricWrapperBase

from bench.common import peak_rss_mb, work_dir, write_result
from shortrec import pipelines
from shortrec.config import RankerConfig, RetrievalConfig, ServingConfig, TwoTowerConfig
from shortrec.data.io import Dataset
from shortrec.monitoring import drift as D
from shortrec.retrieval.model import RetrievalModel
from shortrec.serving import app as app_module
from shortrec.serving.metrics import Metrics
from shortrec.store import MemoryStore

NAME = "instrumentation"


class _Noop:
    """Stands in for one metric: every call does nothing."""

    def labels(self, *args: Any, **kwargs: Any) -> _Noop:
        return self

    def inc(self, *args: Any, **kwargs: Any) -> None:
        return None

    dec = set = observe = inc

    def clear(self) -> None:
        return None

    @contextlib.contextmanager
    def time(self) -> Iterator[None]:
        yield


class NoopMetrics(Metrics):
    """The service's ``Metrics`` with every metric replaced by a no-op (``/metrics`` still
    renders the registry, whose metrics then stay at their initial values)."""

    def __init__(self, registry: Any) -> None:
        super().__init__(registry)
        for name, value in list(vars(self).items()):
            if isinstance(value, MetricWrapperBase):
                setattr(self, name, _Noop())

    def observe_many(self, child: Any, values: Any) -> None:
        return None


def _bundle(quick: bool) -> tuple[Path, Path, int]:
    """A tiny world and bundle, built once and reused (stamp = the build settings)."""
    root = work_dir(NAME)
    world, art, stamp = root / "world", root / "art", root / "stamp.json"
    want = {"preset": "tiny", "seed": 0, "epochs": 1}
    if not (stamp.is_file() and json.loads(stamp.read_text()).get("want") == want):
        pipelines.generate("tiny", 0, world, report=False, progress=False)
        pipelines.etl(world, progress=False)
        pipelines.train_retrieval(
            world,
            art,
            False,
            RetrievalConfig(two_tower=TwoTowerConfig(max_epochs=2, dim=16, hidden=32, threads=1)),
        )
        pipelines.train_ranker(
            world,
            art,
            False,
            RankerConfig(max_epochs=1, d_model=16, head_hidden=16, max_train_lists=300, threads=1),
        )
        stamp.write_text(json.dumps({"want": want}))
    now_us = RetrievalModel.load(art).as_of_us + 3_600 * 1_000_000
    return world, art, now_us


def _pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q))


def _app(settings: ServingConfig, art: Path, now_us: int, bare: bool) -> FastAPI:
    # create_app builds its Metrics from the module global: swap it for the bare app only
    real = vars(app_module)["Metrics"]
    vars(app_module)["Metrics"] = NoopMetrics if bare else real
    try:
        return app_module.create_app(settings, art, MemoryStore(), clock=lambda: now_us)
    finally:
        vars(app_module)["Metrics"] = real


@contextlib.asynccontextmanager
async def _client(app: FastAPI) -> Any:
    """An in-process HTTP client of ``app`` with its lifespan running."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as c:
            yield c


def _drift_costs(quick: bool) -> dict[str, float]:
    rng = np.random.default_rng(0)
    ref = D.Reference.from_samples({f"f{i}": rng.normal(size=50_000) for i in range(5)})
    mon = D.DriftMonitor(ref, window=5_000)
    page = rng.normal(size=10)
    n = 2_000 if quick else 20_000
    t0 = time.perf_counter()
    for _ in range(n):
        for f in mon.features:
            mon.observe(f, page)
    observe_us = (time.perf_counter() - t0) / n * 1e6
    reps = 20 if quick else 100
    t0 = time.perf_counter()
    for _ in range(reps):
        mon.snapshot()
    snapshot_ms = (time.perf_counter() - t0) / reps * 1e3
    return {"drift_observe_page_us": observe_us, "drift_snapshot_5x5000_ms": snapshot_ms}


async def _measure(
    inst: FastAPI, bare: FastAPI, users: list[str], warmup: int, n_requests: int
) -> tuple[dict[str, dict[str, list[float]]], int]:
    """Feed + events latencies and CPU times (ms) per app, requests alternating between the
    apps."""
    timings: dict[str, dict[str, list[float]]] = {
        kind: {"feed": [], "events": [], "feed_cpu": [], "events_cpu": []}
        for kind in ("instrumented", "bare")
    }
    event_ids = itertools.count(1)
    async with _client(inst) as ci, _client(bare) as cb:
        clients = {"instrumented": ci, "bare": cb}
        for i in range(warmup + n_requests):
            user = users[i % len(users)]
            # alternate which app goes first so neither always runs on a warmer cache
            order = ("instrumented", "bare") if i % 2 == 0 else ("bare", "instrumented")
            for kind in order:
                c = clients[kind]
                t0, c0 = time.perf_counter(), time.process_time()
                r = await c.get("/v1/feed", params={"user_id": user, "n": 10})
                t_feed, c_feed = time.perf_counter() - t0, time.process_time() - c0
                r.raise_for_status()
                page = r.json()
                events = [
                    {
                        "event_id": next(event_ids),
                        "user_id": user,
                        "session_id": page["session_id"],
                        "video_idx": it["video_idx"],
                        "watch_time_s": 5.0,
                    }
                    for it in page["items"]
                ]
                t0, c0 = time.perf_counter(), time.process_time()
                (await c.post("/v1/events", json={"events": events})).raise_for_status()
                t_events, c_events = time.perf_counter() - t0, time.process_time() - c0
                if i >= warmup:
                    timings[kind]["feed"].append(t_feed * 1e3)
                    timings[kind]["events"].append(t_events * 1e3)
                    timings[kind]["feed_cpu"].append(c_feed * 1e3)
                    timings[kind]["events_cpu"].append(c_events * 1e3)
        scrape = await ci.get("/metrics")
        scrape.raise_for_status()
    return timings, len(scrape.content)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer requests")
    args = ap.parse_args(argv)
    n_requests = 300 if args.quick else 2_000
    warmup = 30
    world, art, now_us = _bundle(args.quick)
    users = Dataset.open(world).vocab("users")["id"].to_list()
    settings = ServingConfig(rank_batching=False)  # production GC settings (gc_freeze)

    timings, scrape_bytes = asyncio.run(
        _measure(
            _app(settings, art, now_us, bare=False),
            _app(settings, art, now_us, bare=True),
            users,
            warmup,
            n_requests,
        )
    )

    metrics: dict[str, float] = {}
    for route in ("feed", "events"):
        a, b = timings["instrumented"][route], timings["bare"][route]
        metrics[f"{route}_p50_ms_instrumented"] = _pct(a, 50)
        metrics[f"{route}_p50_ms_bare"] = _pct(b, 50)
        metrics[f"{route}_p99_ms_instrumented"] = _pct(a, 99)
        metrics[f"{route}_p99_ms_bare"] = _pct(b, 99)
        metrics[f"{route}_mean_ms_instrumented"] = statistics.fmean(a)
        metrics[f"{route}_mean_ms_bare"] = statistics.fmean(b)
        metrics[f"{route}_latency_ratio_p50"] = _pct(a, 50) / _pct(b, 50)
        metrics[f"{route}_latency_ratio_mean"] = statistics.fmean(a) / statistics.fmean(b)
        metrics[f"{route}_overhead_pct_p50"] = (_pct(a, 50) / _pct(b, 50) - 1) * 100
        metrics[f"{route}_overhead_us_p50"] = (_pct(a, 50) - _pct(b, 50)) * 1e3
        metrics[f"{route}_overhead_us_mean"] = (statistics.fmean(a) - statistics.fmean(b)) * 1e3
        ca, cb = timings["instrumented"][f"{route}_cpu"], timings["bare"][f"{route}_cpu"]
        metrics[f"{route}_cpu_ms_instrumented"] = statistics.fmean(ca)
        metrics[f"{route}_cpu_ms_bare"] = statistics.fmean(cb)
        metrics[f"{route}_overhead_cpu_us"] = (statistics.fmean(ca) - statistics.fmean(cb)) * 1e3
        metrics[f"{route}_overhead_pct_cpu"] = (
            statistics.fmean(ca) / statistics.fmean(cb) - 1
        ) * 100
        metrics[f"{route}_overhead_pct_mean"] = (
            statistics.fmean(a) / statistics.fmean(b) - 1
        ) * 100
    metrics["metrics_scrape_bytes"] = float(scrape_bytes)
    metrics.update(_drift_costs(args.quick))
    metrics["peak_rss_mb"] = peak_rss_mb()
    config = {
        "quick": args.quick,
        "requests_per_app": n_requests,
        "warmup_per_app": warmup,
        "client": "in-process ASGI (httpx.ASGITransport), requests alternating between apps",
        "bundle": "tiny preset, seed 0",
        "page_size": 10,
    }
    path = write_result(NAME, config, metrics)
    for k, v in metrics.items():
        print(f"{k:36s} {v:12.4f}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
