"""Experiment declarations: TOML files validated by :class:`shortrec.config.ExperimentsConfig`.

A file looks like (full reference in docs/experiments.md, examples in examples/experiments/)::

    [holdout]
    fraction = 0.05

    [[experiments]]
    name = "ranker-v2"
    layer = "ranking"
    buckets = [0, 5000]
    [[experiments.arms]]
    name = "control"
    [[experiments.arms]]
    name = "treatment"
    overrides = { model_version = "v2" }

:func:`load_experiments` reads one file; :class:`ExperimentSource` serves the latest good
version of a file and reloads it when its content changes (a bad edit keeps the previous
version live and reports the error).
"""

from __future__ import annotations

import hashlib
import re
import threading
import tomllib
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from shortrec import schema as S
from shortrec.config import ExperimentsConfig
from shortrec.experiments.assignment import ExperimentSet


class ExperimentSpecError(S.BadInput):
    """An experiments file cannot be read, is not valid TOML, or fails validation."""


def _fingerprint(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _line_of(text: str, loc: tuple[int | str, ...]) -> int | None:
    """Line (1-based) of the ``[[experiments]]`` / ``[[experiments.arms]]`` table that ``loc``
    points into, or of the top-level table for ``holdout`` / ``layers``; ``None`` if unknown."""
    lines = text.splitlines()
    if not loc:
        return None
    if loc[0] in ("holdout", "layers"):
        pat = re.compile(rf"^\s*\[{loc[0]}[\].]")
        return next((i + 1 for i, ln in enumerate(lines) if pat.match(ln)), None)
    if loc[0] != "experiments" or len(loc) < 2 or not isinstance(loc[1], int):
        return None
    exp_heads = [i for i, ln in enumerate(lines) if re.match(r"^\s*\[\[experiments\]\]", ln)]
    if loc[1] >= len(exp_heads):
        return None
    start = exp_heads[loc[1]]
    if len(loc) >= 4 and loc[2] == "arms" and isinstance(loc[3], int):
        end = exp_heads[loc[1] + 1] if loc[1] + 1 < len(exp_heads) else len(lines)
        arm_heads = [
            i for i in range(start, end) if re.match(r"^\s*\[\[experiments\.arms\]\]", lines[i])
        ]
        if loc[3] < len(arm_heads):
            return arm_heads[loc[3]] + 1
    return start + 1


def parse_experiments(text: str, source: str = "<string>") -> ExperimentSet:
    """Parse and validate the TOML ``text``; errors name ``source``, the line and the field."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ExperimentSpecError(f"{source}: invalid TOML: {e}") from e
    try:
        cfg = ExperimentsConfig.model_validate(raw)
    except ValidationError as e:
        msgs = []
        for err in e.errors():
            loc = tuple(err["loc"])
            field = ".".join(str(p) for p in loc) or "<root>"
            line = _line_of(text, loc)
            where = f"line {line}: " if line is not None else ""
            msgs.append(f"{source}: {where}{field}: {err['msg']}")
        raise ExperimentSpecError("\n".join(msgs)) from e
    return ExperimentSet(cfg, version=_fingerprint(text))


def load_experiments(path: Path | str) -> ExperimentSet:
    """Read and validate the experiments file at ``path`` (raises :class:`ExperimentSpecError`)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ExperimentSpecError(f"{path}: cannot read experiments file: {e}") from e
    return parse_experiments(text, str(path))


@dataclass(frozen=True)
class ReloadStatus:
    """Outcome of the last :meth:`ExperimentSource.reload`: the live version, whether it
    changed, and the error of a rejected edit (``None`` when the file was good)."""

    version: str
    changed: bool
    error: str | None


class ExperimentSource:
    """The live :class:`ExperimentSet` of one file, reloaded on demand (thread-safe).

    :meth:`reload` re-reads the file; a new, valid content replaces the live set; an invalid
    one is rejected and the previous set stays live (a typo must not take experiments down).
    The constructor loads the file once and raises if that first version is invalid.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._current = load_experiments(self.path)

    @property
    def current(self) -> ExperimentSet:
        return self._current

    def reload(self) -> ReloadStatus:
        with self._lock:
            try:
                fresh = load_experiments(self.path)
            except ExperimentSpecError as e:
                return ReloadStatus(self._current.version, changed=False, error=str(e))
            changed = fresh.version != self._current.version
            if changed:
                self._current = fresh
            return ReloadStatus(self._current.version, changed=changed, error=None)
