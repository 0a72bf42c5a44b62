"""The full recommender: retrieval -> multi-task ranker -> diversity re-ranking, as one
:class:`shortrec.domain.Recommender` named ``"shortrec"``.

This is a composition module above the middle layer: it wires ``shortrec.retrieval``,
``shortrec.ranking`` and ``shortrec.rerank`` together for offline evaluation (sweeps,
ablations, quality gates) and never reads files, so it imports neither ``shortrec.data`` nor
``shortrec.evaluation``. Serving composes the same stages from the artifact bundle instead.

Per user, :meth:`FullPipelineRecommender.score` does

1. **retrieval**: the merged candidate set of every source (``retrieval_recommenders(...)
   ["merged"]``), its top ``n_candidates`` unseen videos by fused score;
2. **ranking**: the ranker's final score of every candidate, the history being the user's last
   ``RankerConfig.history_len`` training events, served at ``TrainingData.cutoff_us``;
3. **re-ranking**: MMR or greedy DPP (``RerankConfig``) with the similarity it configures
   (default: tags, topic and creator mixed, ``rerank.rerank_similarity``) and creator/topic caps
   over the ``rerank_pool`` best-ranked candidates, giving a page of ``RerankConfig.k`` videos;
   with ``RerankConfig.personalise = "calibrated"`` (the default) calibrated re-ranking (Steck,
   RecSys 2018) to the user's topic distribution (the topics of the training events they did not
   skip, ``rerank.user_topic_distribution``) chooses the page instead, and each page is ordered
   by relevance plus the user's topic affinity (``RerankConfig.topic_affinity``).

Scores are ranks: the page's videos get the highest scores in page order, the remaining
candidates follow in ranker order, everything else is ``-inf``. ``stages`` turns the later
stages off for ablations (``"retrieval"``: fused retrieval order; ``"ranker"``: ranker order
without re-ranking).

Fits are shared through a :class:`FitCache`: recommenders that get the same cache and are fit on
the same ``TrainingData`` object train retrieval once per retrieval config and the ranker once per
ranker config, and reuse each user's candidates and ranker scores, so a sweep over the
re-ranker's trade-off costs one training.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import polars as pl
from pydantic import Field

from shortrec import schema as S
from shortrec.config import (
    DEFAULT_RETRIEVAL_BLEND,
    RankerConfig,
    RerankConfig,
    RetrievalConfig,
    StrictModel,
)
from shortrec.domain import FloatArray, IntArray, Recommender, TrainingData
from shortrec.ranking.batches import VideoStats, VideoTable
from shortrec.ranking.blend import blend_with_retrieval
from shortrec.ranking.model import Ranker
from shortrec.ranking.predictor import CandidateSet, History, Predictor
from shortrec.ranking.train import fit_model
from shortrec.rerank import rerank, rerank_similarity, user_topic_distribution
from shortrec.retrieval.pipeline import MERGED, retrieval_recommenders

NAME = "shortrec"
Stages = Literal["full", "ranker", "retrieval"]
I64 = npt.NDArray[np.int64]
F32 = npt.NDArray[np.float32]


class FullPipelineConfig(StrictModel):
    """The full pipeline: each stage's own config plus how the stages are joined.

    ``n_candidates``: merged retrieval candidates per user handed to the ranker.
    ``rerank_pool``: the best-ranked candidates the re-ranker builds its page from (the cost of
    the similarity grows with its square). ``stages``: ``"full"`` (retrieval -> ranker ->
    re-rank), ``"ranker"`` (no re-ranking) or ``"retrieval"`` (fused retrieval order only).
    ``retrieval_blend`` = w mixes the retrieval order into the ranking: each candidate's
    relevance is ``(1 - w) * q_rank + w * q_retrieval``, ``q`` being its rank percentile among the
    user's candidates (1 = best) by ranker score and by fused retrieval score (ranks, because
    the two scores live on different scales; :mod:`shortrec.ranking.blend`, which serving uses
    with ``ServingConfig.retrieval_blend``). ``score_batch``: requests per ranker call.
    """

    retrieval: RetrievalConfig = RetrievalConfig()
    ranker: RankerConfig = RankerConfig()
    rerank: RerankConfig = RerankConfig()
    n_candidates: int = Field(default=300, ge=1)
    rerank_pool: int = Field(default=100, ge=1)
    stages: Stages = "full"
    retrieval_blend: float = Field(default=DEFAULT_RETRIEVAL_BLEND, ge=0, le=1)
    score_batch: int = Field(default=64, ge=1)


@dataclass(frozen=True)
class _Catalogue:
    """Per-video content used by the re-ranker: ``tags`` (n, T) with ``-1`` padding,
    ``creator`` and ``topic`` (n,) with ``-1`` for unknown."""

    tags: I64
    creator: I64
    topic: I64

    @property
    def n_topics(self) -> int:
        """Topics are ``0 .. n_topics - 1`` (at least 1, so an all-unknown catalogue works)."""
        return max(int(self.topic.max(initial=-1)) + 1, 1)

    @staticmethod
    def from_frame(videos: pl.DataFrame, n_items: int, max_tags: int) -> _Catalogue:
        for col in (S.VIDEO_IDX, S.CREATOR_IDX, S.TAGS):
            if col not in videos.columns:
                raise S.BadInput(f"videos: missing column {col!r}")
        vid = videos.get_column(S.VIDEO_IDX).cast(pl.Int64).to_numpy()
        if vid.size and (vid.min() < 0 or vid.max() >= n_items):
            raise S.BadInput(f"videos.{S.VIDEO_IDX}: values must lie in [0, {n_items})")
        tags = np.full((n_items, max_tags), -1, np.int64)
        ex = (
            videos.select(pl.col(S.VIDEO_IDX).cast(pl.Int64), pl.col(S.TAGS).list.head(max_tags))
            .explode(S.TAGS)
            .drop_nulls(S.TAGS)
            .with_columns(pl.int_range(pl.len()).over(S.VIDEO_IDX).alias("slot"))
        )
        tags[ex.get_column(S.VIDEO_IDX).to_numpy(), ex.get_column("slot").to_numpy()] = (
            ex.get_column(S.TAGS).cast(pl.Int64).to_numpy()
        )
        creator = np.full(n_items, -1, np.int64)
        creator[vid] = videos.get_column(S.CREATOR_IDX).cast(pl.Int64).fill_null(-1).to_numpy()
        topic = np.full(n_items, -1, np.int64)
        if S.CATEGORY in videos.columns:
            topic[vid] = videos.get_column(S.CATEGORY).cast(pl.Int64).fill_null(-1).to_numpy()
        return _Catalogue(tags, creator, topic)


class _Histories:
    """Every user's training events in chronological order, as flat arrays + offsets."""

    def __init__(self, data: TrainingData) -> None:
        ev = data.interactions.sort(S.USER_IDX, S.TS, S.EVENT_ID)
        self.user = ev.get_column(S.USER_IDX).cast(pl.Int64).to_numpy()
        self.video = ev.get_column(S.VIDEO_IDX).cast(pl.Int64).to_numpy()
        self.ts_us = ev.get_column(S.TS).dt.epoch("us").cast(pl.Int64).to_numpy()
        self.watch_ratio = (
            ev.get_column(S.WATCH_RATIO).cast(pl.Float32).fill_null(np.nan).to_numpy()
        )
        self.skipped = ev.get_column(S.SKIPPED).fill_null(False).to_numpy().astype(bool)
        self.liked = ev.get_column(S.LIKED).fill_null(False).to_numpy().astype(bool)
        self.request_us = data.cutoff_us
        self.profiles: dict[int, tuple[str | None, str | None, str | None]] = {}
        cols = [S.USER_IDX, S.REGION, S.AGE_BUCKET, S.DEVICE]
        if all(c in data.users.columns for c in cols):
            for u, region, age, device in data.users.select(cols).iter_rows():
                self.profiles[int(u)] = (region, age, device)

    def span(self, user: int) -> slice:
        """The rows of the user's training events (chronological; empty when none)."""
        lo, hi = np.searchsorted(self.user, [user, user + 1])
        return slice(int(lo), int(hi))

    def last(self, user: int, length: int) -> History:
        """The user's last ``length`` training events as a ranker :class:`History`."""
        full = self.span(user)
        sl = slice(max(full.start, full.stop - length), full.stop)
        return History(
            video_idx=self.video[sl],
            ts_us=self.ts_us[sl],
            watch_ratio=self.watch_ratio[sl],
            skipped=self.skipped[sl],
            liked=self.liked[sl],
            request_us=self.request_us,
            profile=self.profiles.get(user, (None, None, None)),
        )


