"""Load benchmark of the serving stack: wrk against `shortrec serve` on 127.0.0.1, real Redis.

Builds (once, cached under ``bench/.work/serving``) a trained bundle on a generated world,
starts a private ``redis-server`` and publishes the dataset into it, then starts the service
with ``--workers`` uvicorn processes and drives it with ``wrk`` (the load generator shares the
machine's cores with the service). Runs, each bounded in time:

1. ``feed``: personalised ``GET /v1/feed`` (published users, ``n=10``, 500 candidates ranked),
   with micro-batching on; 2. the same with micro-batching off (``rank_max_batch`` 1: one
   request per model call, still off the event loop); 3. ``mix``: 80 % feed,
   20 % ``POST /v1/events`` batches of 5; 4. ``paced``: the same mix offered at a steady
   ``--paced-feed-rps`` feeds/s (default 500, the target) by ``--paced-connections`` connections
   with exponential think times: the latency a service running at that rate gives, where the
   closed-loop runs 1-3 (every connection sends its next request as soon as it has an answer)
   measure capacity and the queueing at saturation; 5. ``trivial``: ``GET /healthz`` (the
   ceiling of the HTTP stack itself, in the same run).

In process, the CPU per feed request of the app's dispatch (the pipeline on the event loop,
only the model call in the batcher's thread) is compared with the earlier one (each request
in a worker thread), alternating rounds in one process (``dispatch_*``).

Per-stage p50/p99 come from the same pipeline run in process (``FeedService.feed`` over the
same Redis), since each worker keeps its own histograms. The machine load (``os.getloadavg``)
before the runs is recorded with the numbers.

    python -m bench.bench_serving [--quick] [--workers 2] [--duration 15] [--connections 32]

Needs ``wrk`` (Debian package ``wrk``) and ``redis-server`` on PATH.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.common import work_dir, write_result

US = 1_000_000
#: response time the paced run's think time leaves room for in each connection's cycle
PACED_RESPONSE_MS = 5.0

_WRK_FEED = """
math.randomseed(%(seed)d)
local n_users = %(n_users)d
request = function()
  local u = math.random(0, n_users - 1)
  return wrk.format("GET", "/v1/feed?user_id=u" .. u .. "&session_id=1&n=10")
end
"""

#: 80/20 feed/event mix (share ``event_share``); ``done`` prints the feeds issued
_WRK_MIX = """
math.randomseed(%(seed)d)
local n_users, n_videos = %(n_users)d, %(n_videos)d
local counter, thread_id, ids = 0, 0, 0
feeds = 0
local threads = {}
setup = function(thread)
  table.insert(threads, thread)
  ids = ids + 1
  thread:set("tid", ids)
end
init = function(args)
  thread_id = tid or 0
end
request = function()
  local u = math.random(0, n_users - 1)
  if math.random() < %(event_share)f then
    local parts = {}
    for i = 1, 5 do
      counter = counter + 1
      local eid = thread_id * 1000000000 + counter
      parts[i] = string.format(
        '{"event_id":%%d,"user_id":"u%%d","session_id":1,"video_idx":%%d,"watch_time_s":%%.1f}',
        eid, u, math.random(0, n_videos - 1), math.random() * 30)
    end
    local body = '{"events":[' .. table.concat(parts, ",") .. ']}'
    return wrk.format("POST", "/v1/events", {["Content-Type"] = "application/json"}, body)
  end
  feeds = feeds + 1
  return wrk.format("GET", "/v1/feed?user_id=u" .. u .. "&session_id=1&n=10")
end
done = function(summary, latency, requests)
  local n = 0
  for _, t in ipairs(threads) do n = n + t:get("feeds") end
  io.write(string.format("feeds issued: %%d\\n", n))
end
"""

#: the mix with think time: each connection waits an exponential pause (mean ``think_ms``)
#: before each request, so C connections offer about ``C / (think + response time)`` requests/s
#: at a steady rate, where the closed-loop runs send as fast as the service answers and so
#: measure capacity with every connection queued
_WRK_PACED = (
    _WRK_MIX
    + """
delay = function()
  return -%(think_ms)f * math.log(1 - math.random())
