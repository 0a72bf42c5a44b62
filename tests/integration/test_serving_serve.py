"""``serve`` with two worker processes: both answer on one port, ``/metrics`` on either one
reports the whole service (prometheus_client multiprocess mode), and SIGTERM stops them all."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

import httpx
import psutil
from prometheus_client.parser import text_string_to_metric_families


def _samples(text: str, name: str) -> list[Any]:
    return [
        s for fam in text_string_to_metric_families(text) for s in fam.samples if s.name == name
    ]


def test_two_workers_share_the_port_and_stop_on_sigterm(tiny_bundle: Any, unused_port: Any) -> None:
    port = unused_port()
    code = (
        "from pathlib import Path; from shortrec.serving.app import serve; "
        f"serve(Path({str(tiny_bundle.art)!r}), None, '127.0.0.1', {port}, 2)"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHORTREC_")}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        children: list[psutil.Process] = []
        while time.monotonic() < deadline:
            children = [  # the workers (multiprocessing also starts a resource tracker)
                p
                for p in psutil.Process(proc.pid).children()
                if "spawn_main" in " ".join(p.cmdline())
            ]
            try:
                if len(children) == 2 and httpx.get(f"{url}/readyz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        assert len(children) == 2
        with httpx.Client(base_url=url) as c:
            assert c.get("/healthz").json() == {"status": "ok"}
            page = c.get("/v1/feed", params={"user_id": "multi", "n": 5})
            assert page.status_code == 200 and len(page.json()["items"]) == 5
        # one connection per request: the kernel spreads connections over the two workers
        n_feeds = 1 + 24
        for i in range(n_feeds - 1):
            r = httpx.get(f"{url}/v1/feed", params={"user_id": f"m{i}", "n": 3})
            assert r.status_code == 200
        for _ in range(6):  # whichever worker answers the scrape reports both workers
            text = httpx.get(f"{url}/metrics").text
            served = _samples(text, "shortrec_feeds_served_total")
            assert sum(s.value for s in served) == n_feeds
            pids = {s.labels["pid"] for s in _samples(text, "shortrec_model_info") if s.value}
            assert len(pids) == 2  # both workers' model gauges, one series each
            assert [s.value for s in _samples(text, "shortrec_model_ready")] == [1.0]
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        _, alive = psutil.wait_procs(children, timeout=10)
        assert not alive
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
