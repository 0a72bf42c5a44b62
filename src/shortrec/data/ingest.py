"""Ingestion of real public logs into a shortrec dataset directory (see ``docs/ingestion.md``).

``ingest(fmt, src, out, config)`` reads one source (:data:`FORMATS`), remaps every external id
through one vocabulary per kind (``vocab/{users,videos,creators,tags,categories}.parquet``:
dense ``idx`` -> ``id`` as the source spelled it), derives only what is sound (``skipped =
watch_time_s < skip_threshold_s``; everything derived is listed in the manifest's
``derivations``), leaves the rest null, checks every table against :mod:`shortrec.schema` and
writes the directory atomically (:func:`shortrec.data.io.atomic_dir`): all of it or nothing.

Dense indices are assigned in order of first appearance in the time-sorted events, then
catalogue-only ids in side-file order. Events are sorted by ``(ts, source file, source line)``
and numbered ``event_id = 0..n-1`` in that order; ``request_id``, ``session_id`` and
``position`` are null (the ETL sessionises).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import polars as pl

from shortrec import schema as S
from shortrec.config import IngestConfig
from shortrec.data import io
from shortrec.data.ingest_formats import READERS, Source
from shortrec.data.ingest_read import (
    FILE,
    LINE,
    RAW_CATEGORY,
    RAW_CREATOR,
    RAW_DURATION,
    RAW_TAGS,
    RAW_USER,
    RAW_VIDEO,
    IngestError,
)

__all__ = ["FORMATS", "IngestError", "assemble", "ingest"]

#: The source formats :func:`ingest` reads.
FORMATS: tuple[str, ...] = ("movielens", "kuairec", "kuairand", "seq-pairs", "seq-lines", "csv")

#: Prefix of the creator id given to a video whose source names no creator.
OWN_CREATOR_PREFIX = "video:"

_DUR_LO, _DUR_HI = 0.1, 36_000.0
_MAX_CATEGORIES = 32_767  # category is Int16


class _Progress:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.t0 = time.perf_counter()

    def __call__(self, msg: str) -> None:
        if self.enabled:
            print(
                f"ingest [{time.perf_counter() - self.t0:7.1f}s] {msg}", file=sys.stderr, flush=True
            )


def ingest(
    fmt: str,
    src: Path,
    out: Path,
    config: IngestConfig,
    mapping: dict[str, str] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Ingest ``src`` (a file or directory in format ``fmt``) into the dataset directory ``out``.

    ``mapping`` (``csv`` only) maps our column names (``user_idx``, ``video_idx``, ``ts``,
    ``watch_time_s`` ... see :data:`shortrec.data.ingest_formats.CSV_KEYS`) to source column
    names. Returns a summary: ``{"format", "out", "counts", "dropped", "seconds",
    "rows_per_s"}`` where ``rows_per_s`` = source records read / wall seconds.
    Raises :class:`IngestError` (a :class:`shortrec.schema.BadInput`) on bad input; ``out`` is
    then left as it was.
    """
    say = _Progress(progress)
    t0 = time.perf_counter()
    if fmt not in FORMATS:
        raise IngestError(f"unknown format {fmt!r}; valid formats: {', '.join(FORMATS)}")
    if mapping is not None and fmt != "csv":
        raise IngestError(f"a column mapping applies only to the csv format, not {fmt!r}")
    src = Path(src)
    out = Path(out)
    if not src.exists():
        raise IngestError(f"{src}: not found")
    say(f"reading {fmt} from {src}")
    source = READERS[fmt](src, config, mapping)
    n_read = source.events.height + sum(source.dropped.values())
    say(f"read {source.events.height:,} interactions from {', '.join(source.files)}")
    tables = assemble(source, config)
    counts = {
        "events": tables["events"].height,
        "users": tables["users"].height,
        "videos": tables["videos"].height,
        **{
            f"vocab_{k.removeprefix('vocab/')}": v.height
            for k, v in tables.items()
            if k.startswith("vocab/")
        },
    }
    manifest: dict[str, Any] = {
        "kind": "ingested",
        "source": fmt,
        "source_path": str(src.resolve()),
        "source_files": source.files,
        "sequence": source.sequence,
        "synthetic_ts": source.sequence,
        "counts": counts,
        "dropped": source.dropped,
        "skip_threshold_s": config.skip_threshold_s,
        "derivations": source.derivations,
        "config": config.model_dump(),
    }
    if mapping is not None:
        manifest["mapping"] = dict(mapping)
    say(f"writing {out}")
    write_dataset(tables, out, manifest, config.events_per_part)
    seconds = time.perf_counter() - t0
    say(f"done: {counts['events']:,} events in {seconds:.1f}s")
    return {
        "format": fmt,
        "out": str(out),
        "counts": counts,
        "dropped": dict(source.dropped),
        "seconds": seconds,
        "rows_per_s": n_read / seconds if seconds > 0 else float("inf"),
    }


