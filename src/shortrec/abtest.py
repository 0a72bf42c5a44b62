"""Simulated online A/B experiments through the real serving stack, and their validation.

Users of the world simulator (``data/world.py``) open sessions and scroll through feeds served
by the real :class:`~shortrec.serving.service.FeedService` (in process) or by a running server
(by URL); after each page the viewed impressions are posted back as events, so the next page
reflects them. Arms differ only in what the service serves: every simulated user draws from
their own random stream (``default_rng([seed, 1, user_idx])``), whatever arm they are in.

One scenario file holds the experiment declarations (``docs/experiments.md``) and a
``[simulation]`` table (:class:`SimulationConfig`). :func:`simulate` runs it and writes::

    OUT/logs/exposures/part-00000.parquet   experiments.logs.EXPOSURES (one row per served video)
    OUT/logs/events/part-00000.parquet      schema.EVENTS (one row per viewed impression)
    OUT/logs/pre_events/part-00000.parquet  the dataset's events of the simulated users (CUPED)
    OUT/logs/experiments.toml               the declarations in force
    OUT/logs/simulation.json                the [simulation] table and traffic counters
    OUT/reports/NAME/                       index.html, PNGs, result.json per experiment
    OUT/reports/NAME/validation.json        A/A experiments only: the re-randomisation check
    OUT/summary.json                        what :func:`simulate` returns

Time: the simulation starts ``start_offset_h`` after the bundle's snapshot time and runs
``days`` days as a discrete-event simulation at page granularity (a heap of pending pages
ordered by simulated time), so pages of concurrent sessions interleave in time order. Each
user opens ``Poisson(sessions_per_day * activity_u / mean activity)`` sessions per day at
uniform times (a user's sessions never overlap: a start while busy is postponed); interest
drift comes from the world (``World.interests``); videos whose upload time falls inside the
simulated window are announced to the service at that time (``add_video``: catalogue and
fresh pool), like new uploads.

Model versions: :class:`~shortrec.config.ArmOverrides` ``model_version`` is routed here, in
front of the service, to one service (or server URL) per version, as a gateway in front of
replica groups would; the label :data:`RETRIEVAL_ONLY` serves the default bundle with its
ranking stage replaced by the fused retrieval order (:class:`RetrievalOrderPredictor`).

A/A validation (:func:`validate_aa`): with both arms served identically, the per-user outcomes
of one simulated A/A log are exchangeable between arms, so re-randomising the user -> arm
assignment with fresh salts (the service's own hashing, ``assignment.buckets``) gives as many
A/A experiments as salts over real served traffic; a planted additive effect of known size in
the re-randomised treatment users' outcomes gives the empirical power to compare with the
calculator (``stats.power_normal``/``power_t``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import heapq
import http.client
import json
import logging
import math
import os
import re
import tempfile
import time
import tomllib
import urllib.parse
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import orjson
import polars as pl
from pydantic import Field, ValidationError, field_validator

from shortrec import schema as S
from shortrec.config import (
    AnalysisConfig,
    ExperimentConfig,
    ServingConfig,
    StoreConfig,
    StrictModel,
)
from shortrec.data import io
from shortrec.data.world import US_PER_DAY, US_PER_S, SessionState, World
from shortrec.experiments import analysis as A
from shortrec.experiments import collect as C
from shortrec.experiments import logs as L
from shortrec.experiments import stats as st
from shortrec.experiments.assignment import ExperimentSet, arm_edges, buckets
from shortrec.experiments.report import write_report
from shortrec.experiments.spec import ExperimentSource, parse_experiments
from shortrec.publish import publish
from shortrec.ranking.predictor import CandidateSet, History, Predictor, Scores
from shortrec.retrieval.model import RetrievalModel
from shortrec.serving.api import EventIn, VideoIn
from shortrec.serving.metrics import Metrics, new_registry
from shortrec.serving.service import FeedService
from shortrec.serving.snapshot import Bundle
from shortrec.store import MemoryStore, OnlineStore, open_store

log = logging.getLogger(__name__)

#: ``model_version`` label of an arm served without the learned ranker (retrieval order).
RETRIEVAL_ONLY = "retrieval-only"
#: environment variable holding the admin token of a running server (new uploads by URL)
ENV_ADMIN_TOKEN = "SHORTREC_ADMIN_TOKEN"
LOGS_DIR, REPORTS_DIR, SUMMARY_FILE = "logs", "reports", "summary.json"
EXPERIMENTS_FILE, SIMULATION_FILE, VALIDATION_FILE = (
    "experiments.toml",
    "simulation.json",
    "validation.json",
)
PART = "part-00000.parquet"
#: what :func:`collect_logs` writes: one part per table, the user vocabulary, its counters
COLLECT_PART, USERS_FILE, COLLECT_FILE = "part-0.parquet", "users.parquet", "collect.json"
# simulated ids live far above any dataset's, so they never collide with published history
_ID_BASE = 1 << 40
# a postponed session start waits this long before trying again (the user was still busy)
_RETRY_US = 15 * 60 * US_PER_S

#: Serving settings of the in-process stack unless ``[simulation.serving]`` says otherwise:
#: shared-list caches expire on wall time, which a simulation compresses, so they are off
#: (every page sees the store as of its simulated time); deadlines are generous so that what
#: an arm serves does not depend on CPU contention on the simulating machine.
SIM_SERVING_DEFAULTS: dict[str, Any] = {
    "gc_freeze": False,
    "budget_ms": 10_000.0,
    "deadline_sources_ms": 5_000.0,
    "deadline_ranking_ms": 5_000.0,
    "trending_cache_ttl_s": 0.0,
    "fresh_cache_ttl_s": 0.0,
    "cold_cache_ttl_s": 0.0,
}

F64 = npt.NDArray[np.float64]


class ScenarioError(S.BadInput):
    """A scenario file (experiments + ``[simulation]``) cannot be read or is invalid."""


# ---------------------------------------------------------------- configuration
class SimulationConfig(StrictModel):
    """The ``[simulation]`` table of a scenario file.

    ``dataset``: the synthetic dataset (with ``truth/`` and ``etl/``), relative to the scenario
    file; ``n_users`` simulated users (a random sample of the world's); ``days`` of traffic;
    ``sessions_per_day`` per average user (scaled by each user's activity); ``page_size``
    videos per feed request; ``mode``: ``"inprocess"`` or the base URL of a running server;
    ``models``: ``model_version`` label -> bundle directory (in process, relative to the
    scenario file) or server URL; ``uploads``: announce videos uploaded during the simulation;
    ``max_pages_per_session``: a bound on one session; ``validation_salts``: re-randomisations
    of the A/A check (at least 200); ``validation_metrics``; ``serving``: in-process
    ``ServingConfig`` overrides (over :data:`SIM_SERVING_DEFAULTS`); ``analysis``:
    ``AnalysisConfig`` of the reports.
    """

    dataset: str | None = None
    n_users: int = Field(default=200, ge=2)
    days: float = Field(default=1.0, gt=0, le=365)
    sessions_per_day: float = Field(default=1.0, gt=0, le=48)
    seed: int = 0
    page_size: int = Field(default=8, ge=1, le=100)
    mode: str = "inprocess"
    start_offset_h: float = Field(default=1.0, ge=0)
    models: dict[str, str] = Field(default_factory=dict)
    uploads: bool = True
    max_pages_per_session: int = Field(default=50, ge=1)
    validation_salts: int = Field(default=400, ge=200)
    validation_metrics: tuple[str, ...] = (
        "watch_time_per_user",
        "engagement_rate",
        "watch_ratio_per_impression",
        "liker_rate",
    )
    serving: dict[str, Any] = Field(default_factory=dict)
    analysis: AnalysisConfig = AnalysisConfig()

    @field_validator("mode")
    @classmethod
    def _mode(cls, v: str) -> str:
        if v != "inprocess" and not re.match(r"^https?://[^\s/]+", v):
            raise ValueError(f"must be 'inprocess' or an http(s):// URL, got {v!r}")
        return v.rstrip("/")

    @field_validator("validation_metrics")
    @classmethod
    def _metrics(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = [m for m in v if m not in A.METRIC_BY_NAME]
        if bad:
            raise ValueError(f"unknown metrics {bad}; known: {sorted(A.METRIC_BY_NAME)}")
        return v

    @property
    def inprocess(self) -> bool:
        return self.mode == "inprocess"


@dataclass(frozen=True)
class Scenario:
    """A loaded scenario: the experiments TOML text (without ``[simulation]``), the validated
    set, the simulation settings and the directory relative paths resolve against."""

    path: Path
    experiments_text: str
    experiments: ExperimentSet
    sim: SimulationConfig

    def resolve(self, p: str) -> Path:
        q = Path(p).expanduser()
        return q if q.is_absolute() else (self.path.parent / q).resolve()


def _strip_simulation(text: str) -> str:
    """``text`` without the ``[simulation]`` and ``[simulation.*]`` tables (kept line-exact, so
    error lines of the experiments part still point into the scenario file)."""
    out: list[str] = []
    skipping = False
    header = re.compile(r"^\s*\[\[?\s*([A-Za-z0-9_.\"' -]+?)\s*\]\]?\s*(#.*)?$")
    for line in text.splitlines():
        m = header.match(line)
        if m:
            name = m.group(1).strip().strip("\"'")
            skipping = name == "simulation" or name.startswith("simulation.")
        out.append("" if skipping else line)
    return "\n".join(out) + "\n"


def load_scenario(path: Path | str) -> Scenario:
    """Read a scenario file; errors (:class:`ScenarioError`) name the file, line and field."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ScenarioError(f"{path}: cannot read scenario file: {e}") from e
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ScenarioError(f"{path}: invalid TOML: {e}") from e
    sim_raw = raw.pop("simulation", None)
    if not isinstance(sim_raw, dict):
        raise ScenarioError(f"{path}: field simulation: a [simulation] table is required")
    exp_text = _strip_simulation(text)
    if tomllib.loads(exp_text) != raw:
        raise ScenarioError(
            f"{path}: field simulation: write the simulation settings as a [simulation] table "
            "(and [simulation.*] sub-tables), not as dotted keys elsewhere"
        )
    exps = parse_experiments(exp_text, str(path))
    try:
        sim = SimulationConfig.model_validate(sim_raw)
    except ValidationError as e:
        sim_line = next(
            (i + 1 for i, ln in enumerate(text.splitlines()) if re.match(r"^\s*\[simulation", ln)),
            None,
        )
        where = f"line {sim_line}: " if sim_line else ""
        msgs = [
            f"{path}: {where}simulation.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
            for err in e.errors()
        ]
        raise ScenarioError("\n".join(msgs)) from e
    if not exps.experiments:
        raise ScenarioError(f"{path}: field experiments: no enabled experiment to simulate")
    labels = {
        a.overrides.model_version
        for e in exps.experiments
        for a in e.arms
        if a.overrides.model_version is not None
    }
    missing = sorted(labels - set(sim.models) - {RETRIEVAL_ONLY})
    if missing:
        raise ScenarioError(
            f"{path}: field simulation.models: arms use model_version {missing} but "
            f"[simulation.models] maps only {sorted(sim.models)} (label -> bundle dir or URL)"
        )
    if not sim.inprocess and RETRIEVAL_ONLY in labels and RETRIEVAL_ONLY not in sim.models:
        raise ScenarioError(
            f"{path}: field simulation.models: mode is a URL, so model_version "
            f"{RETRIEVAL_ONLY!r} needs a server URL in [simulation.models]"
        )
    return Scenario(path, exp_text, exps, sim)


def is_aa(e: ExperimentConfig) -> bool:
    """Whether every arm of ``e`` serves identically (same overrides): an A/A test."""
    return all(a.overrides == e.arms[0].overrides for a in e.arms)


# ---------------------------------------------------------------- the retrieval-only ranker
class RetrievalOrderPredictor(Predictor):
    """A :class:`Predictor` stand-in that scores candidates by their fused retrieval order.

    The service passes candidates in merged (reciprocal-rank-fusion) order, so the final score
    ``1 - i / C`` of the i-th of ``C`` candidates keeps that order: the page is the retrieval
    order, then the same session adjustment and diversification as the ranked arm. It shares
    the base predictor's tables (video table, statistics, config) and never calls the model.
    """

    def __init__(self, base: Predictor) -> None:
        # no super().__init__: that would load a model; this shares the loaded base's state
        self.__dict__.update(base.__dict__)

    def score_batch(
        self, histories: Sequence[History], candidates: Sequence[CandidateSet], batch_size: int = 64
    ) -> list[Scores]:
        out = []
        for c in candidates:
            m = int(np.asarray(c.video_idx).shape[0])
            final = (1.0 - np.arange(m, dtype=np.float32) / max(m, 1)).astype(np.float32)
            out.append(Scores(final=final))
        return out


def retrieval_only(bundle: Bundle) -> Bundle:
    """``bundle`` with its ranking stage replaced by the retrieval order."""
    return dataclasses.replace(
        bundle,
        predictor=RetrievalOrderPredictor(bundle.predictor),
        model_version=f"{bundle.model_version}+{RETRIEVAL_ONLY}",
    )


# ---------------------------------------------------------------- the feed client seam
@dataclass(frozen=True)
class Page:
    """One served page as the simulator sees it."""

    request_id: int
    arms: dict[str, str]
    model_version: str
    video_idx: tuple[int, ...]
    fallbacks: tuple[str, ...]
    degraded: bool


class FeedClient(Protocol):
    """What the simulator needs from a serving stack (in process or over HTTP)."""

    def feed(self, user_id: str, session_id: int, n: int, now_us: int) -> Page: ...

    def post_events(self, events: Sequence[EventIn], now_us: int) -> None: ...

    def add_video(self, video: VideoIn, now_us: int) -> bool: ...

    def close(self) -> None: ...


class _Router:
    """Picks the route (model version label) of a user: the ``model_version`` override of
    their arms, else the default route ``""``."""

    def __init__(self, experiments: ExperimentSet, labels: set[str]) -> None:
        self._exps = experiments
        self._labels = labels

    def route(self, user_id: str) -> str:
        label = self._exps.overrides(user_id).model_version
        return label if label is not None and label in self._labels else ""

    def arms(self, user_id: str) -> dict[str, str]:
        return self._exps.assign(user_id)


class InProcessClient:
    """The serving stack in this process: one :class:`FeedService` per model version over one
    shared online store, wired as ``serving.app``'s lifespan wires it."""

    def __init__(
        self,
        services: dict[str, FeedService],
        router: _Router,
        clock: list[int],
        store: OnlineStore,
    ) -> None:
        self.services = services
        self.store = store
        self._router = router
        self._clock = clock

    def feed(self, user_id: str, session_id: int, n: int, now_us: int) -> Page:
        self._clock[0] = now_us
        r = self.services[self._router.route(user_id)].feed(user_id, session_id, n, None, now_us)
        return Page(
            r.request_id,
            dict(r.arms),
            r.model_version,
            tuple(it.video_idx for it in r.items),
            r.fallbacks,
            r.degraded,
        )

    def post_events(self, events: Sequence[EventIn], now_us: int) -> None:
        self._clock[0] = now_us
        # every replica shares the store, so any one of them ingests (the user's route)
        self.services[self._router.route(events[0].user_id)].ingest_events(events, now_us)

    def add_video(self, video: VideoIn, now_us: int) -> bool:
        self._clock[0] = now_us
        for svc in self.services.values():  # each replica's in-process catalogue learns it
            svc.add_video(video)
        return True

    def close(self) -> None:
        for svc in self.services.values():
            svc.close()
        self.store.close()


class HttpClient:
    """A running server (or one per model version) over HTTP/1.1 keep-alive connections.

    The server keeps its own clock: events are posted without ``ts`` (the server stamps
    them), feeds are served at its wall time; the logs keep the simulated times.
    """

    def __init__(self, urls: dict[str, str], router: _Router, timeout_s: float = 30.0) -> None:
        self.urls = urls
        self._router = router
        self._timeout = timeout_s
        self._conns: dict[str, http.client.HTTPConnection] = {}
        self._token = os.environ.get(ENV_ADMIN_TOKEN)

    def _call(self, route: str, method: str, path: str, body: Any) -> Any:
        base = urllib.parse.urlsplit(self.urls[route])
        conn = self._conns.get(route)
        if conn is None:
            cls = (
                http.client.HTTPSConnection
                if base.scheme == "https"
                else http.client.HTTPConnection
            )
            conn = cls(base.netloc, timeout=self._timeout)
            self._conns[route] = conn
        headers = {"Content-Type": "application/json"}
        if path.startswith("/admin/") and self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        url = base.path.rstrip("/") + path
        for attempt in range(2):  # a keep-alive connection the server closed: reconnect once
            try:
                conn.request(method, url, orjson.dumps(body), headers)
                resp = conn.getresponse()
                data = resp.read()
                break
            except (http.client.HTTPException, ConnectionError):
                conn.close()
                if attempt:
                    raise
        if resp.status >= 400:
            detail = data[:500].decode(errors="replace")
            raise RuntimeError(f"{self.urls[route]}{path}: HTTP {resp.status}: {detail}")
        return orjson.loads(data) if data else None

    def feed(self, user_id: str, session_id: int, n: int, now_us: int) -> Page:
        r = self._call(
            self._router.route(user_id),
            "POST",
            "/v1/feed",
            {"user_id": user_id, "session_id": session_id, "n": n},
        )
        want = self._router.arms(user_id)
        if dict(r["arms"]) != want:
            # the server must run the scenario's declarations, or the logs would lie
            raise ScenarioError(
                f"{self.urls[self._router.route(user_id)]}: the server put user {user_id!r} in "
                f"arms {r['arms']}, the scenario in {want}; start it with the scenario's "
                f"experiments (ServingConfig.experiments_path)"
            )
        return Page(
            int(r["request_id"]),
            dict(r["arms"]),
            str(r["model_version"]),
            tuple(int(it["video_idx"]) for it in r["items"]),
            tuple(r["fallbacks"]),
            bool(r["degraded"]),
        )

    def post_events(self, events: Sequence[EventIn], now_us: int) -> None:
        body = [e.model_dump(mode="json", exclude={"ts"}) for e in events]
        self._call(self._router.route(events[0].user_id), "POST", "/v1/events", {"events": body})

    def add_video(self, video: VideoIn, now_us: int) -> bool:
        if not self._token:
            return False
        for route in self.urls:
            self._call(route, "POST", "/admin/videos", video.model_dump(mode="json"))
        return True

    def close(self) -> None:
        for c in self._conns.values():
            c.close()


# ---------------------------------------------------------------- the simulation
@dataclass
class _Session:
    user_idx: int
    user_id: str
    session_id: int
    state: SessionState
    pages: int = 0


@dataclass
class SimStats:
    """Traffic counters of one simulation."""

    users: int = 0
    sessions: int = 0
    postponed_sessions: int = 0
    pages: int = 0
    empty_pages: int = 0
    impressions: int = 0
    degraded_pages: int = 0
    uploads_announced: int = 0
    uploads_skipped: int = 0
    served_before_upload: int = 0
    fallbacks: dict[str, int] = field(default_factory=dict)
    model_versions: dict[str, dict[str, int]] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def sessions_per_s(self) -> float:
        return self.sessions / self.seconds if self.seconds > 0 else float("nan")


def _user_ids(dataset_root: Path, n_users: int) -> list[str]:
    path = Path(dataset_root) / io.VOCAB_DIR / "users.parquet"
    if not path.is_file():
        raise io.DatasetError(f"{path}: users vocabulary not found")
    vocab = pl.read_parquet(path).sort(S.IDX)
    if vocab.height != n_users or vocab[S.IDX].to_list() != list(range(n_users)):
        raise io.DatasetError(
            f"{path}: field {S.IDX}: expected 0..{n_users - 1} (the world's users), "
            f"got {vocab.height} rows"
        )
    return [str(x) for x in vocab[S.ID].to_list()]


def _schedule(
    world: World, users: npt.NDArray[np.int64], cfg: SimulationConfig, start_us: int
) -> list[tuple[int, int]]:
    """Session starts ``(ts_us, user_idx)`` over the simulated days (module doc)."""
    rng = np.random.default_rng([cfg.seed, 0])
    rate = cfg.sessions_per_day * world.activity[users] / float(np.mean(world.activity))
    out: list[tuple[int, int]] = []
    for d in range(math.ceil(cfg.days)):
        span = min(1.0, cfg.days - d)
        k = rng.poisson(rate * span)
        for u, ku in zip(users.tolist(), k.tolist(), strict=True):
            for t in rng.random(ku):
                out.append((start_us + d * US_PER_DAY + int(t * span * US_PER_DAY), int(u)))
    return out


def run_simulation(
    world: World,
    client: FeedClient,
    user_ids: Sequence[str],
    videos: pl.DataFrame,
    cfg: SimulationConfig,
    start_us: int,
    progress: bool = False,
    config_version: str | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame, SimStats]:
    """Simulate ``cfg.days`` of traffic from ``start_us`` through ``client``.

    ``user_ids[u]``: external id of world user ``u``; ``videos``: the catalogue
    (``schema.VIDEOS``; categories for the exposure log, upload times and features of new
    uploads); ``config_version``: fingerprint of the declarations (exposure log column).
    Returns ``(exposures, events, stats)`` (``EXPOSURES`` and ``schema.EVENTS`` tables).
    """
    if cfg.n_users > world.n_users:
        raise S.BadInput(f"simulation.n_users: {cfg.n_users} > the world's {world.n_users} users")
    t_wall = time.perf_counter()
    end_us = start_us + round(cfg.days * US_PER_DAY)
    pick = np.random.default_rng([cfg.seed, 2]).permutation(world.n_users)[: cfg.n_users]
    users = np.sort(pick).astype(np.int64)
    v = videos.sort(S.VIDEO_IDX)
    category = np.full(world.n_videos, -1, np.int64)
    cat_col = v[S.CATEGORY].fill_null(-1).to_numpy()
    category[v[S.VIDEO_IDX].to_numpy()] = cat_col
    upload_us = world.upload_us

    stats = SimStats(users=int(users.shape[0]))
    heap: list[tuple[int, int, int, Any]] = []  # (ts, kind, seq, payload); uploads first
    seq = 0
    if cfg.uploads:
        new = v.filter(
            (pl.col(S.UPLOAD_TS) > pl.lit(start_us).cast(S.UTC_TS))
            & (pl.col(S.UPLOAD_TS) <= pl.lit(end_us).cast(S.UTC_TS))
        )
        for row in new.iter_rows(named=True):
            ts = int(row[S.UPLOAD_TS].timestamp() * US_PER_S)
            heap.append((ts, 0, seq, row))
            seq += 1
    for ts, u in _schedule(world, users, cfg, start_us):
        heap.append((ts, 1, seq, u))
        seq += 1
    heapq.heapify(heap)

    rngs = {int(u): np.random.default_rng([cfg.seed, 1, int(u)]) for u in users.tolist()}
    busy_until: dict[int, int] = {}
    x_cols: dict[str, list[Any]] = {
        c: []
        for c in (S.REQUEST_ID, S.SESSION_ID, S.USER_IDX, S.TS, L.RANK, S.VIDEO_IDX, S.CATEGORY)
    }
    x_arms: list[list[dict[str, str]]] = []
    e_rows: list[tuple[Any, ...]] = []
    next_session = _ID_BASE
    next_event = _ID_BASE
    fallbacks: Counter[str] = Counter()
    versions: dict[str, Counter[str]] = {}
    last_report = time.perf_counter()

    while heap:
        ts, kind, _, payload = heapq.heappop(heap)
        if kind == 0:  # a new upload goes live
            row = payload
            video = VideoIn(
                video_idx=int(row[S.VIDEO_IDX]),
                creator_idx=int(row[S.CREATOR_IDX]),
                category=row[S.CATEGORY],
                tags=list(row[S.TAGS] or [])[:16],
                duration_s=float(row[S.DURATION_S] or world.duration_s[row[S.VIDEO_IDX]]),
                upload_ts=row[S.UPLOAD_TS],
            )
            if client.add_video(video, ts):
                stats.uploads_announced += 1
            else:
                stats.uploads_skipped += 1
            continue
        if kind == 1:  # a session opens
            u = int(payload)
            if busy_until.get(u, -1) >= ts:
                stats.postponed_sessions += 1
                if ts + _RETRY_US < end_us:
                    heapq.heappush(heap, (ts + _RETRY_US, 1, seq, u))
                    seq += 1
                continue
            busy_until[u] = np.iinfo(np.int64).max
            sess = _Session(u, user_ids[u], next_session, world.start_session(u, ts, rngs[u]))
            next_session += 1
            stats.sessions += 1
        else:
            sess = payload
        # one page of this session
        st_ = sess.state
        page = client.feed(sess.user_id, sess.session_id, cfg.page_size, st_.ts_us)
        stats.pages += 1
        sess.pages += 1
        stats.degraded_pages += page.degraded
        fallbacks.update(page.fallbacks)
        arms_list = [{L.EXPERIMENT: e, L.ARM: a} for e, a in sorted(page.arms.items())]
        label = ",".join(f"{e}:{a}" for e, a in sorted(page.arms.items())) or None
        versions.setdefault(label or "none", Counter())[page.model_version] += 1
        for rank, vid in enumerate(page.video_idx):
            x_cols[S.REQUEST_ID].append(page.request_id)
            x_cols[S.SESSION_ID].append(sess.session_id)
            x_cols[S.USER_IDX].append(sess.user_idx)
            x_cols[S.TS].append(st_.ts_us)
            x_cols[L.RANK].append(rank)
            x_cols[S.VIDEO_IDX].append(vid)
            x_cols[S.CATEGORY].append(int(category[vid]) if 0 <= vid < category.shape[0] else -1)
            x_arms.append(arms_list)
            if 0 <= vid < upload_us.shape[0] and upload_us[vid] > st_.ts_us:
                stats.served_before_upload += 1
        ended = not page.video_idx
        stats.empty_pages += ended
        batch: list[EventIn] = []
        for vid in page.video_idx:
            res = world.step(st_, vid, rngs[sess.user_idx])
            r = res.response
            e_rows.append(
                (
                    next_event,
                    page.request_id,
                    sess.session_id,
                    sess.user_idx,
                    vid,
                    st_.ts_us,
                    st_.position,
                    r.watch_time_s,
                    r.watch_ratio,
                    r.skipped,
                    r.liked,
                    r.shared,
                    r.followed,
                    label,
                )
            )
            batch.append(
                EventIn(
                    event_id=next_event,
                    user_id=sess.user_id,
                    session_id=sess.session_id,
                    video_idx=vid,
                    request_id=page.request_id,
                    ts=dt.datetime.fromtimestamp(st_.ts_us / US_PER_S, dt.UTC),
                    watch_time_s=r.watch_time_s,
                    watch_ratio=r.watch_ratio,
                    skipped=r.skipped,
                    liked=r.liked,
                    shared=r.shared,
                    followed=r.followed,
                )
            )
            next_event += 1
            stats.impressions += 1
            st_ = res.state
            if res.ended:
                ended = True
                break
        if batch:
            client.post_events(batch, st_.ts_us)
        sess.state = st_
        if ended or sess.pages >= cfg.max_pages_per_session:
            busy_until[sess.user_idx] = st_.ts_us
        else:
            heapq.heappush(heap, (st_.ts_us, 2, seq, sess))
            seq += 1
        if progress and time.perf_counter() - last_report > 5:
            last_report = time.perf_counter()
            print(
                f"  simulated {stats.sessions} sessions, {stats.pages} pages, "
                f"{stats.impressions} impressions"
            )
    stats.fallbacks = dict(fallbacks)
    stats.model_versions = {k: dict(c) for k, c in versions.items()}
    stats.seconds = time.perf_counter() - t_wall
    return _exposures_frame(x_cols, x_arms, config_version), _events_frame(e_rows), stats


def _exposures_frame(
    cols: dict[str, list[Any]], arms: list[list[dict[str, str]]], version: str | None
) -> pl.DataFrame:
    df = pl.DataFrame(
        {
            S.REQUEST_ID: pl.Series(cols[S.REQUEST_ID], dtype=pl.Int64),
            S.SESSION_ID: pl.Series(cols[S.SESSION_ID], dtype=pl.Int64),
            S.USER_IDX: pl.Series(cols[S.USER_IDX], dtype=pl.Int32),
            S.TS: pl.Series(cols[S.TS], dtype=pl.Int64).cast(S.UTC_TS),
            L.RANK: pl.Series(cols[L.RANK], dtype=pl.Int32),
            S.VIDEO_IDX: pl.Series(cols[S.VIDEO_IDX], dtype=pl.Int32),
            S.CATEGORY: pl.Series(cols[S.CATEGORY], dtype=pl.Int16),
            L.ARMS: pl.Series(arms, dtype=pl.List(L.ARM_STRUCT)),
        }
    )
    return df.with_columns(
        pl.when(pl.col(S.CATEGORY) >= 0).then(pl.col(S.CATEGORY)).alias(S.CATEGORY),
        pl.lit(version, dtype=pl.String).alias(L.CONFIG_VERSION),
    )


def _events_frame(rows: list[tuple[Any, ...]]) -> pl.DataFrame:
    names = (
        S.EVENT_ID,
        S.REQUEST_ID,
        S.SESSION_ID,
        S.USER_IDX,
        S.VIDEO_IDX,
        S.TS,
        S.POSITION,
        S.WATCH_TIME_S,
        S.WATCH_RATIO,
        S.SKIPPED,
        S.LIKED,
        S.SHARED,
        S.FOLLOWED,
        S.POLICY,
    )
    cols: list[Sequence[Any]] = list(zip(*rows, strict=True)) if rows else [[] for _ in names]
    df = pl.DataFrame(
        {
            S.EVENT_ID: pl.Series(cols[0], dtype=pl.Int64),
            S.REQUEST_ID: pl.Series(cols[1], dtype=pl.Int64),
            S.SESSION_ID: pl.Series(cols[2], dtype=pl.Int64),
            S.USER_IDX: pl.Series(cols[3], dtype=pl.Int32),
            S.VIDEO_IDX: pl.Series(cols[4], dtype=pl.Int32),
            S.TS: pl.Series(cols[5], dtype=pl.Int64).cast(S.UTC_TS),
            S.POSITION: pl.Series(cols[6], dtype=pl.Int32),
            S.WATCH_TIME_S: pl.Series(cols[7], dtype=pl.Float32),
            S.WATCH_RATIO: pl.Series(cols[8], dtype=pl.Float32),
            S.SKIPPED: pl.Series(cols[9], dtype=pl.Boolean),
            S.LIKED: pl.Series(cols[10], dtype=pl.Boolean),
            S.SHARED: pl.Series(cols[11], dtype=pl.Boolean),
            S.FOLLOWED: pl.Series(cols[12], dtype=pl.Boolean),
            S.POLICY: pl.Series(cols[13], dtype=pl.String),
        }
    )
    return S.conform(df, S.EVENTS)


# ---------------------------------------------------------------- A/A validation
@dataclass(frozen=True)
class MetricValidation:
    """Re-randomisation check of one metric: the A/A false-positive rate over ``n_sims``
    salts, and (for mean and ratio metrics) the detection rate of a planted additive effect
    ``effect_abs`` next to the power the calculator predicts for it."""

    metric: str
    test: str
    n_sims: int
    false_positive_rate: float
    effect_abs: float | None = None
    effect_rel: float | None = None
    power_predicted: float | None = None
    power_observed: float | None = None


@dataclass(frozen=True)
class AAValidation:
    """Result of :func:`validate_aa` (``to_dict`` is its JSON form)."""

    experiment: str
    control: str
    treatment: str
    users: int
    n_salts: int
    alpha: float
    target_power: float
    mean_users_control: float
    mean_users_treatment: float
    metrics: tuple[MetricValidation, ...]

    def metric(self, name: str) -> MetricValidation:
        for m in self.metrics:
            if m.metric == name:
                return m
        raise KeyError(f"metric {name!r} was not validated")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = A._finite(dataclasses.asdict(self))
        return out


def _moments(w: F64, y: F64, x: F64) -> st.Moments:
    """Per-row Moments of ``(y, x)`` under the 0/1 membership matrix ``w`` (sims, users)."""
    return st.Moments(w.sum(1), w @ y, w @ x, w @ (y * y), w @ (x * x), w @ (x * y))


def _p_values(kind: str, t: st.Moments, c: st.Moments, alpha: float) -> F64:
    if kind == "ratio":
        res = st.ratio_ztest(t, c, alpha)
    elif kind == "proportion":
        res = st.two_proportion_ztest(t.sy, t.n, c.sy, c.n, alpha)
    else:
        res = st.welch_ttest(t, c, alpha)
    return np.asarray(res.p_value, dtype=np.float64)


def validate_aa(
    exposures: pl.LazyFrame,
    events: pl.LazyFrame,
    experiment: ExperimentConfig,
    config: AnalysisConfig | None = None,
    n_salts: int = 400,
    metrics: Sequence[str] = ("watch_time_per_user", "engagement_rate"),
    target_power: float = 0.8,
    salt_prefix: str = "aa-rerandomise",
) -> AAValidation:
    """Validate the analysis on one simulated A/A log by re-randomisation (module doc).

    Per-user outcomes (``analysis.per_user_table``) are re-assigned to the experiment's arms
    ``n_salts`` times with the salts ``f"{salt_prefix}-{i}"`` through the service's hashing
    (``assignment.buckets`` against the arm weights); control vs the first other arm are
    compared with the analysis' test of each metric (Welch t for per-user means, delta-method
    z for ratios, two-proportion z for proportions), all salts in one vectorised call.

    Power: for a mean or ratio metric the planted effect is ``δ = d_mde σ`` with ``d_mde``
    the standardised effect the calculator (``stats.mde``) says is detected with
    ``target_power`` at the mean arm sizes, and ``σ`` the standard deviation of the per-user
    values (for a ratio ``R = Σy/Σx``: of the linearised ``(y_u - R x_u) / mean(x)``, the
    delta method's influence function). Each treatment user's ``y_u`` becomes ``y_u + δ x_u``
    (the per-user mean, or the ratio, moves by exactly ``δ``); the share of salts with
    ``p < alpha`` is compared with ``power_t`` (means) or ``power_normal`` (ratios) at ``d``.
    """
    cfg = config if config is not None else AnalysisConfig()
    if not is_aa(experiment):
        raise S.BadInput(
            f"experiment {experiment.name!r}: re-randomisation needs an A/A experiment "
            "(arms with identical overrides)"
        )
    users = A.per_user_table(exposures, events, experiment.name, cfg).collect()
    if users.height < 4:
        raise S.BadInput(f"experiment {experiment.name!r}: {users.height} users; need >= 4")
    names = [a.name for a in experiment.arms]
    c_idx = names.index(experiment.control_arm)
    t_idx = next(i for i in range(len(names)) if i != c_idx)
    edges = arm_edges([a.weight for a in experiment.arms])
    ids = [str(u) for u in users[S.USER_IDX].to_list()]
    arm = np.stack(
        [
            np.searchsorted(edges, buckets(f"{salt_prefix}-{i}", ids), side="right")
            for i in range(n_salts)
        ]
    )  # (sims, users)
    w_t = (arm == t_idx).astype(np.float64)
    w_c = (arm == c_idx).astype(np.float64)
    n_c, n_t = float(w_c.sum(1).mean()), float(w_t.sum(1).mean())
    out: list[MetricValidation] = []
    for name in metrics:
        spec = A.METRIC_BY_NAME[name]
        y = users[spec.y].cast(pl.Float64).to_numpy()
        x = users[spec.x].cast(pl.Float64).to_numpy()
        mt, mc = _moments(w_t, y, x), _moments(w_c, y, x)
        test = {"ratio": "delta-method z", "proportion": "two-proportion z"}.get(
            spec.kind, "welch t"
        )
        with np.errstate(divide="ignore", invalid="ignore"):
            p = _p_values(spec.kind, mt, mc, cfg.alpha)
        fpr = float(np.mean(p < cfg.alpha))
        if spec.kind not in {"mean", "ratio"}:
            out.append(MetricValidation(name, test, n_salts, fpr))
            continue
        if spec.kind == "mean":
            sigma, base = float(np.std(y, ddof=1)), float(np.mean(y))
            how = "t"
        else:
            base = float(y.sum() / x.sum())
            sigma = float(np.std((y - base * x) / x.mean(), ddof=1))
            how = "normal"
        d = st.mde(n_c, n_t / n_c, cfg.alpha, target_power, test=how)  # type: ignore[arg-type]
        delta = d * sigma
        planted = st.Moments(
            mt.n,
            mt.sy + delta * mt.sx,
            mt.sx,
            mt.syy + 2 * delta * mt.sxy + delta**2 * mt.sxx,
            mt.sxx,
            mt.sxy + delta * mt.sxx,
        )
        with np.errstate(divide="ignore", invalid="ignore"):
            p_eff = _p_values(spec.kind, planted, mc, cfg.alpha)
        power_fn = st.power_t if how == "t" else st.power_normal
        out.append(
            MetricValidation(
                name,
                test,
                n_salts,
                fpr,
                effect_abs=delta,
                effect_rel=delta / base if base else float("nan"),
                power_predicted=power_fn(d, n_c, n_t / n_c, cfg.alpha),
                power_observed=float(np.mean(p_eff < cfg.alpha)),
            )
        )
    return AAValidation(
        experiment.name,
        names[c_idx],
        names[t_idx],
        users.height,
        n_salts,
        cfg.alpha,
        target_power,
        n_c,
        n_t,
        tuple(out),
    )


# ---------------------------------------------------------------- composition
def _open_inprocess(
    sc: Scenario,
    art: Path,
    root: Path,
    exp_path: Path,
    redis_url: str | None,
    progress: bool,
    labels: set[str],
    clock: list[int],
) -> tuple[InProcessClient, int]:
    """The in-process stack (see :class:`InProcessClient`) and the bundle's snapshot time."""
    settings = ServingConfig.model_validate(
        {**SIM_SERVING_DEFAULTS, **sc.sim.serving, "experiments_path": str(exp_path)}
    )
    bundle = Bundle.load(art, rank_threads=settings.rank_threads)
    store: OnlineStore
    if redis_url:
        publish(root, art, redis_url, progress)
        store = open_store(StoreConfig(url=redis_url))
    else:
        store = MemoryStore()
        publish(root, art, progress=progress, store=store)
    bundles = {"": bundle}
    for label in sorted(labels):
        if label in sc.sim.models:
            bundles[label] = Bundle.load(
                sc.resolve(sc.sim.models[label]), rank_threads=settings.rank_threads
            )
        else:  # RETRIEVAL_ONLY without an explicit bundle
            bundles[label] = retrieval_only(bundle)
    services: dict[str, FeedService] = {}
    try:
        for label, b in bundles.items():
            svc = FeedService(
                settings,
                b,
                store,
                Metrics(new_registry()),
                ExperimentSource(exp_path),
                clock=lambda: clock[0],
            )
            svc.probe_store()
            svc.start()
            services[label] = svc
    except BaseException:
        for svc in services.values():
            svc.close()
        store.close()
        raise
    return InProcessClient(services, _Router(sc.experiments, labels), clock, store), int(
        bundle.retrieval.as_of_us
    )


def _pre_events(root: Path, users: pl.Series, before_us: int) -> pl.DataFrame:
    """The dataset's events of ``users`` before ``before_us`` (the CUPED pre-period)."""
    parts = sorted((root / io.EVENTS_DIR).glob("*.parquet"))
    if not parts:
        return S.conform(pl.DataFrame(schema=S.EVENTS.polars_schema), S.EVENTS)
    lf = pl.scan_parquet(parts).filter(
        pl.col(S.USER_IDX).is_in(users.unique().implode())
        & (pl.col(S.TS) < pl.lit(before_us).cast(S.UTC_TS))
    )
    return S.conform(lf.collect(), S.EVENTS)


def _experiment_summary(res: A.AnalysisResult, report: Path, srm_warned: bool) -> dict[str, Any]:
    return {
        "report": str(report),
        "control": res.control,
        "users": dict(res.users),
        "srm_p_value": res.srm.p_value,
        "srm_mismatch": res.srm.mismatch or srm_warned,
        "crossover_users": res.crossover_users,
        "significant": sorted({f"{c.metric}:{c.arm}" for c in res.comparisons if c.significant}),
        "comparisons": [
            A._finite(
                {
                    "metric": c.metric,
                    "arm": c.arm,
                    "control_value": c.control_value,
                    "treatment_value": c.treatment_value,
                    "lift": c.lift,
                    "lift_ci_low": c.lift_ci_low,
                    "lift_ci_high": c.lift_ci_high,
                    "p_value": c.p_value,
                    "p_adjusted": c.p_adjusted,
                    "significant": c.significant,
                }
            )
            for c in res.comparisons
        ],
    }


def _analyze_one(
    exposures: pl.LazyFrame,
    events: pl.LazyFrame,
    pre: pl.LazyFrame | None,
    experiment: ExperimentConfig | str,
    cfg: AnalysisConfig,
    out: Path,
) -> tuple[A.AnalysisResult, dict[str, Any]]:
    """Analyse one experiment and write its report; an SRM is reported, not raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", A.SampleRatioMismatchWarning)
        res = A.analyze(exposures, events, experiment, cfg, pre, np.random.default_rng(cfg.seed))
    srm = any(issubclass(w.category, A.SampleRatioMismatchWarning) for w in caught)
    for w in caught:
        if not issubclass(w.category, A.SampleRatioMismatchWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    report = write_report(res, out)
    return res, _experiment_summary(res, report, srm)


def simulate(
    config_path: Path,
    art: Path,
    dataset_root: Path | None,
    out: Path,
    redis_url: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the scenario at ``config_path`` against bundle ``art``; write logs, reports and
    ``summary.json`` under ``out`` (layout: module doc) and return the summary.

    ``dataset_root`` (None: ``[simulation] dataset``) is the synthetic dataset whose world
    the users come from and whose ETL outputs are published into the store (``redis_url``:
    a Redis store, else an in-process one; in-process mode only). Experiments whose arms
    serve identically (A/A) are also validated by re-randomisation (:func:`validate_aa`).
    Raises ``BadInput`` subclasses naming the file and field on bad input.
    """
    sc = load_scenario(config_path)
    sim = sc.sim
    if dataset_root is not None:
        root = Path(dataset_root)
    elif sim.dataset is not None:
        root = sc.resolve(sim.dataset)
    else:
        raise ScenarioError(
            f"{config_path}: field simulation.dataset: no dataset given (set it or pass one)"
        )
    art = Path(art)
    if not art.is_dir():
        raise S.BadInput(f"{art}: artifact bundle directory not found")
    world = World.load(root)
    user_ids = _user_ids(root, world.n_users)
    videos_path = root / io.VIDEOS_FILE
    if not videos_path.is_file():
        raise io.DatasetError(f"{videos_path}: videos table not found")
    videos = S.conform(pl.read_parquet(videos_path), S.VIDEOS)
    labels = {
        a.overrides.model_version
        for e in sc.experiments.experiments
        for a in e.arms
        if a.overrides.model_version is not None
    }
    out = Path(out)
    clock = [0]
    client: FeedClient
    with tempfile.TemporaryDirectory(prefix="shortrec-abtest-") as tmp:
        exp_path = Path(tmp) / EXPERIMENTS_FILE
        exp_path.write_text(sc.experiments_text)
        if sim.inprocess:
            client, as_of = _open_inprocess(
                sc, art, root, exp_path, redis_url, progress, labels, clock
            )
        else:
            urls = {"": sim.mode, **{lb: sim.models[lb].rstrip("/") for lb in labels}}
            client = HttpClient(urls, _Router(sc.experiments, labels))
            as_of = int(RetrievalModel.load(art).as_of_us)
        start_us = as_of + round(sim.start_offset_h * 3_600 * US_PER_S)
        clock[0] = start_us
        try:
            if progress:
                print(
                    f"simulating {sim.n_users} users x {sim.days:g} days "
                    f"({'in process' if sim.inprocess else sim.mode}) ..."
                )
            exposures, events, stats = run_simulation(
                world,
                client,
                user_ids,
                videos,
                sim,
                start_us,
                progress,
                sc.experiments.version,
            )
        finally:
            client.close()
    end_us = start_us + round(sim.days * US_PER_DAY)
    pre = _pre_events(root, exposures[S.USER_IDX], start_us)
    sim_doc = {
        "scenario": str(sc.path),
        "dataset": str(root),
        "artifacts": str(art),
        "start_us": start_us,
        "end_us": end_us,
        "config_version": sc.experiments.version,
        "simulation": sim.model_dump(mode="json"),
        "stats": {**dataclasses.asdict(stats), "sessions_per_s": stats.sessions_per_s},
    }
    with io.atomic_dir(out / LOGS_DIR) as tmp_logs:
        for sub, df in (("exposures", exposures), ("events", events), ("pre_events", pre)):
            (tmp_logs / sub).mkdir()
            df.write_parquet(tmp_logs / sub / PART, compression="zstd")
        (tmp_logs / EXPERIMENTS_FILE).write_text(sc.experiments_text)
        (tmp_logs / SIMULATION_FILE).write_text(
            json.dumps(A._finite(sim_doc), indent=2, sort_keys=True) + "\n"
        )
    cfg = sim.analysis
    if cfg.catalog_size is None:
        cfg = cfg.model_copy(update={"catalog_size": world.n_videos})
    summary: dict[str, Any] = {
        "out": str(out),
        "logs": str(out / LOGS_DIR),
        "simulation": sim_doc["stats"],
        "experiments": {},
    }
    x_lf, e_lf, p_lf = exposures.lazy(), events.lazy(), pre.lazy()
    for e in sc.experiments.experiments:
        rep_dir = out / REPORTS_DIR / e.name
        _, doc = _analyze_one(x_lf, e_lf, p_lf, e, cfg, rep_dir)
        doc["aa"] = is_aa(e)
        if doc["aa"]:
            val = validate_aa(
                x_lf, e_lf, e, cfg, sim.validation_salts, sim.validation_metrics
            ).to_dict()
            io.write_json_atomic(val, rep_dir / VALIDATION_FILE)
            doc["validation"] = val
        summary["experiments"][e.name] = doc
    summary = A._finite(summary)
    io.write_json_atomic(summary, out / SUMMARY_FILE)
    return summary


def analyze_logs(logs: Path, experiment: str, out: Path) -> dict[str, Any]:
    """Analyse ``experiment`` from a logs directory (``LOGS/exposures/*.parquet``,
    ``LOGS/events/*.parquet``, optional ``pre_events/``, ``experiments.toml`` and
    ``simulation.json``, whose ``analysis`` settings are then used) and write its report to
    ``out``. Returns the experiment's summary (as in :func:`simulate`)."""
    logs = Path(logs)
    frames: dict[str, pl.LazyFrame] = {}
    for sub in ("exposures", "events", "pre_events"):
        parts = sorted((logs / sub).glob("*.parquet"))
        if parts:
            frames[sub] = pl.scan_parquet(parts)
        elif sub != "pre_events":
            raise S.BadInput(f"{logs / sub}: no *.parquet files (is {logs} a logs directory?)")
    decl: ExperimentConfig | str = experiment
    if (logs / EXPERIMENTS_FILE).is_file():
        path = logs / EXPERIMENTS_FILE
        exps = parse_experiments(path.read_text(), str(path))
        try:
            decl = exps.experiment(experiment)
        except KeyError as e:
            raise S.BadInput(f"{logs / EXPERIMENTS_FILE}: field experiments: {e.args[0]}") from e
    cfg = AnalysisConfig()
    if (logs / SIMULATION_FILE).is_file():
        doc = io.read_json(logs / SIMULATION_FILE)
        try:
            cfg = AnalysisConfig.model_validate(doc["simulation"]["analysis"])
        except (KeyError, TypeError, ValidationError) as e:
            raise S.BadInput(
                f"{logs / SIMULATION_FILE}: field simulation.analysis: invalid or missing: {e}"
            ) from e
    _, summary = _analyze_one(
        frames["exposures"], frames["events"], frames.get("pre_events"), decl, cfg, Path(out)
    )
    summary["aa"] = isinstance(decl, ExperimentConfig) and is_aa(decl)
    out_doc: dict[str, Any] = A._finite(summary)
    return out_doc


def collect_logs(
    log_dir: Path, art: Path, out: Path, experiments: Path | None = None
) -> dict[str, Any]:
    """Turn a serving log directory (``ServingConfig.exposure_log_dir``: every worker's
    ``exposures-*.jsonl`` and ``outcomes-*.jsonl``) into a logs directory for
    :func:`analyze_logs`, written atomically (the whole of ``out`` or nothing)::

        OUT/exposures/part-0.parquet   experiments.logs.EXPOSURES
        OUT/events/part-0.parquet      schema.EVENTS (the applied outcome events)
        OUT/users.parquet              schema.VOCAB: user_idx -> the service's user_id
        OUT/experiments.toml           a copy of ``experiments`` (when given)
        OUT/collect.json               the counters returned

    Video categories come from the catalogue of bundle ``art`` (the one served). Mapping
    rules and counters: ``experiments/collect.py``. Raises ``BadInput`` naming the file, line
    and field of a malformed log line, a bad bundle or experiments file.
    """
    exps_text, exps = None, None
    if experiments is not None:
        try:
            exps_text = Path(experiments).read_text()
        except OSError as e:
            raise S.BadInput(f"{experiments}: cannot read experiments file: {e}") from e
        exps = parse_experiments(exps_text, str(experiments))
    logs = C.read_service_logs(Path(log_dir))
    art = Path(art)
    if not art.is_dir():
        raise S.BadInput(f"{art}: artifact bundle directory not found")
    catalogue = Bundle.load(art).catalogue
    tables = C.build_tables(logs, lambda v: catalogue.meta(v).category)
    summary: dict[str, Any] = {
        "logs": str(log_dir),
        "out": str(out),
        "artifacts": str(art),
        **tables.stats,
    }
    if exps is not None:
        seen = set(tables.stats["config_versions"])
        summary["experiments"] = str(experiments)
        summary["config_version"] = exps.version
        # pages served under another declaration (or none) than the file given
        summary["pages_other_config_version"] = sum(
            n for v, n in tables.stats["config_versions"].items() if v != exps.version
        )
        if seen != {exps.version}:
            log.warning(
                "%s: pages were served under config versions %s, the file is %s",
                log_dir,
                sorted(seen),
                exps.version,
            )
    with io.atomic_dir(Path(out)) as tmp:
        for sub, df in (("exposures", tables.exposures), ("events", tables.events)):
            (tmp / sub).mkdir()
            df.write_parquet(tmp / sub / COLLECT_PART, compression="zstd")
        tables.users.write_parquet(tmp / USERS_FILE)
        if exps_text is not None:
            (tmp / EXPERIMENTS_FILE).write_text(exps_text)
        (tmp / COLLECT_FILE).write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary
