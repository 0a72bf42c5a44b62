"""Shared fixtures of the integration tests: a tiny trained bundle, the serving app, a live
uvicorn server and a private redis-server.

``tiny_bundle`` (session scope) generates the ``tiny`` world, runs the ETL and trains the
retrieval and ranker components with small settings into one artifact bundle (~15 s); the
serving, A/B simulation and demo tests reuse it.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI

from shortrec import pipelines
from shortrec.config import (
    RankerConfig,
    RetrievalConfig,
    ServingConfig,
    TwoTowerConfig,
)
from shortrec.retrieval.model import RetrievalModel

US_PER_S = 1_000_000
ADMIN_TOKEN = "test-admin-token-0123456789"


@pytest.fixture(scope="session")
def div_experiments() -> str:
    """An experiments file (TOML): experiment ``div``, arms ``control`` and ``more_diverse``
    (a lower diversity trade-off), equal weights."""
    return """
[[experiments]]
name = "div"
[[experiments.arms]]
name = "control"
[[experiments.arms]]
name = "more_diverse"
overrides = { diversity_trade_off = 0.2 }
"""


@dataclass(frozen=True)
class TinyBundle:
    """A generated, ETL-processed tiny world (``root``) and its trained bundle (``art``);
    ``now_us`` is one hour after the bundle's snapshot time (a sensible serving clock)."""

    root: Path
    art: Path
    as_of_us: int

    @property
    def now_us(self) -> int:
        return self.as_of_us + 3_600 * US_PER_S


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> TinyBundle:
    base = tmp_path_factory.mktemp("tiny_bundle")
    root, art = base / "world", base / "art"
    pipelines.generate("tiny", 0, root, report=False, progress=False)
    pipelines.etl(root, progress=False)
    pipelines.train_retrieval(
        root,
        art,
        False,
        RetrievalConfig(two_tower=TwoTowerConfig(max_epochs=2, dim=16, hidden=32, threads=1)),
    )
    pipelines.train_ranker(
        root,
        art,
        False,
        RankerConfig(max_epochs=1, d_model=16, head_hidden=16, max_train_lists=300, threads=1),
    )
    as_of = RetrievalModel.load(art).as_of_us
    return TinyBundle(root, art, as_of)


@pytest.fixture
def serving_settings() -> ServingConfig:
    """Settings for tests: admin on, fast health probes, generous deadlines (shared CPU)."""
    return ServingConfig(
        admin_token=ADMIN_TOKEN,
        health_interval_s=0.05,
        drain_interval_s=0.2,
        budget_ms=10_000,
        deadline_ranking_ms=5_000,
        deadline_sources_ms=5_000,
        gc_freeze=False,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def live_server(app: FastAPI) -> Iterator[str]:
    """Run ``app`` with uvicorn in a thread on a free port; yield its base URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="session")
def run_server() -> Callable[[FastAPI], contextlib.AbstractContextManager[str]]:
    return live_server


class RedisServer:
    """A private ``redis-server`` (no persistence) on its own port, stoppable and
    restartable on the same port."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> None:
        exe = shutil.which("redis-server")
        assert exe is not None
        self.proc = subprocess.Popen(
            [
                exe,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2),
            ):
                return
            time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None


@pytest.fixture(scope="session")
def unused_port() -> Callable[[], int]:
    """A function returning a free local TCP port."""
    return free_port


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    srv = RedisServer(free_port())
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def admin_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}
