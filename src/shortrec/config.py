"""Typed configuration, one pydantic model per component; unknown keys are rejected.

Each component receives only its own config (never this whole module's tree). Environment
variables with the ``SHORTREC_`` prefix override :class:`Settings` (e.g. ``SHORTREC_REDIS_URL``).
Ownership: each class is edited together with the component it configures.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shortrec.schema import DEFAULT_SKIP_THRESHOLD_S


class StrictModel(BaseModel):
    """Base for every config: immutable, unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Settings(BaseSettings):
    """Process-level settings read from the environment (``SHORTREC_*``)."""

    model_config = SettingsConfigDict(env_prefix="SHORTREC_", extra="forbid", frozen=True)

    redis_url: str | None = None
    threads: int = Field(default=2, ge=1)


# ---------------------------------------------------------------- data: simulator
Preset = Literal["tiny", "small", "medium", "large"]


class SimBehavior(StrictModel):
    """Coefficients of the simulated user's response model (nested in :class:`SimConfig`).

    The equations they enter are in ``docs/simulator.md`` ("Response model"). Engagement is a
    logit-scale score ``s``; every probability is a logistic function of ``s`` (or of a state
    variable), so each coefficient is a log-odds change per unit of its input.
    """

    # engagement score s
    bias: float = 0.0
    w_affinity: float = Field(default=5.0, ge=0)
    affinity_ref: float = 0.25
    w_latent: float = Field(default=1.0, ge=0)
    w_quality: float = Field(default=0.6, ge=0)
    patience_sd: float = Field(default=0.5, ge=0)
    w_duration: float = Field(default=0.35, ge=0)
    w_fresh: float = Field(default=0.3, ge=0)
    fresh_days: float = Field(default=3.0, gt=0)
    w_repeat: float = Field(default=1.5, ge=0)
    w_topic_bore: float = Field(default=0.45, ge=0)
    topic_decay: float = Field(default=0.8, gt=0, lt=1)
    w_creator_bore: float = Field(default=0.6, ge=0)
    creator_window: int = Field(default=6, ge=1, le=64)
    seen_window: int = Field(default=32, ge=1, le=256)
    # outcomes
    skip_bias: float = -0.5
    skip_min_frac: float = Field(default=0.15, ge=0, lt=1)
    complete_bias: float = 0.0
    complete_slope: float = Field(default=0.8, ge=0)
    complete_duration: float = Field(default=0.9, ge=0)
    partial_bias: float = 0.2
    partial_slope: float = Field(default=0.6, ge=0)
    replay_bias: float = -2.5
    replay_slope: float = Field(default=0.6, ge=0)
    replay_cap: float = Field(default=0.8, gt=0, lt=1)
    max_replays: int = Field(default=9, ge=0, le=50)
    loop_tail: float = Field(default=0.3, ge=0, lt=1)
    like_bias: float = -4.6
    like_slope: float = Field(default=0.7, ge=0)
    like_complete: float = Field(default=1.2, ge=0)
    share_bias: float = -6.8
    share_slope: float = Field(default=0.7, ge=0)
    follow_bias: float = -7.0
    follow_slope: float = Field(default=0.6, ge=0)
    follow_creator: float = Field(default=0.5, ge=0)
    # session dynamics
    fatigue_step: float = Field(default=0.025, ge=0)
    fatigue_skip: float = Field(default=0.03, ge=0)
    quit_bias: float = -3.6
    quit_fatigue: float = Field(default=1.0, ge=0)
    quit_boredom: float = Field(default=0.5, ge=0)
    quit_skip_streak: float = Field(default=0.3, ge=0)
    quit_engagement: float = Field(default=0.25, ge=0)
    budget_median_s: float = Field(default=600.0, gt=0)
    budget_sd_log: float = Field(default=0.8, ge=0)
    budget_max_s: float = Field(default=3_600.0, gt=0)
    swipe_gap_s: float = Field(default=0.4, ge=0)
    max_session_len: int = Field(default=400, ge=1)


