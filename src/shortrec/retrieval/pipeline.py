"""Fitting every source, the ``train retrieval`` entry point, and evaluation adapters.

* :func:`fit_sources` builds a :class:`~shortrec.retrieval.model.RetrievalModel` from events
  (``schema.EVENTS`` columns) up to ``now``.
* :func:`train_retrieval` trains on an ETL output (``schema.ETL_EVENTS``: the temporal ``split``
  column decides train/valid) and writes the bundle component.
* :func:`retrieval_recommenders` gives one ``domain.Recommender`` per source and one for the
  merged set, sharing a single fit, for the evaluation harness.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from shortrec import schema as S
from shortrec.artifacts import write_component
from shortrec.config import RetrievalConfig
from shortrec.domain import FloatArray, IntArray, Recommender, TrainingData
from shortrec.retrieval import features as fx
from shortrec.retrieval.index import VectorIndex
from shortrec.retrieval.model import COMPONENT, RetrievalModel
from shortrec.retrieval.sources import (
    CovisitSource,
    ExploreSource,
    FreshSource,
    TagSource,
    TrendingSource,
    VectorSource,
)
from shortrec.retrieval.two_tower import Progress, TrainedTwoTower, train_two_tower
from shortrec.retrieval.types import RetrievalRequest

MERGED = "merged"


def _max_ts_us(events: pl.DataFrame) -> int:
    m = events.select(pl.col(S.TS).dt.epoch("us").max()).item()
    if m is None:
        raise S.BadInput("events: no events to learn from")
    return int(m)


def _events_only(events: pl.DataFrame) -> pl.DataFrame:
    missing = [c for c in S.EVENTS.names if c not in events.columns]
    if missing:
        raise S.BadInput(f"events: missing column(s) {missing}")
    return events.select(S.EVENTS.names)


def temporal_holdout(events: pl.DataFrame, valid_frac: float) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split by time: the last ``valid_frac`` of the time span is the validation part."""
    ts = events.get_column(S.TS).dt.epoch("us")
    lo, hi = int(ts.min()), int(ts.max())  # type: ignore[arg-type]
    cut = hi - int((hi - lo) * valid_frac)
    is_valid = pl.col(S.TS).dt.epoch("us") > cut
    return events.filter(~is_valid), events.filter(is_valid)


def fit_sources(
    events: pl.DataFrame,
    videos: pl.DataFrame,
    users: pl.DataFrame,
    now_us: int,
    config: RetrievalConfig,
    two_tower: TrainedTwoTower | None,
) -> RetrievalModel:
    """Every source from ``events`` (EVENTS columns) at ``now_us``; the vector source only when
    a trained ``two_tower`` is given (its index type chosen by catalogue size)."""
    ev = _events_only(events)
    eng = config.engagement
    vmax = videos.get_column(S.VIDEO_IDX).max()
    n_videos = int(vmax) + 1 if vmax is not None else 0  # type: ignore[arg-type]
    vector = None
    if two_tower is not None:
        index = VectorIndex.build(two_tower.video_emb, config.index)
        vector = VectorSource(two_tower, index, eng)
    return RetrievalModel(
        config=config,
        trending=TrendingSource.from_frames(ev, users, now_us, config.trending, eng),
        tags=TagSource.from_frames(ev, videos, config.tags, eng),
        fresh=FreshSource.from_frames(ev, videos, config.fresh),
        explore=ExploreSource.from_frames(
            ev, videos, config.explore, eng, config.tags.prior_strength
        ),
        vector=vector,
        as_of_us=now_us,
        covisit=CovisitSource.from_frames(ev, n_videos, now_us, config.covisit, eng),
    )


@contextmanager
def rich_progress(enabled: bool) -> Iterator[Progress | None]:
    """A rich progress bar as a training :data:`Progress` callback (None when disabled)."""
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
    ) as bar:
        tasks: dict[str, Any] = {}

        def update(phase: str, done: int, total: int, metrics: dict[str, float]) -> None:
            info = " ".join(f"{k}={v:.4g}" for k, v in metrics.items())
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase, total=total, info=info)
            bar.update(tasks[phase], completed=done, total=total, info=info)

        yield update


def train_retrieval(
    events: pl.DataFrame,
    videos: pl.DataFrame,
    users: pl.DataFrame,
    config: RetrievalConfig,
    art: Path,
    data_fingerprint: str,
    progress: bool = True,
    seed: int | None = None,
) -> dict[str, Any]:
    """Train the two-tower model (train split; early stopping on the valid split), fit every
    source on train + valid events (everything before the test period, at its last
    timestamp) and write the ``retrieval`` bundle component. Returns the metrics recorded in
    the manifest.

    ``events`` has the ``schema.ETL_EVENTS`` columns. When the valid split is empty, the last
    ``two_tower.valid_frac`` of the train period validates instead.
    """
    if S.SPLIT not in events.columns:
        raise S.BadInput(f"events: missing column {S.SPLIT!r} (expected ETL output)")
    train = _events_only(events.filter(pl.col(S.SPLIT) == S.TRAIN))
    valid = _events_only(events.filter(pl.col(S.SPLIT) == S.VALID))
    if train.height == 0:
        raise S.BadInput(f"events: no rows with {S.SPLIT} == {S.TRAIN!r}")
    fit_train, fit_valid = (
        (train, valid) if valid.height else temporal_holdout(train, config.two_tower.valid_frac)
    )
    with rich_progress(progress) as cb:
        tt = train_two_tower(
            fit_train,
            fit_valid,
            videos,
            users,
            config.two_tower,
            fx.positive_expr(config.engagement),
            seed=seed,
            progress=cb,
        )
    history = pl.concat([train, valid])
    model = fit_sources(history, videos, users, _max_ts_us(history), config, tt)
    metrics: dict[str, Any] = {f"two_tower_{k}": v for k, v in tt.metrics.items()}
    metrics["index_kind"] = model.vector.index.kind if model.vector else None
    metrics["n_videos"] = tt.vocab.n_videos
    with write_component(Path(art), COMPONENT, config, data_fingerprint) as (tmp, info):
        model.save(tmp)
        info["metrics"] = metrics
    return metrics


