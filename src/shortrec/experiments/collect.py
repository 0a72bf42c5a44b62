"""The service's JSON-lines experiment logs -> the analysed tables (``EXPOSURES``, ``EVENTS``).

With ``ServingConfig.exposure_log_dir`` set, every serving worker appends
``exposures-<pid>.jsonl`` (one line per served page) and ``outcomes-<pid>.jsonl`` (one line per
newly applied outcome event) to that directory (``serving/exposure.py`` shows both lines).
:func:`read_service_logs` reads the files of all workers and checks every line: a line that is
not a JSON object, or a field that is missing or of the wrong type, raises
:class:`LogLineError` naming the file, the line and the field. :func:`build_tables` then maps
the logs to the tables :mod:`shortrec.experiments.analysis` reads:

* **users**: external ``user_id`` -> dense ``user_idx`` through a vocabulary of the ids in the
  logs, in sorted order (``schema.VOCAB``; written beside the tables so a report's users can be
  traced back). Indices are local to one collected directory.
* **videos**: ``video_idx`` is already dense; ``category`` comes from the caller's lookup (the
  served bundle's catalogue), null where unknown (a video uploaded after the bundle).
* **events**: a line logged twice (same ``user_id`` and ``event_id``: a replay that two
  workers both applied) keeps its first occurrence; when different users reused an
  ``event_id`` (ids are client-assigned, ``schema.EVENTS`` needs them unique) every event is
  renumbered ``0..n-1`` in log order and ``event_ids_renumbered`` says so. ``policy`` is the
  ``experiment:arm`` label of the page the event's ``request_id`` names. Events whose
  ``request_id`` matches no logged page are kept and counted (``events_unmatched``), as are
  events without one.

Everything here is pure apart from reading the log files; writing the tables is the caller's.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
import polars as pl

from shortrec import schema as S
from shortrec.experiments import logs as L

MAX_INT64 = 2**63 - 1
MAX_INT32 = 2**31 - 1
_WHERE, _LABEL, _ORDER = "_where", "_label", "_order"
_MISSING = object()


class LogLineError(S.BadInput):
    """A line of the service's experiment logs is malformed (message: file, line, field)."""


# ---------------------------------------------------------------- typed field readers
def _field(rec: dict[str, Any], key: str, where: str, name: str, nullable: bool) -> Any:
    v = rec.get(key, _MISSING)
    if v is _MISSING or v is None:
        if nullable:
            return None
        raise LogLineError(f"{where}: field {name}: {'missing' if v is _MISSING else 'null'}")
    return v


def _bad(where: str, name: str, want: str, v: Any) -> LogLineError:
    shown = repr(v)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return LogLineError(f"{where}: field {name}: expected {want}, got {shown}")


def _int(
    rec: dict[str, Any],
    key: str,
    where: str,
    name: str | None = None,
    nullable: bool = False,
    nonneg: bool = True,
    hi: int = MAX_INT64,
) -> int | None:
    name = name or key
    v = _field(rec, key, where, name, nullable)
    if v is None:
        return None
    lo = 0 if nonneg else -MAX_INT64 - 1
    if type(v) is not int or not lo <= v <= hi:
        want = f"an integer in [{lo}, {hi}]" if hi < MAX_INT64 else "an integer"
        raise _bad(where, name, f"{want} >= 0" if nonneg and hi == MAX_INT64 else want, v)
    return v


def _str(rec: dict[str, Any], key: str, where: str, name: str | None = None) -> str:
    name = name or key
    v = _field(rec, key, where, name, False)
    if not isinstance(v, str) or not v:
        raise _bad(where, name, "a non-empty string", v)
    return v


def _opt_str(rec: dict[str, Any], key: str, where: str) -> str | None:
    v = _field(rec, key, where, key, True)
    if v is not None and not isinstance(v, str):
        raise _bad(where, key, "a string or null", v)
    return v


def _float(rec: dict[str, Any], key: str, where: str) -> float | None:
    v = _field(rec, key, where, key, True)
    if v is None:
        return None
    if type(v) not in (int, float) or not math.isfinite(v) or v < 0:
        raise _bad(where, key, "a finite number >= 0 or null", v)
    return float(v)


