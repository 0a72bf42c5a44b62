"""Synthetic experiment logs with planted effects, for tests and the analysis benchmark.

Not a user model (the world simulator in ``data/`` is): each user draws an activity level and
a base engagement propensity, sessions of geometric length are served in pages, and each arm
shifts the skip logit and the watch ratio by a known amount, so the analysis must find it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from shortrec import schema as S
from shortrec.experiments import logs as L

_T0_US = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z


@dataclass(frozen=True)
class ArmEffect:
    """A planted effect: ``skip_logit`` is added to the skip log-odds of every impression,
    ``watch_mult`` multiplies the watch ratio of non-skipped impressions."""

    name: str
    weight: float = 1.0
    skip_logit: float = 0.0
    watch_mult: float = 1.0


def synthetic_logs(
    experiment: str,
    arms: Sequence[ArmEffect],
    n_users: int,
    rng: np.random.Generator,
    sessions_per_user: float = 3.0,
    mean_session_len: float = 12.0,
    page_size: int = 8,
    n_videos: int = 50_000,
    n_categories: int = 24,
    days: int = 7,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Return ``(exposures, events)``: an :data:`~shortrec.experiments.logs.EXPOSURES` table
    (one row per served video) and a ``schema.EVENTS`` table (one row per viewed video).

    About ``n_users * sessions_per_user * mean_session_len`` events. Users ``0..n_users-1`` are
    split over ``arms`` by weight (multinomial, so the sample ratio matches the allocation).
    """
    w = np.array([a.weight for a in arms], dtype=np.float64)
    user_arm = rng.choice(len(arms), size=n_users, p=w / w.sum())
    n_sess = 1 + rng.poisson(max(sessions_per_user - 1, 0.0), size=n_users)
    propensity = rng.normal(0.0, 0.8, size=n_users)
    # sessions
    s_user = np.repeat(np.arange(n_users, dtype=np.int64), n_sess)
    n_s = s_user.size
    s_len = rng.geometric(1.0 / mean_session_len, size=n_s)
    s_start = _T0_US + (rng.random(n_s) * days * 86_400e6).astype(np.int64)
    # impressions (viewed videos), in session order
    e_sess = np.repeat(np.arange(n_s, dtype=np.int64), s_len)
    n_e = e_sess.size
    first = np.repeat(np.cumsum(s_len) - s_len, s_len)
    pos = np.arange(n_e, dtype=np.int64) - first
    u = s_user[e_sess]
    arm = user_arm[u]
    skip_shift = np.array([a.skip_logit for a in arms])[arm]
    mult = np.array([a.watch_mult for a in arms])[arm]
    p_skip = 1.0 / (1.0 + np.exp(-(-0.4 - propensity[u] + skip_shift)))
    skipped = rng.random(n_e) < p_skip
    duration = np.exp(rng.normal(np.log(22.0), 0.6, size=n_e))
    ratio = np.where(
        skipped,
        rng.uniform(0.0, 0.08, size=n_e),
        rng.gamma(2.0, 0.35, size=n_e) * np.exp(0.3 * propensity[u]) * mult,
    )
    liked = ~skipped & (rng.random(n_e) < 0.04 * np.exp(0.5 * propensity[u]))
    video = rng.integers(0, n_videos, size=n_e).astype(np.int32)
    ts = s_start[e_sess] + pos * 15_000_000
    page = pos // page_size
    request = e_sess * 1_000 + page  # unique per (session, page)
    events = pl.DataFrame(
        {
            S.EVENT_ID: np.arange(n_e, dtype=np.int64),
            S.REQUEST_ID: request,
            S.SESSION_ID: e_sess,
            S.USER_IDX: u.astype(np.int32),
            S.VIDEO_IDX: video,
            S.TS: pl.Series(ts).cast(S.UTC_TS),
            S.POSITION: pos.astype(np.int32),
            S.WATCH_TIME_S: (ratio * duration).astype(np.float32),
            S.WATCH_RATIO: ratio.astype(np.float32),
            S.SKIPPED: skipped,
            S.LIKED: liked,
        }
    )
    events = S.conform(events, S.EVENTS)
    # exposures: every page that was opened, full pages (the tail of a page is served, unseen)
    pages = np.unique(request)
    p_sess = pages // 1_000
    p_no = pages % 1_000
    rank = np.tile(np.arange(page_size, dtype=np.int32), pages.size)
    x_req = np.repeat(pages, page_size)
    x_sess = np.repeat(p_sess, page_size)
    x_pos = np.repeat(p_no, page_size) * page_size + rank
    viewed = x_pos < s_len[x_sess]
    x_video = rng.integers(0, n_videos, size=x_req.size).astype(np.int32)
    # served slots that were viewed show the viewed video
    x_video[viewed] = video[first[np.searchsorted(e_sess, x_sess[viewed])] + x_pos[viewed]]
    x_user = s_user[x_sess]
    names = [a.name for a in arms]
    arm_col = pl.Series([names[i] for i in user_arm[x_user]], dtype=pl.String)
    exposures = (
        pl.DataFrame(
            {
                S.REQUEST_ID: x_req,
                S.SESSION_ID: x_sess,
                S.USER_IDX: x_user.astype(np.int32),
                S.TS: pl.Series(
                    s_start[x_sess] + np.repeat(p_no, page_size) * page_size * 15_000_000
                ).cast(S.UTC_TS),
                L.RANK: rank,
                S.VIDEO_IDX: x_video,
                S.CATEGORY: (x_video % n_categories).astype(np.int16),
                "_arm": arm_col,
            }
        )
        .with_columns(
            pl.concat_list(
                pl.struct(pl.lit(experiment).alias(L.EXPERIMENT), pl.col("_arm").alias(L.ARM))
            ).alias(L.ARMS),
            pl.lit("synthetic", dtype=pl.String).alias(L.CONFIG_VERSION),
        )
        .drop("_arm")
    )
    return exposures, events