class SimConfig(StrictModel):
    """World simulator. Owned by ``data/simulator.py``; see :meth:`SimConfig.preset_config`.

    Sizes, horizon and activity set the volume: expected events per user is roughly
    ``horizon_days * sessions_per_day * mean session length`` (session length is an outcome of
    the response model, ~10-20 impressions with the default behaviour).
    """

    preset: str = "custom"
    seed: int = 0
    n_users: int = Field(default=2_000, ge=1)
    n_videos: int = Field(default=5_000, ge=1)
    n_creators: int = Field(default=500, ge=1)
    n_topics: int = Field(default=24, ge=2, le=128)
    n_tags: int = Field(default=400, ge=2)
    horizon_days: float = Field(default=14.0, gt=0)
    start: str = "2026-01-01T00:00:00+00:00"
    skip_threshold_s: float = Field(default=DEFAULT_SKIP_THRESHOLD_S, gt=0, lt=5.0)
    #: users per chunk; each chunk is simulated as one lockstep batch and written as one
    #: ``events/part-*.parquet`` (chunks are near-equal: see ``simulator.chunk_bounds``)
    chunk_users: int = Field(default=10_000, ge=1)
    #: worker processes simulating chunks in parallel (None: ``min(2, os.cpu_count())``).
    #: Changes speed and memory only: the files are byte-identical for any value.
    workers: int | None = Field(default=None, ge=1)
    #: users: sparse interests (topics with weight > 0 per user, Dirichlet concentration)
    user_topics_min: int = Field(default=1, ge=1)
    user_topics_max: int = Field(default=4, ge=1)
    interest_alpha: float = Field(default=0.7, gt=0)
    latent_dim: int = Field(default=8, ge=1, le=64)
    #: activity: sessions per day per user ~ lognormal(log(median), sd) (heavy-tailed)
    sessions_per_day: float = Field(default=0.65, gt=0)
    activity_sd_log: float = Field(default=1.0, ge=0)
    new_user_frac: float = Field(default=0.2, ge=0, le=1)
    #: share of the topic mixture a user's interests move to over the horizon (drift)
    drift_strength: float = Field(default=0.35, ge=0, le=1)
    #: catalogue: share uploaded before ``start`` (the back catalogue), the rest spread over
    #: the horizon so new videos keep arriving
    backcatalogue_frac: float = Field(default=0.4, ge=0, le=1)
    backcatalogue_days: float = Field(default=60.0, gt=0)
    tags_per_video_max: int = Field(default=4, ge=1, le=16)
    tag_noise: float = Field(default=0.15, ge=0, le=1)
    duration_median_s: float = Field(default=22.0, ge=5, le=180)
    duration_sd_log: float = Field(default=0.8, ge=0)
    #: logging policy mix (normalised) and its parameters
    policy_trending: float = Field(default=0.3, ge=0)
    policy_interest: float = Field(default=0.5, ge=0)
    policy_explore: float = Field(default=0.2, ge=0)
    policy_noise: float = Field(default=0.3, ge=0, le=1)
    trending_window_days: float = Field(default=7.0, gt=0)
    page_size: int = Field(default=8, ge=1)
    behavior: SimBehavior = SimBehavior()

    @model_validator(mode="after")
    def _consistent(self) -> SimConfig:
        if self.user_topics_max < self.user_topics_min:
            raise ValueError("user_topics_max must be >= user_topics_min")
        if self.n_tags < self.n_topics:
            raise ValueError("n_tags must be >= n_topics (every topic needs its own tags)")
        if self.policy_trending + self.policy_interest + self.policy_explore <= 0:
            raise ValueError("the logging policy mix must have a positive weight")
        return self

    @staticmethod
    def preset_config(name: Preset, seed: int = 0) -> SimConfig:
        sizes: dict[str, dict[str, Any]] = {
            "tiny": dict(
                n_users=200, n_videos=600, n_creators=60, n_topics=8, n_tags=64, horizon_days=14.0
            ),
            "small": dict(n_users=2_000, n_videos=5_000, n_creators=500, horizon_days=14.0),
            "medium": dict(n_users=20_000, n_videos=50_000, n_creators=5_000, horizon_days=21.0),
            "large": dict(
                n_users=200_000,
                n_videos=1_000_000,
                n_creators=50_000,
                n_topics=48,
                n_tags=2_000,
                horizon_days=42.0,
            ),
        }
        if name not in sizes:
            raise ValueError(f"unknown preset {name!r}; expected one of {sorted(sizes)}")
        return SimConfig(preset=name, seed=seed, **sizes[name])


# ---------------------------------------------------------------- data: ingestion
class IngestConfig(StrictModel):
    """Ingestion of real logs. Owned by ``data/ingest.py``; see ``docs/ingestion.md``.

    ``skip_threshold_s``: a view shorter than this (seconds) is a skip (derived where the source
    logs watch time). ``drop_missing_ts``: drop records without a timestamp (counted in the
    manifest) instead of failing. ``like_rating_threshold``: MovieLens derives ``liked`` as
    ``rating >= threshold`` (an explicit positive rating); None leaves ``liked`` null.
    ``kuairec_matrix``: which KuaiRec matrix a directory source means. ``csv_ts_unit``: unit of
    numeric epoch timestamps in the generic ``csv`` format (text timestamps are ISO 8601).
    ``events_per_part``: rows per ``events/part-*.parquet`` file.
    """

    skip_threshold_s: float = Field(default=DEFAULT_SKIP_THRESHOLD_S, gt=0)
    drop_missing_ts: bool = True
    like_rating_threshold: float | None = 4.0
    kuairec_matrix: Literal["big", "small"] = "big"
    csv_ts_unit: Literal["s", "ms", "us"] = "s"
    events_per_part: int = Field(default=1_000_000, ge=1)


# ---------------------------------------------------------------- data: ETL
class EtlConfig(StrictModel):
    """Leakage-free ETL. Owned by ``data/etl.py``; ``docs/etl.md`` describes every field.

    Cut-offs are fractions of the event time range: ``test_start = t_max - test_frac * span``,
    ``valid_start = test_start - valid_frac * span``. ``n_buckets=None`` picks the number of user
    buckets from the event count (about ``events_per_bucket`` each); the output does not depend
    on it. Datasets with at most ``full_validation_max_events`` events are fully validated.
    Output parquet files use ``compression`` (``compression_level`` applies to zstd only;
    intermediate files are uncompressed Arrow IPC).
    """

    valid_frac: float = Field(default=0.1, ge=0, lt=0.5)
    test_frac: float = Field(default=0.1, gt=0, lt=0.5)
    session_gap_s: float = Field(default=1800.0, gt=0)
    prior_strength: float = Field(default=20.0, ge=0)
    tag_half_life_days: float = Field(default=7.0, gt=0)
    n_buckets: int | None = Field(default=None, ge=1)
    #: with 2 workers each holds one bucket (~1 KB per event): 1M keeps the peak under 4 GiB
    events_per_bucket: int = Field(default=1_000_000, ge=1)
    #: worker processes running buckets in parallel (None: ``min(2, os.cpu_count())``); used
    #: from ``parallel_min_events`` input events on (below, starting them costs more than it
    #: saves). Changes speed and memory only, never the output.
    workers: int | None = Field(default=None, ge=1)
    parallel_min_events: int = Field(default=500_000, ge=0)
    history_len: int = Field(default=50, ge=1)
    complete_ratio: float = Field(default=0.9, gt=0)
    full_validation_max_events: int = Field(default=2_000_000, ge=0)
    #: lz4: measured ~20 % less CPU to write and ~25 % less to read than zstd-1 (files ~25 %
    #: larger); see docs/etl.md
    compression: Literal["zstd", "lz4", "snappy", "uncompressed"] = "lz4"
    compression_level: int | None = Field(default=1, ge=1, le=22)


# ---------------------------------------------------------------- evaluation
Protocol = Literal["temporal", "loo-full", "loo-sampled", "oracle"]


