"""Thin HTTP handlers: parse, call the :class:`FeedService` off the event loop, serialise.

Handlers hold no logic beyond translating between HTTP and the service; every error leaves
as ``application/problem+json`` (see ``app.py``). Responses are serialised with orjson and
returned as ready ``Response`` objects (the ``response_model`` documents them in OpenAPI).
"""

from __future__ import annotations

import datetime as dt
import functools
import importlib.resources
import math
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import anyio.to_thread
import orjson
from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, Response
from fastapi import Path as PathParam
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from shortrec.serving.api import (
    MAX_DEMO_USERS,
    MAX_N,
    MAX_VIDEO_IDS,
    USER_ID_PATTERN,
    DemoUsers,
    EventBatch,
    EventsAccepted,
    FeedRequest,
    FeedResponse,
    Health,
    Problem,
    Ready,
    ReloadRequest,
    ReloadResponse,
    VideoIn,
    VideoList,
)
from shortrec.serving.names import VideoInfo
from shortrec.serving.service import FeedContext, FeedResult, FeedService

T = TypeVar("T")
JSON = "application/json"
PROBLEM = "application/problem+json"
HTML = "text/html; charset=utf-8"
#: the demo page's static files (``serving/static/``) and their media types
DEMO_ASSETS = {
    "demo.html": HTML,
    "demo.js": "text/javascript; charset=utf-8",
    "demo.css": "text/css; charset=utf-8",
}
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_PROBLEMS: dict[int | str, dict[str, Any]] = {
    code: {"model": Problem, "content": {PROBLEM: {}}, "description": text}
    for code, text in (
        (401, "Missing or wrong bearer token"),
        (413, "Body too large"),
        (422, "Invalid request"),
        (503, "Store unavailable or model not loaded"),
    )
}


def json_response(content: Any, status: int = 200) -> Response:
    """A JSON response serialised with orjson."""
    return Response(orjson.dumps(content), status_code=status, media_type=JSON)


def service(request: Request) -> FeedService:
    svc: FeedService | None = getattr(request.app.state, "service", None)
    if svc is None:
        raise HTTPException(503, "model not loaded yet")
    return svc


Service = Annotated[FeedService, Depends(service)]


async def on_workers(request: Request, fn: Callable[..., T], *args: Any) -> T:
    """Run a blocking call (event ingestion, video lookups) off the event loop, in a pool
    bounded by ``ServingConfig.request_threads``. The feed does not come here: it runs on the
    loop and only its model call leaves it (``FeedService.feed_async``)."""
    return await anyio.to_thread.run_sync(
        functools.partial(fn, *args), limiter=request.app.state.limiter
    )


def require_admin(request: Request, authorization: Annotated[str | None, Header()] = None) -> None:
    """Bearer token check in constant time; admin is disabled without a configured token."""
    token: str | None = request.app.state.settings.admin_token
    if token is None:
        raise HTTPException(403, "admin endpoints are disabled (no admin token configured)")
    given = ""
    if authorization is not None and authorization.lower().startswith("bearer "):
        given = authorization[7:].strip()
    if not secrets.compare_digest(given.encode(), token.encode()):
        raise HTTPException(
            401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
        )


def feed_json(r: FeedResult) -> dict[str, Any]:
    return {
        "request_id": r.request_id,
        "user_id": r.user_id,
        "session_id": r.session_id,
        "model_version": r.model_version,
        "arms": r.arms,
        "degraded": r.degraded,
        "fallbacks": list(r.fallbacks),
        "items": [
            {
                "video_idx": it.video_idx,
                "position": it.position,
                "score": it.score,
                "heads": {k: v for k, v in it.heads.items() if math.isfinite(v)},
                "sources": list(it.sources),
                "reason": it.reason,
            }
            for it in r.items
        ],
    }


router = APIRouter()


