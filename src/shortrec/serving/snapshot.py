"""The served bundle and the in-process catalogue: what serving holds in memory.

:class:`Bundle` is one loaded, validated artifact bundle (retrieval sources + FAISS index,
ranker predictor, static video features); the service swaps the whole object atomically on
reload. :class:`Catalogue` answers static video features (creator, topic, tags, duration,
upload time) from the bundle plus videos uploaded after it (``add``), so a feed request never
reads static features from the store. :func:`bundle_snapshot` turns a bundle into a
``store.Snapshot``: the degraded-mode fallback lists and what an empty in-process store is
seeded with.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import polars as pl

from shortrec import schema as S
from shortrec.artifacts import BundleError, component_dir, read_manifest
from shortrec.monitoring.drift import REFERENCE_COMPONENT, Reference, load_reference
from shortrec.ranking.predictor import CandidateSet, History, Predictor
from shortrec.retrieval.model import RetrievalModel
from shortrec.retrieval.types import RetrievalRequest
from shortrec.store import ScoredRows, Snapshot

I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]
F32 = npt.NDArray[np.float32]


@dataclass(frozen=True)
class VideoMeta:
    """Static features of videos, aligned arrays of shape (n,) (``tags`` (n, T), ``-1``
    padding). ``creator`` is the ranker's creator key (one value per creator, used for caps),
    ``category`` ``-1`` when unknown, ``duration_s`` NaN unknown, ``upload_us`` ``-1``."""

    creator: I64
    category: I64
    tags: I64
    duration_s: npt.NDArray[np.float64]
    upload_us: I64


class Catalogue:
    """Static video features: the bundle's table plus videos added online (thread-safe).

    Bundle rows come from the ranker's video table (``VideoTable``: tags shifted by +1 with 0
    padding, creators as hash buckets, durations as bucket indices whose upper edge is used).
    """

    def __init__(self, predictor: Predictor) -> None:
        vt = predictor.videos
        self.n_bundle = vt.n_videos
        self.n_creator_buckets = vt.n_creator_buckets
        self.max_tags = int(vt.tags.shape[1])
        self._creator = vt.creator.astype(np.int64)
        self._category = vt.category.astype(np.int64)
        #: categories (topics) of the bundle are ``0 .. n_categories - 1`` (at least 1)
        self.n_categories = max(int(self._category.max(initial=-1)) + 1, 1)
        self._tags = vt.tags.astype(np.int64) - 1  # back to tag_idx, -1 padding
        edges = np.asarray(predictor.config.duration_edges_s, np.float64)
        upper = np.concatenate([[np.nan], edges, [edges[-1] * 2 if edges.size else np.nan]])
        self._duration = upper[np.clip(vt.duration, 0, upper.shape[0] - 1)]
        self._upload = vt.upload_us.astype(np.int64)
        self._lock = threading.Lock()
        self._extra: dict[int, tuple[int, int, tuple[int, ...], float, int]] = {}

    def creator_key(self, creator_idx: int) -> int:
        """The ranker's key of a raw ``creator_idx`` (same formula as ``VideoTable``)."""
        return creator_idx % self.n_creator_buckets + 1

    def add(
        self,
        video_idx: int,
        creator_idx: int,
        category: int | None,
        tags: tuple[int, ...],
        duration_s: float,
        upload_us: int,
    ) -> None:
        """Register a new upload (idempotent; a bundle video keeps its bundle features)."""
        with self._lock:
            self._extra[int(video_idx)] = (
                self.creator_key(int(creator_idx)),
                -1 if category is None else int(category),
                tuple(int(t) for t in tags[: self.max_tags]),
                float(duration_s),
                int(upload_us),
            )

    def carry_over(self, other: Catalogue) -> None:
        """Take the online additions of ``other`` that this bundle's table lacks."""
        with other._lock:
            extra = dict(other._extra)
        with self._lock:
            for v, entry in extra.items():
                if v >= self.n_bundle:
                    self._extra.setdefault(v, entry)

    def known(self, video_idx: int) -> bool:
        return 0 <= video_idx < self.n_bundle or video_idx in self._extra

    def extra_fresh(self) -> list[tuple[int, int]]:
        """``(video_idx, upload_us)`` of the videos added online, newest first."""
        with self._lock:
            items = [(v, e[4]) for v, e in self._extra.items()]
        return sorted(items, key=lambda x: (-x[1], x[0]))

    def meta(self, video_idx: npt.ArrayLike) -> VideoMeta:
        """Features of ``video_idx`` (n,); unknown videos get missing values."""
        v = np.asarray(video_idx, np.int64).reshape(-1)
        n = v.shape[0]
        if n and v.min() >= 0 and v.max() < self.n_bundle:  # the common case: plain gathers
            return VideoMeta(
                self._creator[v],
                self._category[v],
                self._tags[v].reshape(n, self.max_tags),
                self._duration[v],
                self._upload[v],
            )
        inb = (v >= 0) & (v < self.n_bundle)
        vb = np.where(inb, v, 0)
        creator = np.where(inb, self._creator[vb], -1)
        category = np.where(inb, self._category[vb], -1)
        tags = np.where(inb[:, None], self._tags[vb], -1)
        duration = np.where(inb, self._duration[vb], np.nan)
        upload = np.where(inb, self._upload[vb], -1)
        if self._extra and not inb.all():
            with self._lock:
                for i in np.flatnonzero(~inb).tolist():
                    e = self._extra.get(int(v[i]))
                    if e is None:
                        continue
                    creator[i], category[i] = e[0], e[1]
                    tags[i, :] = -1
                    tags[i, : len(e[2])] = e[2]
                    duration[i], upload[i] = e[3], e[4]
        return VideoMeta(creator, category, tags.reshape(n, self.max_tags), duration, upload)


