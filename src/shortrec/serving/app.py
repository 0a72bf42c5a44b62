"""The online composition root: app factory, lifespan, error format, metrics middleware.

``create_app(settings, art, store)`` wires a :class:`~shortrec.serving.service.FeedService`
over the bundle at ``art`` and an online store (default: an in-process ``MemoryStore``,
seeded from the bundle when nothing is published). Nothing happens at import time: the bundle
loads in the lifespan, so ``/readyz`` answers 503 until it has. ``serve`` runs uvicorn (with
``workers > 1`` through an import string and :func:`app_from_env`).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any, Final

import anyio
import orjson
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from shortrec.artifacts import BundleError
from shortrec.config import ServingConfig, StoreConfig
from shortrec.experiments.spec import ExperimentSource
from shortrec.schema import BadInput
from shortrec.serving.metrics import MULTIPROC_ENV, Metrics, mark_worker_dead, new_registry
from shortrec.serving.routes import PROBLEM, router
from shortrec.serving.service import EventValidationError, FeedService, ServiceUnavailable
from shortrec.serving.snapshot import Bundle, bundle_snapshot
from shortrec.store import MemoryStore, OnlineStore, StoreError, open_store, publish

log = logging.getLogger(__name__)
API_VERSION = "1.0.0"
ENV_ART = "SHORTREC_ARTIFACTS"
ENV_REDIS = "SHORTREC_REDIS_URL"
ENV_SERVING = "SHORTREC_SERVING_CONFIG"
ENV_ADMIN = "SHORTREC_ADMIN_TOKEN"
#: uvicorn's event loop and HTTP parser: uvloop and httptools (C implementations, pinned
#: dependencies) instead of asyncio and h11; they cut the HTTP layer's CPU per request
UVICORN_LOOP: Final = "uvloop"
UVICORN_HTTP: Final = "httptools"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def problem(
    status: int,
    title: str,
    detail: str,
    instance: str | None = None,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """An RFC 9457 ``application/problem+json`` response."""
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
        "instance": instance,
    }
    if errors is not None:
        body["errors"] = errors
    return Response(orjson.dumps(body), status_code=status, media_type=PROBLEM, headers=headers)


_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Content Too Large",
    422: "Unprocessable Content",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class ObservabilityMiddleware:
    """Pure ASGI middleware: request count/latency by route template, in-flight gauge, and
    the body size limit (413 before the body is read when Content-Length says so, or as soon
    as the streamed body passes the limit)."""

    def __init__(self, app: ASGIApp, metrics: Metrics, max_body_bytes: int) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        m = self.metrics
        t0 = time.perf_counter()
        status = [500]
        started = [False]

        async def send_wrapper(msg: Message) -> None:
            if msg["type"] == "http.response.start":
                status[0] = int(msg["status"])
                started[0] = True
            await send(msg)

        async def reply(resp: Response) -> None:
            await resp(scope, receive, send_wrapper)

        length = dict(scope.get("headers", ())).get(b"content-length")
        m.http_in_flight.inc()
        try:
            if length is not None and (not length.isdigit() or int(length) > self.max_body):
                await reply(
                    problem(
                        413, _TITLES[413], f"body larger than {self.max_body} bytes", scope["path"]
                    )
                )
                return
            seen = [0]

            async def receive_limited() -> Message:
                msg = await receive()
                if msg["type"] == "http.request":
                    seen[0] += len(msg.get("body", b""))
                    if seen[0] > self.max_body:
                        raise _BodyTooLarge()
                return msg

            try:
                await self.app(scope, receive_limited, send_wrapper)
            except _BodyTooLarge:
                if not started[0]:
                    await reply(
                        problem(
                            413,
                            _TITLES[413],
                            f"body larger than {self.max_body} bytes",
                            scope["path"],
                        )
                    )
        finally:
            m.http_in_flight.dec()
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            m.child(m.http_requests, template, method, str(status[0])).inc()
            m.child(m.http_request_duration, template, method).observe(time.perf_counter() - t0)


class _BodyTooLarge(Exception):
    pass


def _install_errors(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        errors = []
        for e in exc.errors():
            loc = [str(p) for p in e.get("loc", ())]
            errors.append(
                {
                    "loc": loc,
                    "field": ".".join(loc[1:]) or ".".join(loc),
                    "msg": str(e.get("msg", "")),
                    "type": str(e.get("type", "")),
                }
            )
        if request.url.path == "/v1/events":
            request.app.state.metrics.events_rejected.labels("validation").inc()
        detail = "; ".join(f"{x['field']}: {x['msg']}" for x in errors[:5])
        return problem(422, _TITLES[422], detail, request.url.path, errors)

    @app.exception_handler(EventValidationError)
    async def _events(request: Request, exc: EventValidationError) -> Response:
        errors = [
            {
                "loc": ["body", "events", str(i), f] if f else ["body", "events"],
                "field": f"events.{i}.{f}" if f else "events",
                "msg": msg,
                "type": "value_error",
            }
            for i, f, msg in exc.errors
        ]
        return problem(422, _TITLES[422], str(exc), request.url.path, errors)

    @app.exception_handler(BundleError)
    async def _bundle(request: Request, exc: BundleError) -> Response:
        return problem(
            422, "Bundle rejected", f"{exc}; the current bundle keeps serving", request.url.path
        )

    @app.exception_handler(BadInput)
    async def _bad(request: Request, exc: BadInput) -> Response:
        return problem(422, _TITLES[422], str(exc), request.url.path)

    @app.exception_handler(ServiceUnavailable)
    async def _unavailable(request: Request, exc: ServiceUnavailable) -> Response:
        return problem(503, _TITLES[503], str(exc), request.url.path, headers={"Retry-After": "1"})

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        return problem(
            exc.status_code,
            _TITLES.get(exc.status_code, "Error"),
            str(exc.detail),
            request.url.path,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s", request.url.path)
        return problem(500, _TITLES[500], "internal error; see the service log", request.url.path)


def _seed_memory_store(store: OnlineStore, bundle: Bundle) -> None:
    """An empty in-process store gets the bundle's catalogue and lists (nothing published)."""
    if isinstance(store, MemoryStore) and store.current_version()[0] == 0:
        publish(store, bundle_snapshot(bundle), store.cfg)