@dataclass
class RankerFit:
    """A ranker trained on one ``TrainingData`` (``metrics`` as returned by ``fit_model``)."""

    predictor: Predictor
    metrics: dict[str, Any]
    fit_s: float


def _key(model: StrictModel, seed: int) -> str:
    return f"{seed}:{model.model_dump_json()}"


class _State:
    """Fitted stages and per-user results for one ``TrainingData`` object."""

    def __init__(self, data: TrainingData) -> None:
        self.data = data
        self.retrieval: dict[str, Recommender] = {}
        self.retrieval_fit_s: dict[str, float] = {}
        self.rankers: dict[str, RankerFit] = {}
        self.candidates: dict[str, dict[int, tuple[I64, F32]]] = {}
        self.ranked: dict[tuple[str, str], dict[int, F32]] = {}
        self.histories: _Histories | None = None
        self.catalogue: _Catalogue | None = None


class FitCache:
    """Fitted stages and per-user intermediate results shared by pipeline recommenders.

    Entries are keyed by the identity of the ``TrainingData`` object and by the stage's config
    and seed, so two recommenders share a stage exactly when they would have trained it
    identically. ``max_datasets`` bounds how many training sets are kept (oldest dropped).
    """

    def __init__(self, max_datasets: int = 2) -> None:
        self.max_datasets = max_datasets
        self._states: list[_State] = []

    def state(self, data: TrainingData) -> _State:
        """The entries of ``data`` (created on first use)."""
        for st in self._states:
            if st.data is data:
                return st
        st = _State(data)
        self._states = [*self._states, st][-self.max_datasets :]
        return st