end
"""
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bundle(preset: str) -> tuple[Path, Path]:
    """The cached dataset + bundle for ``preset`` (built on first use)."""
    from shortrec import pipelines
    from shortrec.config import RankerConfig, RetrievalConfig, TwoTowerConfig

    base = work_dir("serving") / preset
    root, art = base / "world", base / "art"
    if (art / "manifest.json").is_file() and (root / "etl" / "manifest.json").is_file():
        return root, art
    shutil.rmtree(base, ignore_errors=True)
    pipelines.generate(preset, 0, root, report=False, progress=False)
    pipelines.etl(root, progress=False)
    pipelines.train_retrieval(
        root, art, False, RetrievalConfig(two_tower=TwoTowerConfig(max_epochs=3, threads=2))
    )
    pipelines.train_ranker(root, art, False, RankerConfig(max_epochs=2, max_train_lists=5_000))
    return root, art


@contextlib.contextmanager
def _redis() -> Iterator[str]:
    exe = shutil.which("redis-server")
    if exe is None:
        raise SystemExit("redis-server not found on PATH")
    port = _free_port()
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_port(port)
        yield f"redis://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _wait_port(port: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


@contextlib.contextmanager
def _service(
    art: Path, redis_url: str, workers: int, batching: bool, **overrides: Any
) -> Iterator[tuple[str, int]]:
    from shortrec.config import ServingConfig

    cfg = ServingConfig(rank_batching=batching, workers=workers, **overrides)
    with serve_process(art, redis_url, workers, cfg.model_dump_json()) as got:
        yield got


@contextlib.contextmanager
def serve_process(
    art: Path, redis_url: str, workers: int, config_json: str, src: Path | None = None
) -> Iterator[tuple[str, int]]:
    """``serve`` in a child process with ``config_json`` as its settings (from ``src``, a
    checkout's ``src/`` directory, instead of the installed package when given), ready and
    with every worker's caches warm: yields ``(url, pid)``; stopped on exit."""
    port = _free_port()
    env = {**os.environ, "SHORTREC_SERVING_CONFIG": config_json}
    if src is not None:
        env["PYTHONPATH"] = str(src)
    code = (
        "from pathlib import Path; from shortrec.serving.app import serve; "
        f"serve(Path({str(art)!r}), {redis_url!r}, '127.0.0.1', {port}, {workers})"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"service did not become ready ({src or 'installed'})")
            time.sleep(0.2)
        with httpx.Client(base_url=url, timeout=10) as c:  # warm every worker's caches
            for i in range(200):
                c.get("/v1/feed", params={"user_id": f"u{i % 50}", "session_id": 1, "n": 10})
        yield url, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) used so far by ``pid``'s descendants: the workers."""
    import psutil

    total = 0.0
    for p in psutil.Process(pid).children(recursive=True):
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system
    return total


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    if m is None:
        return float("nan")
    v, unit = float(m.group(1)), m.group(2)
    return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v


def _wrk(url: str, path: str, script: str | None, duration_s: int, conns: int) -> dict[str, float]:
    """Run wrk (1 thread) and parse requests/s, latency percentiles and errors."""
    cmd = ["wrk", "-t1", f"-c{conns}", f"-d{duration_s}s", "--latency", "--timeout", "2s"]
    tmp = None
    if script is not None:
        tmp = work_dir("serving") / "load.lua"
        tmp.write_text(script)
        cmd += ["-s", str(tmp)]
    out = subprocess.run([*cmd, url + path], capture_output=True, text=True, check=True).stdout
    res: dict[str, float] = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    res["rps"] = float(m.group(1)) if m else float("nan")
    for q in ("50", "90", "99"):
        m = re.search(rf"^\s+{q}(?:\.000)?%\s+(\S+)", out, re.M)
        res[f"p{q}_ms"] = _ms(m.group(1)) if m else float("nan")
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errors += sum(int(g) for g in m.groups())
    res["errors"] = float(errors)
    m = re.search(r"(\d+) requests in", out)
    res["requests"] = float(m.group(1)) if m else float("nan")
    m = re.search(r"feeds issued: (\d+)", out)  # scripts that count them (_WRK_PACED)
    if m:
        res["feed_rps"] = int(m.group(1)) / duration_s
    return res