@dataclass(frozen=True)
class Bundle:
    """One loaded artifact bundle; replaced as a whole on reload."""

    path: Path
    model_version: str
    retrieval: RetrievalModel
    predictor: Predictor
    catalogue: Catalogue
    drift: Reference | None = None

    @property
    def backend(self) -> str:
        return self.predictor.backend

    @staticmethod
    def load(
        art: Path, catalogue_from: Bundle | None = None, rank_threads: int | None = None
    ) -> Bundle:
        """Load and validate the bundle at ``art``: both components load, the ranker scores a
        probe request to finite values, and the two components agree on the catalogue size.
        Raises :class:`~shortrec.artifacts.BundleError` (a ``BadInput``) naming what is wrong.
        Videos added online to ``catalogue_from`` are carried over when the new bundle does
        not have them. ``rank_threads`` overrides the ONNX Runtime intra-op threads of the
        training config (serving runs one request per core, so 1 is usually best)."""
        art = Path(art)
        manifest = read_manifest(art)
        version = manifest.get("model_version")
        if not isinstance(version, str) or not version:
            raise BundleError(f"{art / 'manifest.json'}: no model_version (empty bundle?)")
        try:
            retrieval = RetrievalModel.load(art)
            predictor = Predictor.load(art, threads=rank_threads)
        except BundleError:
            raise
        except Exception as e:  # unreadable files of any kind make a bad bundle, not a 500
            raise BundleError(f"{art}: cannot load bundle: {type(e).__name__}: {e}") from e
        if retrieval.vector is not None:
            n_ret = retrieval.vector.model.vocab.n_videos
            if n_ret != predictor.videos.n_videos:
                raise BundleError(
                    f"{art}: retrieval knows {n_ret} videos but the ranker "
                    f"{predictor.videos.n_videos}; the components come from different data"
                )
        n_probe = min(8, predictor.videos.n_videos)
        try:
            probe = predictor.score(
                History.empty(retrieval.as_of_us),
                CandidateSet(np.arange(n_probe, dtype=np.int64)),
            )
        except Exception as e:  # any failure of the model file is a bad bundle
            raise BundleError(f"{art}: ranker probe failed: {type(e).__name__}: {e}") from e
        if not np.isfinite(probe.final).all():
            raise BundleError(f"{art}: ranker probe returned non-finite scores")
        try:  # every source and the merge once: a broken source fails here, not in traffic,
            # and the compiled (numba) kernels are loaded or compiled before the first request
            retrieval.retrieve(
                RetrievalRequest(
                    user_idx=0,
                    now_us=retrieval.as_of_us,
                    history=np.arange(n_probe, dtype=np.int32),
                    tag_idx=np.zeros(1, np.int32),
                    tag_weight=np.ones(1, np.float32),
                ),
                total=n_probe,
            )
        except Exception as e:
            raise BundleError(f"{art}: retrieval probe failed: {type(e).__name__}: {e}") from e
        drift = None
        if REFERENCE_COMPONENT in manifest.get("components", {}):
            try:
                drift = load_reference(component_dir(art, REFERENCE_COMPONENT))
            except Exception as e:  # a broken reference is a broken bundle
                raise BundleError(f"{art}: cannot load the drift reference: {e}") from e
        catalogue = Catalogue(predictor)
        if catalogue_from is not None:
            catalogue.carry_over(catalogue_from.catalogue)
        return Bundle(art, version, retrieval, predictor, catalogue, drift)