@router.get("/v1/feed", response_model=FeedResponse, responses=_PROBLEMS, tags=["feed"])
async def get_feed(
    request: Request,
    svc: Service,
    user_id: Annotated[str, Query(min_length=1, max_length=256, pattern=USER_ID_PATTERN)],
    session_id: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,
    n: Annotated[int, Query(ge=1, le=MAX_N)] = 10,
) -> Response:
    """The next ``n`` videos for a user (unknown users get a cold-start feed)."""
    r = await svc.feed_async(user_id, session_id, n)
    return json_response(feed_json(r))


@router.post("/v1/feed", response_model=FeedResponse, responses=_PROBLEMS, tags=["feed"])
async def post_feed(request: Request, svc: Service, body: FeedRequest) -> Response:
    """Like ``GET /v1/feed``, with a request context (profile, videos to exclude)."""
    c = body.context
    ctx = FeedContext(c.region, c.age_bucket, c.device, tuple(c.exclude))
    r = await svc.feed_async(body.user_id, body.session_id, body.n, ctx)
    return json_response(feed_json(r))


@router.post("/v1/events", response_model=EventsAccepted, responses=_PROBLEMS, tags=["events"])
async def post_events(request: Request, svc: Service, body: EventBatch) -> Response:
    """Feed outcomes; acknowledged only once durably queued. Idempotent on ``event_id``."""
    r = await on_workers(request, svc.ingest_events, body.events)
    return json_response(
        {
            "received": r.received,
            "queued": r.queued,
            "applied": r.applied,
            "duplicates": r.duplicates,
        }
    )


@router.get("/healthz", response_model=Health, tags=["ops"])
async def healthz() -> Response:
    """Liveness: the process answers."""
    return json_response({"status": "ok"})


@router.get("/readyz", response_model=Ready, responses=_PROBLEMS, tags=["ops"])
async def readyz(request: Request) -> Response:
    """Readiness: a bundle is loaded and the store answers (or degraded mode is declared)."""
    svc: FeedService | None = getattr(request.app.state, "service", None)
    if svc is None:
        return json_response(
            {"status": "loading", "model_version": None, "store": "unknown", "degraded": False}, 503
        )
    return json_response(await run_in_threadpool(svc.ready))


@router.get(
    "/metrics",
    tags=["ops"],
    response_class=Response,
    responses={
        200: {
            "content": {"text/plain": {"schema": {"type": "string"}}},
            "description": "Prometheus text format",
        }
    },
)
async def metrics(request: Request) -> Response:
    """Prometheus metrics (text exposition format)."""
    svc: FeedService | None = getattr(request.app.state, "service", None)
    if svc is not None:
        svc.export_drift()
    body, ctype = request.app.state.metrics.render()
    return Response(body, media_type=ctype)


@router.post(
    "/admin/reload",
    response_model=ReloadResponse,
    responses=_PROBLEMS,
    dependencies=[Depends(require_admin)],
    tags=["admin"],
)
async def admin_reload(svc: Service, body: ReloadRequest) -> Response:
    """Validate a bundle and swap it in atomically (a bad one is rejected, the old one keeps
    serving); optionally reload the experiment config."""
    changed = False
    if body.artifacts is not None or not body.experiments:
        art = Path(body.artifacts) if body.artifacts is not None else None
        _, changed = await run_in_threadpool(svc.reload, art)
    exp_version = None
    if body.experiments:
        status = await run_in_threadpool(svc.reload_experiments)
        if status is None:
            raise HTTPException(422, "no experiment config is loaded (experiments_path unset)")
        if status.error is not None:
            raise HTTPException(422, f"experiment config rejected: {status.error}")
        exp_version, changed = status.version, changed or status.changed
    elif svc.experiments is not None:
        exp_version = svc.experiments.current.version
    b = svc.bundle
    return json_response(
        {
            "model_version": b.model_version,
            "ranker_backend": b.backend,
            "experiments_version": exp_version,
            "changed": changed,
        }
    )


