"""Shared helpers for benchmarks: machine facts, versions, and the result file format.

Each benchmark writes ``bench/results/NAME.json``::

    {"name", "date", "machine": {cpu, cores, ram_gb}, "versions": {...}, "config": {...},
     "metrics": {"events_per_s": ..., "p99_ms": ..., "peak_rss_mb": ...}}

Metric names are flat, with their unit as a suffix.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import os
import platform
import resource
import tempfile
import threading
from pathlib import Path
from typing import Any

import psutil

RESULTS = Path(__file__).resolve().parent / "results"
WORK = Path(__file__).resolve().parent / ".work"

_PACKAGES = (
    "shortrec",
    "numpy",
    "polars",
    "pyarrow",
    "scipy",
    "torch",
    "faiss-cpu",
    "onnxruntime",
    "fastapi",
    "redis",
    "scikit-learn",
)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
    }


def versions() -> dict[str, str]:
    out: dict[str, str] = {}
    for p in _PACKAGES:
        try:
            out[p] = importlib.metadata.version(p)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def peak_rss_mb(include_children: bool = False) -> float:
    """Peak resident set size of this process (and optionally its waited-for children), MB."""
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if include_children:
        kb = max(kb, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    return kb / 1024.0


def write_result(name: str, config: dict[str, Any], metrics: dict[str, Any]) -> Path:
    """Write one benchmark result atomically and return its path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    doc = {
        "name": name,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "versions": versions(),
        "config": config,
        "metrics": metrics,
    }
    path = RESULTS / f"{name}.json"
    fd, tmp = tempfile.mkstemp(dir=RESULTS, suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        json.dump(doc, fh, indent=2, sort_keys=True)
        fh.write("\n")
    os.replace(tmp, path)
    return path


def work_dir(name: str) -> Path:
    """A scratch directory for a benchmark's data (git-ignored)."""
    p = WORK / name
    p.mkdir(parents=True, exist_ok=True)
    return p


class TreeRss:
    """Samples the resident memory of this process plus its children every ``period_s``
    seconds (worker processes included): ``peak_mb`` is the largest sum seen, an upper bound
    (pages shared between processes count once per process)."""

    def __init__(self, period_s: float = 0.1) -> None:
        self.period_s, self.peak_mb = period_s, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for proc in [me, *me.children(recursive=True)]:
                try:
                    total += proc.memory_info().rss
                except psutil.Error:
                    continue  # a worker that just exited
            self.peak_mb = max(self.peak_mb, total / 2**20)
            self._stop.wait(self.period_s)

    def __enter__(self) -> TreeRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def cpu_seconds() -> float:
    """CPU seconds (user + system) of this process and of its waited-for children (the
    worker processes of a finished pool)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime
