"""The served retrieval model: every source ready to answer, plus the merge.

``RetrievalModel.load(art)`` reads the ``retrieval`` component of an artifact bundle (written by
``pipeline.train_retrieval``); serving calls :meth:`RetrievalModel.retrieve` per request. No
training code is imported here.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from shortrec.artifacts import component_dir, read_manifest
from shortrec.config import RetrievalConfig
from shortrec.retrieval.index import VectorIndex
from shortrec.retrieval.merge import merge
from shortrec.retrieval.sources import (
    CandidateSource,
    CovisitSource,
    ExploreSource,
    FreshSource,
    TagSource,
    TrendingSource,
    VectorSource,
)
from shortrec.retrieval.two_tower import TrainedTwoTower
from shortrec.retrieval.types import Candidates, MergedCandidates, RetrievalRequest
from shortrec.schema import BadInput

COMPONENT = "retrieval"
META_FILE = "retrieval.json"
TRENDING_FILE = "trending.parquet"
TAGS_FILE = "tags.npz"
FRESH_FILE = "fresh.npz"
EXPLORE_FILE = "explore.npz"
COVISIT_FILE = "covisit.npz"  # optional: bundles written before the source lack it
TWO_TOWER_DIR = "two_tower"
INDEX_DIR = "index"


@dataclass(frozen=True)
class RetrievalModel:
    """All candidate sources (by name) with the config that built them; ``as_of_us`` is the
    time the statistics were computed at. ``vector`` and ``covisit`` may be absent (no trained
    two-tower; a bundle written before the co-visitation source)."""

    config: RetrievalConfig
    trending: TrendingSource
    tags: TagSource
    fresh: FreshSource
    explore: ExploreSource
    vector: VectorSource | None
    as_of_us: int
    covisit: CovisitSource | None = None

    @property
    def sources(self) -> dict[str, CandidateSource]:
        out: dict[str, CandidateSource] = {
            s.name: s for s in (self.trending, self.tags, self.fresh, self.explore)
        }
        for opt in (self.vector, self.covisit):
            if opt is not None:
                out[opt.name] = opt
        return out

    def _lists(
        self, request: RetrievalRequest, total: int | None, scale: float
    ) -> tuple[dict[str, float], dict[str, float], list[Candidates], bool]:
        """Every source with a quota or a fusion weight for this request, each asked for
        ``scale`` times its :meth:`MergeConfig.plan` size plus a slack for seen videos:
        ``(quotas, weights, lists, exhausted)``, ``exhausted`` when every source returned fewer
        than it was asked for (asking for more cannot help)."""
        cfg = self.config.merge
        total = cfg.total if total is None else total
        slack = min(int(np.unique(request.seen).shape[0]), cfg.seen_slack)
        quotas, weights, sizes = cfg.plan(total, 0, request.is_cold)
        srcs = self.sources
        lists, exhausted = [], True
        for name, size in sizes.items():
            if name in srcs:
                want = math.ceil(size * scale)
                c = srcs[name].candidates(request, want + slack)
                lists.append(c)
                exhausted &= len(c) < want
        return quotas, weights, lists, exhausted

    def retrieve(self, request: RetrievalRequest, total: int | None = None) -> MergedCandidates:
        """Merged candidates for one request: quotas and fusion weights (cold users:
        ``cold_quotas``), dedupe, the request's seen videos removed, ``total`` (default
        ``merge.total``) of them unless the sources together cannot propose that many.

        When overlap between sources leaves the set short, the sources are asked again for
        up to 4x, then 16x as many (rare: only when their lists overlap heavily)."""
        cfg = self.config.merge
        total = cfg.total if total is None else total
        for scale in (1.0, 4.0, 16.0):
            quotas, weights, lists, exhausted = self._lists(request, total, scale)
            out = merge(lists, quotas, total, request.seen, cfg.rrf_k, weights)
            if len(out) >= total or exhausted:
                break
        return out

    # ------------------------------------------------------------ persistence
    def save(self, directory: Path) -> None:
        """Write every source into ``directory`` (expected to be a fresh temporary directory
        that the caller renames into place, e.g. ``artifacts.write_component``)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self.trending.state.write_parquet(d / TRENDING_FILE)
        np.savez(d / TAGS_FILE, ptr=self.tags.ptr, video=self.tags.video, score=self.tags.score)
        f = self.fresh
        np.savez(
            d / FRESH_FILE,
            video=f.video,
            upload_us=f.upload_us,
            impressions=f.impressions,
            tag_ptr=f.tag_ptr,
            tag_flat=f.tag_flat,
        )
        np.savez(d / EXPLORE_FILE, video=self.explore.video, score=self.explore.score)
        if self.covisit is not None:
            c = self.covisit
            np.savez(d / COVISIT_FILE, ptr=c.ptr, nbr=c.nbr, score=c.score)
        if self.vector is not None:
            self.vector.model.save(d / TWO_TOWER_DIR)
            self.vector.index.save(d / INDEX_DIR)
        (d / META_FILE).write_text(
            json.dumps({"as_of_us": self.as_of_us, "has_vector": self.vector is not None})
        )

    @staticmethod
    def load_dir(directory: Path, config: RetrievalConfig) -> RetrievalModel:
        d = Path(directory)
        for name in (META_FILE, TRENDING_FILE, TAGS_FILE, FRESH_FILE, EXPLORE_FILE):
            if not (d / name).is_file():
                raise BadInput(f"{d / name}: file not found (incomplete retrieval component)")
        meta = json.loads((d / META_FILE).read_text())
        as_of = int(meta["as_of_us"])
        trending = TrendingSource.from_state(
            pl.read_parquet(d / TRENDING_FILE), as_of, config.trending, config.engagement
        )
        with np.load(d / TAGS_FILE) as z:
            tags = TagSource(config.tags, z["ptr"], z["video"], z["score"])
        with np.load(d / FRESH_FILE) as z:
            fresh = FreshSource(
                config.fresh,
                z["video"],
                z["upload_us"],
                z["impressions"],
                z["tag_ptr"],
                z["tag_flat"],
            )
        with np.load(d / EXPLORE_FILE) as z:
            explore = ExploreSource(config.explore, z["video"], z["score"])
        covisit = None
        if (d / COVISIT_FILE).is_file():
            with np.load(d / COVISIT_FILE) as z:
                covisit = CovisitSource(
                    config.covisit, config.engagement, z["ptr"], z["nbr"], z["score"]
                )
        vector = None
        if meta["has_vector"]:
            vector = VectorSource(
                TrainedTwoTower.load(d / TWO_TOWER_DIR),
                VectorIndex.load(d / INDEX_DIR, config.index.search_threads),
                config.engagement,
            )
        return RetrievalModel(config, trending, tags, fresh, explore, vector, as_of, covisit)

    @staticmethod
    def load(art: Path) -> RetrievalModel:
        """Load the ``retrieval`` component of the bundle at ``art`` with its recorded config."""
        directory = component_dir(art, COMPONENT)
        entry = read_manifest(art)["components"][COMPONENT]
        return RetrievalModel.load_dir(directory, RetrievalConfig.model_validate(entry["config"]))