class EvalConfig(StrictModel):
    """Offline evaluation. Owned by ``evaluation/``; see ``docs/evaluation.md``.

    ``k`` is the headline cut-off and ``ks`` the cut-offs of the metric-vs-k curves (``k`` is
    always added). ``relevance_cap`` clips the watch-ratio gain (replays beyond it count the
    same). Pairwise diversity (intra-list diversity) is computed for cut-offs up to
    ``pairwise_max_k`` only, as its cost grows with k². ``oracle_ideal_sample`` items per user
    (sampled uniformly from the eligible unseen catalogue, or the whole of it when smaller)
    give the oracle protocol's ideal ordering. ``oracle_recall_top`` = R (oracle protocol only,
    off by default: it scores the whole catalogue for every evaluated user once) defines each
    user's relevant set as the R eligible unseen videos with the highest expected gain, so that
    ``recall@k`` and ``hit@k`` exist under the oracle too (recall of candidate generators).
    ``embedding_dim`` sizes the truncated-SVD item embedding used for embedding diversity when
    none is passed to the runner.
    """

    protocol: Protocol = "temporal"
    k: int = Field(default=10, ge=1)
    ks: tuple[int, ...] = (1, 5, 10, 20, 50, 100)
    n_negatives: int = Field(default=100, ge=1)
    negative_sampling: Literal["uniform", "popularity"] = "uniform"
    max_users: int | None = Field(default=None, ge=1)
    user_batch: int = Field(default=1024, ge=1)
    seed: int = 0
    relevance_cap: float = Field(default=2.0, gt=0)
    pairwise_max_k: int = Field(default=20, ge=2)
    oracle_ideal_sample: int = Field(default=1000, ge=1)
    oracle_recall_top: int | None = Field(default=None, ge=1)
    embedding_dim: int = Field(default=32, ge=1)

    @property
    def cutoffs(self) -> tuple[int, ...]:
        """``ks`` with ``k`` added, ascending and de-duplicated (each must be >= 1)."""
        return tuple(sorted({*self.ks, self.k}))


# ---- retrieval (owned by retrieval/)
RETRIEVAL_SOURCES = ("two_tower", "covisit", "tags", "trending", "fresh", "explore")


class EngagementConfig(StrictModel):
    """How one impression turns into engagement (``retrieval/features.py``).

    ``engagement = min(watch_ratio, watch_ratio_cap) + like_weight*liked + share_weight*shared
    + follow_weight*followed``, and 0 for a skip. A missing watch ratio (sources without watch
    time, e.g. MovieLens ratings) counts as ``missing_watch_ratio``. An impression is *positive*
    when it is not a skip and its watch ratio is at least ``min_positive_watch_ratio``.
    """

    watch_ratio_cap: float = Field(default=2.0, gt=0)
    like_weight: float = Field(default=1.0, ge=0)
    share_weight: float = Field(default=2.0, ge=0)
    follow_weight: float = Field(default=2.0, ge=0)
    missing_watch_ratio: float = Field(default=1.0, ge=0)
    min_positive_watch_ratio: float = Field(default=0.3, ge=0)


class TrendingConfig(StrictModel):
    """Trending source: exponentially time-decayed engagement, per region and global."""

    half_life_hours: float = Field(default=24.0, gt=0)
    per_region: bool = True
    top_n: int = Field(default=2_000, ge=1)


class TagSourceConfig(StrictModel):
    """Tag source: the user's decayed tag affinities -> per-tag top videos."""

    half_life_days: float = Field(default=7.0, gt=0)
    max_user_tags: int = Field(default=10, ge=1)
    per_tag_top_n: int = Field(default=500, ge=1)
    prior_strength: float = Field(default=20.0, ge=0)


class FreshConfig(StrictModel):
    """Fresh source: recent uploads with little exposure, matched to the user's tags."""

    window_days: float = Field(default=3.0, gt=0)
    max_impressions: int = Field(default=50, ge=0)
    max_pool: int = Field(default=5_000, ge=1)
    recency_weight: float = Field(default=0.05, ge=0)


class ExploreConfig(StrictModel):
    """Explore source: per-category top videos taken round-robin (diversity for cold users)."""

    per_category_top_n: int = Field(default=200, ge=1)


class CovisitConfig(StrictModel):
    """Co-visitation source: "people who watched X around the same time also watched Y".

    Fit: per user, positive impressions in (ts, event_id) order; two of them ``d`` steps apart
    (``1 <= d <= window``) add ``d ** -distance_exponent`` to the pair in both directions; a
    pair's sum is divided by ``sqrt(n_i * n_j)`` (each video's positive impressions) and every
    video keeps its ``neighbours`` best. Request: the last ``history_items`` positive history
    videos, the i-th most recent (from 0) weighted ``history_decay ** i``, sum their
    neighbour scores. ``chunk_pairs`` bounds the pairs held in memory at once while fitting.
    """

    window: int = Field(default=20, ge=1, le=1_000)
    """Largest distance, in positive impressions of one user, at which two videos pair."""
    distance_exponent: float = Field(default=0.5, ge=0, le=4)
    """A pair ``d`` apart weighs ``d ** -distance_exponent`` (0: every pair in the window alike)."""
    neighbours: int = Field(default=100, ge=1, le=10_000)
    """Neighbours kept per video (the table has at most ``neighbours * n_videos`` entries)."""
    history_items: int = Field(default=20, ge=1, le=1_000)
    """Most recent positive history videos used per request."""
    history_decay: float = Field(default=0.9, gt=0, le=1)
    """Weight ratio between consecutive history videos (1: all alike)."""
    chunk_pairs: int = Field(default=1 << 22, ge=1_024)
    """About the most (video, neighbour) pairs materialised at once while fitting (memory:
    ~75 bytes a pair, so ~0.3 GB at the default; the result does not depend on it)."""


