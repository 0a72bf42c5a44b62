"""Offline ``publish`` composition: load a dataset's ETL outputs and the artifact bundle into
the online store under a new version, then switch to it atomically.

What is published (``store.Snapshot``): the video catalogue (``videos.parquet``) with the
smoothed train statistics (``etl/video_stats.parquet``); the bundle's retrieval lists
(trending state, per-tag top lists, fresh pool), so online and offline sources agree; and per
user the published history (``etl/histories.parquet``) and tag affinities
(``etl/user_tag_affinity.parquet``), keyed by external user id through ``vocab/users``.
The snapshot time is the retrieval component's ``as_of_us`` (its statistics' time).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import polars as pl

from shortrec import schema as S
from shortrec.artifacts import BundleError
from shortrec.config import StoreConfig
from shortrec.retrieval.model import RetrievalModel
from shortrec.serving.snapshot import retrieval_tag_top, retrieval_trending
from shortrec.store import MemoryStore, OnlineStore, Snapshot, open_store
from shortrec.store import publish as store_publish

ETL_DIR = "etl"
VIDEOS_FILE = "videos.parquet"
USERS_VOCAB = "vocab/users.parquet"
VIDEO_STATS_FILE = "video_stats.parquet"
HISTORIES_FILE = "histories.parquet"
AFFINITY_FILE = "user_tag_affinity.parquet"


def _read(path: Path, what: str) -> pl.DataFrame:
    """Read a required parquet input, naming it when missing or unreadable."""
    if not path.is_file():
        raise S.BadInput(f"{path}: {what} not found (run `shortrec etl` first?)")
    try:
        return pl.read_parquet(path)
    except Exception as e:  # a corrupt file is bad input, named
        raise S.BadInput(f"{path}: cannot read {what}: {e}") from e


def build_snapshot(dataset_root: Path, art: Path) -> Snapshot:
    """The snapshot to publish from ``dataset_root`` (with its ``etl/``) and bundle ``art``.

    Raises ``BadInput`` naming the missing or unreadable file.
    """
    root = Path(dataset_root)
    etl = root / ETL_DIR
    videos = _read(root / VIDEOS_FILE, "videos table")
    S.check(S.conform(videos, S.VIDEOS), S.VIDEOS, str(root / VIDEOS_FILE))
    try:
        model = RetrievalModel.load(Path(art))
    except BundleError:
        raise
    except Exception as e:
        raise BundleError(f"{art}: cannot load the retrieval component: {e}") from e
    histories = _read(etl / HISTORIES_FILE, "user histories")
    affinities = _read(etl / AFFINITY_FILE, "user tag affinities")
    vocab = _read(root / USERS_VOCAB, "users vocabulary")
    return Snapshot(
        as_of_us=model.as_of_us,
        videos=videos,
        video_stats=(
            _read(etl / VIDEO_STATS_FILE, "video statistics")
            if (etl / VIDEO_STATS_FILE).is_file()
            else None
        ),
        trending=retrieval_trending(model),
        tag_top=retrieval_tag_top(model),
        fresh=model.fresh.video,
        user_vocab=vocab,
        histories=histories,
        affinities=affinities,
    )


def publish(
    dataset_root: Path,
    art: Path,
    redis_url: str | None = None,
    progress: bool = True,
    store: OnlineStore | None = None,
    config: StoreConfig | None = None,
) -> dict[str, Any]:
    """Publish ``dataset_root`` + bundle ``art`` into the store at ``redis_url`` (or the
    given ``store``; with neither, an in-process store, which only validates the tables).

    Returns ``{"version", "as_of_us", "videos", "users", "seconds"}``.
    """
    t0 = time.perf_counter()
    cfg = config or (StoreConfig(url=redis_url) if redis_url else StoreConfig())
    snap = build_snapshot(Path(dataset_root), Path(art))
    own = store is None
    target: OnlineStore
    if store is not None:
        target = store
    elif redis_url:
        target = open_store(cfg)
    else:
        target = MemoryStore(cfg)
    try:
        if progress:
            print(f"publishing {snap.videos.height} videos to {redis_url or 'memory'} ...")
        version = store_publish(target, snap, cfg)
    finally:
        if own:
            target.close()
    users = snap.histories.height if snap.histories is not None else 0
    return {
        "version": version,
        "as_of_us": snap.as_of_us,
        "videos": snap.videos.height,
        "users": users,
        "seconds": round(time.perf_counter() - t0, 3),
    }