# ---------------------------------------------------------------- evaluation adapters
class _SharedFit:
    """One fit shared by all adapters: fitting "two_tower" then "merged" on the same
    ``TrainingData`` object trains once."""

    def __init__(self, config: RetrievalConfig, seed: int | None, progress: bool) -> None:
        self.config = config
        self.seed = seed
        self.progress = progress
        self.data: TrainingData | None = None
        self.model: RetrievalModel | None = None
        self.users: dict[int, dict[str, Any]] = {}

    def fit(self, data: TrainingData) -> None:
        if self.data is data:
            return
        cfg = self.config
        ev = _events_only(data.interactions)
        train, valid = temporal_holdout(ev, cfg.two_tower.valid_frac)
        with rich_progress(self.progress) as cb:
            tt = train_two_tower(
                train,
                valid,
                data.videos,
                data.users,
                cfg.two_tower,
                fx.positive_expr(cfg.engagement),
                seed=self.seed,
                progress=cb,
            )
        now = data.cutoff_us
        self.model = fit_sources(ev, data.videos, data.users, now, cfg, tt)
        hist = fx.user_histories(ev.lazy(), now, cfg.two_tower.history_len)
        aff = fx.user_tag_affinity(
            ev.lazy(),
            data.videos.lazy(),
            now,
            cfg.tags.half_life_days * 86_400.0,
            cfg.engagement,
            cfg.tags.max_user_tags,
        )
        users: dict[int, dict[str, Any]] = {}
        for u, region, age, device in fx.user_profiles(data.users).iter_rows():
            users[int(u)] = {"region": region, "age_bucket": age, "device": device}
        for row in hist.iter_rows(named=True):
            users.setdefault(int(row[S.USER_IDX]), {}).update(
                history=row["history"],
                watch_ratio=row[S.WATCH_RATIO],
                skipped=[bool(s) for s in row[S.SKIPPED]],
                seen=row["seen"],
            )
        for (u,), part in aff.group_by(S.USER_IDX):
            users.setdefault(int(u), {}).update(
                tag_idx=part.get_column(S.TAG_IDX).to_numpy(),
                tag_weight=part.get_column(fx.WEIGHT).to_numpy(),
            )
        self.users, self.data = users, data

    def request(self, user_idx: int) -> RetrievalRequest:
        if self.data is None:
            raise RuntimeError("fit() must be called before score()")
        u = self.users.get(user_idx, {})
        return RetrievalRequest(user_idx=user_idx, now_us=self.data.cutoff_us, **u)


class RetrievalRecommender:
    """``domain.Recommender`` over one source (or ``"merged"``): the source's top
    ``n_candidates`` unseen videos get their score, every other video ``-inf``."""

    def __init__(self, name: str, shared: _SharedFit, n_candidates: int) -> None:
        self.name = name
        self._shared = shared
        self._k = n_candidates

    def fit(self, data: TrainingData) -> RetrievalRecommender:
        self._shared.fit(data)
        return self

    def _row(self, req: RetrievalRequest) -> tuple[np.ndarray, np.ndarray]:
        model = self._shared.model
        assert model is not None  # guaranteed by fit(), checked in request()
        if self.name == MERGED:
            m = model.retrieve(req, total=self._k)
            return m.video_idx, m.score
        src = model.sources.get(self.name)
        if src is None:  # e.g. no vector source: propose nothing
            return np.zeros(0, np.int32), np.zeros(0, np.float32)
        slack = min(int(req.seen.shape[0]), self.config_slack)
        c = src.candidates(req, self._k + slack)
        keep = ~np.isin(c.video_idx, req.seen)
        return c.video_idx[keep][: self._k], c.score[keep][: self._k]

    @property
    def config_slack(self) -> int:
        return self._shared.config.merge.seen_slack

    def score(self, user_idx: IntArray) -> FloatArray:
        data = self._shared.data
        if data is None:
            raise RuntimeError(f"{self.name}: fit() must be called before score()")
        out = np.full((len(user_idx), data.n_items), -np.inf, dtype=np.float32)
        for i, u in enumerate(np.asarray(user_idx).tolist()):
            vid, sc = self._row(self._shared.request(int(u)))
            ok = vid < data.n_items
            out[i, vid[ok]] = sc[ok]
        return out


SOURCE_NAMES = ("trending", "tags", "two_tower", "covisit", "fresh", "explore", MERGED)


def retrieval_recommenders(
    config: RetrievalConfig | None = None,
    seed: int | None = None,
    progress: bool = False,
    names: tuple[str, ...] = SOURCE_NAMES,
) -> dict[str, Recommender]:
    """One Recommender per name in ``names`` (default: every source and "merged"), all sharing
    one fit. Each proposes ``config.n_candidates`` videos (the merged one: that many in total)."""
    cfg = config or RetrievalConfig()
    unknown = sorted(set(names) - set(SOURCE_NAMES))
    if unknown:
        raise ValueError(f"unknown recommender(s) {unknown}; expected some of {SOURCE_NAMES}")
    shared = _SharedFit(cfg, seed, progress)
    return {n: RetrievalRecommender(n, shared, cfg.n_candidates) for n in names}