class TwoTowerConfig(StrictModel):
    """Two-tower model and its training (in-batch softmax with log-Q correction)."""

    dim: int = Field(default=64, ge=2)
    hidden: int = Field(default=128, ge=1)
    history_len: int = Field(default=50, ge=1)
    max_tags: int = Field(default=8, ge=1)
    duration_edges_s: tuple[float, ...] = (5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 900.0)
    temperature: float = Field(default=0.05, gt=0)
    logq_correction: bool = True
    id_dropout: float = Field(default=0.1, ge=0, lt=1)
    batch_size: int = Field(default=1024, ge=2)
    lr: float = Field(default=3e-3, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    max_epochs: int = Field(default=20, ge=1)
    patience: int = Field(default=2, ge=1)
    max_samples_per_epoch: int | None = Field(default=None, ge=1)
    eval_k: int = Field(default=100, ge=1)
    max_valid_users: int = Field(default=2_000, ge=1)
    valid_frac: float = Field(default=0.1, gt=0, lt=0.5)
    seed: int = 0
    threads: int = Field(default=2, ge=1)


class IndexConfig(StrictModel):
    """FAISS index: exact (flat inner product) up to ``exact_max`` vectors, ANN above.

    IVF is the default ANN: on 1M 64-d clustered vectors (bench/bench_retrieval.py, 2 cores)
    IVF-Flat (4 sqrt(n) lists, nprobe 32) built in 21 s with recall@100 1.0 at 0.22 ms p50,
    while HNSW32 (efConstruction 64, efSearch 128) took minutes to build for recall@100 0.83.

    ``threads`` OpenMP threads build the index; searches then run on ``search_threads``: one
    query per request parallelises across requests, and on a busy 2-core machine a 2-thread
    single-query search was measured 70x slower (28 ms vs 0.4 ms p50 at 50k) than 1 thread.
    """

    exact_max: int = Field(default=100_000, ge=1)
    ann: Literal["hnsw", "ivf"] = "ivf"
    hnsw_m: int = Field(default=32, ge=4)
    hnsw_ef_construction: int = Field(default=64, ge=8)
    hnsw_ef_search: int = Field(default=128, ge=1)
    ivf_nlist: int | None = Field(default=None, ge=1)
    ivf_nprobe: int = Field(default=32, ge=1)
    threads: int = Field(default=2, ge=1)
    search_threads: int = Field(default=1, ge=1)


class MergeConfig(StrictModel):
    """Merge: per-source quotas (reserved fractions of ``total``), fusion, dedupe, seen-filter.

    ``quotas`` reserve slots for users with a history, ``weights`` are their sources' fusion
    weights (None: the quotas); ``cold_quotas`` serve users without a history (fused with the
    same numbers as weights). Slots the quotas leave go to the best candidates by weighted
    reciprocal-rank fusion (Cormack et al., SIGIR 2009, constant ``rrf_k``), which also orders
    the result. Each source is asked for ``ceil(max(quota * oversample, depth) * total)``
    candidates (``depth`` only for a source with a fusion weight, and only when ``weights`` are
    set) plus up to ``seen_slack`` more
    (as many as the user has seen videos) so that dedupe and the seen-filter still leave
    enough; slots a source cannot fill go to the others' next candidates.

    Quotas given without ``weights`` keep their earlier meaning (fixed shares, fused by the
    quotas), so configs and bundles written before fusion weights existed behave as they did.
    The default reserves 4 % of the slots for new uploads (``fresh``) and fills the rest by
    fusion over lists as deep as the whole set: videos that several sources rank high come
    first, which fixed per-source shares cannot do (measured in docs/retrieval.md#merge).
    """

    total: int = Field(default=500, ge=1)
    quotas: dict[str, float] = Field(default_factory=lambda: {"fresh": 0.04})
    weights: dict[str, float] | None = Field(
        default_factory=lambda: {
            "tags": 0.4,
            "two_tower": 0.2,
            "covisit": 0.2,
            "trending": 0.15,
            "explore": 0.05,
        }
    )
    cold_quotas: dict[str, float] = Field(
        default_factory=lambda: {"trending": 0.5, "explore": 0.4, "fresh": 0.1}
    )
    depth: float = Field(default=1.0, ge=0)
    oversample: float = Field(default=1.5, ge=1.0)
    seen_slack: int = Field(default=1_000, ge=0)
    rrf_k: float = Field(default=60.0, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _quotas_alone_are_shares(cls, data: Any) -> Any:
        """Quotas given without ``weights`` fuse as before fusion weights existed (weights =
        the quotas): a config written then (e.g. a bundle's recorded one) keeps its meaning."""
        if isinstance(data, dict) and "quotas" in data and "weights" not in data:
            return {**data, "weights": None}
        return data

    @model_validator(mode="after")
    def _check_quotas(self) -> MergeConfig:
        for field, quotas in (("quotas", self.quotas), ("cold_quotas", self.cold_quotas)):
            _check_sources(field, quotas)
            total = sum(quotas.values())
            if total <= 0 or total > 1.0 + 1e-9:
                raise ValueError(f"{field}: quotas must sum to a value in (0, 1], got {total}")
        if self.weights is not None:
            _check_sources("weights", self.weights)
            if not any(w > 0 for w in self.weights.values()):
                raise ValueError("weights: at least one source needs a weight > 0")
        return self

    def plan(
        self, total: int, slack: int, cold: bool, quotas: dict[str, float] | None = None
    ) -> tuple[dict[str, float], dict[str, float], dict[str, int]]:
        """``(quotas, weights, sizes)`` for one request: the quotas (``quotas`` overrides the
        warm ones, e.g. an experiment arm's), the fusion weights and how many candidates to ask
        each source for (``slack``: the seen videos that may be filtered out)."""
        if cold:  # the cold quotas fill every slot: no fusion depth
            q, w, depth = self.cold_quotas, self.cold_quotas, 0.0
        else:
            q = self.quotas if quotas is None else quotas
            w = q if self.weights is None else self.weights
            # fusion depth with fusion weights only: quotas as shares ask as they always did
            depth = 0.0 if self.weights is None else self.depth
        sizes = {}
        for name in RETRIEVAL_SOURCES:
            quota, weight = q.get(name, 0.0), w.get(name, 0.0)
            if quota > 0 or weight > 0:
                n = max(quota * total * self.oversample, depth * total if weight > 0 else 0.0)
                sizes[name] = math.ceil(n) + slack
        return q, w, sizes


def _check_sources(field: str, values: dict[str, float]) -> None:
    unknown = sorted(set(values) - set(RETRIEVAL_SOURCES))
    if unknown:
        raise ValueError(
            f"{field}: unknown source(s) {unknown}; expected some of {RETRIEVAL_SOURCES}"
        )
    if any(v < 0 for v in values.values()):
        raise ValueError(f"{field}: weights and quotas must be >= 0")


class RetrievalConfig(StrictModel):
    """Candidate generation. Owned by ``retrieval/``; each source reads only its own part."""

    engagement: EngagementConfig = EngagementConfig()
    trending: TrendingConfig = TrendingConfig()
    tags: TagSourceConfig = TagSourceConfig()
    fresh: FreshConfig = FreshConfig()
    explore: ExploreConfig = ExploreConfig()
    covisit: CovisitConfig = CovisitConfig()
    two_tower: TwoTowerConfig = TwoTowerConfig()
    index: IndexConfig = IndexConfig()
    merge: MergeConfig = MergeConfig()
    n_candidates: int = Field(default=500, ge=1)


# ---- ranking and re-ranking (owned by ranking/, rerank/)
RANK_TASKS = ("engage", "complete", "like", "diversity")


class RankerConfig(StrictModel):
    """Multi-task Transformer ranker and its training (``ranking/``; see ``docs/ranking.md``).

    Ablations and sweeps are switches here: ``encoder="mean"`` (mean pooling instead of the
    Transformer), ``tasks=("engage",)`` (single task), ``diversity_lambda=0`` (no diversity loss).
    """

    # features
    history_len: int = Field(default=50, ge=1, le=512)
    max_tags: int = Field(default=8, ge=1, le=64)
    max_id_buckets: int = Field(default=200_000, ge=1)
    max_creator_buckets: int = Field(default=50_000, ge=1)
    duration_edges_s: tuple[float, ...] = (5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 900.0)
    recent_skip_window: int = Field(default=5, ge=1)
    stats_prior: float = Field(default=20.0, ge=0)
    source_names: tuple[str, ...] = (
        "two_tower",
        "tags",
        "trending",
        "fresh",
        "explore",
        "covisit",
    )
    # architecture
    encoder: Literal["transformer", "mean"] = "transformer"
    d_model: int = Field(default=64, ge=8)
    n_heads: int = Field(default=2, ge=1)
    n_layers: int = Field(default=2, ge=1)
    ff_mult: int = Field(default=2, ge=1)
    head_hidden: int = Field(default=64, ge=1)
    dropout: float = Field(default=0.1, ge=0, lt=1)
    # tasks, labels and the final score
    tasks: tuple[str, ...] = RANK_TASKS
    loss_weights: dict[str, float] = Field(
        default_factory=lambda: {"engage": 1.0, "complete": 0.5, "like": 0.5, "diversity": 0.3}
    )
    score_weights: dict[str, float] = Field(
        default_factory=lambda: {"engage": 1.0, "complete": 0.5, "like": 1.0, "diversity": 0.3}
    )
    complete_mode: Literal["binary", "regression"] = "binary"
    complete_threshold: float = Field(default=0.8, gt=0)
    complete_cap: float = Field(default=1.5, gt=0)
    novelty_lookback: int = Field(default=10, ge=1)
    # intra-list diversity loss
    diversity_lambda: float = Field(default=0.1, ge=0)
    diversity_tau: float = Field(default=0.2, gt=0)
    diversity_similarity: Literal["tags", "embedding"] = "tags"
    # training
    negatives: Literal["auto", "exposure", "sampled"] = "auto"
    n_sampled_negatives: int = Field(default=8, ge=1)
    negative_sampling: Literal["uniform", "popularity", "mixed"] = "mixed"
    negative_pop_power: float = Field(default=0.75, ge=0, le=1)
    max_list_len: int = Field(default=16, ge=2)
    batch_size: int = Field(default=64, ge=1)
    lr: float = Field(default=2e-3, gt=0)
    weight_decay: float = Field(default=1e-5, ge=0)
    max_epochs: int = Field(default=10, ge=1)
    patience: int = Field(default=2, ge=1)
    max_train_lists: int | None = Field(default=None, ge=1)
    max_valid_lists: int = Field(default=2_000, ge=1)
    eval_k: int = Field(default=10, ge=1)
    threads: int = Field(default=2, ge=1)
    # export and serving
    export_onnx: bool = True
    parity_tol: float = Field(default=1e-4, gt=0)
    backend: Literal["onnx", "torch"] = "onnx"

    @model_validator(mode="after")
    def _consistent(self) -> RankerConfig:
        unknown = sorted(set(self.tasks) - set(RANK_TASKS))
        if unknown or not self.tasks or len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"tasks must be distinct names from {RANK_TASKS}, got {self.tasks}")
        for name, weights in (
            ("loss_weights", self.loss_weights),
            ("score_weights", self.score_weights),
        ):
            bad = sorted(set(weights) - set(RANK_TASKS))
            if bad or any(w < 0 for w in weights.values()):
                raise ValueError(f"{name}: unknown tasks {bad} or negative weights")
        if not any(self.score_weights.get(t, 0.0) > 0 for t in self.tasks):
            raise ValueError("score_weights must give a positive weight to an enabled task")
        if self.d_model % self.n_heads:
            raise ValueError("d_model must be divisible by n_heads")
        if list(self.duration_edges_s) != sorted(self.duration_edges_s):
            raise ValueError("duration_edges_s must be increasing")
        return self


class RerankConfig(StrictModel):
    """Diversity re-ranking (``rerank/``): MMR or greedy DPP, then creator/topic caps.

    ``trade_off`` in [0, 1] weighs relevance against diversity: MMR's lambda, and for DPP the
    quality exponent ``theta`` of the kernel ``L = diag(exp(a r)) S diag(exp(a r))`` with
    ``a = theta / (2 (1 - theta))`` (Chen et al., NeurIPS 2018, section 4).

    ``similarity`` is the candidate similarity ``S``: ``"tags"`` (Jaccard of tag sets) or
    ``"content"``, the mix ``sum_p w_p S_p / sum_p w_p`` of tag Jaccard (``"tag"``), same topic
    (``"topic"``) and same creator (``"creator"``) with ``similarity_weights`` ``w_p`` (missing
    parts weigh 0; ignored for ``"tags"``). Tags alone are too sparse: two candidates rarely
    share a tag, so ``S`` is nearly the identity and ``trade_off`` has no effect.

    The default re-ranker is personalised (``personalise = "calibrated"``) whenever the
    caller passes the user's topic distribution (the offline full pipeline and serving do,
    from the topics of the user's views that were not skipped): calibrated re-ranking (Steck,
    RecSys 2018; ``calibration_*``) chooses each page so that its topics follow the user's
    mix, and each page is ordered by relevance plus ``topic_affinity`` times the log of the
    user's share of the item's topic. Diversity is thus spent on users whose history spans
    several topics, on those topics. On the ``medium`` oracle (bench/results/
    quality_medium.json) it gives +21.6 % distinct topics for +0.4 % NDCG@10 against pure
    relevance, where the DPP below at theta 0.87 (the earlier default) gave +23 % for -2.8 %.
    Without the distribution (degraded serving, or ``personalise = "none"``) ``method`` runs:
    DPP theta 0.87, creator cap 2, no topic cap, each page in relevance order (the DPP
    chooses what a page holds, relevance orders it; docs/quality.md has both sweeps).
    """

    method: Literal["mmr", "dpp", "none"] = "dpp"
    k: int = Field(default=20, ge=1)
    trade_off: float = Field(default=0.87, ge=0, le=1)
    max_per_creator: int | None = Field(default=2, ge=1)
    max_per_topic: int | None = Field(default=None, ge=1)
    lookback: int = Field(default=20, ge=0)
    dpp_epsilon: float = Field(default=1e-6, gt=0)
    similarity: Literal["tags", "content"] = "content"
    similarity_weights: dict[str, float] = Field(
        default_factory=lambda: {"tag": 0.2, "topic": 0.5, "creator": 0.3}
    )
    #: order of the chosen items: ``"greedy"`` the selector's pick order; ``"relevance"``
    #: each block of ``page_size`` consecutive picks (a page of the feed) by relevance: the
    #: selector chooses what a page holds, relevance the order within it
    page_order: Literal["greedy", "relevance"] = "relevance"
    page_size: int = Field(default=10, ge=1)
    #: personalisation, used only when the caller passes the user's topic distribution ``p``
    #: (``rerank(..., user_topics=p)``, built by ``rerank.user_topic_distribution``):
    #: ``"calibrated"`` chooses the page by calibrated re-ranking (Steck, RecSys 2018) instead
    #: of ``method`` and orders each page by ``r_i + topic_affinity * log p(topic_i)``;
    #: ``"none"`` ignores ``p``. Without ``p`` (e.g. serving in degraded mode, with no
    #: history read) ``method`` runs unchanged.
    personalise: Literal["none", "calibrated"] = "calibrated"
    #: calibration's relevance weight, Steck's ``1 - lambda``: 1 = relevance order
    calibration_trade_off: float = Field(default=0.45, ge=0, le=1)
    #: Steck's ``alpha``: the page's topic distribution is mixed with ``alpha p`` in the KL
    calibration_alpha: float = Field(default=0.01, gt=0, le=1)
    #: weight of the user's topic affinity ``log p(topic)`` in each page's order
    topic_affinity: float = Field(default=0.06, ge=0)
    #: pseudo-events spread evenly over the topics when ``p`` is estimated (smoothing)
    topic_prior: float = Field(default=1.0, ge=0)

    @model_validator(mode="after")
    def _check_weights(self) -> RerankConfig:
        w = self.similarity_weights
        parts = ("tag", "topic", "creator")
        unknown = sorted(set(w) - set(parts))
        if unknown:
            raise ValueError(f"similarity_weights: unknown key(s) {unknown}; expected {parts}")
        if any(not 0 <= v < float("inf") for v in w.values()) or not sum(w.values()) > 0:
            raise ValueError(f"similarity_weights: need finite weights >= 0, sum > 0; got {w}")
        return self


# ---- experiments (owned by experiments/)
#: Number of hash buckets per layer / experiment; bucket ranges are half-open ``[lo, hi)``.
EXPERIMENT_BUCKETS = 10_000
_EXP_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
ScalarParam = str | int | float | bool


class ArmOverrides(StrictModel):
    """What one arm changes in the serving stack; ``None`` (or an empty ``params``) = unchanged.

    ``model_version`` picks the ranker bundle; ``source_quotas`` replaces
    ``MergeConfig.quotas`` as a whole; ``diversity_trade_off`` replaces
    ``RerankConfig.trade_off`` and ``reranker`` replaces ``RerankConfig.method``; an arm that
    sets either runs that MMR / DPP selector unpersonalised (``personalise = "none"``: the
    calibrated re-ranking of the default reads neither); ``params`` holds further typed scalar
    knobs by name (for components added later).
    """

    model_version: str | None = None
    source_quotas: dict[str, float] | None = None
    diversity_trade_off: float | None = Field(default=None, ge=0, le=1)
    reranker: Literal["mmr", "dpp", "none"] | None = None
    params: dict[str, ScalarParam] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check_quotas(self) -> ArmOverrides:
        if self.source_quotas is not None:
            MergeConfig(quotas=self.source_quotas)  # same rules as the merge step's own config
        return self

    def fields_set(self) -> set[str]:
        """Names of the knobs this arm changes (``params.NAME`` for each free parameter)."""
        out = {
            f
            for f in ("model_version", "source_quotas", "diversity_trade_off", "reranker")
            if getattr(self, f) is not None
        }
        return out | {f"params.{k}" for k in self.params}


class ArmConfig(StrictModel):
    """One arm: a name, its allocation weight (relative to its siblings) and its overrides."""

    name: str = Field(pattern=_EXP_NAME)
    weight: float = Field(default=1.0, gt=0)
    overrides: ArmOverrides = ArmOverrides()


class ExperimentConfig(StrictModel):
    """One experiment, declared in a TOML file (``[[experiments]]``; see docs/experiments.md).

    Users are hashed into ``EXPERIMENT_BUCKETS`` buckets per layer (salt of the layer); the
    experiment owns the layer buckets ``buckets = [lo, hi)``, so experiments of one layer with
    disjoint ranges are mutually exclusive. Inside it, a second hash salted with ``salt``
    (default: the name) splits users over the arms by ``weight``. ``forced`` pins QA users
    (external user id -> arm) regardless of hashing and holdout.
    """

    name: str = Field(pattern=_EXP_NAME)
    description: str = ""
    layer: str = Field(default="default", pattern=_EXP_NAME)
    salt: str | None = None
    enabled: bool = True
    buckets: tuple[int, int] = (0, EXPERIMENT_BUCKETS)
    control: str | None = None
    arms: tuple[ArmConfig, ...] = Field(min_length=2)
    forced: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> ExperimentConfig:
        lo, hi = self.buckets
        if not 0 <= lo < hi <= EXPERIMENT_BUCKETS:
            raise ValueError(
                f"buckets must satisfy 0 <= lo < hi <= {EXPERIMENT_BUCKETS}, got [{lo}, {hi})"
            )
        names = [a.name for a in self.arms]
        if len(set(names)) != len(names):
            raise ValueError(f"arm names must be distinct, got {names}")
        if self.control is not None and self.control not in names:
            raise ValueError(f"control {self.control!r} is not an arm; arms are {names}")
        bad = {u: a for u, a in self.forced.items() if a not in names}
        if bad:
            raise ValueError(f"forced users pinned to unknown arms {bad}; arms are {names}")
        return self

    @property
    def control_arm(self) -> str:
        """The arm every other arm is compared with (``control``, default the first arm)."""
        return self.control if self.control is not None else self.arms[0].name

    @property
    def hash_salt(self) -> str:
        return self.salt if self.salt is not None else self.name


class LayerConfig(StrictModel):
    """A layer: experiments in different layers are assigned independently (orthogonal)."""

    salt: str | None = None


class HoldoutConfig(StrictModel):
    """Global holdout: a ``fraction`` of users (hashed with ``salt``) sees no experiment."""

    salt: str = Field(default="holdout", min_length=1)
    fraction: float = Field(default=0.0, ge=0, le=0.5)


class ExperimentsConfig(StrictModel):
    """The root of an experiments TOML file: holdout, layers and experiments.

    Checks: distinct experiment names; bucket ranges of enabled experiments in one layer do not
    overlap; one QA user is forced into at most one experiment per layer; and no knob is changed
    by experiments in two different layers (layers must own disjoint knobs, or the merged
    overrides would depend on assignment order).
    """

    version: int = Field(default=1, ge=1, le=1)
    holdout: HoldoutConfig = HoldoutConfig()
    layers: dict[str, LayerConfig] = Field(default_factory=dict)
    experiments: tuple[ExperimentConfig, ...] = ()

    @model_validator(mode="after")
    def _consistent(self) -> ExperimentsConfig:
        names = [e.name for e in self.experiments]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"experiment names must be distinct; repeated: {dup}")
        unknown = sorted({e.layer for e in self.experiments} - set(self.layers) - {"default"})
        if unknown and self.layers:
            raise ValueError(
                f"experiments use undeclared layers {unknown}; declared: {sorted(self.layers)}"
            )
        live = [e for e in self.experiments if e.enabled]
        for i, a in enumerate(live):
            for b in live[i + 1 :]:
                if a.layer != b.layer:
                    continue
                if a.buckets[0] < b.buckets[1] and b.buckets[0] < a.buckets[1]:
                    raise ValueError(
                        f"experiments {a.name!r} and {b.name!r} share layer "
                        f"{a.layer!r} and overlapping buckets {a.buckets}, "
                        f"{b.buckets}"
                    )
                both = sorted(set(a.forced) & set(b.forced))
                if both:
                    raise ValueError(
                        f"users {both} are forced into both {a.name!r} and "
                        f"{b.name!r} of layer {a.layer!r}"
                    )
        owner: dict[str, str] = {}
        for e in live:
            for knob in set().union(*(arm.overrides.fields_set() for arm in e.arms)):
                prev = owner.setdefault(knob, e.layer)
                if prev != e.layer:
                    raise ValueError(
                        f"{knob!r} is changed in layers {prev!r} and {e.layer!r}; "
                        f"a knob must belong to one layer"
                    )
        return self