class FullPipelineRecommender:
    """Retrieval -> ranker -> re-ranker as a ``domain.Recommender`` (see the module docstring).

    ``seed`` fixes retrieval and ranker training; ``cache`` shares fits with other instances
    (default: a private one). ``is_fitted`` is True after :meth:`fit`, so the evaluation runner
    does not fit it again: pass fresh instances (and a fresh cache) for protocols with other
    training data (``temporal`` and ``oracle`` share theirs).
    """

    def __init__(
        self,
        config: FullPipelineConfig | None = None,
        seed: int = 0,
        name: str = NAME,
        cache: FitCache | None = None,
        progress: bool = False,
    ) -> None:
        self.config = config or FullPipelineConfig()
        self.seed = seed
        self.name = name
        self.cache = cache if cache is not None else FitCache()
        self.progress = progress
        self._state: _State | None = None
        cfg = self.config
        self._retrieval_cfg = cfg.retrieval.model_copy(update={"n_candidates": cfg.n_candidates})
        self._rkey = _key(self._retrieval_cfg, seed)
        self._kkey = _key(cfg.ranker, seed)

    @property
    def is_fitted(self) -> bool:
        return self._state is not None

    # ------------------------------------------------------------ fit
    def fit(self, data: TrainingData) -> FullPipelineRecommender:
        """Train retrieval (and, unless ``stages == "retrieval"``, the ranker) on ``data``.

        The ranker trains on ``data.interactions`` with every row labelled ``train``: it holds
        out its own latest 10 % of requests for early stopping, so nothing outside ``data`` is
        read.
        """
        c = self.cache.state(data)
        if self._rkey not in c.retrieval:
            t0 = time.perf_counter()
            rec = retrieval_recommenders(
                self._retrieval_cfg, seed=self.seed, progress=self.progress, names=(MERGED,)
            )[MERGED]
            c.retrieval[self._rkey] = rec.fit(data)
            c.retrieval_fit_s[self._rkey] = round(time.perf_counter() - t0, 3)
            c.candidates[self._rkey] = {}
        if self.config.stages != "retrieval":
            if self._kkey not in c.rankers:
                c.rankers[self._kkey] = self._fit_ranker(data)
            if c.histories is None:
                c.histories = _Histories(data)
            if c.catalogue is None:
                c.catalogue = _Catalogue.from_frame(
                    data.videos, data.n_items, self.config.ranker.max_tags
                )
            c.ranked.setdefault((self._rkey, self._kkey), {})
        self._state = c
        return self

    def _fit_ranker(self, data: TrainingData) -> RankerFit:
        t0 = time.perf_counter()
        events = data.interactions.with_columns(pl.lit(S.TRAIN).alias(S.SPLIT))
        model, vt, stats, metrics = fit_model(
            events, data.videos, self.config.ranker, self.seed, self.progress, data.users
        )
        return RankerFit(
            _predictor(self.config.ranker, model, vt, stats),
            metrics,
            round(time.perf_counter() - t0, 3),
        )

    @property
    def ranker_metrics(self) -> dict[str, Any]:
        """Training metrics of this recommender's ranker (empty without a ranker stage)."""
        if self._state is None or self.config.stages == "retrieval":
            return {}
        fit = self._state.rankers.get(self._kkey)
        return {} if fit is None else {**fit.metrics, "fit_s": fit.fit_s}

    @property
    def retrieval_fit_s(self) -> float:
        """Seconds spent fitting retrieval (0 when shared with an earlier recommender)."""
        return self._state.retrieval_fit_s.get(self._rkey, 0.0) if self._state else 0.0

    # ------------------------------------------------------------ score
    def score(self, user_idx: IntArray) -> FloatArray:
        """Scores ``(len(user_idx), n_items)`` float32: rank-based for proposed videos (page
        first, then ranker order), ``-inf`` elsewhere (see the module docstring)."""
        if self._state is None:
            raise RuntimeError(f"{self.name}: score() called before fit()")
        data = self._state.data
        users = np.asarray(user_idx, np.int64)
        if users.ndim != 1:
            raise ValueError(f"{self.name}: user_idx must be 1-d, got shape {users.shape}")
        out = np.full((users.size, data.n_items), -np.inf, np.float32)
        cands = self._candidates(users)
        if self.config.stages == "retrieval":
            for i, (vid, sc) in enumerate(cands):
                out[i, vid] = sc
            return out
        finals = self._ranked(users, cands)
        for i, (u, (vid, _), final) in enumerate(zip(users.tolist(), cands, finals, strict=True)):
            if vid.size == 0:
                continue
            order = self._order(final, vid, int(u))
            # ranks as scores: exact in float32 for fewer than 2^24 candidates
            out[i, vid[order]] = np.arange(order.size, 0, -1, dtype=np.float32)
        return out

    def _candidates(self, users: I64) -> list[tuple[I64, F32]]:
        """Each user's merged candidates, best first by fused score (ties: lower video_idx)."""
        st = self._state
        assert st is not None  # checked in score()
        memo = st.candidates[self._rkey]
        todo = [int(u) for u in dict.fromkeys(users.tolist()) if int(u) not in memo]
        if todo:
            scores = st.retrieval[self._rkey].score(np.asarray(todo, np.int64))
            for u, row in zip(todo, scores, strict=True):
                vid = np.flatnonzero(np.isfinite(row)).astype(np.int64)
                sc = row[vid].astype(np.float32)
                order = np.lexsort((vid, -sc))
                memo[u] = (vid[order], sc[order])
        return [memo[int(u)] for u in users.tolist()]

    def _ranked(self, users: I64, cands: list[tuple[I64, F32]]) -> list[F32]:
        """The ranker's final score of each user's candidates (memoised per user)."""
        c = self._state
        assert c is not None  # checked in score()
        memo = c.ranked[(self._rkey, self._kkey)]
        hist = c.histories
        assert hist is not None  # set by fit()
        predictor = c.rankers[self._kkey].predictor
        length = self.config.ranker.history_len
        todo = {int(u): cand for u, cand in zip(users.tolist(), cands, strict=True)}
        todo = {u: cand for u, cand in todo.items() if u not in memo}
        items = list(todo.items())
        step = self.config.score_batch
        for s in range(0, len(items), step):
            part = [(u, v) for u, (v, _) in items[s : s + step] if v.size]
            for u, (v, _) in items[s : s + step]:
                if v.size == 0:
                    memo[u] = np.zeros(0, np.float32)
            if not part:
                continue
            scores = predictor.score_batch(
                [hist.last(u, length) for u, _ in part],
                [CandidateSet(v) for _, v in part],
                batch_size=step,
            )
            for (u, _), sc in zip(part, scores, strict=True):
                memo[u] = np.asarray(sc.final, np.float32)
        return [memo[int(u)] for u in users.tolist()]

    def _user_topics(self, user: int) -> npt.NDArray[np.float64] | None:
        """The user's topic distribution for a personalised re-ranker (``None`` when
        ``RerankConfig.personalise`` is ``"none"``): the topics of every training event the
        user did not skip, smoothed with ``RerankConfig.topic_prior`` pseudo-events."""
        cfg = self.config.rerank
        st = self._state
        assert st is not None and st.histories is not None and st.catalogue is not None
        if cfg.personalise == "none":
            return None
        sl = st.histories.span(user)
        topics = st.catalogue.topic[st.histories.video[sl]]
        engaged = ~st.histories.skipped[sl] & (topics >= 0)
        if cfg.topic_prior == 0 and not engaged.any():
            return None  # no evidence and no prior: the unpersonalised re-ranker
        return user_topic_distribution(
            topics, st.catalogue.n_topics, weights=engaged.astype(np.float64), prior=cfg.topic_prior
        )

    def _order(self, final: F32, vid: I64, user: int) -> I64:
        """Candidate positions in served order: the re-ranked page, then ranker order."""
        # candidates come best-first by fused retrieval score
        rel_all = blend_with_retrieval(final, self.config.retrieval_blend)
        # ties keep retrieval order (the candidates come best-first)
        by_rank: I64 = np.argsort(-rel_all, kind="stable")
        if self.config.stages != "full" or self.config.rerank.method == "none":
            return by_rank
        pool = by_rank[: self.config.rerank_pool]
        cat = self._state.catalogue if self._state else None
        assert cat is not None  # set by fit()
        rel = rel_all[pool]
        span = rel.max() - rel.min()
        # relevance min-max scaled per request, as in serving: the trade-off is scale-free
        rel = (rel - rel.min()) / span if span > 0 else np.ones_like(rel)
        pv = vid[pool]
        cfg = self.config.rerank
        creator, topic = cat.creator[pv], cat.topic[pv]
        sim = rerank_similarity(cfg, cat.tags[pv], creator, topic)
        page = pool[rerank(rel, sim, cfg, creator, topic, user_topics=self._user_topics(user))]
        rest = by_rank[~np.isin(by_rank, page)]
        return np.concatenate([page, rest]).astype(np.int64)