def _bool(rec: dict[str, Any], key: str, where: str) -> bool | None:
    v = _field(rec, key, where, key, True)
    if v is not None and type(v) is not bool:
        raise _bad(where, key, "true, false or null", v)
    return v


def _list(rec: dict[str, Any], key: str, where: str) -> list[Any]:
    v = _field(rec, key, where, key, False)
    if not isinstance(v, list):
        raise _bad(where, key, "a list", v)
    return v


def _obj(v: Any, where: str, name: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise _bad(where, name, "a JSON object", v)
    return v


# ---------------------------------------------------------------- reading
@dataclass(frozen=True)
class ServiceLogs:
    """Every checked line of one log directory: ``pages`` (one row per served page, the
    page's ``video_idx``/``rank`` as lists) and ``outcomes`` (one row per logged event,
    ``user_id`` still external); ``_where`` columns hold ``"FILE: line N"``;
    ``partial_lines``: files whose last line was cut short (not JSON and no newline: the line
    a worker was writing, or a crash), skipped."""

    directory: Path
    files: tuple[str, ...]
    pages: pl.DataFrame
    outcomes: pl.DataFrame
    partial_lines: int = 0


_PAGE_SCHEMA: dict[str, pl.DataType] = {
    S.REQUEST_ID: pl.Int64(),
    S.SESSION_ID: pl.Int64(),
    L.USER_ID: pl.String(),
    L.TS_US: pl.Int64(),
    L.CONFIG_VERSION: pl.String(),
    L.ARMS: pl.List(L.ARM_STRUCT),
    _LABEL: pl.String(),
    S.VIDEO_IDX: pl.List(pl.Int32()),
    L.RANK: pl.List(pl.Int32()),
    _WHERE: pl.String(),
}
_OUTCOME_SCHEMA: dict[str, pl.DataType] = {
    S.EVENT_ID: pl.Int64(),
    S.REQUEST_ID: pl.Int64(),
    L.USER_ID: pl.String(),
    S.SESSION_ID: pl.Int64(),
    S.VIDEO_IDX: pl.Int32(),
    L.TS_US: pl.Int64(),
    S.WATCH_TIME_S: pl.Float64(),
    S.WATCH_RATIO: pl.Float64(),
    S.SKIPPED: pl.Boolean(),
    S.LIKED: pl.Boolean(),
    S.SHARED: pl.Boolean(),
    S.FOLLOWED: pl.Boolean(),
    _WHERE: pl.String(),
}


def _page_row(rec: dict[str, Any], where: str) -> tuple[Any, ...]:
    arms: list[dict[str, str]] = []
    for j, raw_arm in enumerate(_list(rec, L.ARMS, where)):
        name = f"{L.ARMS}[{j}]"
        a = _obj(raw_arm, where, name)
        arms.append(
            {
                L.EXPERIMENT: _str(a, L.EXPERIMENT, where, f"{name}.{L.EXPERIMENT}"),
                L.ARM: _str(a, L.ARM, where, f"{name}.{L.ARM}"),
            }
        )
    vids: list[int | None] = []
    ranks: list[int | None] = []
    for j, raw_item in enumerate(_list(rec, L.ITEMS, where)):
        name = f"{L.ITEMS}[{j}]"
        it = _obj(raw_item, where, name)
        vids.append(_int(it, S.VIDEO_IDX, where, f"{name}.{S.VIDEO_IDX}", hi=MAX_INT32))
        ranks.append(_int(it, L.RANK, where, f"{name}.{L.RANK}", hi=MAX_INT32))
    label = ",".join(f"{a[L.EXPERIMENT]}:{a[L.ARM]}" for a in arms) or None
    return (
        _int(rec, S.REQUEST_ID, where),
        _int(rec, S.SESSION_ID, where, nullable=True),
        _str(rec, L.USER_ID, where),
        _int(rec, L.TS_US, where, nonneg=False),
        _opt_str(rec, L.CONFIG_VERSION, where),
        arms,
        label,
        vids,
        ranks,
        where,
    )


def _outcome_row(rec: dict[str, Any], where: str) -> tuple[Any, ...]:
    return (
        _int(rec, S.EVENT_ID, where),
        _int(rec, S.REQUEST_ID, where, nullable=True),
        _str(rec, L.USER_ID, where),
        _int(rec, S.SESSION_ID, where, nullable=True),
        _int(rec, S.VIDEO_IDX, where, hi=MAX_INT32),
        _int(rec, L.TS_US, where, nonneg=False),
        _float(rec, S.WATCH_TIME_S, where),
        _float(rec, S.WATCH_RATIO, where),
        _bool(rec, S.SKIPPED, where),
        _bool(rec, S.LIKED, where),
        _bool(rec, S.SHARED, where),
        _bool(rec, S.FOLLOWED, where),
        where,
    )


def _read(
    paths: list[Path], row: Callable[[dict[str, Any], str], tuple[Any, ...]]
) -> tuple[list[tuple[Any, ...]], int]:
    """Checked rows of every line, and how many files ended in a partial line."""
    rows: list[tuple[Any, ...]] = []
    partial = 0
    for path in paths:
        try:
            fh = path.open("rb")
        except OSError as e:
            raise LogLineError(f"{path}: cannot read: {e}") from e
        with fh:
            for n, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                where = f"{path}: line {n}"
                try:
                    rec = orjson.loads(line)
                except orjson.JSONDecodeError as e:
                    if not line.endswith(b"\n"):  # the line a worker is writing (or crashed in)
                        partial += 1
                        continue
                    raise LogLineError(f"{where}: invalid JSON: {e}") from e
                if not isinstance(rec, dict):
                    raise LogLineError(f"{where}: expected a JSON object, got {type(rec).__name__}")
                rows.append(row(rec, where))
    return rows, partial


def read_service_logs(directory: Path) -> ServiceLogs:
    """Read and check every worker's exposure and outcome log in ``directory``.

    Raises :class:`LogLineError` naming the file, line and field of the first bad line, or
    when there is no exposure log or a ``request_id`` is logged by two pages. A last line cut
    short (invalid JSON without a final newline: still being written) is skipped, counted."""
    directory = Path(directory)
    if not directory.is_dir():
        raise LogLineError(f"{directory}: log directory not found")
    x_paths = sorted(directory.glob(L.log_glob(L.EXPOSURE_LOG_PREFIX)))
    o_paths = sorted(directory.glob(L.log_glob(L.OUTCOME_LOG_PREFIX)))
    if not x_paths:
        raise LogLineError(
            f"{directory}: no {L.log_glob(L.EXPOSURE_LOG_PREFIX)} files "
            "(the directory ServingConfig.exposure_log_dir names)"
        )
    x_rows, x_partial = _read(x_paths, _page_row)
    o_rows, o_partial = _read(o_paths, _outcome_row)
    pages = pl.DataFrame(x_rows, schema=_PAGE_SCHEMA, orient="row")
    outcomes = pl.DataFrame(o_rows, schema=_OUTCOME_SCHEMA, orient="row")
    dup = pages.filter(pl.col(S.REQUEST_ID).is_duplicated())
    if dup.height:
        first = dup.row(0, named=True)
        other = dup.filter(pl.col(S.REQUEST_ID) == first[S.REQUEST_ID])[_WHERE].to_list()
        raise LogLineError(
            f"{other[1]}: field {S.REQUEST_ID}: {first[S.REQUEST_ID]} was already logged by "
            f"another page ({other[0]})"
        )
    files = tuple(str(p) for p in x_paths + o_paths)
    return ServiceLogs(directory, files, pages, outcomes, x_partial + o_partial)


# ---------------------------------------------------------------- building the tables
@dataclass(frozen=True)
class CollectedLogs:
    """The analysed tables of one log directory: ``exposures`` (``logs.EXPOSURES``),
    ``events`` (``schema.EVENTS``), ``users`` (``schema.VOCAB``: ``user_idx`` -> external id)
    and ``stats`` (counters, JSON-ready)."""

    exposures: pl.DataFrame
    events: pl.DataFrame
    users: pl.DataFrame
    stats: dict[str, Any]


def _row_check(df: pl.DataFrame, name: str, check: pl.Expr, want: str) -> None:
    """Raise naming the source line (column ``_where``) of the first row failing ``check``."""
    bad = df.filter(~check.fill_null(True))
    if bad.height:
        r = bad.row(0, named=True)
        raise LogLineError(f"{r[_WHERE]}: field {name}: {want}, got {r[name]!r}")


def build_tables(
    logs: ServiceLogs, category_of: Callable[[npt.NDArray[np.int64]], npt.NDArray[np.int64]]
) -> CollectedLogs:
    """Map ``logs`` to the analysed tables (rules: module doc). ``category_of(video_idx)``
    returns each video's category, ``-1`` where unknown. Raises ``BadInput`` naming the
    source when a table fails its schema."""
    pages, outcomes = logs.pages, logs.outcomes
    source = str(logs.directory)
    ids = sorted(set(pages[L.USER_ID].to_list()) | set(outcomes[L.USER_ID].to_list()))
    users = pl.DataFrame(
        {S.IDX: pl.Series(range(len(ids)), dtype=pl.Int32), S.ID: pl.Series(ids, dtype=pl.String)}
    )
    to_idx = users.select(pl.col(S.ID).alias(L.USER_ID), pl.col(S.IDX).alias(S.USER_IDX))

    # exposures: one row per served video
    rows = (
        pages.join(to_idx, on=L.USER_ID, how="left")
        .filter(pl.col(S.VIDEO_IDX).list.len() > 0)
        .explode(S.VIDEO_IDX, L.RANK)
    )
    cat = category_of(rows[S.VIDEO_IDX].to_numpy().astype(np.int64))
    exposures = rows.with_columns(
        pl.col(L.TS_US).cast(S.UTC_TS).alias(S.TS),
        pl.Series(S.CATEGORY, cat, dtype=pl.Int64),
    ).with_columns(
        pl.when((pl.col(S.CATEGORY) >= 0) & (pl.col(S.CATEGORY) <= 32_767))
        .then(pl.col(S.CATEGORY))
        .alias(S.CATEGORY)
    )
    _row_check(
        exposures,
        L.RANK,
        ~pl.struct(S.REQUEST_ID, L.RANK).is_duplicated(),
        "each rank at most once per page",
    )
    exposures = S.check(
        S.conform(exposures, L.EXPOSURES), L.EXPOSURES, f"{source} (exposures)"
    ).sort(S.TS, S.REQUEST_ID, L.RANK)

    # events: one row per applied outcome, the first of a line logged twice
    n_logged = outcomes.height
    ev = outcomes.with_row_index(_ORDER).unique([L.USER_ID, S.EVENT_ID], keep="first")
    ev = ev.sort(_ORDER)
    renumber = ev[S.EVENT_ID].n_unique() < ev.height
    if renumber:
        ev = ev.with_columns(pl.int_range(0, pl.len(), dtype=pl.Int64).alias(S.EVENT_ID))
    labels = pages.select(S.REQUEST_ID, pl.col(_LABEL).alias(S.POLICY), pl.lit(True).alias("_hit"))
    ev = ev.join(to_idx, on=L.USER_ID, how="left").join(labels, on=S.REQUEST_ID, how="left")
    unmatched = int((ev[S.REQUEST_ID].is_not_null() & ev["_hit"].is_null()).sum())
    no_request = int(ev[S.REQUEST_ID].is_null().sum())
    events = S.check(
        S.conform(ev.with_columns(pl.col(L.TS_US).cast(S.UTC_TS).alias(S.TS)), S.EVENTS),
        S.EVENTS,
        f"{source} (events)",
    )

    versions = Counter(pages[L.CONFIG_VERSION].to_list())
    stats: dict[str, Any] = {
        "files": len(logs.files),
        "partial_lines_skipped": logs.partial_lines,
        "pages": pages.height,
        "empty_pages": int((pages[S.VIDEO_IDX].list.len() == 0).sum()),
        "exposure_rows": exposures.height,
        "users": users.height,
        "events_logged": n_logged,
        "events": events.height,
        "duplicate_events_dropped": n_logged - events.height,
        "events_unmatched": unmatched,
        "events_without_request": no_request,
        "event_ids_renumbered": renumber,
        "videos_without_category": int(
            exposures.filter(pl.col(S.CATEGORY).is_null())[S.VIDEO_IDX].n_unique()
        ),
        "config_versions": {
            "none" if k is None else k: v for k, v in sorted(versions.items(), key=str)
        },
    }
    return CollectedLogs(exposures, events, users, stats)