def _stages(art: Path, redis_url: str, n_users: int, n: int) -> dict[str, float]:
    """p50/p99 per pipeline stage from ``n`` in-process feed requests over the same Redis."""
    from shortrec.config import ServingConfig, StoreConfig
    from shortrec.serving.app import single_thread_compute
    from shortrec.serving.metrics import Metrics, new_registry
    from shortrec.serving.service import FeedService
    from shortrec.serving.snapshot import Bundle
    from shortrec.store import open_store

    store = open_store(StoreConfig(url=redis_url))
    single_thread_compute()  # as in a serving worker
    svc = FeedService(
        ServingConfig(rank_batching=False),
        Bundle.load(art, rank_threads=1),
        store,
        Metrics(new_registry()),
    )
    rng = np.random.default_rng(0)
    per: dict[str, list[float]] = {}
    cpu = 0.0
    try:
        for i in range(n + 50):
            c0 = time.process_time()
            r = svc.feed(f"u{int(rng.integers(n_users))}", 1, 10)
            if i >= 50:  # warm-up excluded
                cpu += time.process_time() - c0
                for stage, ms in r.stage_ms.items():
                    per.setdefault(stage, []).append(ms)
    finally:
        svc.close()
        store.close()
    out: dict[str, float] = {"inprocess_cpu_ms_per_req": round(cpu / n * 1e3, 3)}
    for stage, values in sorted(per.items()):
        out[f"stage_{stage}_p50_ms"] = round(float(np.percentile(values, 50)), 3)
        out[f"stage_{stage}_p99_ms"] = round(float(np.percentile(values, 99)), 3)
    return out