def _predictor(config: RankerConfig, model: Ranker, vt: VideoTable, stats: VideoStats) -> Predictor:
    """An in-memory PyTorch predictor (no ONNX export: offline scoring is batched)."""
    return Predictor(config.model_copy(update={"backend": "torch"}), model, vt, stats, None)


def variant(
    base: FullPipelineConfig,
    *,
    stages: Stages | None = None,
    ranker: dict[str, Any] | None = None,
    rerank_cfg: dict[str, Any] | None = None,
    **fields: Any,
) -> FullPipelineConfig:
    """``base`` with some fields replaced, validated like a new config (unknown keys and
    out-of-range values raise ``pydantic.ValidationError``).

    ``ranker`` / ``rerank_cfg`` update the nested ``RankerConfig`` / ``RerankConfig``, e.g.
    ``variant(cfg, ranker={"encoder": "mean"})`` or ``variant(cfg, rerank_cfg={"trade_off":
    0.5})``; other keyword arguments are top-level fields.
    """
    doc = base.model_dump()
    if stages is not None:
        doc["stages"] = stages
    if ranker:
        doc["ranker"] = {**doc["ranker"], **ranker}
    if rerank_cfg:
        doc["rerank"] = {**doc["rerank"], **rerank_cfg}
    doc.update(fields)
    return FullPipelineConfig.model_validate(doc)
