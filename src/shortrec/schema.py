"""Table schemas and column names: the only place column names are spelled.

Every table that enters the system (generated, ingested, read back from disk) is checked by
:func:`validate` against one :class:`TableSchema`. Dense integer indices (``user_idx``,
``video_idx``, ``creator_idx``, ``tag_idx``) are what the tables carry; the external ids of a
source live in the vocabulary tables (``vocab/*.parquet``: ``idx`` -> ``id``), so one mapping
serves every stage. See ``docs/data.md`` for the field-by-field description.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import polars as pl

# ---------------------------------------------------------------- column names
EVENT_ID = "event_id"
REQUEST_ID = "request_id"
SESSION_ID = "session_id"
USER_IDX = "user_idx"
VIDEO_IDX = "video_idx"
CREATOR_IDX = "creator_idx"
TAG_IDX = "tag_idx"
TS = "ts"
POSITION = "position"
WATCH_TIME_S = "watch_time_s"
WATCH_RATIO = "watch_ratio"
SKIPPED = "skipped"
LIKED = "liked"
SHARED = "shared"
FOLLOWED = "followed"
POLICY = "policy"

CATEGORY = "category"
TAGS = "tags"
DURATION_S = "duration_s"
UPLOAD_TS = "upload_ts"
TITLE = "title"

SIGNUP_TS = "signup_ts"
REGION = "region"
AGE_BUCKET = "age_bucket"
DEVICE = "device"

# vocabulary tables
IDX = "idx"
ID = "id"

UTC_TS = pl.Datetime("us", "UTC")

#: Default fast-swipe threshold: a view shorter than this many seconds is a skip.
DEFAULT_SKIP_THRESHOLD_S = 2.0

REGIONS = ("US", "BR", "IN", "ID", "MX", "DE", "JP", "NG")
AGE_BUCKETS = ("13-17", "18-24", "25-34", "35-44", "45+")
DEVICES = ("android", "ios", "web")


# ---------------------------------------------------------------- schema objects
@dataclass(frozen=True)
class Column:
    """One column: its dtype, whether nulls are allowed, and an optional row check.

    ``check`` maps the column to a boolean expression that is True on valid rows (nulls are
    handled by ``nullable`` and never reach the check).
    """

    name: str
    dtype: pl.DataType
    nullable: bool = False
    check: Callable[[pl.Expr], pl.Expr] | None = None
    check_text: str = ""
    doc: str = ""


@dataclass(frozen=True)
class TableSchema:
    """A table: its columns in order and the columns that must be unique together."""

    name: str
    columns: tuple[Column, ...]
    unique: tuple[str, ...] = ()
    doc: str = ""

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def polars_schema(self) -> pl.Schema:
        return pl.Schema({c.name: c.dtype for c in self.columns})

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"table {self.name!r} has no column {name!r}")


def _nonneg(e: pl.Expr) -> pl.Expr:
    return e >= 0


def _in_range(lo: float, hi: float) -> Callable[[pl.Expr], pl.Expr]:
    return lambda e: (e >= lo) & (e <= hi)


def _in_set(values: tuple[str, ...]) -> Callable[[pl.Expr], pl.Expr]:
    return lambda e: e.is_in(list(values))


VIDEOS = TableSchema(
    name="videos",
    doc="One row per video in the catalogue.",
    unique=(VIDEO_IDX,),
    columns=(
        Column(
            VIDEO_IDX,
            pl.Int32(),
            check=_nonneg,
            check_text=">= 0",
            doc="Dense video index (0..n-1); vocab/videos maps it to the external id.",
        ),
        Column(
            CREATOR_IDX,
            pl.Int32(),
            check=_nonneg,
            check_text=">= 0",
            doc="Dense creator index; vocab/creators maps it to the external id.",
        ),
        Column(
            CATEGORY,
            pl.Int16(),
            nullable=True,
            check=_nonneg,
            check_text=">= 0",
            doc="Main topic/category index; vocab/categories holds the names.",
        ),
        Column(
            TAGS,
            pl.List(pl.Int32()),
            doc="Tag indices (vocab/tags holds the names); may be empty, never null.",
        ),
        Column(
            DURATION_S,
            pl.Float32(),
            nullable=True,
            check=_in_range(0.1, 36_000.0),
            check_text="in [0.1, 36000]",
            doc="Video length in seconds.",
        ),
        Column(UPLOAD_TS, UTC_TS, nullable=True, doc="Upload time (UTC)."),
        Column(TITLE, pl.String(), nullable=True, doc="Human-readable title (for the demo page)."),
    ),
)

USERS = TableSchema(
    name="users",
    doc="One row per user.",
    unique=(USER_IDX,),
    columns=(
        Column(
            USER_IDX,
            pl.Int32(),
            check=_nonneg,
            check_text=">= 0",
            doc="Dense user index; vocab/users maps it to the external id.",
        ),
        Column(SIGNUP_TS, UTC_TS, nullable=True, doc="Sign-up time (UTC)."),
        Column(REGION, pl.String(), nullable=True, doc="Coarse region code (e.g. 'US')."),
        Column(
            AGE_BUCKET,
            pl.String(),
            nullable=True,
            check=_in_set(AGE_BUCKETS),
            check_text=f"one of {AGE_BUCKETS}",
            doc="Coarse age bucket.",
        ),
        Column(
            DEVICE,
            pl.String(),
            nullable=True,
            check=_in_set(DEVICES),
            check_text=f"one of {DEVICES}",
            doc="Main device platform.",
        ),
    ),
)

EVENTS = TableSchema(
    name="events",
    doc="One row per feed impression (a video shown full-screen to a user).",
    unique=(EVENT_ID,),
    columns=(
        Column(EVENT_ID, pl.Int64(), check=_nonneg, check_text=">= 0", doc="Unique impression id."),
        Column(
            REQUEST_ID,
            pl.Int64(),
            nullable=True,
            check=_nonneg,
            check_text=">= 0",
            doc="The feed request (page) that served the video.",
        ),
        Column(
            SESSION_ID,
            pl.Int64(),
            nullable=True,
            check=_nonneg,
            check_text=">= 0",
            doc="App session; null in sources without sessions until the ETL sessionises.",
        ),
        Column(USER_IDX, pl.Int32(), check=_nonneg, check_text=">= 0", doc="Dense user index."),
        Column(VIDEO_IDX, pl.Int32(), check=_nonneg, check_text=">= 0", doc="Dense video index."),
        Column(TS, UTC_TS, doc="Impression time (UTC, microseconds)."),
        Column(
            POSITION,
            pl.Int32(),
            nullable=True,
            check=_nonneg,
            check_text=">= 0",
            doc="0-based position of the impression within its session.",
        ),
        Column(
            WATCH_TIME_S,
            pl.Float32(),
            nullable=True,
            check=_nonneg,
            check_text=">= 0",
            doc="Seconds watched, replays included.",
        ),
        Column(
            WATCH_RATIO,
            pl.Float32(),
            nullable=True,
            check=_nonneg,
            check_text=">= 0",
            doc="watch_time_s / duration_s; may exceed 1 with replays.",
        ),
        Column(
            SKIPPED,
            pl.Boolean(),
            nullable=True,
            doc="Fast swipe: watch time under the skip threshold (default 2 s).",
        ),
        Column(LIKED, pl.Boolean(), nullable=True, doc="The user liked the video."),
        Column(SHARED, pl.Boolean(), nullable=True, doc="The user shared the video."),
        Column(
            FOLLOWED,
            pl.Boolean(),
            nullable=True,
            doc="The user followed the creator from this impression.",
        ),
        Column(
            POLICY,
            pl.String(),
            nullable=True,
            doc="The policy / experiment arm that served the impression.",
        ),
    ),
)

VOCAB = TableSchema(
    name="vocab",
    doc="Mapping from dense index to the external id of a source.",
    unique=(IDX,),
    columns=(
        Column(IDX, pl.Int32(), check=_nonneg, check_text=">= 0", doc="Dense index."),
        Column(ID, pl.String(), doc="External id as the source spelled it."),
    ),
)

# ---------------------------------------------------------------- ETL outputs
SPLIT = "split"
LOO_SPLIT = "loo_split"
TRAIN, VALID, TEST = "train", "valid", "test"
SPLITS = (TRAIN, VALID, TEST)

ETL_EVENTS = TableSchema(
    name="etl_events",
    doc="Deduplicated, sessionised events with their split labels (written by the ETL).",
    unique=(EVENT_ID,),
    columns=(
        *EVENTS.columns,
        Column(
            SPLIT,
            pl.String(),
            check=_in_set(SPLITS),
            check_text=f"one of {SPLITS}",
            doc="Temporal split: train before the valid cut-off, valid, then test.",
        ),
        Column(
            LOO_SPLIT,
            pl.String(),
            check=_in_set(SPLITS),
            check_text=f"one of {SPLITS}",
            doc="Leave-last-out per user: last interaction test, second last valid.",
        ),
    ),
)

TABLES: dict[str, TableSchema] = {t.name: t for t in (VIDEOS, USERS, EVENTS, VOCAB, ETL_EVENTS)}


# ---------------------------------------------------------------- validation
class BadInput(ValueError):
    """Base of every error caused by bad user input; the CLI maps it to exit code 2.

    The message must name what was wrong: file, line and field where they are known.
    """


@dataclass(frozen=True)
class Violation:
    """One kind of problem in one column, with how many rows have it and a few examples."""

    table: str
    column: str
    problem: str
    count: int
    examples: tuple[str, ...] = field(default_factory=tuple)

    def __str__(self) -> str:
        ex = f" (e.g. {', '.join(self.examples)})" if self.examples else ""
        rows = f"{self.count} row{'s' if self.count != 1 else ''}: " if self.count else ""
        return f"{self.table}.{self.column}: {rows}{self.problem}{ex}"


class SchemaError(BadInput):
    """Raised when a table does not match its schema; lists every violation."""

    def __init__(self, source: str, violations: list[Violation]) -> None:
        self.source = source
        self.violations = violations
        lines = "\n".join(f"  - {v}" for v in violations)
        super().__init__(f"{source}: {len(violations)} schema violation(s):\n{lines}")


def _examples(values: pl.Series, n: int = 3) -> tuple[str, ...]:
    return tuple(repr(v) for v in values.head(n).to_list())


def validate(df: pl.DataFrame, schema: TableSchema) -> list[Violation]:
    """Check ``df`` against ``schema`` and return every violation found (empty list: valid).

    Checks, per column: presence, dtype, nulls where not allowed, the row check; then
    uniqueness of ``schema.unique``; then unexpected extra columns.
    """
    out: list[Violation] = []
    t = schema.name
    for col in schema.columns:
        if col.name not in df.columns:
            out.append(Violation(t, col.name, "missing column", 0))
            continue
        s = df.get_column(col.name)
        if s.dtype != col.dtype:
            out.append(Violation(t, col.name, f"dtype {s.dtype}, expected {col.dtype}", 0))
            continue
        nulls = s.null_count()
        if nulls and not col.nullable:
            out.append(Violation(t, col.name, "null values in a required column", nulls))
        if col.check is not None:
            bad = (
                df.lazy()
                .filter(~col.check(pl.col(col.name)).fill_null(True))
                .select(col.name)
                .collect()
                .get_column(col.name)
            )
            if bad.len():
                out.append(
                    Violation(
                        t, col.name, f"values not {col.check_text}", bad.len(), _examples(bad)
                    )
                )
        if isinstance(col.dtype, pl.Float32 | pl.Float64):
            nan = s.is_nan().sum()
            if nan:
                out.append(Violation(t, col.name, "NaN values", int(nan)))
    present = [c for c in schema.unique if c in df.columns]
    # one key column: counting distinct values is far cheaper than listing the duplicates,
    # which is then done only when the count shows some
    all_distinct = len(present) == 1 and df.get_column(present[0]).n_unique() == df.height
    if present and len(present) == len(schema.unique) and not all_distinct:
        dup = df.select(present).filter(pl.struct(present).is_duplicated())
        if dup.height:
            key = present[0] if len(present) == 1 else "+".join(present)
            ex = dup.get_column(present[0]).unique(maintain_order=True)
            out.append(Violation(t, key, "duplicate key values", dup.height, _examples(ex)))
    extra = [c for c in df.columns if c not in schema.names]
    if extra:
        out.append(Violation(t, ", ".join(extra), "unexpected column(s)", 0))
    return out


def check(df: pl.DataFrame, schema: TableSchema, source: str) -> pl.DataFrame:
    """Validate and return ``df`` unchanged, or raise :class:`SchemaError` naming ``source``."""
    problems = validate(df, schema)
    if problems:
        raise SchemaError(source, problems)
    return df


def conform(df: pl.DataFrame, schema: TableSchema) -> pl.DataFrame:
    """Select the schema's columns in order, adding missing nullable ones as nulls and casting.

    Use when building a table from a source; :func:`check` still runs afterwards.
    """
    exprs: list[pl.Expr] = []
    for col in schema.columns:
        if col.name in df.columns:
            exprs.append(pl.col(col.name).cast(col.dtype, strict=True))
        elif col.nullable:
            exprs.append(pl.lit(None, dtype=col.dtype).alias(col.name))
        else:
            raise SchemaError(schema.name, [Violation(schema.name, col.name, "missing column", 0)])
    return df.select(exprs)


# ---- ETL feature tables (owned by data/etl.py)
# Labels of a ranker training sample.
ENGAGE = "engage"
COMPLETE = "complete"
LIKE = "like"

# Offline statistics (train split only; they serve online features).
IMPRESSIONS = "impressions"
ENGAGE_RATE = "engage_rate"
WATCH_RATIO_MEAN = "watch_ratio_mean"
SKIP_RATE = "skip_rate"
LIKE_RATE = "like_rate"
AFFINITY = "affinity"
TAG_IMPRESSIONS = "tag_impressions"
HIST_VIDEO_IDX = "hist_video_idx"
HIST_TS = "hist_ts"
TRAIN_IMPRESSIONS = "train_impressions"
TRAIN_ENGAGED = "train_engaged"

# Point-in-time features of a ranker training sample (only events strictly before it).
F_USER_IMPRESSIONS = "f_user_impressions"
F_USER_ENGAGE_RATE = "f_user_engage_rate"
F_VIDEO_IMPRESSIONS = "f_video_impressions"
F_VIDEO_ENGAGE_RATE = "f_video_engage_rate"
F_VIDEO_WATCH_RATIO = "f_video_watch_ratio"
F_VIDEO_SKIP_RATE = "f_video_skip_rate"
F_VIDEO_LIKE_RATE = "f_video_like_rate"
F_CREATOR_IMPRESSIONS = "f_creator_impressions"
F_CREATOR_ENGAGE_RATE = "f_creator_engage_rate"
F_CREATOR_WATCH_RATIO = "f_creator_watch_ratio"
F_CREATOR_SKIP_RATE = "f_creator_skip_rate"
F_CREATOR_LIKE_RATE = "f_creator_like_rate"
F_TAG_AFFINITY = "f_tag_affinity"
F_VIDEO_AGE_H = "f_video_age_h"
F_SESSION_POSITION = "f_session_position"
F_SESSION_SKIPS = "f_session_skips"
F_SINCE_PREV_S = "f_since_prev_s"


def _rate_col(name: str, doc: str) -> Column:
    return Column(name, pl.Float32(), nullable=True, check=_nonneg, check_text=">= 0", doc=doc)


def _count_col(name: str, doc: str) -> Column:
    return Column(name, pl.Int64(), check=_nonneg, check_text=">= 0", doc=doc)


_STAT_COLUMNS = (
    _count_col(IMPRESSIONS, "Train-split impressions."),
    _rate_col(ENGAGE_RATE, "Smoothed share of impressions not skipped (null skipped = engaged)."),
    _rate_col(WATCH_RATIO_MEAN, "Smoothed mean watch ratio over non-null watch ratios."),
    _rate_col(SKIP_RATE, "Smoothed share skipped over non-null `skipped`; null without data."),
    _rate_col(LIKE_RATE, "Smoothed share liked over non-null `liked`; null without data."),
)

VIDEO_STATS = TableSchema(
    name="video_stats",
    doc="Per-video statistics of the train split, smoothed toward the global train mean.",
    unique=(VIDEO_IDX,),
    columns=(
        Column(VIDEO_IDX, pl.Int32(), check=_nonneg, check_text=">= 0", doc="Dense video index."),
        Column(
            CREATOR_IDX, pl.Int32(), check=_nonneg, check_text=">= 0", doc="Dense creator index."
        ),
        *_STAT_COLUMNS,
    ),
)

CREATOR_STATS = TableSchema(
    name="creator_stats",
    doc="Per-creator statistics of the train split, smoothed toward the global train mean.",
    unique=(CREATOR_IDX,),
    columns=(
        Column(
            CREATOR_IDX, pl.Int32(), check=_nonneg, check_text=">= 0", doc="Dense creator index."
        ),
        *_STAT_COLUMNS,
    ),
)

USER_TAG_AFFINITY = TableSchema(
    name="user_tag_affinity",
    doc="Per (user, tag) exponentially decayed count of engaged train impressions, as of the "
    "valid cut-off.",
    unique=(USER_IDX, TAG_IDX),
    columns=(
        Column(USER_IDX, pl.Int32(), check=_nonneg, check_text=">= 0", doc="Dense user index."),
        Column(TAG_IDX, pl.Int32(), check=_nonneg, check_text=">= 0", doc="Dense tag index."),
        Column(
            AFFINITY,
            pl.Float32(),
            check=_nonneg,
            check_text=">= 0",
            doc="sum of 2^(-(valid_start - ts) / half_life) over engaged impressions.",
        ),
        _count_col(TAG_IMPRESSIONS, "Train impressions of videos with the tag (undecayed)."),
    ),
)

HISTORIES = TableSchema(
    name="histories",
    doc="Per-user chronological history: the last `history_len` engaged train impressions.",
    unique=(USER_IDX,),
    columns=(
        Column(USER_IDX, pl.Int32(), check=_nonneg, check_text=">= 0", doc="Dense user index."),
        Column(
            HIST_VIDEO_IDX,
            pl.List(pl.Int32()),
            doc="Videos, oldest first, ordered by (ts, event_id).",
        ),
        Column(HIST_TS, pl.List(UTC_TS), doc="Impression times matching hist_video_idx."),
        _count_col(TRAIN_IMPRESSIONS, "All train impressions of the user."),
        _count_col(TRAIN_ENGAGED, "Engaged train impressions of the user."),
    ),
)

#: Feature columns of a ranker training sample, in order.
SAMPLE_FEATURES = (
    F_USER_IMPRESSIONS,
    F_USER_ENGAGE_RATE,
    F_VIDEO_IMPRESSIONS,
    F_VIDEO_ENGAGE_RATE,
    F_VIDEO_WATCH_RATIO,
    F_VIDEO_SKIP_RATE,
    F_VIDEO_LIKE_RATE,
    F_CREATOR_IMPRESSIONS,
    F_CREATOR_ENGAGE_RATE,
    F_CREATOR_WATCH_RATIO,
    F_CREATOR_SKIP_RATE,
    F_CREATOR_LIKE_RATE,
    F_TAG_AFFINITY,
    F_VIDEO_AGE_H,
    F_SESSION_POSITION,
    F_SESSION_SKIPS,
    F_SINCE_PREV_S,
)

SAMPLES = TableSchema(
    name="samples",
    doc="Ranker training samples: one per impression, every feature computed only from events "
    "strictly before it in (ts, event_id) order.",
    unique=(EVENT_ID,),
    columns=(
        Column(EVENT_ID, pl.Int64(), check=_nonneg, check_text=">= 0", doc="Impression id."),
        Column(USER_IDX, pl.Int32(), check=_nonneg, check_text=">= 0", doc="Dense user index."),
        Column(VIDEO_IDX, pl.Int32(), check=_nonneg, check_text=">= 0", doc="Dense video index."),
        Column(
            CREATOR_IDX, pl.Int32(), check=_nonneg, check_text=">= 0", doc="Dense creator index."
        ),
        Column(SESSION_ID, pl.Int64(), check=_nonneg, check_text=">= 0", doc="Session id."),
        Column(TS, UTC_TS, doc="Impression time (UTC)."),
        Column(
            SPLIT,
            pl.String(),
            check=_in_set(SPLITS),
            check_text=f"one of {SPLITS}",
            doc="Temporal split of the impression.",
        ),
        Column(
            LOO_SPLIT,
            pl.String(),
            check=_in_set(SPLITS),
            check_text=f"one of {SPLITS}",
            doc="Leave-last-out split of the impression.",
        ),
        Column(ENGAGE, pl.Boolean(), doc="Label: not skipped (null skipped counts as engaged)."),
        Column(
            COMPLETE,
            pl.Boolean(),
            nullable=True,
            doc="Label: watch_ratio >= EtlConfig.complete_ratio; null without watch data.",
        ),
        Column(LIKE, pl.Boolean(), nullable=True, doc="Label: liked; null without like data."),
        Column(
            WATCH_RATIO,
            pl.Float32(),
            nullable=True,
            check=_nonneg,
            check_text=">= 0",
            doc="Label: watch ratio.",
        ),
        _count_col(F_USER_IMPRESSIONS, "The user's earlier impressions."),
        _rate_col(F_USER_ENGAGE_RATE, "The user's smoothed engage rate so far."),
        _count_col(F_VIDEO_IMPRESSIONS, "The video's earlier impressions (all users)."),
        _rate_col(F_VIDEO_ENGAGE_RATE, "The video's smoothed engage rate so far."),
        _rate_col(F_VIDEO_WATCH_RATIO, "The video's smoothed mean watch ratio so far."),
        _rate_col(F_VIDEO_SKIP_RATE, "The video's smoothed skip rate so far."),
        _rate_col(F_VIDEO_LIKE_RATE, "The video's smoothed like rate so far."),
        _count_col(F_CREATOR_IMPRESSIONS, "The creator's earlier impressions (all users)."),
        _rate_col(F_CREATOR_ENGAGE_RATE, "The creator's smoothed engage rate so far."),
        _rate_col(F_CREATOR_WATCH_RATIO, "The creator's smoothed mean watch ratio so far."),
        _rate_col(F_CREATOR_SKIP_RATE, "The creator's smoothed skip rate so far."),
        _rate_col(F_CREATOR_LIKE_RATE, "The creator's smoothed like rate so far."),
        Column(
            F_TAG_AFFINITY,
            pl.Float32(),
            check=_nonneg,
            check_text=">= 0",
            doc="Mean over the video's tags of the user's decayed engaged count so far "
            "(0 for a video without tags).",
        ),
        Column(
            F_VIDEO_AGE_H,
            pl.Float32(),
            nullable=True,
            doc="Hours since upload at ts; null without upload time.",
        ),
        Column(
            F_SESSION_POSITION,
            pl.Int32(),
            check=_nonneg,
            check_text=">= 0",
            doc="0-based position in the session.",
        ),
        Column(
            F_SESSION_SKIPS,
            pl.Int32(),
            check=_nonneg,
            check_text=">= 0",
            doc="Skips earlier in the same session.",
        ),
        Column(
            F_SINCE_PREV_S,
            pl.Float32(),
            nullable=True,
            check=_nonneg,
            check_text=">= 0",
            doc="Seconds since the user's previous impression; null for the first.",
        ),
    ),
)

TABLES.update(
    {t.name: t for t in (VIDEO_STATS, CREATOR_STATS, USER_TAG_AFFINITY, HISTORIES, SAMPLES)}
)