@router.post(
    "/admin/videos",
    status_code=201,
    response_model=VideoIn,
    responses=_PROBLEMS,
    dependencies=[Depends(require_admin)],
    tags=["admin"],
)
async def admin_add_video(svc: Service, body: VideoIn) -> Response:
    """Add a new upload to the catalogue and the fresh pool (servable before retraining)."""
    await run_in_threadpool(svc.add_video, body)
    return Response(body.model_dump_json(), status_code=201, media_type=JSON)


# ---------------------------------------------------------------- the demo page and its data
def video_json(v: VideoInfo) -> dict[str, Any]:
    return {
        "video_idx": v.video_idx,
        "title": v.title,
        "creator": v.creator,
        "category": v.category,
        "tags": list(v.tags),
        "duration_s": v.duration_s,
        "upload_ts": None
        if v.upload_us is None
        else (_EPOCH + dt.timedelta(microseconds=v.upload_us)).isoformat(),
        "named": v.named,
    }


@router.get("/v1/videos", response_model=VideoList, responses=_PROBLEMS, tags=["catalogue"])
async def get_videos(
    request: Request,
    svc: Service,
    ids: Annotated[
        list[Annotated[int, Field(ge=0, le=2**31 - 1)]],
        Query(min_length=1, max_length=MAX_VIDEO_IDS, description="video_idx values (repeat)"),
    ],
) -> Response:
    """Human-readable metadata (title, creator, topic, tag names, duration) of up to 100
    videos, e.g. ``?ids=3&ids=17``; ids the catalogue does not know are listed in
    ``missing``."""
    infos, missing = await on_workers(request, svc.videos, ids)
    return json_response({"items": [video_json(v) for v in infos], "missing": missing})


@router.get("/v1/demo/users", response_model=DemoUsers, responses=_PROBLEMS, tags=["catalogue"])
async def demo_users(
    svc: Service, n: Annotated[int, Query(ge=1, le=MAX_DEMO_USERS)] = 50
) -> Response:
    """A sample of known user ids to simulate on the demo page (the busiest first by
    history length, returned in id order)."""
    users, named = svc.sample_users(n)
    return json_response({"users": users, "named": named})


@functools.cache
def _asset(name: str) -> bytes:
    """A static file of the demo page, read once from the installed package."""
    return (importlib.resources.files("shortrec.serving") / "static" / name).read_bytes()


def _asset_response(name: str) -> Response:
    # no-cache: the browser revalidates, so a new release's page is never mixed with old JS
    return Response(
        _asset(name), media_type=DEMO_ASSETS[name], headers={"Cache-Control": "no-cache"}
    )


@router.get(
    "/demo",
    tags=["demo"],
    response_class=Response,
    responses={
        200: {
            "content": {"text/html": {"schema": {"type": "string"}}},
            "description": "The feed page",
        }
    },
)
async def demo_page() -> Response:
    """A feed page to scroll in a browser: one card at a time, Watch / Skip / Like post real
    events, and the next card comes from a fresh feed request (see docs/demo.md)."""
    return _asset_response("demo.html")


@router.get(
    "/demo/{asset}",
    tags=["demo"],
    response_class=Response,
    responses={
        200: {
            "content": {
                "text/javascript": {"schema": {"type": "string"}},
                "text/css": {"schema": {"type": "string"}},
            },
            "description": "A static file of the demo page",
        },
        404: {"model": Problem, "content": {PROBLEM: {}}, "description": "No such file"},
    },
)
async def demo_asset(
    asset: Annotated[str, PathParam(max_length=64, description="demo.js or demo.css")],
) -> Response:
    """The demo page's script and style sheet (no build step, no external resources)."""
    if asset not in DEMO_ASSETS or asset == "demo.html":
        raise HTTPException(404, f"no demo file {asset!r} (have demo.js, demo.css)")
    return _asset_response(asset)