SequentialMetric = Literal[
    "engagement_rate",
    "skip_rate",
    "watch_time_per_impression",
    "watch_ratio_per_impression",
    "watch_time_per_user",
    "likes_per_user",
]


class AnalysisConfig(StrictModel):
    """A/B log analysis (``experiments/analysis.py``; formulas in docs/experiments.md).

    ``k``: cut-off of Diversity@k and NDCG@k of served feeds; ``gain_cap``: NDCG gain is
    ``min(watch_ratio, gain_cap)`` (0 for a skip); ``n_bootstrap``: Poisson-bootstrap
    replicates for the lift intervals (0 turns them off); ``srm_alpha``: p-value below which
    the sample-ratio check fails; ``time_bin``: Polars duration of one step of the cumulative
    lift curve; ``msprt_tau_rel``: mixing scale of the mSPRT as a share of the control mean.
    """

    k: int = Field(default=10, ge=2)
    gain_cap: float = Field(default=2.0, gt=0)
    alpha: float = Field(default=0.05, gt=0, lt=1)
    power: float = Field(default=0.8, gt=0, lt=1)
    n_bootstrap: int = Field(default=1000, ge=0)
    srm_alpha: float = Field(default=0.001, gt=0, lt=1)
    cuped: bool = True
    time_bin: str = Field(default="1d", pattern=r"^[0-9]+(us|ms|s|m|h|d|w)$")
    sequential_metric: SequentialMetric = "watch_time_per_user"
    msprt_tau_rel: float = Field(default=0.05, gt=0)
    catalog_size: int | None = Field(default=None, ge=1)
    seed: int = 0


