"""The service's exposure log: one JSON line per served page, so outcomes join to exposures.

Each line records what the user was shown and under which experiment arms::

    {"request_id": 123, "user_id": "u17", "session_id": 4, "ts_us": 1767225600000000,
     "model_version": "7f3f1970727b", "config_version": "ab12...", "degraded": false,
     "arms": [{"experiment": "ranker-vs-retrieval", "arm": "ranker"}],
     "items": [{"video_idx": 42, "rank": 0, "score": 0.71, "sources": ["two_tower"]}, ...]}

Events posted back carry the page's ``request_id`` (``POST /v1/events``), which is the join key
(``experiments/logs.py`` describes the analysed tables). Files are ``exposures-<pid>.jsonl`` in
the configured directory, one per worker process, so workers never interleave writes; a line is
written whole under a lock and flushed, so a crash loses at most the page being written.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import IO, Any

import orjson

from shortrec.schema import BadInput


class ExposureLog:
    """Appends served pages to ``directory/exposures-<pid>.jsonl``."""

    def __init__(self, directory: Path) -> None:
        self.path = Path(directory) / f"exposures-{os.getpid()}.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._fh: IO[bytes] | None = self.path.open("ab")

    def write(self, record: dict[str, Any]) -> None:
        """Append one page (a JSON object) as one line."""
        line = orjson.dumps(record, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n"
        with self._lock:
            if self._fh is None:
                raise RuntimeError(f"{self.path}: exposure log is closed")
            self._fh.write(line)
            self._fh.flush()

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None


def read_exposures(directory: Path) -> list[dict[str, Any]]:
    """Every page logged in ``directory`` (all workers), in file then line order."""
    out: list[dict[str, Any]] = []
    for path in sorted(Path(directory).glob("exposures-*.jsonl")):
        with path.open("rb") as fh:
            for n, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    out.append(orjson.loads(line))
                except orjson.JSONDecodeError as e:
                    raise BadInput(f"{path}: line {n}: invalid JSON: {e}") from e
    return out
