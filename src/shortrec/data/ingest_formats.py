"""Format readers for ingestion: each public log layout into one raw :class:`Source`.

A reader parses and checks its files and hands over frames keyed by *external* ids (as the source
spells them); :mod:`shortrec.data.ingest` then builds the vocabularies, dense indices and tables.
Source column names (``userId``, ``play_time_ms`` ...) belong to the formats and live here; the
names of our own tables come from :mod:`shortrec.schema`.

Layouts (field meanings from each dataset's README):

- MovieLens: ``u.data`` (100K: ``user item rating ts`` whitespace-separated, side files ``u.item``
  and ``u.user`` '|'-separated Latin-1), ``ratings.dat`` (1M/10M: ``::``-separated, side files
  ``movies.dat``/``users.dat``), ``ratings.csv`` (ml-latest/20M/25M/32M, side ``movies.csv``), and
  RecBole atomic files (``NAME.inter`` with a ``name:type`` header, side ``NAME.item``/``.user``).
- KuaiRec (``big_matrix.csv``/``small_matrix.csv``: play/video duration in ms, Unix ``timestamp``
  in s, ``watch_ratio``; side ``item_categories.csv``, ``item_daily_features.csv``).
- KuaiRand (``log_*.csv``: ``time_ms``, ``play_time_ms``, ``duration_ms``, ``is_like``,
  ``is_follow``, ``is_forward``, ``is_rand`` ...; side ``video_features_basic*.csv``,
  ``user_features*.csv``).
- ``seq-pairs`` / ``seq-lines``: the text formats of sequential-recommendation benchmarks.
- ``csv``: any CSV/TSV/Parquet with a mapping from our column names to the source's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from shortrec import schema as S
from shortrec.config import IngestConfig
from shortrec.data.ingest_read import (
    FILE,
    LINE,
    RAW_CATEGORY,
    RAW_CREATOR,
    RAW_DURATION,
    RAW_TAGS,
    RAW_USER,
    RAW_VIDEO,
    Field,
    IngestError,
    Kind,
    Table,
    collect_fields,
    decode_latin1,
    decode_text,
    lines_frame,
    open_csv,
    open_delimited,
    open_parquet,
)


@dataclass(frozen=True)
class Source:
    """What a format reader hands to the assembler.

    ``events``: one row per interaction with :data:`RAW_USER`, :data:`RAW_VIDEO` (String), ``ts``
    (UTC, us, non-null), any of the optional ``schema.EVENTS`` measure columns, optionally
    :data:`RAW_DURATION` (the video's length as logged with the event, s), :data:`RAW_CREATOR`,
    :data:`RAW_CATEGORY`, ``title``, and :data:`FILE`/:data:`LINE` (source order).
    ``videos``/``users``: catalogue side tables keyed by external id (ids unique), or None.
    ``derivations`` documents every field that was derived rather than read; ``dropped`` counts
    records left out (with the reason as key).
    """

    events: pl.DataFrame
    videos: pl.DataFrame | None
    users: pl.DataFrame | None
    files: list[str]
    sequence: bool = False
    derivations: dict[str, str] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)


#: Seconds-since-epoch bounds accepted for timestamps (years ~1900 to ~2100).
_TS_LO_S, _TS_HI_S = -2.3e9, 4.2e9
_UNIT_SCALE = {"s": 1_000_000.0, "ms": 1_000.0, "us": 1.0}


def epoch_to_ts(expr: pl.Expr, unit: str) -> pl.Expr:
    """Epoch number (in ``unit``: s, ms or us) to a UTC microsecond datetime."""
    us = (expr * _UNIT_SCALE[unit]).round().cast(pl.Int64)
    return pl.from_epoch(us, time_unit="us").dt.replace_time_zone("UTC")


def _ts_field(source: str, unit: str) -> Field:
    scale = _UNIT_SCALE[unit] / 1_000_000.0
    return Field(source, "__ts_num", "float", lo=_TS_LO_S / scale, hi=_TS_HI_S / scale)


def _finish_ts(
    table: Table,
    df: pl.DataFrame,
    unit: str,
    field_name: str,
    config: IngestConfig,
    dropped: dict[str, int],
) -> pl.DataFrame:
    """Turn ``__ts_num`` into ``ts``; drop (and count) or reject records without one."""
    missing = df.filter(pl.col("__ts_num").is_null())
    if missing.height:
        if not config.drop_missing_ts:
            raise IngestError(
                f"{table.where(int(missing.item(0, LINE)))}: field {field_name!r}: missing "
                f"timestamp ({missing.height} record(s); set drop_missing_ts to drop them)"
            )
        dropped["missing_ts"] = dropped.get("missing_ts", 0) + missing.height
        df = df.filter(pl.col("__ts_num").is_not_null())
    return df.with_columns(epoch_to_ts(pl.col("__ts_num"), unit).alias(S.TS)).drop("__ts_num")


def check_unique(df: pl.DataFrame, table: Table, key: str, source_field: str) -> None:
    """Raise naming the second occurrence of a duplicate ``key`` (ids that must be unique)."""
    dup = df.filter(~pl.col(key).is_first_distinct())
    if dup.height:
        value = dup.item(0, key)
        first = df.filter(pl.col(key) == value).item(0, LINE)
        raise IngestError(
            f"{table.where(int(dup.item(0, LINE)))}: field {source_field!r}: duplicate id "
            f"{value!r} (first at line {int(first) + table.first_line}); ids must be unique"
        )


def _derive_watch(df: pl.DataFrame, play_ms: str, dur_ms: str, ratio: str | None) -> pl.DataFrame:
    """watch_time_s, watch_ratio and the logged video length from millisecond fields."""
    dur = pl.col(dur_ms)
    computed = pl.when(dur > 0).then(pl.col(play_ms) / dur)
    wr = computed if ratio is None else pl.coalesce(pl.col(ratio), computed)
    return df.with_columns(
        (pl.col(play_ms) / 1000.0).cast(pl.Float32).alias(S.WATCH_TIME_S),
        wr.cast(pl.Float32).alias(S.WATCH_RATIO),
        pl.when(dur > 0).then(dur / 1000.0).cast(pl.Float32).alias(RAW_DURATION),
    )


def _split_tags(expr: pl.Expr, sep: str, drop: Sequence[str] = ()) -> pl.Expr:
    """A separated tag string into a clean list (blank and ``drop`` names removed)."""
    parts = expr.fill_null("").str.split(sep).list.eval(pl.element().str.strip_chars())
    return parts.list.eval(
        pl.element().filter((pl.element().str.len_bytes() > 0) & ~pl.element().is_in(drop))
    )


def _category_from_tags(tags: str = RAW_TAGS) -> pl.Expr:
    return pl.col(tags).list.first().alias(RAW_CATEGORY)


def _one(directory: Path, patterns: Sequence[str], what: str) -> Path | None:
    """The single file in ``directory`` matching the first pattern that matches anything."""
    for pat in patterns:
        hits = sorted(directory.glob(pat))
        if len(hits) > 1:
            raise IngestError(
                f"{directory}: several {what} files match {pat!r}: "
                f"{', '.join(h.name for h in hits)}; pass one file"
            )
        if hits:
            return hits[0]
    return None


# ---------------------------------------------------------------- MovieLens

#: ML-100K genre flag order (u.genre / README).
ML100K_GENRES = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
#: Genre spellings that mean "no genre" (never kept as a tag).
_NO_GENRE = ("unknown", "(no genres listed)")
#: ML-1M ``users.dat`` age codes -> schema.AGE_BUCKETS ("1" = under 18 spans below 13: null).
_ML1M_AGE = {"18": "18-24", "25": "25-34", "35": "35-44", "45": "45+", "50": "45+", "56": "45+"}

_ML_LAYOUTS = ("u.data", "ratings.dat", "ratings.csv", "*.inter")


def _age_bucket(age: pl.Expr) -> pl.Expr:
    """Exact age in years to a schema.AGE_BUCKETS label (null below 13: no bucket holds it)."""
    return (
        pl.when(age < 13)
        .then(None)
        .when(age < 18)
        .then(pl.lit("13-17"))
        .when(age < 25)
        .then(pl.lit("18-24"))
        .when(age < 35)
        .then(pl.lit("25-34"))
        .when(age < 45)
        .then(pl.lit("35-44"))
        .when(age.is_not_null())
        .then(pl.lit("45+"))
    )


def _zip_region(zip_code: pl.Expr) -> pl.Expr:
    """A US ZIP code (5 digits, optional +4) means region "US"; anything else stays null."""
    return pl.when(zip_code.str.contains(r"^\d{5}(-\d{4})?$")).then(pl.lit("US"))


def _ml_events(path: Path, config: IngestConfig, dropped: dict[str, int]) -> pl.DataFrame:
    name = path.name
    if name.endswith(".inter"):
        table = open_delimited(path, None, "\t", header=True)
        table.require(["user_id", "item_id", "timestamp"])
        cols = ("user_id", "item_id", "rating", "timestamp")
    elif name.endswith(".dat"):
        table = open_delimited(path, ["UserID", "MovieID", "Rating", "Timestamp"], "::")
        cols = ("UserID", "MovieID", "Rating", "Timestamp")
    elif name.endswith(".csv"):
        table = open_csv(path)
        cols = ("userId", "movieId", "rating", "timestamp")
    else:  # u.data and its splits (u1.base ...): whitespace-separated, no header
        table = open_delimited(path, ["user_id", "item_id", "rating", "timestamp"], None)
        cols = ("user_id", "item_id", "rating", "timestamp")
    fields = [
        Field(cols[0], RAW_USER, "id", required=True),
        Field(cols[1], RAW_VIDEO, "id", required=True),
        _ts_field(cols[3], "s"),
    ]
    has_rating = cols[2] in table.columns
    if has_rating:
        fields.append(Field(cols[2], "__rating", "float", required=True, lo=0.0))
    df = collect_fields(table, fields)
    df = _finish_ts(table, df, "s", cols[3], config, dropped)
    thr = config.like_rating_threshold
    if has_rating and thr is not None:
        df = df.with_columns((pl.col("__rating") >= thr).alias(S.LIKED))
    return df.drop("__rating", strict=False)


def _ml_u_item(path: Path) -> pl.DataFrame:
    names = [
        "movie_id",
        "title",
        "release_date",
        "video_release_date",
        "imdb_url",
        *[f"genre:{g}" for g in ML100K_GENRES],
    ]
    table = open_delimited(path, names, "|", data=decode_latin1(path))
    fields = [
        Field("movie_id", RAW_VIDEO, "id", required=True),
        Field("title", S.TITLE, "text"),
        Field("release_date", "__release", "text"),
        *[
            Field(f"genre:{g}", f"__g{i}", "bool", required=True)
            for i, g in enumerate(ML100K_GENRES)
        ],
    ]
    df = collect_fields(table, fields)
    check_unique(df, table, RAW_VIDEO, "movie_id")
    flags = [
        pl.when(pl.col(f"__g{i}")).then(pl.lit(g))
        for i, g in enumerate(ML100K_GENRES)
        if g not in _NO_GENRE
    ]
    release = pl.col("__release").str.to_datetime("%d-%b-%Y", strict=False, time_unit="us")
    bad = df.filter(pl.col("__release").is_not_null() & release.is_null())
    if bad.height:
        raise IngestError(
            f"{table.where(int(bad.item(0, LINE)))}: field 'release_date': not a "
            f"date (expected DD-Mon-YYYY): {bad.item(0, '__release')!r}"
        )
    return df.select(
        RAW_VIDEO,
        S.TITLE,
        pl.concat_list(flags).list.drop_nulls().alias(RAW_TAGS),
        release.dt.replace_time_zone("UTC").alias(S.UPLOAD_TS),
    ).with_columns(_category_from_tags())


def _ml_genre_table(
    table: Table, id_col: str, title_col: str | None, genre_col: str | None, sep: str
) -> pl.DataFrame:
    fields = [Field(id_col, RAW_VIDEO, "id", required=True)]
    if title_col is not None and title_col in table.columns:
        fields.append(Field(title_col, S.TITLE, "text"))
    if genre_col is not None and genre_col in table.columns:
        fields.append(Field(genre_col, "__genres", "text"))
    df = collect_fields(table, fields)
    check_unique(df, table, RAW_VIDEO, id_col)
    tags = (
        _split_tags(pl.col("__genres"), sep, _NO_GENRE)
        if "__genres" in df.columns
        else pl.lit([], pl.List(pl.String))
    )
    title = pl.col(S.TITLE) if S.TITLE in df.columns else pl.lit(None, pl.String)
    return df.select(RAW_VIDEO, title.alias(S.TITLE), tags.alias(RAW_TAGS)).with_columns(
        _category_from_tags(), pl.lit(None, S.UTC_TS).alias(S.UPLOAD_TS)
    )


def _ml_users(
    table: Table, id_col: str, age_col: str | None, zip_col: str | None, age_codes: bool
) -> pl.DataFrame:
    fields = [Field(id_col, RAW_USER, "id", required=True)]
    if age_col is not None:
        fields.append(Field(age_col, "__age", "text" if age_codes else "float"))
    if zip_col is not None:
        fields.append(Field(zip_col, "__zip", "id"))
    table.require([f.source for f in fields])
    df = collect_fields(table, fields)
    check_unique(df, table, RAW_USER, id_col)
    if age_col is None:
        age = pl.lit(None, pl.String)
    elif age_codes:
        age = pl.col("__age").replace_strict(_ML1M_AGE, default=None, return_dtype=pl.String)
    else:
        age = _age_bucket(pl.col("__age"))
    region = _zip_region(pl.col("__zip")) if zip_col is not None else pl.lit(None, pl.String)
    return df.select(RAW_USER, age.alias(S.AGE_BUCKET), region.alias(S.REGION))


def read_movielens(src: Path, config: IngestConfig, _mapping: object = None) -> Source:
    """MovieLens ratings (any layout in :data:`_ML_LAYOUTS`) plus the side files next to them."""
    if src.is_dir():
        ratings = _one(src, _ML_LAYOUTS, "MovieLens ratings")
        if ratings is None:
            raise IngestError(
                f"{src}: no MovieLens ratings file (expected one of {', '.join(_ML_LAYOUTS)})"
            )
    else:
        ratings = src
    d = ratings.parent
    dropped: dict[str, int] = {}
    events = _ml_events(ratings, config, dropped)
    files = [ratings.name]
    videos: pl.DataFrame | None = None
    users: pl.DataFrame | None = None
    name = ratings.name
    if name.endswith(".inter"):
        stem = name[: -len(".inter")]
        item, user = d / f"{stem}.item", d / f"{stem}.user"
        if item.is_file():
            t = open_delimited(item, None, "\t", header=True, data=decode_text(item))
            videos = _ml_genre_table(t, "item_id", "movie_title", "class", " ")
        if user.is_file():
            t = open_delimited(user, None, "\t", header=True, data=decode_text(user))
            users = _ml_users(
                t,
                "user_id",
                "age" if "age" in t.columns else None,
                "zip_code" if "zip_code" in t.columns else None,
                age_codes=False,
            )
    elif name.endswith(".dat"):
        item, user = d / "movies.dat", d / "users.dat"
        if item.is_file():
            t = open_delimited(item, ["MovieID", "Title", "Genres"], "::", data=decode_text(item))
            videos = _ml_genre_table(t, "MovieID", "Title", "Genres", "|")
        if user.is_file():
            t = open_delimited(
                user,
                ["UserID", "Gender", "Age", "Occupation", "Zip-code"],
                "::",
                data=decode_text(user),
            )
            users = _ml_users(t, "UserID", "Age", "Zip-code", age_codes=True)
    elif name.endswith(".csv"):
        item, user = d / "movies.csv", d / "users.csv"
        if item.is_file():
            t = open_csv(item)
            videos = _ml_genre_table(t, "movieId", "title", "genres", "|")
    else:
        item, user = d / "u.item", d / "u.user"
        if item.is_file():
            videos = _ml_u_item(item)
        if user.is_file():
            t = open_delimited(
                user,
                ["user_id", "age", "gender", "occupation", "zip_code"],
                "|",
                data=decode_text(user),
            )
            users = _ml_users(t, "user_id", "age", "zip_code", age_codes=False)
    files += [p.name for p in (item, user) if p.is_file()]
    derivations = {
        S.WATCH_TIME_S: "null: ratings carry no watch time",
        S.SKIPPED: "null: ratings carry no watch time",
        S.TAGS: "genres (the 'unknown'/'(no genres listed)' genre is no tag)",
        S.CATEGORY: "first genre",
        S.CREATOR_IDX: "MovieLens has no creators: each video is its own creator",
    }
    if S.LIKED in events.columns:
        derivations[S.LIKED] = f"rating >= {config.like_rating_threshold} (explicit positive)"
    if users is not None:
        derivations[S.AGE_BUCKET] = "exact age (or ML-1M age code) bucketed; under 13: null"
        derivations[S.REGION] = "'US' for a US ZIP code (5 digits), otherwise null"
    if videos is not None and not name.endswith((".inter", ".dat", ".csv")):
        derivations[S.UPLOAD_TS] = "release date (u.item)"
    return Source(
        events.with_columns(pl.lit(0, pl.Int32).alias(FILE)),
        videos,
        users,
        files,
        derivations=derivations,
        dropped=dropped,
    )


# ---------------------------------------------------------------- KuaiRec / KuaiRand


def _kuai_flags(table: Table, pairs: Sequence[tuple[str, str]]) -> list[Field]:
    return [Field(src, out, "bool") for src, out in pairs if src in table.columns]


def read_kuairec(src: Path, config: IngestConfig, _mapping: object = None) -> Source:
    """KuaiRec: a ``big_matrix.csv``/``small_matrix.csv`` (or a directory holding them)."""
    if src.is_dir():
        pref = f"{config.kuairec_matrix}_matrix.csv"
        matrix = src / pref
        if not matrix.is_file():
            other = src / (
                "small_matrix.csv" if config.kuairec_matrix == "big" else "big_matrix.csv"
            )
            if not other.is_file():
                raise IngestError(f"{src}: no big_matrix.csv or small_matrix.csv")
            matrix = other
    else:
        matrix = src
    d = matrix.parent
    table = open_csv(matrix)
    table.require(["user_id", "video_id", "play_duration", "video_duration", "timestamp"])
    fields = [
        Field("user_id", RAW_USER, "id", required=True),
        Field("video_id", RAW_VIDEO, "id", required=True),
        Field("play_duration", "__play_ms", "float", required=True, lo=0.0),
        Field("video_duration", "__dur_ms", "float", lo=0.0),
        _ts_field("timestamp", "s"),
    ]
    has_ratio = "watch_ratio" in table.columns
    if has_ratio:
        fields.append(Field("watch_ratio", "__ratio", "float", lo=0.0))
    dropped: dict[str, int] = {}
    df = collect_fields(table, fields)
    df = _finish_ts(table, df, "s", "timestamp", config, dropped)
    df = _derive_watch(df, "__play_ms", "__dur_ms", "__ratio" if has_ratio else None)
    events = df.drop("__play_ms", "__dur_ms", "__ratio", strict=False).with_columns(
        pl.lit(0, pl.Int32).alias(FILE)
    )
    files = [matrix.name]
    videos = None
    cats = d / "item_categories.csv"
    if cats.is_file():
        t = open_csv(cats)
        v = collect_fields(
            t, [Field("video_id", RAW_VIDEO, "id", required=True), Field("feat", "__feat", "text")]
        )
        check_unique(v, t, RAW_VIDEO, "video_id")
        # "[27, 9]": the list of tag ids; the first is the main one.
        inner = pl.col("__feat").str.strip_chars().str.strip_prefix("[").str.strip_suffix("]")
        videos = v.select(RAW_VIDEO, _split_tags(inner, ",").alias(RAW_TAGS)).with_columns(
            _category_from_tags()
        )
        files.append(cats.name)
    daily = d / "item_daily_features.csv"
    if daily.is_file():
        t = open_csv(daily)
        fs = [Field("video_id", RAW_VIDEO, "id", required=True)]
        if "author_id" in t.columns:
            fs.append(Field("author_id", RAW_CREATOR, "id"))
        if "upload_dt" in t.columns:
            fs.append(Field("upload_dt", S.UPLOAD_TS, "datetime"))
        # One row per video and day: the first row that names a value holds the video's.
        per = (
            collect_fields(t, fs)
            .group_by(RAW_VIDEO, maintain_order=True)
            .agg([pl.col(f.out).drop_nulls().first() for f in fs[1:]])
        )
        videos = (
            per
            if videos is None
            else videos.join(per, on=RAW_VIDEO, how="full", coalesce=True, maintain_order="left")
        )
        files.append(daily.name)
    derivations = {
        S.WATCH_TIME_S: "play_duration / 1000",
        S.WATCH_RATIO: "watch_ratio (play_duration / video_duration where missing)",
        S.SKIPPED: f"watch_time_s < {config.skip_threshold_s} s",
        S.DURATION_S: "median of video_duration / 1000 over the video's events",
        S.LIKED: "null: KuaiRec logs no likes",
        S.FOLLOWED: "null",
        S.SHARED: "null",
    }
    if videos is not None:
        derivations[S.TAGS] = "item_categories.feat; category = its first tag"
    return Source(events, videos, None, files, derivations=derivations, dropped=dropped)


_KR_FLAGS = (("is_like", S.LIKED), ("is_follow", S.FOLLOWED), ("is_forward", S.SHARED))


def read_kuairand(src: Path, config: IngestConfig, _mapping: object = None) -> Source:
    """KuaiRand: one ``log_*.csv`` or a directory of them (plus its feature files)."""
    if src.is_dir():
        logs = sorted(src.glob("log_*.csv"))
        if not logs:
            raise IngestError(f"{src}: no KuaiRand log files (log_*.csv)")
    else:
        logs = [src]
    d = logs[0].parent
    dropped: dict[str, int] = {}
    parts = []
    for i, path in enumerate(logs):
        table = open_csv(path)
        table.require(["user_id", "video_id", "time_ms"])
        fields = [
            Field("user_id", RAW_USER, "id", required=True),
            Field("video_id", RAW_VIDEO, "id", required=True),
            _ts_field("time_ms", "ms"),
        ]
        fields += [
            Field(c, o, "float", lo=0.0)
            for c, o in (("play_time_ms", "__play_ms"), ("duration_ms", "__dur_ms"))
            if c in table.columns
        ]
        fields += _kuai_flags(table, (*_KR_FLAGS, ("is_rand", "__rand")))
        df = collect_fields(table, fields)
        df = _finish_ts(table, df, "ms", "time_ms", config, dropped)
        if "__play_ms" in df.columns and "__dur_ms" in df.columns:
            df = _derive_watch(df, "__play_ms", "__dur_ms", None)
        elif "__play_ms" in df.columns:
            df = df.with_columns(
                (pl.col("__play_ms") / 1000.0).cast(pl.Float32).alias(S.WATCH_TIME_S)
            )
        if "__rand" in df.columns:
            # is_rand marks the randomly exposed videos: a different serving policy.
            df = df.with_columns(
                pl.when(pl.col("__rand"))
                .then(pl.lit("random"))
                .otherwise(pl.lit("logged"))
                .alias(S.POLICY)
            )
        parts.append(
            df.drop("__play_ms", "__dur_ms", "__rand", strict=False).with_columns(
                pl.lit(i, pl.Int32).alias(FILE)
            )
        )
    events = pl.concat(parts, how="diagonal_relaxed")
    files = [p.name for p in logs]
    videos = users = None
    basic = _one(d, ("video_features_basic*.csv",), "KuaiRand video feature")
    if basic is not None:
        t = open_csv(basic)
        fs = [Field("video_id", RAW_VIDEO, "id", required=True)]
        optional = (
            Field("author_id", RAW_CREATOR, "id"),
            Field("upload_dt", S.UPLOAD_TS, "datetime"),
            Field("video_duration", "__dur_ms", "float", lo=0.0),
            Field("tag", "__tag", "text"),
        )
        fs += [f for f in optional if f.source in t.columns]
        v = collect_fields(t, fs)
        check_unique(v, t, RAW_VIDEO, "video_id")
        if "__tag" in v.columns:
            v = (
                v.with_columns(_split_tags(pl.col("__tag"), ",").alias(RAW_TAGS))
                .with_columns(_category_from_tags())
                .drop("__tag")
            )
        if "__dur_ms" in v.columns:
            v = v.with_columns(
                pl.when(pl.col("__dur_ms") > 0)
                .then(pl.col("__dur_ms") / 1000.0)
                .cast(pl.Float32)
                .alias(S.DURATION_S)
            ).drop("__dur_ms")
        videos = v.drop(LINE)
        files.append(basic.name)
    ufile = _one(d, ("user_features*.csv",), "KuaiRand user feature")
    if ufile is not None:
        t = open_csv(ufile)
        u = collect_fields(t, [Field("user_id", RAW_USER, "id", required=True)])
        check_unique(u, t, RAW_USER, "user_id")
        users = u.drop(LINE)
        files.append(ufile.name)
    derivations = {
        S.WATCH_TIME_S: "play_time_ms / 1000",
        S.WATCH_RATIO: "play_time_ms / duration_ms",
        S.SKIPPED: f"watch_time_s < {config.skip_threshold_s} s",
        S.LIKED: "is_like",
        S.FOLLOWED: "is_follow",
        S.SHARED: "is_forward",
        S.POLICY: "'random' where is_rand = 1, else 'logged'",
        S.DURATION_S: "video_duration / 1000 (else the median logged duration_ms / 1000)",
    }
    if videos is not None:
        derivations[S.TAGS] = "video_features_basic.tag; category = its first tag"
    return Source(events, videos, users, files, derivations=derivations, dropped=dropped)


# ---------------------------------------------------------------- sequential benchmarks

_SEQ_NOTE = (
    "synthetic: the source has only order; ts = 1970-01-01T00:00:00Z + k seconds for "
    "the user's k-th interaction (0-based)"
)


def _seq_ts(df: pl.DataFrame) -> pl.DataFrame:
    pos = pl.int_range(pl.len(), dtype=pl.Int64).over(RAW_USER)
    return df.sort(LINE).with_columns(epoch_to_ts(pos, "s").alias(S.TS))


def read_seq_pairs(src: Path, config: IngestConfig, _mapping: object = None) -> Source:
    """``user item`` per line, each user's lines in chronological order."""
    del config
    table = open_delimited(src, ["user", "item"], None)
    df = collect_fields(
        table,
        [
            Field("user", RAW_USER, "id", required=True),
            Field("item", RAW_VIDEO, "id", required=True),
        ],
    )
    events = _seq_ts(df).with_columns(pl.lit(0, pl.Int32).alias(FILE))
    return Source(events, None, None, [src.name], sequence=True, derivations={S.TS: _SEQ_NOTE})


def read_seq_lines(src: Path, config: IngestConfig, _mapping: object = None) -> Source:
    """``user item1 item2 ...`` per line (one line per user, items in chronological order)."""
    del config
    lf = lines_frame(src).with_columns(pl.col("__raw").str.extract_all(r"\S+").alias("__f"))
    lf = lf.filter(pl.col("__f").list.len() > 0)
    try:
        df = lf.select(LINE, "__f").collect(engine="streaming")
    except pl.exceptions.PolarsError as e:
        raise IngestError(f"{src}: cannot read: {e}") from e
    table = Table(src, lf, ("user", "items"))
    if df.height == 0:
        raise IngestError(f"{src}: no records (only blank lines)")
    short = df.filter(pl.col("__f").list.len() < 2)
    if short.height:
        raise IngestError(
            f"{table.where(int(short.item(0, LINE)))}: wrong column count: "
            f"expected a user and at least 1 item, found 1 field"
        )
    df = df.select(
        LINE,
        pl.col("__f").list.first().alias(RAW_USER),
        pl.col("__f").list.slice(1).alias(RAW_VIDEO),
    )
    check_unique(df, table, RAW_USER, "user")
    events = df.explode(RAW_VIDEO).with_columns(
        epoch_to_ts(pl.int_range(pl.len(), dtype=pl.Int64).over(LINE), "s").alias(S.TS),
        pl.lit(0, pl.Int32).alias(FILE),
    )
    return Source(events, None, None, [src.name], sequence=True, derivations={S.TS: _SEQ_NOTE})


# ---------------------------------------------------------------- generic CSV / Parquet

#: Mapping keys the generic format accepts: our column name -> how the source value is read.
CSV_KEYS: dict[str, tuple[str, Kind]] = {
    S.USER_IDX: (RAW_USER, "id"),
    S.VIDEO_IDX: (RAW_VIDEO, "id"),
    S.TS: ("__ts", "datetime"),
    S.WATCH_TIME_S: (S.WATCH_TIME_S, "float"),
    S.WATCH_RATIO: (S.WATCH_RATIO, "float"),
    S.SKIPPED: (S.SKIPPED, "bool"),
    S.LIKED: (S.LIKED, "bool"),
    S.SHARED: (S.SHARED, "bool"),
    S.FOLLOWED: (S.FOLLOWED, "bool"),
    S.POLICY: (S.POLICY, "text"),
    S.DURATION_S: (RAW_DURATION, "float"),
    S.CREATOR_IDX: (RAW_CREATOR, "id"),
    S.CATEGORY: (RAW_CATEGORY, "text"),
    S.TITLE: (S.TITLE, "text"),
}
_CSV_REQUIRED = (S.USER_IDX, S.VIDEO_IDX, S.TS)


def _ts_is_numeric(table: Table, column: str) -> bool:
    dtype = table.lf.collect_schema()[column]
    if dtype.is_numeric():
        return True
    if dtype != pl.String:
        return False
    sample = (
        table.lf.select(pl.col(column).str.strip_chars())
        .filter(pl.col(column).str.len_bytes() > 0)
        .head(1000)
        .collect()
    )
    if sample.height == 0:
        return True
    return bool(sample.get_column(column).cast(pl.Float64, strict=False).is_not_null().all())


def read_csv(src: Path, config: IngestConfig, mapping: Mapping[str, str] | None = None) -> Source:
    """Any CSV/TSV/Parquet of events; ``mapping`` maps our column names to the source's."""
    if not mapping:
        raise IngestError(
            f"{src}: the csv format needs a mapping from column names "
            f"({', '.join(CSV_KEYS)}) to source columns"
        )
    unknown = sorted(set(mapping) - set(CSV_KEYS))
    if unknown:
        raise IngestError(
            f"mapping: unknown column name(s) {unknown}; valid names: {', '.join(CSV_KEYS)}"
        )
    missing = [k for k in _CSV_REQUIRED if k not in mapping]
    if missing:
        raise IngestError(f"mapping: required column name(s) {missing} not mapped")
    if src.is_dir():
        raise IngestError(f"{src}: the csv format takes one file, not a directory")
    suffix = src.suffix.lower()
    if suffix in (".parquet", ".pq"):
        table = open_parquet(src)
    else:
        table = open_csv(src, separator="\t" if suffix in (".tsv", ".tab") else ",")
    table.require(list(mapping.values()))
    ts_col = mapping[S.TS]
    numeric_ts = _ts_is_numeric(table, ts_col)
    fields: list[Field] = []
    for key, column in mapping.items():
        out, kind = CSV_KEYS[key]
        if key == S.TS:
            fields.append(
                _ts_field(column, config.csv_ts_unit)
                if numeric_ts
                else Field(column, S.TS, "datetime")
            )
            continue
        lo = 0.0 if kind == "float" else None
        hi = 36_000.0 if key == S.DURATION_S else None
        fields.append(Field(column, out, kind, required=key in _CSV_REQUIRED, lo=lo, hi=hi))
    dropped: dict[str, int] = {}
    df = collect_fields(table, fields)
    if numeric_ts:
        df = _finish_ts(table, df, config.csv_ts_unit, ts_col, config, dropped)
    else:
        df = _drop_null_ts(table, df, ts_col, config, dropped)
    for key in (S.WATCH_TIME_S, S.WATCH_RATIO, RAW_DURATION):
        if key in df.columns:
            df = df.with_columns(pl.col(key).cast(pl.Float32))
    if S.WATCH_RATIO not in mapping and {S.WATCH_TIME_S, S.DURATION_S} <= set(mapping):
        dur = pl.col(RAW_DURATION)
        df = df.with_columns(
            pl.when(dur > 0)
            .then(pl.col(S.WATCH_TIME_S) / dur)
            .cast(pl.Float32)
            .alias(S.WATCH_RATIO)
        )
    derivations = {k: f"source column {v!r}" for k, v in mapping.items()}
    if S.WATCH_RATIO not in mapping and S.WATCH_RATIO in df.columns:
        derivations[S.WATCH_RATIO] = "watch_time_s / duration_s"
    if S.SKIPPED not in mapping and S.WATCH_TIME_S in mapping:
        derivations[S.SKIPPED] = f"watch_time_s < {config.skip_threshold_s} s"
    if S.CREATOR_IDX not in mapping:
        derivations[S.CREATOR_IDX] = "no creator column: each video is its own creator"
    return Source(
        df.with_columns(pl.lit(0, pl.Int32).alias(FILE)),
        None,
        None,
        [src.name],
        derivations=derivations,
        dropped=dropped,
    )


def _drop_null_ts(
    table: Table, df: pl.DataFrame, column: str, config: IngestConfig, dropped: dict[str, int]
) -> pl.DataFrame:
    missing = df.filter(pl.col(S.TS).is_null())
    if not missing.height:
        return df
    if not config.drop_missing_ts:
        raise IngestError(
            f"{table.where(int(missing.item(0, LINE)))}: field {column!r}: missing timestamp"
        )
    dropped["missing_ts"] = missing.height
    return df.filter(pl.col(S.TS).is_not_null())


Reader = Callable[[Path, IngestConfig, Mapping[str, str] | None], Source]

READERS: dict[str, Reader] = {
    "movielens": read_movielens,
    "kuairec": read_kuairec,
    "kuairand": read_kuairand,
    "seq-pairs": read_seq_pairs,
    "seq-lines": read_seq_lines,
    "csv": read_csv,
}
