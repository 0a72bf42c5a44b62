"""Failure behaviour against a real redis-server that the test starts, stops and restarts:
the service keeps answering from its in-process snapshot, says so in responses and metrics,
refuses to acknowledge events it cannot queue, and recovers on its own."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx

from shortrec.config import ServingConfig, StoreConfig
from shortrec.publish import publish
from shortrec.serving.app import create_app
from shortrec.store import open_store


def _wait(pred: Callable[[], bool], timeout_s: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


def _metric(c: httpx.Client, line_start: str) -> float:
    for line in c.get("/metrics").text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.split()[-1])
    return 0.0


def test_redis_down_then_back(
    tiny_bundle: Any, redis_server: Any, run_server: Any, serving_settings: ServingConfig
) -> None:
    cfg = StoreConfig(url=redis_server.url, connect_timeout_s=0.1, socket_timeout_s=0.1)
    store = open_store(cfg)
    out = publish(tiny_bundle.root, tiny_bundle.art, progress=False, store=store, config=cfg)
    assert out["version"] == 1 and out["users"] > 0
    app = create_app(serving_settings, tiny_bundle.art, store, clock=lambda: tiny_bundle.now_us)
    ev = {
        "events": [
            {"event_id": 1, "user_id": "u0", "session_id": 1, "video_idx": 3, "watch_time_s": 9.0}
        ]
    }
    try:
        with run_server(app) as url, httpx.Client(base_url=url, timeout=30) as c:
            healthy = c.get("/v1/feed", params={"user_id": "u0", "n": 10}).json()
            assert not healthy["degraded"] and "cold_start" not in healthy["fallbacks"]
            assert c.post("/v1/events", json=ev).json()["applied"] == 1

            redis_server.stop()
            for i in range(5):  # every request still answers, from the snapshot
                r = c.get("/v1/feed", params={"user_id": f"u{i}", "n": 10})
                assert r.status_code == 200, r.text
                body = r.json()
                assert body["degraded"] and len(body["items"]) == 10
            assert "store_unavailable" in body["fallbacks"]
            assert _metric(c, "shortrec_degraded") == 1
            assert _metric(c, "shortrec_degraded_responses_total") >= 5
            ready = c.get("/readyz").json()
            assert ready["degraded"] and ready["store"] == "unavailable"
            # a replay is still acknowledged (nothing to queue); a new event cannot be queued
            assert c.post("/v1/events", json=ev).json()["duplicates"] == 1
            down = c.post("/v1/events", json={"events": [{**ev["events"][0], "event_id": 5}]})
            assert down.status_code == 503 and down.headers["retry-after"] == "1"
            assert down.headers["content-type"].startswith("application/problem+json")
            assert _metric(c, 'shortrec_events_rejected_total{reason="store_unavailable"}') == 1

            redis_server.start()
            assert _wait(lambda: not c.get("/readyz").json()["degraded"])
            back = c.get("/v1/feed", params={"user_id": "u0", "n": 10}).json()
            assert not back["degraded"]
            assert _metric(c, "shortrec_degraded") == 0
            ok = c.post("/v1/events", json={"events": [{**ev["events"][0], "event_id": 2}]})
            assert ok.status_code == 200, ok.text
    finally:
        store.close()


def test_redis_down_at_start(
    tiny_bundle: Any, run_server: Any, unused_port: Any, serving_settings: ServingConfig
) -> None:
    # a port nothing listens on: the store is down from the start
    cfg = StoreConfig(
        url=f"redis://127.0.0.1:{unused_port()}", connect_timeout_s=0.05, socket_timeout_s=0.05
    )
    store = open_store(cfg)
    app = create_app(serving_settings, tiny_bundle.art, store, clock=lambda: tiny_bundle.now_us)
    try:
        with run_server(app) as url, httpx.Client(base_url=url, timeout=30) as c:
            ready = c.get("/readyz")
            assert ready.status_code == 200 and ready.json()["degraded"]
            r = c.get("/v1/feed", params={"user_id": "anyone", "n": 5}).json()
            assert r["degraded"] and len(r["items"]) == 5
    finally:
        store.close()
