"""Pure Polars statistics the candidate sources are built from.

Every function takes frames (events with the ``schema.EVENTS`` columns, ``schema.VIDEOS``,
``schema.USERS``) and returns a new frame; nothing is read or written here. Decay is
exponential in event age: an event ``age`` microseconds old weighs ``2 ** (-age / half_life)``,
and events after ``now`` are ignored (they have not happened yet at ``now``).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import polars as pl

from shortrec import schema as S
from shortrec.config import EngagementConfig

#: Region key of the global (all users) trending list.
GLOBAL = "*"
SCORE = "score"
WEIGHT = "weight"
IMPRESSIONS = "impressions"
ENGAGEMENT = "engagement"
TS_US = "ts_us"

US_PER_S = 1_000_000


def engagement_expr(cfg: EngagementConfig) -> pl.Expr:
    """Engagement of one impression (see :class:`~shortrec.config.EngagementConfig`), >= 0."""
    wr = pl.col(S.WATCH_RATIO).cast(pl.Float64).fill_null(cfg.missing_watch_ratio)
    flag = {
        c: pl.col(c).fill_null(False).cast(pl.Float64)
        for c in (S.LIKED, S.SHARED, S.FOLLOWED, S.SKIPPED)
    }
    value = (
        pl.min_horizontal(wr, pl.lit(cfg.watch_ratio_cap))
        + cfg.like_weight * flag[S.LIKED]
        + cfg.share_weight * flag[S.SHARED]
        + cfg.follow_weight * flag[S.FOLLOWED]
    )
    return pl.when(flag[S.SKIPPED] > 0).then(0.0).otherwise(value).alias(ENGAGEMENT)


def positive_expr(cfg: EngagementConfig) -> pl.Expr:
    """True for a positive impression: not skipped, watch ratio >= the threshold (a missing
    watch ratio counts as ``missing_watch_ratio``). Mirrors :func:`positive_mask`."""
    wr = pl.col(S.WATCH_RATIO).cast(pl.Float64).fill_null(cfg.missing_watch_ratio)
    return (~pl.col(S.SKIPPED).fill_null(False)) & (wr >= cfg.min_positive_watch_ratio)


def positive_mask(
    watch_ratio: npt.NDArray[np.float32] | None,
    skipped: npt.NDArray[np.bool_] | None,
    n: int,
    cfg: EngagementConfig,
) -> npt.NDArray[np.bool_]:
    """Numpy twin of :func:`positive_expr` for a request history of length ``n`` (NaN or a
    missing array means unknown)."""
    keep = np.ones(n, dtype=np.bool_)
    if skipped is not None:
        keep &= ~skipped
    if watch_ratio is not None:
        wr = np.where(np.isnan(watch_ratio), cfg.missing_watch_ratio, watch_ratio)
        keep &= wr >= cfg.min_positive_watch_ratio
    elif cfg.missing_watch_ratio < cfg.min_positive_watch_ratio:
        keep[:] = False
    return keep


def decay_expr(now_us: int, half_life_s: float) -> pl.Expr:
    """Decay weight ``2 ** (-(now - ts) / half_life)`` of each event (1 at ``now``)."""
    age_s = (pl.lit(now_us, pl.Int64) - pl.col(S.TS).dt.epoch("us")).cast(pl.Float64) / US_PER_S
    return (-math.log(2.0) * age_s / half_life_s).exp()


def _until(events: pl.LazyFrame, now_us: int) -> pl.LazyFrame:
    return events.filter(pl.col(S.TS).dt.epoch("us") <= now_us)


def decayed_engagement(
    events: pl.LazyFrame,
    users: pl.LazyFrame,
    now_us: int,
    half_life_s: float,
    cfg: EngagementConfig,
    per_region: bool,
) -> pl.DataFrame:
    """Time-decayed engagement per (region, video) at ``now_us``.

    Returns ``[region: str, video_idx: i32, score: f64]``: for the key :data:`GLOBAL` the sum
    over all events, and (if ``per_region``) per region of the user who watched; users without
    a region count only towards the global list.
    """
    ev = _until(events, now_us).with_columns(
        (engagement_expr(cfg) * decay_expr(now_us, half_life_s)).alias(SCORE)
    )
    glob = (
        ev.group_by(S.VIDEO_IDX)
        .agg(pl.col(SCORE).sum())
        .select(pl.lit(GLOBAL).alias(S.REGION), S.VIDEO_IDX, SCORE)
    )
    parts = [glob]
    if per_region:
        reg = (
            ev.join(users.select(S.USER_IDX, S.REGION), on=S.USER_IDX, how="inner")
            .filter(pl.col(S.REGION).is_not_null())
            .group_by(S.REGION, S.VIDEO_IDX)
            .agg(pl.col(SCORE).sum())
            .select(S.REGION, S.VIDEO_IDX, SCORE)
        )
        parts.append(reg)
    return (
        pl.concat(parts)
        .filter(pl.col(SCORE) > 0)
        .sort(S.REGION, SCORE, S.VIDEO_IDX, descending=[False, True, False])
        .collect()
    )


def advance_decayed(
    prev: pl.DataFrame, prev_now_us: int, new: pl.DataFrame, now_us: int, half_life_s: float
) -> pl.DataFrame:
    """Incremental refresh: ``prev`` scores (valid at ``prev_now_us``) decayed to ``now_us``
    plus ``new`` (the :func:`decayed_engagement` of only the events since, at ``now_us``).

    Exact because decay is multiplicative: ``score(now) = score(prev) * 2**(-dt/h) + new``.
    """
    if now_us < prev_now_us:
        raise ValueError(f"cannot move trending back in time ({now_us} < {prev_now_us})")
    factor = 2.0 ** (-(now_us - prev_now_us) / US_PER_S / half_life_s)
    return (
        pl.concat([prev.with_columns(pl.col(SCORE) * factor), new])
        .group_by(S.REGION, S.VIDEO_IDX)
        .agg(pl.col(SCORE).sum())
        .sort(S.REGION, SCORE, S.VIDEO_IDX, descending=[False, True, False])
    )


def video_stats(events: pl.LazyFrame, cfg: EngagementConfig) -> pl.DataFrame:
    """Per video: ``[video_idx, impressions: u32, engagement: f64]`` (sum, undecayed)."""
    return (
        events.group_by(S.VIDEO_IDX)
        .agg(pl.len().alias(IMPRESSIONS), engagement_expr(cfg).sum().alias(ENGAGEMENT))
        .sort(S.VIDEO_IDX)
        .collect()
    )


def smoothed_engagement(stats: pl.DataFrame, prior_strength: float) -> pl.DataFrame:
    """Adds ``score``: the Bayesian-smoothed engagement per impression, weighted by evidence.

    ``score = (E + m * mu) / (n + m) * log(1 + n)`` with ``E`` a video's engagement, ``n`` its
    impressions, ``mu`` the catalogue's engagement per impression and ``m`` the prior strength
    (the m-estimate of Cestnik 1990). The ``log(1 + n)`` factor ranks a well-liked video with
    much evidence above one lucky view, and keeps popularity information on sources where
    every interaction is positive (the smoothed rate alone is then constant).
    """
    total_n = float(stats.get_column(IMPRESSIONS).sum() or 0)
    mu = float(stats.get_column(ENGAGEMENT).sum() or 0.0) / total_n if total_n else 0.0
    n = pl.col(IMPRESSIONS).cast(pl.Float64)
    return stats.with_columns(
        ((pl.col(ENGAGEMENT) + prior_strength * mu) / (n + prior_strength) * n.log1p())
        .fill_nan(0.0)
        .alias(SCORE)
    )


def per_tag_top(videos: pl.DataFrame, scored: pl.DataFrame, top_n: int) -> pl.DataFrame:
    """Top ``top_n`` videos per tag by ``scored``'s score: ``[tag_idx, video_idx, score]``,
    sorted by tag then score descending (ties by video_idx)."""
    return (
        videos.select(S.VIDEO_IDX, pl.col(S.TAGS).alias(S.TAG_IDX))
        .explode(S.TAG_IDX)
        .drop_nulls(S.TAG_IDX)
        .join(scored.select(S.VIDEO_IDX, SCORE), on=S.VIDEO_IDX, how="inner")
        .filter(pl.col(SCORE) > 0)
        .sort(S.TAG_IDX, SCORE, S.VIDEO_IDX, descending=[False, True, False])
        .group_by(S.TAG_IDX, maintain_order=True)
        .head(top_n)
        .select(pl.col(S.TAG_IDX).cast(pl.Int32), pl.col(S.VIDEO_IDX).cast(pl.Int32), SCORE)
    )


def per_category_top(videos: pl.DataFrame, scored: pl.DataFrame, top_n: int) -> pl.DataFrame:
    """Top ``top_n`` videos per category: ``[category, video_idx, score]`` (null category is
    its own group), sorted by category then score descending."""
    return (
        videos.select(S.VIDEO_IDX, S.CATEGORY)
        .join(scored.select(S.VIDEO_IDX, SCORE), on=S.VIDEO_IDX, how="inner")
        .filter(pl.col(SCORE) > 0)
        .sort(S.CATEGORY, SCORE, S.VIDEO_IDX, descending=[False, True, False], nulls_last=True)
        .group_by(S.CATEGORY, maintain_order=True)
        .head(top_n)
        .select(S.CATEGORY, pl.col(S.VIDEO_IDX).cast(pl.Int32), SCORE)
    )


def user_tag_affinity(
    events: pl.LazyFrame,
    videos: pl.LazyFrame,
    now_us: int,
    half_life_s: float,
    cfg: EngagementConfig,
    max_tags: int,
) -> pl.DataFrame:
    """Each user's decayed tag affinities at ``now_us``: ``[user_idx, tag_idx, weight]``.

    An event's decayed engagement is shared equally among its video's tags; per user the
    ``max_tags`` heaviest tags are kept and their weights normalised to sum to 1. Sorted by
    user, then weight descending.
    """
    tags = videos.select(
        S.VIDEO_IDX, pl.col(S.TAGS).alias(S.TAG_IDX), pl.col(S.TAGS).list.len().alias("_nt")
    ).filter(pl.col("_nt") > 0)
    return (
        _until(events, now_us)
        .select(
            S.USER_IDX,
            S.VIDEO_IDX,
            (engagement_expr(cfg) * decay_expr(now_us, half_life_s)).alias(WEIGHT),
        )
        .filter(pl.col(WEIGHT) > 0)
        .join(tags, on=S.VIDEO_IDX, how="inner")
        .with_columns(pl.col(WEIGHT) / pl.col("_nt"))
        .explode(S.TAG_IDX)
        .group_by(S.USER_IDX, S.TAG_IDX)
        .agg(pl.col(WEIGHT).sum())
        .sort(S.USER_IDX, WEIGHT, S.TAG_IDX, descending=[False, True, False])
        .group_by(S.USER_IDX, maintain_order=True)
        .head(max_tags)
        .with_columns(pl.col(WEIGHT) / pl.col(WEIGHT).sum().over(S.USER_IDX))
        .select(S.USER_IDX, pl.col(S.TAG_IDX).cast(pl.Int32), pl.col(WEIGHT).cast(pl.Float32))
        .collect()
    )


def user_histories(events: pl.LazyFrame, now_us: int, length: int) -> pl.DataFrame:
    """Per user at ``now_us``: the last ``length`` impressions (most recent last) as lists
    ``history``/``watch_ratio``/``skipped``, and ``seen``, every distinct video shown.

    Order is by (ts, event_id), so equal timestamps still have one defined order.
    """
    return (
        _until(events, now_us)
        .sort(S.USER_IDX, S.TS, S.EVENT_ID)
        .group_by(S.USER_IDX, maintain_order=True)
        .agg(
            pl.col(S.VIDEO_IDX).tail(length).alias("history"),
            pl.col(S.WATCH_RATIO).tail(length).cast(pl.Float32).fill_null(float("nan")),
            pl.col(S.SKIPPED).tail(length),
            pl.col(S.VIDEO_IDX).unique().alias("seen"),
        )
        .collect()
    )


def user_profiles(users: pl.DataFrame) -> pl.DataFrame:
    """``[user_idx, region, age_bucket, device]`` (nullable strings)."""
    return users.select(S.USER_IDX, S.REGION, S.AGE_BUCKET, S.DEVICE)
