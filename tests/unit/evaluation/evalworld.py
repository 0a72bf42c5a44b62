"""A checkerboard world whose right answer is known, for the evaluation tests.

Users and videos come in two groups (user ``u`` in group ``u % 2``, video ``v`` in group
``v % 2``). Users engage with videos of their own group (watch ratio 0.9) and skip the others
(watch ratio 0.05). :class:`IdealRecommender` and :class:`CheckerboardOracle` know the groups.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl

from shortrec import schema as S
from shortrec.domain import ExpectedResponse, FloatArray, IntArray, TrainingData

DAY_US = 86_400 * 1_000_000
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
DURATION_S = 10.0


def ts(day: float) -> dt.datetime:
    return T0 + dt.timedelta(days=day)


def us(day: float) -> int:
    return int(ts(day).timestamp() * 1_000_000)


def etl_frame(rows: list[dict[str, object]]) -> pl.DataFrame:
    """An ETL_EVENTS-shaped frame from partial rows (missing nullable columns are null)."""
    base: dict[str, object] = {
        S.EVENT_ID: None,
        S.REQUEST_ID: None,
        S.SESSION_ID: None,
        S.USER_IDX: None,
        S.VIDEO_IDX: None,
        S.TS: None,
        S.POSITION: None,
        S.WATCH_TIME_S: None,
        S.WATCH_RATIO: None,
        S.SKIPPED: None,
        S.LIKED: None,
        S.SHARED: None,
        S.FOLLOWED: None,
        S.POLICY: None,
        S.SPLIT: S.TRAIN,
        S.LOO_SPLIT: S.TRAIN,
    }
    full = []
    for i, r in enumerate(rows):
        d = dict(base)
        d[S.EVENT_ID] = i
        d.update(r)
        full.append(d)
    df = pl.DataFrame(full, schema=S.ETL_EVENTS.polars_schema)
    return S.check(df, S.ETL_EVENTS, "test events")


def videos_frame(n: int, late: dict[int, float] | None = None, n_creators: int = 6) -> pl.DataFrame:
    """``n`` videos: creator ``v % n_creators``, tags ``[v % 2, 2 + v % 5]``, uploaded on day
    -1 except ``late`` (video -> upload day)."""
    late = late or {}
    df = pl.DataFrame(
        {
            S.VIDEO_IDX: list(range(n)),
            S.CREATOR_IDX: [v % n_creators for v in range(n)],
            S.CATEGORY: [v % 2 for v in range(n)],
            S.TAGS: [[v % 2, 2 + v % 5] for v in range(n)],
            S.DURATION_S: [DURATION_S] * n,
            S.UPLOAD_TS: [ts(late.get(v, -1.0)) for v in range(n)],
            S.TITLE: [f"video {v}" for v in range(n)],
        },
        schema=S.VIDEOS.polars_schema,
    )
    return S.check(df, S.VIDEOS, "test videos")


def users_frame(n: int) -> pl.DataFrame:
    df = pl.DataFrame({S.USER_IDX: list(range(n))}, schema={S.USER_IDX: pl.Int32()})
    return S.conform(df, S.USERS)


def view(
    user: int, video: int, day: float, split: str, loo: str = S.TRAIN, session: int | None = None
) -> dict[str, object]:
    engaged = video % 2 == user % 2
    ratio = 0.9 if engaged else 0.05
    return {
        S.USER_IDX: user,
        S.VIDEO_IDX: video,
        S.TS: ts(day),
        S.WATCH_RATIO: ratio,
        S.WATCH_TIME_S: ratio * DURATION_S,
        S.SKIPPED: not engaged,
        S.SPLIT: split,
        S.LOO_SPLIT: loo,
        S.SESSION_ID: session if session is not None else user * 100 + int(day),
    }


def checkerboard(
    n_users: int = 40,
    n_items: int = 80,
    seed: int = 0,
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Events (train days 0-7, valid day 8, test day 9.x), videos, users of the checkerboard.

    Each user views 8 own-group and 4 other-group videos in train, 1 own-group in valid, and in
    test 3 unseen own-group videos (engaged) and 1 other-group (skipped). The leave-one-out
    test row of each user is their last (own-group, engaged) view, the valid row the one
    before. Video ``n_items - 1`` and ``n_items - 2`` are uploaded on day 20 (never eligible).
    """
    rng = np.random.default_rng(seed)
    rows: list[dict[str, object]] = []
    usable = n_items - 2
    for u in range(n_users):
        own = [v for v in rng.permutation(usable).tolist() if v % 2 == u % 2]
        other = [v for v in rng.permutation(usable).tolist() if v % 2 != u % 2]
        seq: list[tuple[int, float, str]] = []
        for i, v in enumerate(own[:8]):
            seq.append((v, 0.5 + i * 0.8, S.TRAIN))
        for i, v in enumerate(other[:4]):
            seq.append((v, 0.9 + i * 1.5, S.TRAIN))
        seq.append((own[8], 8.2, S.VALID))
        seq.append((other[4], 9.1, S.TEST))
        for i, v in enumerate(own[9:12]):
            seq.append((v, 9.2 + 0.1 * i, S.TEST))
        seq.sort(key=lambda x: x[1])
        for j, (v, day, split) in enumerate(seq):
            loo = S.TEST if j == len(seq) - 1 else S.VALID if j == len(seq) - 2 else S.TRAIN
            rows.append(view(u, v, day + u * 1e-4, split, loo))
    late = {n_items - 1: 20.0, n_items - 2: 20.0}
    return etl_frame(rows), videos_frame(n_items, late), users_frame(n_users)


class IdealRecommender:
    """Knows the groups: own-group videos score 1, others 0 (ties broken by the runner)."""

    def __init__(self, name: str = "ideal") -> None:
        self.name = name
        self.n_items = 0
        self.fitted_on: TrainingData | None = None

    @property
    def is_fitted(self) -> bool:
        return self.fitted_on is not None

    def fit(self, data: TrainingData) -> IdealRecommender:
        self.n_items = data.n_items
        self.fitted_on = data
        return self

    def score(self, user_idx: IntArray) -> FloatArray:
        same = (np.arange(self.n_items)[None, :] % 2) == (np.asarray(user_idx)[:, None] % 2)
        return np.asarray(same, dtype=np.float32)


class CheckerboardOracle:
    """Expected response: watch ratio 0.9 / skip 0.1 / like 0.3 in-group, 0.05 / 0.9 / 0.0
    otherwise; watch time = ratio x 10 s."""

    def __init__(self) -> None:
        self.calls = 0

    def expected_response(
        self, user_idx: IntArray, video_idx: IntArray, ts_us: IntArray
    ) -> ExpectedResponse:
        self.calls += 1
        u = np.asarray(user_idx)
        v = np.asarray(video_idx)
        if v.ndim != 2 or u.shape != (v.shape[0],) or np.asarray(ts_us).shape != u.shape:
            raise ValueError("bad shapes")
        same = (v % 2) == (u[:, None] % 2)
        wr = np.where(same, 0.9, 0.05).astype(np.float32)
        return ExpectedResponse(
            watch_ratio=wr,
            p_skip=np.where(same, 0.1, 0.9).astype(np.float32),
            p_like=np.where(same, 0.3, 0.0).astype(np.float32),
            watch_time_s=(wr * DURATION_S).astype(np.float32),
        )
