"""``shortrec demo`` / ``make demo``: the whole loop on embedded defaults, no server needed.

generate (small world) -> validate -> ETL -> train retrieval + ranker + drift reference ->
offline evaluation (temporal and oracle) -> publish to the online store -> start the API and
call it over HTTP -> a simulated A/B test through the serving stack -> reports.

This module composes the offline root (:mod:`shortrec.pipelines`), the serving app and the A/B
simulator; each stage names itself and what to do when it fails. With ``SHORTREC_REDIS_URL`` set
the store is that Redis instead of the in-process one.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console

from shortrec import pipelines
from shortrec import schema as S
from shortrec.config import RankerConfig
from shortrec.data import io

console = Console(stderr=True)
T = TypeVar("T")

SCENARIO = """# Written by `shortrec demo`: the learned ranker against retrieval order only.
[[experiments]]
name = "ranker-vs-retrieval"
description = "Multi-task ranker vs fused retrieval order"

[[experiments.arms]]
name = "ranker"

[[experiments.arms]]
name = "retrieval-only"
overrides = {{ model_version = "retrieval-only" }}

[simulation]
n_users = {n_users}
days = 1.0
sessions_per_day = 1.0
seed = 0
page_size = 8
mode = "inprocess"
"""


#: The demo trains a smaller ranker budget than the library default so that the whole loop,
#: including the two offline protocols that retrain the full pipeline on their own training
#: data, fits in the 10-minute demo budget on 2 cores.
DEMO_RANKER = RankerConfig(max_epochs=4, max_train_lists=12_000)


class StageError(RuntimeError):
    """A demo stage failed; the message names the stage and what to do."""


class _Stages:
    """Runs the demo's stages: a banner, the time taken (kept in ``seconds``, written to
    demo-summary.json), and a failure turned into a :class:`StageError` naming the stage."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def __call__(self, name: str, hint: str, fn: Callable[[], T]) -> T:
        console.rule(f"[bold]{name}")
        t0 = time.perf_counter()
        try:
            value = fn()
        except S.BadInput:
            raise
        except Exception as e:
            raise StageError(f"stage '{name}' failed: {type(e).__name__}: {e}. {hint}") from e
        dt = time.perf_counter() - t0
        self.seconds[name] = round(dt, 2)
        console.print(f"[green]{name}[/] done in {dt:.1f}s")
        return value


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _call_api(art: Path, redis_url: str | None) -> dict[str, Any]:
    """Start the real FastAPI app on a loopback port, call it over HTTP, stop it."""
    import uvicorn

    from shortrec.config import ServingConfig, StoreConfig
    from shortrec.serving.app import create_app
    from shortrec.store import open_store

    store = open_store(StoreConfig(url=redis_url)) if redis_url else None
    app = create_app(ServingConfig(), art, store)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{base}/readyz", timeout=2) as r:
                    ready = json.loads(r.read())
                break
            except OSError:
                time.sleep(0.2)
        else:
            raise RuntimeError("the API did not become ready within 60 s")
        with urllib.request.urlopen(f"{base}/v1/feed?user_id=u1&session_id=1&n=5") as r:
            page = json.loads(r.read())
        return {"readyz": ready, "feed_items": len(page.get("items", [])), "url": base}
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        if store is not None:
            store.close()


def run(out: Path, preset: str = "small", progress: bool = True) -> dict[str, Any]:
    """The whole loop into ``out``; returns a summary (also written to demo-summary.json)."""
    out = Path(out)
    data_dir, art = out / "data", out / "artifacts"
    redis_url = os.environ.get("SHORTREC_REDIS_URL") or None
    max_users = 300 if preset != "tiny" else None
    results: dict[str, Any] = {"preset": preset, "store": "redis" if redis_url else "in-process"}
    t_all = time.perf_counter()
    _stage = _Stages()

    gen = _stage(
        "generate",
        "check free disk space; `shortrec generate --help`",
        lambda: pipelines.generate(preset, 0, data_dir, report=True, progress=progress),
    )
    results["generate"] = {k: v for k, v in gen.items() if k != "realism"}
    _stage(
        "validate",
        "the generator wrote invalid tables: report a bug with this message",
        lambda: pipelines.validate(data_dir),
    )
    results["etl"] = _stage(
        "etl", "`shortrec etl --help`", lambda: pipelines.etl(data_dir, progress=progress)
    )
    results["retrieval"] = _stage(
        "train retrieval",
        "`shortrec train retrieval --help`",
        lambda: pipelines.train_retrieval(data_dir, art, progress=progress),
    )
    results["ranker"] = _stage(
        "train ranker",
        "`shortrec train ranker --help`",
        lambda: pipelines.train_ranker(data_dir, art, progress=progress, config=DEMO_RANKER),
    )
    results["drift_reference"] = _stage(
        "drift reference",
        "needs both models in the bundle",
        lambda: pipelines.build_drift_reference(data_dir, art),
    )
    results["names"] = str(
        _stage("names", "the dataset's vocab/ tables", lambda: pipelines.write_names(data_dir, art))
    )
    for protocol in ("oracle", "temporal"):
        md = _stage(
            f"evaluate ({protocol})",
            "`shortrec evaluate --help`",
            lambda p=protocol: pipelines.evaluate(  # type: ignore[misc]
                data_dir,
                art,
                p,
                10,
                json_out=out / "eval" / p / "report.json",
                report_dir=out / "eval" / p,
                max_users=max_users,
                progress=progress,
            ),
        )
        console.print(md)

    from shortrec import abtest
    from shortrec import publish as publish_mod

    results["publish"] = _stage(
        "publish",
        "with SHORTREC_REDIS_URL set, check that Redis answers (redis-cli ping)",
        lambda: publish_mod.publish(data_dir, art, redis_url, progress=progress),
    )
    results["api"] = _stage(
        "serve (HTTP)", "`shortrec serve --help`", lambda: _call_api(art, redis_url)
    )
    scenario = out / "abtest" / "scenario.toml"
    scenario.parent.mkdir(parents=True, exist_ok=True)
    scenario.write_text(SCENARIO.format(n_users=200 if preset != "tiny" else 60))
    results["abtest"] = _stage(
        "A/B test (simulated users through the serving stack)",
        "`shortrec abtest simulate --help`",
        lambda: abtest.simulate(scenario, art, data_dir, out / "abtest", redis_url, progress),
    )
    results["seconds"] = round(time.perf_counter() - t_all, 1)
    results["stage_seconds"] = _stage.seconds
    summary = out / "demo-summary.json"
    io.write_json_atomic(results, summary)
    console.rule("[bold]where the results are")
    console.print(f"dataset + realism report: {data_dir} ({data_dir / 'report' / 'realism.json'})")
    console.print(f"artifact bundle:          {art}")
    console.print(f"offline evaluation:       {out / 'eval'}/<protocol>/report.md (+ JSON, PNGs)")
    console.print(f"A/B test report:          {out / 'abtest' / 'reports'}/<experiment>/index.html")
    console.print(f"summary:                  {summary}")
    console.print("benchmark summary:        docs/benchmarks.md")
    console.print(
        f"feed page:                run `.venv/bin/shortrec serve --artifacts {art}` and open "
        "http://127.0.0.1:8000/demo"
    )
    return results