def bundle_snapshot(bundle: Bundle, as_of_us: int | None = None) -> Snapshot:
    """A store snapshot from the bundle alone: catalogue, trending, per-tag lists and the
    fresh pool (no per-user tables: those come from ``shortrec publish``)."""
    cat = bundle.catalogue
    n = cat.n_bundle
    m = cat.meta(np.arange(n))
    tags = [[int(t) for t in row if t >= 0] for row in m.tags.tolist()]
    videos = pl.DataFrame(
        {
            S.VIDEO_IDX: np.arange(n, dtype=np.int32),
            S.CREATOR_IDX: m.creator.astype(np.int32),
            S.CATEGORY: m.category,
            S.TAGS: tags,
            S.DURATION_S: m.duration_s.astype(np.float32),
            S.UPLOAD_TS: m.upload_us,
        },
        schema_overrides={S.TAGS: pl.List(pl.Int32)},
    ).with_columns(
        pl.when(pl.col(S.CATEGORY) >= 0).then(pl.col(S.CATEGORY)).cast(pl.Int16),
        pl.col(S.DURATION_S).fill_nan(None),
        pl.when(pl.col(S.UPLOAD_TS) >= 0)
        .then(pl.col(S.UPLOAD_TS))
        .cast(pl.Datetime("us"))
        .dt.replace_time_zone("UTC"),
    )
    return Snapshot(
        as_of_us=bundle.retrieval.as_of_us if as_of_us is None else as_of_us,
        videos=videos,
        trending=retrieval_trending(bundle.retrieval),
        tag_top=retrieval_tag_top(bundle.retrieval),
        fresh=bundle.retrieval.fresh.video,
    )


def retrieval_trending(model: RetrievalModel) -> ScoredRows | None:
    """The bundle's trending state (region, video, decayed score at ``as_of_us``)."""
    st = model.trending.state
    if st.height == 0:
        return None
    return ScoredRows.from_frame(st.rename({st.columns[0]: "group"}), "group", st.columns[2])


def retrieval_tag_top(model: RetrievalModel) -> ScoredRows | None:
    """The bundle's per-tag top lists as rows (group = tag_idx)."""
    t = model.tags
    lens = np.diff(t.ptr)
    if lens.sum() == 0:
        return None
    group = np.repeat(np.arange(lens.shape[0], dtype=np.int64), lens)
    return ScoredRows(group, t.video, t.score.astype(np.float64))