# ---- store (owned by store/)
class StoreConfig(StrictModel):
    """Online store (``store/``; ``docs/store.md`` describes the key layout and every bound).

    Keys live under ``{key_prefix}:{key_version}:`` (bump ``key_version`` when the layout
    changes, so old and new code never read each other's keys). Every key has a TTL or a bound:
    ``*_cap`` bounds a per-user structure, ``*_ttl_s`` expires it after that much inactivity.
    ``affinity_half_life_s`` and ``trending_half_life_s`` must match the offline tables that
    ``publish`` loads (retrieval's ``TagSourceConfig.half_life_days`` and
    ``TrendingConfig.half_life_hours``).
    """

    url: str = "redis://127.0.0.1:6379"
    db: int = Field(default=0, ge=0)
    key_prefix: str = Field(default="shortrec", pattern=r"^[A-Za-z0-9_.-]+$")
    key_version: int = Field(default=1, ge=1)
    connect_timeout_s: float = Field(default=0.25, gt=0)
    socket_timeout_s: float = Field(default=0.25, gt=0)
    max_connections: int = Field(default=64, ge=1)
    history_cap: int = Field(default=100, ge=1)
    history_ttl_s: int = Field(default=30 * 86_400, ge=1)
    seen_cap: int = Field(default=1_000, ge=1)
    seen_ttl_s: int = Field(default=7 * 86_400, ge=1)
    session_ttl_s: int = Field(default=3_600, ge=1)
    session_recent_cap: int = Field(default=30, ge=1)
    dedup_cap: int = Field(default=2_000, ge=1)
    dedup_ttl_s: int = Field(default=2 * 86_400, ge=1)
    affinity_half_life_s: float = Field(default=7 * 86_400.0, gt=0)
    max_user_tags: int = Field(default=32, ge=1)
    max_video_tags: int = Field(default=16, ge=1, le=255)
    trending_half_life_s: float = Field(default=86_400.0, gt=0)
    trending_cap: int = Field(default=10_000, ge=1)
    stream_maxlen: int = Field(default=1_000_000, ge=1)
    stream_claim_idle_ms: int = Field(default=30_000, ge=1)
    old_version_grace_s: int = Field(default=60, ge=1)
    publish_chunk: int = Field(default=5_000, ge=1)


