"""The service's experiment logs: one JSON line per served page, one per applied outcome.

**Exposure log** (``exposures-<pid>.jsonl``): what the user was shown and under which arms::

    {"request_id": 123, "user_id": "u17", "session_id": 4, "ts_us": 1767225600000000,
     "model_version": "7f3f1970727b", "config_version": "ab12...", "degraded": false,
     "arms": [{"experiment": "ranker-vs-retrieval", "arm": "ranker"}],
     "items": [{"video_idx": 42, "rank": 0, "score": 0.71, "sources": ["two_tower"]}, ...]}

**Outcome log** (``outcomes-<pid>.jsonl``): every event ``POST /v1/events`` applied as new
(after validation and the service's dedupe), with the values the service derived (``ts_us``
defaults to the arrival time, ``watch_ratio`` to watch time over duration, ``skipped`` to the
skip threshold; ``watch_ratio`` null when the duration is unknown)::

    {"event_id": 9, "request_id": 123, "user_id": "u17", "session_id": 4, "video_idx": 42,
     "ts_us": 1767225605000000, "watch_time_s": 5.0, "watch_ratio": 0.5, "skipped": false,
     "liked": true, "shared": false, "followed": false}

Events carry the page's ``request_id``, which is the join key; ``shortrec abtest collect``
(``experiments/collect.py``) turns the files of all workers into the analysed tables
(``experiments/logs.py``). Files live in the configured directory, one per worker process, so
workers never interleave writes; a batch of lines is written whole under a lock and flushed (one
write per page or per event batch), so a crash loses at most the batch being written.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

import orjson

from shortrec import schema as S
from shortrec.experiments import logs as L
from shortrec.schema import BadInput


class JsonLinesLog:
    """Appends JSON objects as lines to ``directory/<prefix><pid>.jsonl`` (thread-safe)."""

    def __init__(self, directory: Path, prefix: str) -> None:
        self.path = Path(directory) / f"{prefix}{os.getpid()}{L.LOG_SUFFIX}"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._fh: IO[bytes] | None = self.path.open("ab")

    def write(self, record: dict[str, Any]) -> None:
        """Append one record (a JSON object) as one line."""
        self.write_many((record,))

    def write_many(self, records: Iterable[dict[str, Any]]) -> None:
        """Append records as lines with one write and one flush (serialised outside the lock)."""
        data = b"".join(
            orjson.dumps(r, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_APPEND_NEWLINE)
            for r in records
        )
        if not data:
            return
        with self._lock:
            if self._fh is None:
                raise RuntimeError(f"{self.path}: log is closed")
            self._fh.write(data)
            self._fh.flush()

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None


class ExposureLog(JsonLinesLog):
    """Appends served pages to ``directory/exposures-<pid>.jsonl``."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory, L.EXPOSURE_LOG_PREFIX)


class OutcomeLog(JsonLinesLog):
    """Appends newly applied outcome events to ``directory/outcomes-<pid>.jsonl``."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory, L.OUTCOME_LOG_PREFIX)


def outcome_record(
    event_id: int,
    request_id: int | None,
    user_id: str,
    session_id: int,
    video_idx: int,
    ts_us: int,
    watch_time_s: float,
    watch_ratio: float,
    skipped: bool,
    liked: bool,
    shared: bool,
    followed: bool,
) -> dict[str, Any]:
    """One outcome-log line (a NaN ``watch_ratio``, unknown duration, becomes null)."""
    return {
        S.EVENT_ID: event_id,
        S.REQUEST_ID: request_id,
        L.USER_ID: user_id,
        S.SESSION_ID: session_id,
        S.VIDEO_IDX: video_idx,
        L.TS_US: ts_us,
        S.WATCH_TIME_S: watch_time_s,
        S.WATCH_RATIO: watch_ratio if math.isfinite(watch_ratio) else None,
        S.SKIPPED: skipped,
        S.LIKED: liked,
        S.SHARED: shared,
        S.FOLLOWED: followed,
    }


def _read_lines(directory: Path, prefix: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for path in sorted(Path(directory).glob(L.log_glob(prefix))):
        with path.open("rb") as fh:
            for n, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    out.append(orjson.loads(line))
                except orjson.JSONDecodeError as e:
                    raise BadInput(f"{path}: line {n}: invalid JSON: {e}") from e
    return out


def read_exposures(directory: Path) -> list[dict[str, Any]]:
    """Every page logged in ``directory`` (all workers), in file then line order."""
    return _read_lines(directory, L.EXPOSURE_LOG_PREFIX)


def read_outcomes(directory: Path) -> list[dict[str, Any]]:
    """Every outcome event logged in ``directory`` (all workers), in file then line order."""
    return _read_lines(directory, L.OUTCOME_LOG_PREFIX)
