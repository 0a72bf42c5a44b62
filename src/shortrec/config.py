"""Typed configuration, one pydantic model per component; unknown keys are rejected.

Each component receives only its own config (never this whole module's tree). Environment
variables with the ``SHORTREC_`` prefix override :class:`Settings` (e.g. ``SHORTREC_REDIS_URL``).
Ownership: each class is edited together with the component it configures.
"""

from __future__ import annotations

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
    skip_bias: float = 0.2
    skip_min_frac: float = Field(default=0.15, ge=0, lt=1)
    complete_bias: float = -0.6
    complete_slope: float = Field(default=0.8, ge=0)
    complete_duration: float = Field(default=0.9, ge=0)
    partial_bias: float = -0.3
    partial_slope: float = Field(default=0.6, ge=0)
    replay_bias: float = -2.5
    replay_slope: float = Field(default=0.6, ge=0)
    replay_cap: float = Field(default=0.8, gt=0, lt=1)
    max_replays: int = Field(default=9, ge=0, le=50)
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
    chunk_users: int = Field(default=50_000, ge=1)
    #: users: sparse interests (topics with weight > 0 per user, Dirichlet concentration)
    user_topics_min: int = Field(default=1, ge=1)
    user_topics_max: int = Field(default=4, ge=1)
    interest_alpha: float = Field(default=0.7, gt=0)
    latent_dim: int = Field(default=8, ge=1, le=64)
    #: activity: sessions per day per user ~ lognormal(log(median), sd) (heavy-tailed)
    sessions_per_day: float = Field(default=1.0, gt=0)
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
        if self.policy_trending + self.policy_interest + self.policy_explore <= 0:
            raise ValueError("the logging policy mix must have a positive weight")
        return self

    @staticmethod
    def preset_config(name: Preset, seed: int = 0) -> SimConfig:
        sizes: dict[str, dict[str, Any]] = {
            "tiny": dict(n_users=200, n_videos=600, n_creators=60, n_topics=8, n_tags=64,
                         horizon_days=14.0),
            "small": dict(n_users=2_000, n_videos=5_000, n_creators=500, horizon_days=14.0),
            "medium": dict(n_users=20_000, n_videos=50_000, n_creators=5_000,
                           horizon_days=21.0),
            "large": dict(n_users=200_000, n_videos=1_000_000, n_creators=50_000,
                          n_topics=48, n_tags=2_000, horizon_days=42.0, chunk_users=16_000),
        }
        if name not in sizes:
            raise ValueError(f"unknown preset {name!r}; expected one of {sorted(sizes)}")
        return SimConfig(preset=name, seed=seed, **sizes[name])


# ---------------------------------------------------------------- data: ingestion
class IngestConfig(StrictModel):
    """Ingestion of real logs. Owned by ``data/ingest.py``."""

    skip_threshold_s: float = Field(default=DEFAULT_SKIP_THRESHOLD_S, gt=0)


# ---------------------------------------------------------------- data: ETL
class EtlConfig(StrictModel):
    """Leakage-free ETL. Owned by ``data/etl.py``."""

    valid_frac: float = Field(default=0.1, ge=0, lt=0.5)
    test_frac: float = Field(default=0.1, gt=0, lt=0.5)
    session_gap_s: float = Field(default=1800.0, gt=0)
    prior_strength: float = Field(default=20.0, ge=0)
    tag_half_life_days: float = Field(default=7.0, gt=0)
    n_buckets: int = Field(default=1, ge=1)
    history_len: int = Field(default=50, ge=1)


# ---------------------------------------------------------------- evaluation
Protocol = Literal["temporal", "loo-full", "loo-sampled", "oracle"]


class EvalConfig(StrictModel):
    """Offline evaluation. Owned by ``evaluation/``."""

    protocol: Protocol = "temporal"
    k: int = Field(default=10, ge=1)
    ks: tuple[int, ...] = (1, 5, 10, 20, 50, 100)
    n_negatives: int = Field(default=100, ge=1)
    negative_sampling: Literal["uniform", "popularity"] = "uniform"
    max_users: int | None = Field(default=None, ge=1)
    user_batch: int = Field(default=1024, ge=1)
    seed: int = 0


# ---- retrieval (owned by retrieval/)
RETRIEVAL_SOURCES = ("two_tower", "tags", "trending", "fresh", "explore")


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
    """FAISS index: exact (flat inner product) up to ``exact_max`` vectors, ANN above."""

    exact_max: int = Field(default=100_000, ge=1)
    ann: Literal["hnsw", "ivf"] = "hnsw"
    hnsw_m: int = Field(default=32, ge=4)
    hnsw_ef_construction: int = Field(default=64, ge=8)
    hnsw_ef_search: int = Field(default=128, ge=1)
    ivf_nlist: int | None = Field(default=None, ge=1)
    ivf_nprobe: int = Field(default=32, ge=1)
    threads: int = Field(default=2, ge=1)


class MergeConfig(StrictModel):
    """Merge: per-source quotas (fractions of ``total``), dedupe, seen-filter.

    ``quotas`` serve users with a history; ``cold_quotas`` users without one. Each source is
    asked for ``ceil(quota * total * oversample)`` candidates so that dedupe and the seen-filter
    still leave enough; slots a source cannot fill go to the others' next candidates.
    """

    total: int = Field(default=500, ge=1)
    quotas: dict[str, float] = Field(
        default_factory=lambda: {
            "two_tower": 0.45, "tags": 0.2, "trending": 0.15, "fresh": 0.1, "explore": 0.1,
        }
    )
    cold_quotas: dict[str, float] = Field(
        default_factory=lambda: {"trending": 0.5, "explore": 0.4, "fresh": 0.1}
    )
    oversample: float = Field(default=1.5, ge=1.0)
    rrf_k: float = Field(default=60.0, gt=0)

    @model_validator(mode="after")
    def _check_quotas(self) -> MergeConfig:
        for field, quotas in (("quotas", self.quotas), ("cold_quotas", self.cold_quotas)):
            unknown = sorted(set(quotas) - set(RETRIEVAL_SOURCES))
            if unknown:
                raise ValueError(f"{field}: unknown source(s) {unknown}; "
                                 f"expected some of {RETRIEVAL_SOURCES}")
            if any(q < 0 for q in quotas.values()):
                raise ValueError(f"{field}: quotas must be >= 0")
            total = sum(quotas.values())
            if total <= 0 or total > 1.0 + 1e-9:
                raise ValueError(f"{field}: quotas must sum to a value in (0, 1], got {total}")
        return self


class RetrievalConfig(StrictModel):
    """Candidate generation. Owned by ``retrieval/``; each source reads only its own part."""

    engagement: EngagementConfig = EngagementConfig()
    trending: TrendingConfig = TrendingConfig()
    tags: TagSourceConfig = TagSourceConfig()
    fresh: FreshConfig = FreshConfig()
    explore: ExploreConfig = ExploreConfig()
    two_tower: TwoTowerConfig = TwoTowerConfig()
    index: IndexConfig = IndexConfig()
    merge: MergeConfig = MergeConfig()
    n_candidates: int = Field(default=500, ge=1)
