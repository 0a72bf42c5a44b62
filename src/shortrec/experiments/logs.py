"""Log schemas of online experiments: the exposure log and the outcome-event log.

* **Exposure log** (:data:`EXPOSURES`): one row per video *served* in a feed response (a page
  of ``n`` videos gives ``n`` rows), written by the service when it answers; ``arms`` carries
  every experiment arm the user was in for that request. Served-but-never-viewed videos are
  here and only here, which is what Diversity@k, coverage and NDCG@k of served feeds need.
* **Outcome events**: the ``schema.EVENTS`` table (one row per impression actually viewed),
  joined to exposures on ``(request_id, video_idx)``. :data:`OUTCOME_COLUMNS` lists the
  columns the analysis reads.

Column names not already in :mod:`shortrec.schema` are spelled here (``rank``, ``arms``,
``experiment``, ``arm``, ``config_version``).

The service writes both logs as JSON lines first (``serving/exposure.py``: one
``exposures-<pid>.jsonl`` line per served page, one ``outcomes-<pid>.jsonl`` line per newly
applied event, per worker process); ``experiments/collect.py`` turns those files into the
tables above. The file names and the JSON keys that differ from column names are spelled here
too, so writer and reader share one spelling.
"""

from __future__ import annotations

import polars as pl

from shortrec import schema as S

RANK = "rank"
ARMS = "arms"
EXPERIMENT = "experiment"
ARM = "arm"
CONFIG_VERSION = "config_version"

#: Type of the ``arms`` column: a list of ``{experiment, arm}`` structs.
ARM_STRUCT = pl.Struct({EXPERIMENT: pl.String(), ARM: pl.String()})


def _nonneg(e: pl.Expr) -> pl.Expr:
    return e >= 0


EXPOSURES = S.TableSchema(
    name="exposures",
    doc="One row per video served in a feed response, with the user's experiment arms.",
    unique=(S.REQUEST_ID, RANK),
    columns=(
        S.Column(
            S.REQUEST_ID,
            pl.Int64(),
            check=_nonneg,
            check_text=">= 0",
            doc="The feed request (page) that served the video.",
        ),
        S.Column(
            S.SESSION_ID,
            pl.Int64(),
            nullable=True,
            check=_nonneg,
            check_text=">= 0",
            doc="App session of the request, when the client sent one.",
        ),
        S.Column(
            S.USER_IDX,
            pl.Int32(),
            check=_nonneg,
            check_text=">= 0",
            doc="Dense user index (the unit of randomisation).",
        ),
        S.Column(S.TS, S.UTC_TS, doc="Time the feed was served (UTC)."),
        S.Column(
            RANK,
            pl.Int32(),
            check=_nonneg,
            check_text=">= 0",
            doc="0-based rank of the video within the served page.",
        ),
        S.Column(
            S.VIDEO_IDX, pl.Int32(), check=_nonneg, check_text=">= 0", doc="Dense video index."
        ),
        S.Column(
            S.CATEGORY,
            pl.Int16(),
            nullable=True,
            check=_nonneg,
            check_text=">= 0",
            doc="Category of the video (Diversity@k); null when unknown.",
        ),
        S.Column(
            ARMS,
            pl.List(ARM_STRUCT),
            doc="Every {experiment, arm} the user was in for this request; may be empty.",
        ),
        S.Column(
            CONFIG_VERSION,
            pl.String(),
            nullable=True,
            doc="Fingerprint of the experiments file that assigned the arms.",
        ),
    ),
)

#: Columns of ``schema.EVENTS`` that the analysis reads.
OUTCOME_COLUMNS = (
    S.EVENT_ID,
    S.REQUEST_ID,
    S.SESSION_ID,
    S.USER_IDX,
    S.VIDEO_IDX,
    S.TS,
    S.WATCH_TIME_S,
    S.WATCH_RATIO,
    S.SKIPPED,
    S.LIKED,
)

#: Columns of :data:`EXPOSURES` that the analysis reads.
EXPOSURE_COLUMNS = (S.REQUEST_ID, S.USER_IDX, S.TS, RANK, S.VIDEO_IDX, S.CATEGORY, ARMS)


class LogSchemaError(S.BadInput):
    """An exposure or event log lacks a column the analysis needs, or has the wrong dtype."""


def check_columns(
    lf: pl.LazyFrame, table: S.TableSchema, needed: tuple[str, ...], source: str
) -> None:
    """Raise :class:`LogSchemaError` naming ``source`` and the field if ``lf`` lacks a column of
    ``needed`` or holds it with a dtype other than ``table``'s (checks the schema only, reads no
    rows)."""
    have = lf.collect_schema()
    problems: list[str] = []
    for name in needed:
        want = table.column(name).dtype
        if name not in have:
            problems.append(f"{name}: missing column")
        elif have[name] != want:
            problems.append(f"{name}: dtype {have[name]}, expected {want}")
    if problems:
        raise LogSchemaError(f"{source}: " + "; ".join(problems))


# ---------------------------------------------------------------- the service's JSON-lines logs
#: ``<dir>/exposures-<pid>.jsonl``: one line per served page
EXPOSURE_LOG_PREFIX = "exposures-"
#: ``<dir>/outcomes-<pid>.jsonl``: one line per newly applied outcome event
OUTCOME_LOG_PREFIX = "outcomes-"
LOG_SUFFIX = ".jsonl"
#: JSON keys of the log lines that are not column names
USER_ID = "user_id"
TS_US = "ts_us"
ITEMS = "items"
MODEL_VERSION = "model_version"


def log_glob(prefix: str) -> str:
    """Glob of every worker's file of one log (``prefix`` one of the ``*_LOG_PREFIX``)."""
    return f"{prefix}*{LOG_SUFFIX}"