# ---------------------------------------------------------------- assembly


def _vocab_ids(*parts: pl.Series) -> pl.Series:
    """Distinct non-null ids, in order of first appearance across ``parts``."""
    s = pl.concat([p.cast(pl.String) for p in parts]) if parts else pl.Series([], dtype=pl.String())
    return s.drop_nulls().unique(maintain_order=True)


def _remap(df: pl.DataFrame, key: str, vocab: pl.DataFrame, out: str) -> pl.DataFrame:
    """Replace the external id column ``key`` by its dense index ``out`` (Int32)."""
    m = vocab.rename({S.ID: key, S.IDX: out})
    return df.join(m, on=key, how="left", maintain_order="left").drop(key)


def assemble(source: Source, config: IngestConfig) -> dict[str, pl.DataFrame]:
    """Tables of a dataset from a raw :class:`Source`: events, videos, users and vocabularies.

    Keys: ``events`` (core columns only; :func:`write_dataset` conforms each part), ``videos``,
    ``users`` and ``vocab/NAME`` for each of :data:`shortrec.data.io.VOCAB_NAMES`.
    """
    ev = source.events
    if ev.height == 0:
        raise IngestError(f"{', '.join(source.files)}: no interactions to ingest")
    if FILE not in ev.columns:
        ev = ev.with_columns(pl.lit(0, pl.Int32).alias(FILE))
    ev = ev.sort([S.TS, FILE, LINE])

    # ---- vocabularies: events first (time order), then catalogue-only ids
    side_v = source.videos
    side_u = source.users
    user_ids = _vocab_ids(
        ev.get_column(RAW_USER), *([side_u.get_column(RAW_USER)] if side_u is not None else [])
    )
    video_ids = _vocab_ids(
        ev.get_column(RAW_VIDEO), *([side_v.get_column(RAW_VIDEO)] if side_v is not None else [])
    )
    users_vocab = io.vocab_frame(user_ids)
    videos_vocab = io.vocab_frame(video_ids)

    # ---- videos: side file, else what the events log about the video
    vids = videos_vocab.rename({S.IDX: S.VIDEO_IDX, S.ID: RAW_VIDEO})
    if side_v is not None:
        vids = vids.join(
            side_v.drop(LINE, strict=False), on=RAW_VIDEO, how="left", maintain_order="left"
        )
    ev_cols = [c for c in (RAW_DURATION, RAW_CREATOR, RAW_CATEGORY, S.TITLE) if c in ev.columns]
    if ev_cols:
        aggs = [pl.col(RAW_DURATION).median().alias("__ev_dur")] if RAW_DURATION in ev_cols else []
        aggs += [
            pl.col(c).drop_nulls().first().alias(f"__ev{c}") for c in ev_cols if c != RAW_DURATION
        ]
        stats = ev.group_by(RAW_VIDEO).agg(aggs)
        vids = vids.join(stats, on=RAW_VIDEO, how="left", maintain_order="left")

    def first_of(*names: str, dtype: pl.DataType) -> pl.Expr:
        cols = [pl.col(n) for n in names if n in vids.columns]
        return pl.coalesce(cols).cast(dtype) if cols else pl.lit(None, dtype)

    dur = first_of(S.DURATION_S, "__ev_dur", dtype=pl.Float32())
    vids = vids.with_columns(
        pl.when((dur >= _DUR_LO) & (dur <= _DUR_HI)).then(dur).alias(S.DURATION_S),
        first_of(RAW_CREATOR, f"__ev{RAW_CREATOR}", dtype=pl.String()).alias(RAW_CREATOR),
        first_of(RAW_CATEGORY, f"__ev{RAW_CATEGORY}", dtype=pl.String()).alias(RAW_CATEGORY),
        first_of(S.TITLE, f"__ev{S.TITLE}", dtype=pl.String()).alias(S.TITLE),
        first_of(S.UPLOAD_TS, dtype=S.UTC_TS).alias(S.UPLOAD_TS),
        (
            pl.col(RAW_TAGS).fill_null([])
            if RAW_TAGS in vids.columns
            else pl.lit([], pl.List(pl.String))
        )
        .list.unique(maintain_order=True)
        .alias(RAW_TAGS),
    )
    derivations = source.derivations
    n_own = vids.get_column(RAW_CREATOR).null_count()
    if n_own:
        # creator_idx is required: a video without one is its own creator (never a shared,
        # invented creator that would couple unrelated videos).
        vids = vids.with_columns(
            pl.coalesce(pl.col(RAW_CREATOR), pl.lit(OWN_CREATOR_PREFIX) + pl.col(RAW_VIDEO)).alias(
                RAW_CREATOR
            )
        )
        if n_own < vids.height:
            derivations.setdefault(
                S.CREATOR_IDX,
                f"{n_own} video(s) without a creator in the source are each their own creator "
                f"('{OWN_CREATOR_PREFIX}<video id>' in vocab/creators)",
            )
        else:
            derivations[S.CREATOR_IDX] = (
                "the source has no creators: each video is its own creator "
                f"('{OWN_CREATOR_PREFIX}<video id>' in vocab/creators)"
            )
    creators_vocab = io.vocab_frame(_vocab_ids(vids.get_column(RAW_CREATOR)))
    categories_vocab = io.vocab_frame(_vocab_ids(vids.get_column(RAW_CATEGORY)))
    if categories_vocab.height > _MAX_CATEGORIES:
        raise IngestError(
            f"{', '.join(source.files)}: {categories_vocab.height} categories; "
            f"at most {_MAX_CATEGORIES} fit the category column"
        )
    tags_vocab = io.vocab_frame(_vocab_ids(vids.get_column(RAW_TAGS).explode()))
    tag_map = dict(
        zip(
            tags_vocab.get_column(S.ID).to_list(),
            tags_vocab.get_column(S.IDX).to_list(),
            strict=True,
        )
    )
    vids = _remap(vids, RAW_CREATOR, creators_vocab, S.CREATOR_IDX)
    vids = _remap(vids, RAW_CATEGORY, categories_vocab, S.CATEGORY)
    vids = vids.with_columns(
        pl.col(RAW_TAGS)
        .list.eval(
            pl.element().replace_strict(tag_map, return_dtype=pl.Int32)
            if tag_map
            else pl.element().cast(pl.Int32)
        )
        .alias(S.TAGS)
    )
    videos = S.conform(vids, S.VIDEOS)

    # ---- users
    usr = users_vocab.rename({S.IDX: S.USER_IDX, S.ID: RAW_USER})
    if side_u is not None:
        usr = usr.join(
            side_u.drop(LINE, strict=False), on=RAW_USER, how="left", maintain_order="left"
        )
    users = S.conform(usr, S.USERS)

    # ---- events
    ev = _remap(ev, RAW_USER, users_vocab, S.USER_IDX)
    ev = _remap(ev, RAW_VIDEO, videos_vocab, S.VIDEO_IDX)
    if S.WATCH_TIME_S in ev.columns and S.SKIPPED not in ev.columns:
        ev = ev.with_columns((pl.col(S.WATCH_TIME_S) < config.skip_threshold_s).alias(S.SKIPPED))
        derivations.setdefault(S.SKIPPED, f"watch_time_s < {config.skip_threshold_s} s")
    keep = [c for c in S.EVENTS.names if c in ev.columns]
    events = ev.select(
        pl.int_range(0, pl.len(), dtype=pl.Int64).alias(S.EVENT_ID),
        *[pl.col(c) for c in keep if c != S.EVENT_ID],
    )
    return {
        "events": events,
        "videos": S.check(videos, S.VIDEOS, "videos"),
        "users": S.check(users, S.USERS, "users"),
        "vocab/users": users_vocab,
        "vocab/videos": videos_vocab,
        "vocab/creators": creators_vocab,
        "vocab/tags": tags_vocab,
        "vocab/categories": categories_vocab,
    }


