"""HTTP tests of every endpoint and every error of the serving API (in-process store)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from shortrec.config import ServingConfig
from shortrec.serving.app import create_app
from shortrec.store import MemoryStore

PROBLEM = "application/problem+json"


@pytest.fixture
def app(tiny_bundle: Any, serving_settings: ServingConfig) -> FastAPI:
    return create_app(
        serving_settings, tiny_bundle.art, MemoryStore(), clock=lambda: tiny_bundle.now_us
    )


@pytest.fixture
def client(app: FastAPI, run_server: Any) -> Iterator[httpx.Client]:
    with run_server(app) as url, httpx.Client(base_url=url, timeout=30) as c:
        yield c


def _problem(r: Any, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = r.json()
    assert body["status"] == status and body["title"] and body["detail"]
    return body


def _metric(client: httpx.Client, name: str, labels: str = "") -> float:
    text = client.get("/metrics").text
    key = f"{name}{{{labels}}}" if labels else name
    for line in text.splitlines():
        if line.startswith(key + " "):
            return float(line.split()[-1])
    return 0.0


def test_health_ready_metrics(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready["status"] == "ready" and ready["store"] == "ok" and not ready["degraded"]
    text = client.get("/metrics").text
    for name in (
        "shortrec_model_ready 1.0",
        "shortrec_degraded 0.0",
        'shortrec_fallbacks_total{reason="ranking_timeout"}',
    ):
        assert name in text


def test_feed_for_unknown_user_is_a_cold_start_page(client: httpx.Client) -> None:
    r = client.get("/v1/feed", params={"user_id": "never-seen", "n": 7})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["items"]) == 7
    assert len({it["video_idx"] for it in body["items"]}) == 7
    assert "cold_start" in body["fallbacks"] and not body["degraded"]
    assert body["model_version"] and isinstance(body["request_id"], int)
    it = body["items"][0]
    assert set(it["heads"]) == {"engage", "complete", "like", "diversity"}
    assert it["sources"] and it["reason"] and it["position"] == 0
    assert _metric(client, "shortrec_fallbacks_total", 'reason="cold_start"') >= 1
    assert (
        _metric(
            client, "shortrec_http_requests_total", 'method="GET",route="/v1/feed",status="200"'
        )
        >= 1
    )


def test_post_feed_honours_exclude_and_n(client: httpx.Client) -> None:
    first = client.get("/v1/feed", params={"user_id": "u-x", "n": 5}).json()
    held = [it["video_idx"] for it in first["items"]]
    r = client.post(
        "/v1/feed", json={"user_id": "u-x", "n": 5, "context": {"region": "US", "exclude": held}}
    )
    assert r.status_code == 200, r.text
    assert not {it["video_idx"] for it in r.json()["items"]} & set(held)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"user_id": "u1", "n": 0}, "n"),
        ({"user_id": "u1", "n": 101}, "n"),
        ({"user_id": "bad id"}, "user_id"),
        ({"user_id": "a{b}"}, "user_id"),
        ({"n": 3}, "user_id"),
        ({"user_id": "u1", "session_id": -1}, "session_id"),
    ],
)
def test_feed_bounds_are_422_problems(
    client: httpx.Client, params: dict[str, Any], field: str
) -> None:
    body = _problem(client.get("/v1/feed", params=params), 422)
    assert any(e["field"].endswith(field) for e in body["errors"]), body


def _event(i: int, video: int, user: str = "u-ev", **kw: Any) -> dict[str, Any]:
    return {
        "event_id": i,
        "user_id": user,
        "session_id": 1,
        "video_idx": video,
        "watch_time_s": 12.0,
        **kw,
    }


def test_events_ack_and_replay_counted_once(client: httpx.Client, app: FastAPI) -> None:
    batch = {"events": [_event(i, i) for i in range(5)]}
    r = client.post("/v1/events", json=batch)
    assert r.status_code == 200, r.text
    assert r.json() == {"received": 5, "queued": 5, "applied": 5, "duplicates": 0}
    again = client.post("/v1/events", json=batch).json()
    assert again["applied"] == 0 and again["duplicates"] == 5
    assert _metric(client, "shortrec_events_ingested_total") == 5
    assert _metric(client, "shortrec_events_rejected_total", 'reason="duplicate"') == 5
    assert _metric(client, "shortrec_impressions_total", 'arm="none"') == 5
    # a fresh service instance (another replica) still counts them once: the store dedups
    svc = app.state.service
    svc._recent_events.clear()
    third = client.post("/v1/events", json=batch).json()
    assert third["applied"] == 0 and third["duplicates"] == 5


def test_event_validation_names_index_and_field(client: httpx.Client) -> None:
    bad = {"events": [_event(0, 1), _event(1, 2), _event(2, 3, watch_time_s=-1.0)]}
    body = _problem(client.post("/v1/events", json=bad), 422)
    assert any(e["field"] == "events.2.watch_time_s" for e in body["errors"]), body
    future = {"events": [_event(0, 1), _event(1, 2, ts="2100-01-01T00:00:00Z")]}
    body = _problem(client.post("/v1/events", json=future), 422)
    assert body["errors"][0]["field"] == "events.1.ts"
    extra = {"events": [{**_event(0, 1), "unknown": 1}]}
    _problem(client.post("/v1/events", json=extra), 422)
    _problem(client.post("/v1/events", json={"events": []}), 422)
    _problem(
        client.post(
            "/v1/events", content=b"{not json", headers={"content-type": "application/json"}
        ),
        422,
    )
    assert _metric(client, "shortrec_events_rejected_total", 'reason="validation"') >= 4
    # nothing of a rejected batch was applied
    assert _metric(client, "shortrec_events_ingested_total") == 0


def test_body_limit_is_413(client: httpx.Client, serving_settings: ServingConfig) -> None:
    big = b'{"events": [' + b" " * (serving_settings.max_body_bytes + 10) + b"]}"
    _problem(
        client.post("/v1/events", content=big, headers={"content-type": "application/json"}), 413
    )


def test_unknown_route_and_method(client: httpx.Client) -> None:
    _problem(client.get("/v2/feed"), 404)
    _problem(client.delete("/v1/feed"), 405)


def test_admin_requires_bearer_token(client: httpx.Client) -> None:
    _problem(client.post("/admin/reload", json={}), 401)
    _problem(
        client.post(
            "/admin/reload", json={}, headers={"Authorization": "Bearer wrong-token-xxxxxxxx"}
        ),
        401,
    )


def test_admin_disabled_without_token(tiny_bundle: Any, run_server: Any) -> None:
    app = create_app(ServingConfig(gc_freeze=False), tiny_bundle.art)
    with run_server(app) as url, httpx.Client(base_url=url) as c:
        _problem(c.post("/admin/reload", json={}), 403)


def test_reload_good_and_bad_bundle(
    client: httpx.Client, tiny_bundle: Any, tmp_path: Path, admin_headers: dict[str, str]
) -> None:
    r = client.post("/admin/reload", json={}, headers=admin_headers)
    assert r.status_code == 200, r.text
    version = r.json()["model_version"]
    bad = tmp_path / "bad"
    shutil.copytree(tiny_bundle.art, bad)
    (bad / "ranker" / "model.onnx").write_bytes(b"not a model")
    (bad / "ranker" / "model.pt").write_bytes(b"not a model")
    body = _problem(
        client.post("/admin/reload", json={"artifacts": str(bad)}, headers=admin_headers), 422
    )
    assert "keeps serving" in body["detail"]
    missing = _problem(
        client.post(
            "/admin/reload", json={"artifacts": str(tmp_path / "nope")}, headers=admin_headers
        ),
        422,
    )
    assert "nope" in missing["detail"]
    feed = client.get("/v1/feed", params={"user_id": "u1"})
    assert feed.status_code == 200 and feed.json()["model_version"] == version
    _problem(client.post("/admin/reload", json={"experiments": True}, headers=admin_headers), 422)


def test_new_upload_is_served_before_retraining(
    client: httpx.Client, app: FastAPI, admin_headers: dict[str, str]
) -> None:
    n_videos = app.state.service.bundle.catalogue.n_bundle
    new = {
        "video_idx": n_videos + 7,
        "creator_idx": 3,
        "category": 1,
        "tags": [1, 2],
        "duration_s": 20.0,
    }
    r = client.post("/admin/videos", json=new, headers=admin_headers)
    assert r.status_code == 201, r.text
    page = client.get("/v1/feed", params={"user_id": "brand-new", "n": 10}).json()
    served = {it["video_idx"]: it for it in page["items"]}
    assert n_videos + 7 in served
    assert "fresh" in served[n_videos + 7]["sources"]
    # events on the new video are accepted and it is then never served again to that user
    ev = {"events": [_event(1, n_videos + 7, user="brand-new")]}
    assert client.post("/v1/events", json=ev).json()["applied"] == 1
    again = client.get("/v1/feed", params={"user_id": "brand-new", "n": 10}).json()
    assert n_videos + 7 not in {it["video_idx"] for it in again["items"]}


def test_openapi_is_complete(client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    for p in (
        "/v1/feed",
        "/v1/events",
        "/healthz",
        "/readyz",
        "/metrics",
        "/admin/reload",
        "/admin/videos",
    ):
        assert p in paths
    assert "post" in paths["/v1/feed"] and "get" in paths["/v1/feed"]
    assert "FeedResponse" in spec["components"]["schemas"]