#: the weight of the retrieval order mixed into the ranker's (``retrieval_blend`` of
#: ``FullPipelineConfig`` and ``ServingConfig``; ``shortrec.ranking.blend``)
DEFAULT_RETRIEVAL_BLEND = 0.8


# ---- serving (owned by serving/)
class ServingConfig(StrictModel):
    """Online serving (``serving/``; the API and every bound are described in docs/api.md).

    Time budget of one feed request: ``budget_ms`` in all, each stage with its own deadline
    (``deadline_*_ms``, capped by what is left of the budget); a stage that misses its deadline
    is skipped or falls back (sources: the remaining sources are skipped; ranking: retrieval
    order; the store: ``deadline_store_ms`` is the Redis client's connect/socket timeout, and a
    timeout serves the page from the in-process snapshot). ``n_candidates`` are merged
    and ranked, ``n_default`` returned when the client does not say (at most 100).
    ``retrieval_blend`` mixes the merge's order into the ranker's as rank percentiles
    (``shortrec.ranking.blend``; the same as the offline pipeline's), so a candidate's served
    score is in [0, 1]. ``skip_penalty`` is subtracted from that score once per skip of its
    topic in the current session, so quick skips of one topic shrink its share of the next page.
    Cache TTLs bound how stale shared lists may be (trending, fresh pool, cold-start pages).
    ``rerank`` diversifies the best ``rerank_pool`` ranked candidates (its ``k`` is replaced by
    the page size). ``fresh_slots``: at least that many places of a page go to the newest
    fresh-pool candidates (new uploads get exposure before any retraining). ``admin_token``
    (None: admin endpoints disabled) guards ``/admin/*``. ``rank_batching``
    coalesces concurrent ranking calls into one model call of at most ``rank_max_batch``, in
    the batcher's thread (off: each caller runs its own model call; the HTTP app's feed
    pipeline runs on the event loop, so keep it on there and set ``rank_max_batch`` 1 to
    score one request per call). ``request_threads`` bounds the threads that run event
    ingestion and video lookups per process (the feed runs on the loop).
    ``drift_window``: values per feature in the rolling drift window (when the bundle has a
    ``drift`` reference).
    """

    n_default: int = Field(default=10, ge=1, le=100)
    n_candidates: int = Field(default=500, ge=1, le=10_000)
    budget_ms: float = Field(default=250.0, gt=0)
    deadline_store_ms: float = Field(default=100.0, gt=0)
    deadline_sources_ms: float = Field(default=60.0, gt=0)
    deadline_ranking_ms: float = Field(default=100.0, gt=0)
    skip_penalty: float = Field(default=0.3, ge=0)
    trending_cache_ttl_s: float = Field(default=1.0, ge=0)
    fresh_cache_ttl_s: float = Field(default=1.0, ge=0)
    cold_cache_ttl_s: float = Field(default=2.0, ge=0)
    rerank: RerankConfig = RerankConfig()
    rerank_pool: int = Field(default=40, ge=1)
    retrieval_blend: float = Field(default=DEFAULT_RETRIEVAL_BLEND, ge=0, le=1)
    fresh_slots: int = Field(default=1, ge=0, le=100)
    rank_batching: bool = True
    rank_max_batch: int = Field(default=4, ge=1)
    #: directory of the exposure log (one JSON line per served page; None: not written)
    exposure_log_dir: str | None = None
    #: bundles an experiment arm can switch to with ``ArmOverrides.model_version``: label ->
    #: bundle directory (loaded and validated at start; an unknown label serves the default)
    models: dict[str, str] = Field(default_factory=dict)
    rank_threads: int = Field(default=1, ge=1)
    request_threads: int = Field(default=32, ge=1, le=256)
    admin_token: str | None = Field(default=None, min_length=16)
    max_body_bytes: int = Field(default=1_048_576, ge=1_024)
    max_events_per_batch: int = Field(default=500, ge=1)
    max_event_age_s: float = Field(default=7 * 86_400.0, gt=0)
    max_event_future_s: float = Field(default=300.0, ge=0)
    event_dedup_cache: int = Field(default=100_000, ge=0)
    health_interval_s: float = Field(default=0.5, gt=0)
    drain_interval_s: float = Field(default=1.0, gt=0)
    drain_batch: int = Field(default=1_000, ge=1)
    experiments_path: str | None = None
    workers: int = Field(default=1, ge=1, le=64)
    gc_freeze: bool = True
    gc_threshold0: int = Field(default=50_000, ge=700)
    drift_window: int = Field(default=5_000, ge=1)


# ---- drift reference (owned by pipelines.build_drift_reference)
class DriftReferenceConfig(StrictModel):
    """How the training-time drift reference is sampled: ``n_users`` users with history at the
    training cut-off, the top ``page`` of each one's ranked retrieval candidates."""

    n_users: int = Field(default=500, ge=1)
    page: int = Field(default=10, ge=1)
    seed: int = 0