# ---------------------------------------------------------------- writing


def write_dataset(
    tables: Mapping[str, pl.DataFrame], out: Path, manifest: dict[str, Any], events_per_part: int
) -> None:
    """Write ``tables`` (from :func:`assemble`) as a dataset directory, atomically.

    Every table is checked against its schema before it is written; events go out in parts of
    ``events_per_part`` rows, each conformed to ``schema.EVENTS`` (absent columns as nulls).
    """
    with io.atomic_dir(out) as tmp:
        io.write_parquet_atomic(
            S.check(tables["videos"], S.VIDEOS, f"{out}/{io.VIDEOS_FILE}"), tmp / io.VIDEOS_FILE
        )
        io.write_parquet_atomic(
            S.check(tables["users"], S.USERS, f"{out}/{io.USERS_FILE}"), tmp / io.USERS_FILE
        )
        for name in io.VOCAB_NAMES:
            rel = f"{io.VOCAB_DIR}/{name}.parquet"
            io.write_parquet_atomic(
                S.check(tables[f"vocab/{name}"], S.VOCAB, f"{out}/{rel}"), tmp / rel
            )
        events = tables["events"]
        n = events.height
        for part, start in enumerate(range(0, max(n, 1), events_per_part)):
            rel = f"{io.EVENTS_DIR}/part-{part:05d}.parquet"
            chunk = S.conform(events.slice(start, events_per_part), S.EVENTS)
            io.write_parquet_atomic(S.check(chunk, S.EVENTS, f"{out}/{rel}"), tmp / rel)
        io.write_json_atomic(manifest, tmp / io.MANIFEST)
