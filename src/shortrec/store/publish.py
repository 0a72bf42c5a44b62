"""Load offline outputs into the online store under a new version and switch to it atomically.

``publish`` writes everything under a fresh version prefix while serving keeps reading the
current one, then flips the single ``current`` pointer; readers therefore see the old version
or the new one, never a mix. Older versions expire ``old_version_grace_s`` after the switch.
A publish that dies half-way leaves an unreferenced version that the next successful publish
expires. Publishes must not run concurrently (a second one that finishes later than a newer
one is refused by ``activate``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import polars as pl

from shortrec import schema as S
from shortrec.config import StoreConfig
from shortrec.store import codec
from shortrec.store.protocol import OnlineStore
from shortrec.store.types import (
    GLOBAL_REGION,
    NO_IDX,
    NO_TS,
    ScoredRows,
    StoreInputError,
    check_id,
)

_STAT_COLUMNS = (S.ENGAGE_RATE, S.WATCH_RATIO_MEAN, S.SKIP_RATE, S.LIKE_RATE)


@dataclass(frozen=True)
class Snapshot:
    """Offline outputs to publish, all valid at ``as_of_us`` (µs UTC).

    * ``videos``: ``schema.VIDEOS`` columns (``title`` optional, extra columns ignored).
    * ``video_stats``: ``schema.VIDEO_STATS`` columns (smoothed statistics), optional.
    * ``trending``: group = region (``"*"`` the global list), score = decayed engagement at
      ``as_of_us`` (retrieval's ``decayed_engagement``), optional.
    * ``tag_top``: group = tag_idx, score = the per-tag ranking score, optional.
    * ``fresh``: video_idx of the fresh pool (scored by upload time), optional.
    * ``user_vocab``: ``schema.VOCAB`` (user_idx -> external user id), required when
      ``histories`` or ``affinities`` are given, since the store keys users by external id.
    * ``histories``: ``user_idx``, ``hist_video_idx`` (list, oldest first) and optionally
      ``hist_ts`` (list of UTC datetimes; default ``as_of_us``), ``watch_ratio`` (list,
      null -> NaN), ``skipped`` (list, null -> False), all lists of one row of equal length.
    * ``affinities``: ``user_idx``, ``tag_idx``, ``affinity`` (decayed engagement at
      ``as_of_us``, the same units as ``StoreEvent.engagement``).
    """

    as_of_us: int
    videos: pl.DataFrame
    video_stats: pl.DataFrame | None = None
    trending: ScoredRows | None = None
    tag_top: ScoredRows | None = None
    fresh: npt.NDArray[np.integer] | None = None
    user_vocab: pl.DataFrame | None = None
    histories: pl.DataFrame | None = None
    affinities: pl.DataFrame | None = None


def _need(df: pl.DataFrame, cols: tuple[str, ...], table: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise StoreInputError(f"publish: {table}: missing column(s) {missing}")


def _chunks(n: int, size: int) -> Iterator[slice]:
    for lo in range(0, n, size):
        yield slice(lo, min(n, lo + size))


def _video_rows(snap: Snapshot, cfg: StoreConfig) -> pl.DataFrame:
    v = snap.videos
    _need(v, (S.VIDEO_IDX, S.CREATOR_IDX, S.CATEGORY, S.TAGS, S.DURATION_S, S.UPLOAD_TS), "videos")
    out = v.select(
        pl.col(S.VIDEO_IDX).cast(pl.Int32),
        pl.col(S.CREATOR_IDX).cast(pl.Int32),
        pl.col(S.CATEGORY).cast(pl.Int32).fill_null(NO_IDX),
        pl.col(S.TAGS).cast(pl.List(pl.Int32)).fill_null([]).list.head(cfg.max_video_tags),
        pl.col(S.DURATION_S).cast(pl.Float32).fill_null(float("nan")),
        pl.col(S.UPLOAD_TS).cast(S.UTC_TS).dt.epoch("us").fill_null(NO_TS).alias(S.TS),
    )
    if out.get_column(S.VIDEO_IDX).is_duplicated().any():
        raise StoreInputError(f"publish: videos: duplicate {S.VIDEO_IDX} values")
    if snap.video_stats is not None:
        _need(snap.video_stats, (S.VIDEO_IDX, S.IMPRESSIONS, *_STAT_COLUMNS), "video_stats")
        stats = snap.video_stats.select(
            pl.col(S.VIDEO_IDX).cast(pl.Int32),
            pl.col(S.IMPRESSIONS).cast(pl.Int64),
            *[pl.col(c).cast(pl.Float32) for c in _STAT_COLUMNS],
        )
        out = out.join(stats, on=S.VIDEO_IDX, how="left")
    else:
        out = out.with_columns(
            pl.lit(None, pl.Int64).alias(S.IMPRESSIONS),
            *[pl.lit(None, pl.Float32).alias(c) for c in _STAT_COLUMNS],
        )
    return out.with_columns(
        pl.col(S.IMPRESSIONS).fill_null(0),
        *[pl.col(c).fill_null(float("nan")) for c in _STAT_COLUMNS],
    )


def _user_rows(snap: Snapshot, cfg: StoreConfig) -> pl.DataFrame | None:
    if snap.histories is None and snap.affinities is None:
        return None
    if snap.user_vocab is None:
        raise StoreInputError("publish: user_vocab is required to publish user tables")
    _need(snap.user_vocab, (S.IDX, S.ID), "user_vocab")
    parts: list[pl.DataFrame] = []
    if snap.histories is not None:
        h = snap.histories
        _need(h, (S.USER_IDX, S.HIST_VIDEO_IDX), "histories")
        n = pl.col(S.HIST_VIDEO_IDX).list.len()
        ts = (
            pl.col(S.HIST_TS).cast(pl.List(S.UTC_TS)).list.eval(pl.element().dt.epoch("us"))
            if S.HIST_TS in h.columns
            else pl.lit(None, pl.List(pl.Int64))
        )
        wr = (
            pl.col(S.WATCH_RATIO).cast(pl.List(pl.Float32))
            if S.WATCH_RATIO in h.columns
            else pl.lit(None, pl.List(pl.Float32))
        )
        sk = (
            pl.col(S.SKIPPED).cast(pl.List(pl.Boolean))
            if S.SKIPPED in h.columns
            else pl.lit(None, pl.List(pl.Boolean))
        )
        hh = h.select(
            pl.col(S.USER_IDX).cast(pl.Int32),
            pl.col(S.HIST_VIDEO_IDX).cast(pl.List(pl.Int32)).fill_null([]),
            ts.alias("_ts"),
            wr.alias("_wr"),
            sk.alias("_sk"),
            n.alias("_n"),
        )
        for c in ("_ts", "_wr", "_sk"):
            bad = hh.filter(pl.col(c).is_not_null() & (pl.col(c).list.len() != pl.col("_n")))
            if bad.height:
                raise StoreInputError(
                    f"publish: histories: user_idx {bad.get_column(S.USER_IDX)[0]}: list "
                    f"{c[1:]} differs in length from {S.HIST_VIDEO_IDX}"
                )
        parts.append(hh.drop("_n"))
    if snap.affinities is not None:
        a = snap.affinities
        _need(a, (S.USER_IDX, S.TAG_IDX, S.AFFINITY), "affinities")
        bad_w = a.filter(
            ~pl.col(S.AFFINITY).cast(pl.Float64).is_finite() | (pl.col(S.AFFINITY) < 0)
        )
        if bad_w.height:
            raise StoreInputError(
                f"publish: affinities: user_idx "
                f"{bad_w.get_column(S.USER_IDX)[0]}: field {S.AFFINITY} "
                "not finite and >= 0"
            )
        aa = (
            a.select(
                pl.col(S.USER_IDX).cast(pl.Int32),
                pl.col(S.TAG_IDX).cast(pl.Int32),
                pl.col(S.AFFINITY).cast(pl.Float32),
            )
            .sort(S.USER_IDX, S.AFFINITY, S.TAG_IDX, descending=[False, True, False])
            .group_by(S.USER_IDX, maintain_order=True)
            .agg(
                pl.col(S.TAG_IDX).head(cfg.max_user_tags).alias("_t"),
                pl.col(S.AFFINITY).head(cfg.max_user_tags).alias("_w"),
            )
        )
        parts.append(aa)
    users = parts[0]
    for p in parts[1:]:
        users = users.join(p, on=S.USER_IDX, how="full", coalesce=True)
    vocab = snap.user_vocab.select(
        pl.col(S.IDX).cast(pl.Int32).alias(S.USER_IDX), pl.col(S.ID).cast(pl.String)
    )
    users = users.join(vocab, on=S.USER_IDX, how="left")
    missing = users.filter(pl.col(S.ID).is_null())
    if missing.height:
        raise StoreInputError(
            f"publish: user_vocab has no id for user_idx {missing.get_column(S.USER_IDX)[0]}"
        )
    return users


def _user_blobs(
    users: pl.DataFrame, as_of_us: int, cfg: StoreConfig
) -> Iterator[tuple[str, bytes, bytes]]:
    cols = users.columns
    cap = cfg.history_cap
    for row in users.iter_rows(named=True):
        uid = check_id(row[S.ID], "user_id", f"publish: user_idx {row[S.USER_IDX]}")
        hb = b""
        if S.HIST_VIDEO_IDX in cols and row[S.HIST_VIDEO_IDX]:
            vids = np.asarray(row[S.HIST_VIDEO_IDX], np.int32)[-cap:]
            n = vids.shape[0]
            ts = (
                np.asarray(row["_ts"], np.int64)[-cap:]
                if row["_ts"] is not None
                else np.full(n, as_of_us, np.int64)
            )
            wr = (
                np.array([math.nan if x is None else x for x in row["_wr"]], np.float32)[-cap:]
                if row["_wr"] is not None
                else np.full(n, np.nan, np.float32)
            )
            sk = (
                np.array([bool(x) for x in row["_sk"]], np.bool_)[-cap:]
                if row["_sk"] is not None
                else np.zeros(n, np.bool_)
            )
            hb = codec.encode_history(vids, ts, wr, sk)
        ab = b""
        if "_t" in cols and row["_t"]:
            ab = codec.encode_affinity(
                np.asarray(row["_t"], np.int32), np.asarray(row["_w"], np.float32)
            )
        yield uid, hb, ab


def publish(store: OnlineStore, snap: Snapshot, cfg: StoreConfig) -> int:
    """Write ``snap`` under a new version of ``store`` and switch to it; return the version.

    Raises :class:`StoreInputError` (a ``BadInput``) for malformed tables, before anything
    becomes visible to readers.
    """
    videos = _video_rows(snap, cfg)
    users = _user_rows(snap, cfg)
    trending = snap.trending.groups() if snap.trending is not None else []
    for region, _, _ in trending:
        check_id(str(region), S.REGION, "publish: trending")
    tag_lists = snap.tag_top.groups() if snap.tag_top is not None else []
    for tag, _, _ in tag_lists:
        if not isinstance(tag, int | np.integer) or int(tag) < 0:
            raise StoreInputError(f"publish: tag_top: group {tag!r} is not a tag index >= 0")
    upload = dict(
        zip(
            videos.get_column(S.VIDEO_IDX).to_list(), videos.get_column(S.TS).to_list(), strict=True
        )
    )

    fresh = None
    if snap.fresh is not None:
        fresh = np.unique(np.asarray(snap.fresh, np.int64))
        unknown = [int(v) for v in fresh if int(v) not in upload or upload[int(v)] == NO_TS]
        if unknown:
            raise StoreInputError(
                f"publish: fresh: video_idx {unknown[:3]} not in videos or without upload time"
            )

    version = store.begin_version()
    for sl in _chunks(videos.height, cfg.publish_chunk):
        part = videos[sl]
        rows = [
            (
                r[S.VIDEO_IDX],
                codec.encode_video(
                    codec.VideoRecord(
                        creator_idx=r[S.CREATOR_IDX],
                        category=r[S.CATEGORY],
                        tags=tuple(r[S.TAGS]),
                        duration_s=r[S.DURATION_S],
                        upload_us=r[S.TS],
                        impressions=r[S.IMPRESSIONS],
                        engage_rate=r[S.ENGAGE_RATE],
                        watch_ratio_mean=r[S.WATCH_RATIO_MEAN],
                        skip_rate=r[S.SKIP_RATE],
                        like_rate=r[S.LIKE_RATE],
                    ),
                    cfg.max_video_tags,
                ),
            )
            for r in part.iter_rows(named=True)
        ]
        store.write_videos(version, rows)
    if users is not None:
        batch: list[tuple[str, bytes, bytes]] = []
        for rec in _user_blobs(users, snap.as_of_us, cfg):
            batch.append(rec)
            if len(batch) >= cfg.publish_chunk:
                store.write_users(version, batch)
                batch = []
        if batch:
            store.write_users(version, batch)
    regions = {str(r) for r, _, _ in trending}
    for region, vids, scores in trending:
        store.write_ranked(
            version,
            "trending",
            str(region),
            vids[: cfg.trending_cap],
            scores[: cfg.trending_cap],
            landmark_us=snap.as_of_us,
        )
    if GLOBAL_REGION not in regions:
        # live events need the global list's landmark even when nothing trended offline
        store.write_ranked(
            version,
            "trending",
            GLOBAL_REGION,
            np.zeros(0, np.int32),
            np.zeros(0),
            landmark_us=snap.as_of_us,
        )
    for tag, vids, scores in tag_lists:
        store.write_ranked(version, "tag", str(int(tag)), vids, scores)
    if fresh is not None:
        store.write_ranked(
            version, "fresh", "", fresh, np.array([upload[int(v)] for v in fresh], np.float64)
        )
    store.activate(version, snap.as_of_us)
    return version