def create_app(
    settings: ServingConfig,
    art: Path,
    store: OnlineStore | None = None,
    *,
    clock: Callable[[], int] | None = None,
    registry: Any = None,
) -> FastAPI:
    """The FastAPI app serving bundle ``art`` from ``store`` (None: a new ``MemoryStore``).

    ``clock`` (µs UTC) replaces wall time (simulations, tests); ``registry`` is the
    Prometheus registry to export (default: a fresh one). The store passed in is not closed
    at shutdown; a store created here is.
    """
    metrics = Metrics(registry if registry is not None else new_registry())
    own_store = store is None
    the_store: OnlineStore = store if store is not None else MemoryStore()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        bundle = Bundle.load(Path(art), rank_threads=settings.rank_threads)
        try:
            _seed_memory_store(the_store, bundle)
        except StoreError as e:
            log.warning("could not seed the store: %s", e)
        experiments = (
            ExperimentSource(settings.experiments_path) if settings.experiments_path else None
        )
        kwargs: dict[str, Any] = {} if clock is None else {"clock": clock}
        svc = FeedService(settings, bundle, the_store, metrics, experiments, **kwargs)
        svc.probe_store()  # a store down at start: serve degraded from the first request
        svc.start()
        app.state.limiter = anyio.CapacityLimiter(settings.request_threads)
        app.state.service = svc
        if settings.gc_freeze:
            # start-up garbage (bundle, torch, numpy) is long-lived: keep it out of every
            # collection, and collect young objects less often (the p99 tail was GC pauses)
            gc.collect()
            gc.freeze()
            gc.set_threshold(settings.gc_threshold0, 20, 20)
        try:
            yield
        finally:
            app.state.service = None
            metrics.model_ready.set(0)
            svc.close()
            if own_store:
                the_store.close()

    app = FastAPI(
        title="shortrec",
        version=API_VERSION,
        summary="Short-video feed recommendations: feed, events, health, metrics, admin.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.service = None
    metrics.model_ready.set(0)
    app.include_router(router)
    _install_errors(app)
    app.add_middleware(
        ObservabilityMiddleware,
        metrics=metrics,
        max_body_bytes=settings.max_body_bytes,
    )
    return app


def _settings_from_env() -> ServingConfig:
    raw = os.environ.get(ENV_SERVING)
    cfg = ServingConfig.model_validate_json(raw) if raw else ServingConfig()
    token = os.environ.get(ENV_ADMIN)
    if token and cfg.admin_token is None:
        cfg = ServingConfig.model_validate({**cfg.model_dump(), "admin_token": token})
    return cfg


def _store_for(redis_url: str | None, settings: ServingConfig) -> OnlineStore:
    if not redis_url:
        return MemoryStore()
    t = settings.deadline_store_ms / 1e3
    return open_store(StoreConfig(url=redis_url, connect_timeout_s=t, socket_timeout_s=t))


def app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory``: bundle from ``SHORTREC_ARTIFACTS``, store from
    ``SHORTREC_REDIS_URL`` (unset: in process), settings JSON from
    ``SHORTREC_SERVING_CONFIG`` and the admin token from ``SHORTREC_ADMIN_TOKEN``."""
    art = os.environ.get(ENV_ART)
    if not art:
        raise BadInput(f"{ENV_ART} is not set (the artifact bundle directory)")
    settings = _settings_from_env()
    redis_url = os.environ.get(ENV_REDIS)
    store = _store_for(redis_url, settings)
    return create_app(settings, Path(art), store)


def _listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket bound with ``SO_REUSEPORT`` (the kernel spreads connections
    over the worker processes that each bind one).

    The protocol is given explicitly (``IPPROTO_TCP``): asyncio turns on ``TCP_NODELAY`` only
    for sockets whose ``proto`` says TCP, and without it every response written in two parts
    waits ~40 ms for the client's delayed ACK (measured: 700 vs 6,200 req/s on a trivial
    endpoint with uvicorn's own multi-worker mode, whose shared socket has ``proto`` 0).
    """
    info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    family, kind, proto, _, addr = info[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(addr)
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _worker(host: str, port: int) -> None:
    """One serving process: its own socket on the shared port, its own app and store."""
    import uvicorn

    app = app_from_env()
    single_thread_compute()  # after loading: the bundle may load more thread pools (faiss)
    sock = _listen(host, port)
    config = uvicorn.Config(
        app, log_level="warning", access_log=False, loop=UVICORN_LOOP, http=UVICORN_HTTP
    )
    uvicorn.Server(config).run(sockets=[sock])


def _multiprocess_dir() -> tuple[str, bool]:
    """Set up prometheus_client's multiprocess mode for the workers about to be spawned (they
    inherit the environment): the directory from ``PROMETHEUS_MULTIPROC_DIR`` if set (its old
    ``*.db`` files are removed: values must not outlive the run), else a fresh temporary one
    that ``serve`` deletes at exit. Returns (directory, created here)."""
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        path = Path(given)
        if not path.is_dir():
            raise BadInput(f"{MULTIPROC_ENV}={given}: not a directory")
        for f in path.glob("*.db"):
            f.unlink()
        return str(path), False
    path = Path(tempfile.mkdtemp(prefix="shortrec-prometheus-"))
    os.environ[MULTIPROC_ENV] = str(path)
    return str(path), True


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM stops the workers like Ctrl-C does


def single_thread_compute() -> None:
    """One compute thread per serving process (PyTorch, and the BLAS library under NumPy).

    Requests are small and each worker already has a core: extra threads only contend, and
    OpenBLAS's threads spin while they wait — measured with 2 workers under wrk: 234 feed
    req/s with NumPy's default BLAS threads, 342 with one.
    """
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1)  # process-wide: every BLAS/OpenMP pool loaded so far
    try:
        import torch

        torch.set_num_threads(1)  # the user tower per request: threads only add contention
    except ImportError:
        pass


def serve(
    art: Path,
    redis_url: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int | None = None,
    settings: ServingConfig | None = None,
) -> None:
    """Run the service until interrupted: ``workers`` processes (default
    ``settings.workers``); settings default to ``SHORTREC_SERVING_CONFIG`` /
    ``SHORTREC_ADMIN_TOKEN`` from the environment, else the defaults.

    One worker runs uvicorn in this process. Several workers are separate processes, each
    binding the port with ``SO_REUSEPORT`` and building its app with :func:`app_from_env`
    (see :func:`_listen` for why not uvicorn's own multi-worker mode); if one exits, the
    others are stopped and ``serve`` raises.
    """
    import uvicorn

    cfg = settings if settings is not None else _settings_from_env()
    workers = cfg.workers if workers is None else workers
    if not Path(art).is_dir():
        raise BadInput(f"{art}: artifact bundle directory not found")
    os.environ[ENV_ART] = str(Path(art).resolve())
    os.environ[ENV_SERVING] = cfg.model_dump_json()
    if redis_url:
        os.environ[ENV_REDIS] = redis_url
    else:
        os.environ.pop(ENV_REDIS, None)
    if workers <= 1:
        app = app_from_env()
        single_thread_compute()
        uvicorn.run(
            app,
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            loop=UVICORN_LOOP,
            http=UVICORN_HTTP,
        )
        return
    with contextlib.suppress(ValueError):  # not the main thread: keep the default handler
        signal.signal(signal.SIGTERM, _interrupt)
    prom_dir, own_dir = _multiprocess_dir()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(host, port), daemon=False) for _ in range(workers)]
    try:
        for p in procs:
            p.start()
        while all(p.is_alive() for p in procs):
            procs[0].join(timeout=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join(timeout=20)
            if p.pid is not None:
                mark_worker_dead(p.pid)
        if own_dir:
            os.environ.pop(MULTIPROC_ENV, None)
            shutil.rmtree(prom_dir, ignore_errors=True)
    failed = [p.exitcode for p in procs if p.exitcode not in (0, -signal.SIGTERM, None)]
    if failed:
        raise RuntimeError(f"serving worker exited with code {failed[0]}")
