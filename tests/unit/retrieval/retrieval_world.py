"""A tiny world with known structure, shared by the retrieval tests.

``n_topics`` topics; video ``v`` has topic ``v % n_topics`` (= its category), two tags of that
topic (tag ``2t`` and ``2t+1``) and creator ``v % (2 n_topics)``. User ``u`` likes topic
``u % n_topics``: it watches videos of its topic to the end and skips the others. Time runs over
``days`` days; the last ``n_fresh`` videos are uploaded in the last day and never shown.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import polars as pl

from shortrec import schema as S

T0 = int(dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp() * 1_000_000)
DAY = 86_400 * 1_000_000


@dataclass(frozen=True)
class World:
    videos: pl.DataFrame
    users: pl.DataFrame
    events: pl.DataFrame
    n_topics: int
    n_fresh: int
    now_us: int

    def topic_of_user(self, u: int) -> int:
        return u % self.n_topics


def make_world(
    n_users: int = 60,
    n_videos: int = 120,
    n_topics: int = 4,
    n_fresh: int = 8,
    per_user: int = 30,
    days: int = 10,
    seed: int = 0,
) -> World:
    rng = np.random.default_rng(seed)
    v = np.arange(n_videos)
    topic = v % n_topics
    upload = T0 + rng.integers(0, DAY, n_videos)
    upload[-n_fresh:] = T0 + (days - 1) * DAY + rng.integers(0, DAY // 2, n_fresh)
    videos = S.conform(
        pl.DataFrame(
            {
                S.VIDEO_IDX: v,
                S.CREATOR_IDX: v % (2 * n_topics),
                S.CATEGORY: topic,
                S.TAGS: [[2 * t, 2 * t + 1] for t in topic],
                S.DURATION_S: np.full(n_videos, 20.0),
                S.UPLOAD_TS: pl.Series(upload).cast(pl.Datetime("us", "UTC")),
                S.TITLE: [f"v{i}" for i in v],
            }
        ),
        S.VIDEOS,
    )
    users = S.conform(
        pl.DataFrame(
            {
                S.USER_IDX: np.arange(n_users),
                S.REGION: [S.REGIONS[u % 2] for u in range(n_users)],
                S.AGE_BUCKET: [S.AGE_BUCKETS[u % 5] for u in range(n_users)],
                S.DEVICE: [S.DEVICES[u % 3] for u in range(n_users)],
            }
        ),
        S.USERS,
    )
    shown = np.arange(n_videos - n_fresh)
    # popularity skew inside a topic: low video ids are shown more often
    p = 1.0 / (1.0 + shown // n_topics)
    rows = []
    for u in range(n_users):
        own = shown[shown % n_topics == u % n_topics]
        k_own = int(per_user * 0.7)
        vids = np.concatenate(
            [
                rng.choice(own, k_own, p=p[own] / p[own].sum()),
                rng.choice(shown, per_user - k_own, p=p / p.sum()),
            ]
        )
        ts = np.sort(T0 + DAY + rng.integers(0, (days - 2) * DAY, per_user))
        rng.shuffle(vids)
        for t, vid in zip(ts, vids, strict=True):
            match = vid % n_topics == u % n_topics
            rows.append((u, int(vid), int(t), 1.0 if match else 0.05, not match))
    ev = pl.DataFrame(
        rows, schema=[S.USER_IDX, S.VIDEO_IDX, "t", S.WATCH_RATIO, S.SKIPPED], orient="row"
    )
    ev = ev.with_columns(
        pl.int_range(pl.len()).alias(S.EVENT_ID),
        pl.col("t").cast(pl.Datetime("us", "UTC")).alias(S.TS),
        (pl.col(S.WATCH_RATIO) * 20.0).alias(S.WATCH_TIME_S),
        pl.lit(False).alias(S.LIKED),
    )
    events = S.check(S.conform(ev, S.EVENTS), S.EVENTS, "world")
    return World(videos, users, events, n_topics, n_fresh, T0 + days * DAY)