def _dispatch(
    art: Path, redis_url: str, n_users: int, rounds: int, per_round: int
) -> dict[str, float]:
    """CPU per feed request of the two ways to run the pipeline for concurrent requests, in
    one process over the same Redis, alternating rounds of ``per_round`` requests (16 at a
    time): ``threads``, each request in a worker thread (what the app did before) with the
    model call in the batcher's thread; ``loop``, the pipeline on an asyncio loop with only
    the model call in the batcher's thread (``FeedService.feed_async``, what the app does).
    Reports medians over rounds and the median of the per-round ratio loop / threads."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from shortrec.config import ServingConfig, StoreConfig
    from shortrec.serving.app import single_thread_compute
    from shortrec.serving.metrics import Metrics, new_registry
    from shortrec.serving.service import FeedService
    from shortrec.serving.snapshot import Bundle
    from shortrec.store import open_store

    conc = 16
    store = open_store(StoreConfig(url=redis_url))
    single_thread_compute()
    svc = FeedService(
        ServingConfig(), Bundle.load(art, rank_threads=1), store, Metrics(new_registry())
    )
    rng = np.random.default_rng(1)
    pool = ThreadPoolExecutor(conc)
    loop = asyncio.new_event_loop()

    def users() -> list[str]:
        return [f"u{int(u)}" for u in rng.integers(n_users, size=per_round)]

    def threads() -> None:
        futs = [pool.submit(svc.feed, u, 1, 10) for u in users()]
        for f in futs:
            f.result()

    async def on_loop() -> None:
        sem = asyncio.Semaphore(conc)

        async def one(u: str) -> None:
            async with sem:
                await svc.feed_async(u, 1, 10)

        await asyncio.gather(*(one(u) for u in users()))

    def on_loop_blocking() -> None:
        loop.run_until_complete(on_loop())

    modes: dict[str, Callable[[], None]] = {"threads": threads, "loop": on_loop_blocking}
    cpu: dict[str, list[float]] = {m: [] for m in modes}
    try:
        for m in modes.values():  # warm-up
            m()
        for _ in range(rounds):
            for name, run in modes.items():
                c0 = time.process_time()
                run()
                cpu[name].append((time.process_time() - c0) / per_round * 1e3)
    finally:
        pool.shutdown()
        loop.close()
        svc.close()
        store.close()
    ratio = np.array(cpu["loop"]) / np.array(cpu["threads"])
    return {
        "dispatch_threads_cpu_ms_per_req": round(float(np.median(cpu["threads"])), 3),
        "dispatch_loop_cpu_ms_per_req": round(float(np.median(cpu["loop"])), 3),
        "dispatch_loop_over_threads_cpu_ratio": round(float(np.median(ratio)), 3),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny world, 5 s runs")
    ap.add_argument("--preset", default=None, help="world preset (default: tiny)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--duration", type=int, default=None, help="seconds per wrk run")
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--event-share", type=float, default=0.2)
    ap.add_argument(
        "--paced-feed-rps",
        type=float,
        default=500.0,
        help="feed requests/s the paced mix offers (the target's rate)",
    )
    ap.add_argument("--paced-connections", type=int, default=64)
    ap.add_argument(
        "--name",
        default="serving",
        help="results file name (e.g. serving_c16 for a connection sweep point)",
    )
    args = ap.parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk not found: apt-get install -y wrk", file=sys.stderr)
        return 1
    preset = args.preset or "tiny"
    duration = args.duration or (5 if args.quick else 15)
    root, art = _bundle(preset)
    from shortrec.publish import publish

    load_before = os.getloadavg()
    n_users = json.loads((root / "manifest.json").read_text()).get("counts", {}).get("users")
    metrics: dict[str, Any] = {}
    with _redis() as redis_url:
        pub = publish(root, art, redis_url, progress=False)
        n_users = int(n_users or pub["users"])
        import polars as pl

        n_videos = pl.read_parquet(root / "videos.parquet").height
        fmt = {"seed": 1, "n_users": n_users, "n_videos": n_videos, "event_share": args.event_share}
        for batching in (True, False):
            # off = one request per model call, still in the batcher's thread (the feed's
            # pipeline runs on the event loop, which must not run the model itself)
            off = {} if batching else {"rank_max_batch": 1}
            with _service(art, redis_url, args.workers, True, **off) as (url, pid):
                cpu0 = _tree_cpu_s(pid)
                r = _wrk(url, "/v1/feed", _WRK_FEED % fmt, duration, args.connections)
                tag = "feed" if batching else "feed_nobatch"
                metrics[f"{tag}_req_per_s"] = r["rps"]
                # CPU the workers spent per feed request (HTTP, pipeline and ranking), which
                # with the cores they share bounds the throughput
                metrics[f"{tag}_worker_cpu_ms_per_req"] = round(
                    (_tree_cpu_s(pid) - cpu0) / max(r["requests"], 1) * 1e3, 3
                )
                for q in ("p50", "p90", "p99"):
                    metrics[f"{tag}_{q}_ms"] = r[f"{q}_ms"]
                metrics[f"{tag}_errors"] = int(r["errors"])
                if batching:
                    m = _wrk(url, "/v1/feed", _WRK_MIX % fmt, duration, args.connections)
                    metrics["mix_req_per_s"] = m["rps"]
                    metrics["mix_p50_ms"], metrics["mix_p99_ms"] = m["p50_ms"], m["p99_ms"]
                    metrics["mix_errors"] = int(m["errors"])
                    # the target's test: the mix offered at a steady rate of feeds
                    total_rps = args.paced_feed_rps / (1.0 - args.event_share)
                    cycle_ms = 1e3 * args.paced_connections / total_rps
                    paced = {**fmt, "think_ms": max(0.0, cycle_ms - PACED_RESPONSE_MS)}
                    p = _wrk(url, "/v1/feed", _WRK_PACED % paced, duration, args.paced_connections)
                    metrics["paced_req_per_s"] = p["rps"]
                    metrics["paced_feed_req_per_s"] = round(p.get("feed_rps", math.nan), 2)
                    for q in ("p50", "p90", "p99"):
                        metrics[f"paced_{q}_ms"] = p[f"{q}_ms"]
                    metrics["paced_errors"] = int(p["errors"])
                    t = _wrk(url, "/healthz", None, duration, args.connections)
                    metrics["trivial_req_per_s"] = t["rps"]
                    metrics["trivial_p99_ms"] = t["p99_ms"]
                    metrics["trivial_errors"] = int(t["errors"])
        metrics.update(_stages(art, redis_url, n_users, 300 if args.quick else 1000))
        metrics.update(_dispatch(art, redis_url, n_users, 4 if args.quick else 12, 160))
    metrics["load_avg_1m_before"] = round(load_before[0], 2)
    metrics["load_avg_1m_after"] = round(os.getloadavg()[0], 2)
    config = {
        "preset": preset,
        "workers": args.workers,
        "duration_s": duration,
        "connections": args.connections,
        "event_share": args.event_share,
        "candidates": 500,
        "page": 10,
        "generator": "wrk -t1",
        "paced_feed_rps_offered": args.paced_feed_rps,
        "paced_connections": args.paced_connections,
        "cores": os.cpu_count(),
    }
    path = write_result(args.name, config, metrics)
    print(json.dumps(metrics, indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
