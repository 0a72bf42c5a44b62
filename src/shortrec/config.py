"""Typed configuration, one pydantic model per component; unknown keys are rejected.

Each component receives only its own config (never this whole module's tree). Environment
variables with the ``SHORTREC_`` prefix override :class:`Settings` (e.g. ``SHORTREC_REDIS_URL``).
Ownership: each class is edited together with the component it configures.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
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


class SimConfig(StrictModel):
    """World simulator. Owned by ``data/simulator.py``; see ``SimConfig.preset``."""

    preset: str = "custom"
    seed: int = 0
    n_users: int = Field(default=2_000, ge=1)
    n_videos: int = Field(default=5_000, ge=1)
    n_creators: int = Field(default=500, ge=1)
    n_topics: int = Field(default=24, ge=2)
    n_tags: int = Field(default=400, ge=2)
    horizon_days: float = Field(default=30.0, gt=0)
    start: str = "2026-01-01T00:00:00+00:00"
    skip_threshold_s: float = Field(default=DEFAULT_SKIP_THRESHOLD_S, gt=0)
    chunk_users: int = Field(default=50_000, ge=1)

    @staticmethod
    def preset_config(name: Preset, seed: int = 0) -> SimConfig:
        sizes = {
            "tiny": dict(n_users=200, n_videos=600, n_creators=60, n_topics=8, n_tags=64,
                         horizon_days=14.0),
            "small": dict(n_users=2_000, n_videos=5_000, n_creators=500),
            "medium": dict(n_users=20_000, n_videos=50_000, n_creators=5_000),
            "large": dict(n_users=200_000, n_videos=1_000_000, n_creators=50_000),
        }
        if name not in sizes:
            raise ValueError(f"unknown preset {name!r}; expected one of {sorted(sizes)}")
        return SimConfig(preset=name, seed=seed, **sizes[name])  # type: ignore[arg-type]


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
