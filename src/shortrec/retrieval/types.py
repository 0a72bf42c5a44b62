"""Immutable values that flow through candidate generation.

A :class:`RetrievalRequest` is everything a source may know about one feed request (built by
serving from the online store, or offline from training data); :class:`Candidates` is what one
source returns; :class:`MergedCandidates` is the merged, deduplicated, seen-filtered set where
each candidate keeps the sources that proposed it. Arrays are copied and made read-only on
construction, so a value cannot change after it was made. Times are int64 microseconds since
the Unix epoch (UTC).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

Idx32 = npt.NDArray[np.int32]
F32 = npt.NDArray[np.float32]
BoolArray = npt.NDArray[np.bool_]
Mask = npt.NDArray[np.uint16]


def _frozen(a: npt.ArrayLike, dtype: type[np.generic], name: str, ndim: int = 1) -> np.ndarray:
    out = np.array(a, dtype=dtype, copy=True)
    if out.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-d array, got shape {out.shape}")
    out.flags.writeable = False
    return out


def _empty_i32() -> Idx32:
    return np.zeros(0, dtype=np.int32)


@dataclass(frozen=True)
class RetrievalRequest:
    """One user's feed request as the candidate sources see it.

    ``history``: video_idx of the user's recent impressions, most recent last, shape (h,);
    ``watch_ratio``/``skipped``: optional per-impression signals aligned with ``history``
    (NaN / absent when unknown); ``tag_idx``/``tag_weight``: the user's decayed tag affinities
    (any order, weights >= 0); ``seen``: video_idx the user must not be shown again (any order,
    duplicates allowed); ``region``/``age_bucket``/``device``: profile, None when unknown.
    A request with an empty ``history`` is a *cold* user.
    """

    user_idx: int
    now_us: int
    history: Idx32 = field(default_factory=_empty_i32)
    watch_ratio: F32 | None = None
    skipped: BoolArray | None = None
    tag_idx: Idx32 = field(default_factory=_empty_i32)
    tag_weight: F32 = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    seen: Idx32 = field(default_factory=_empty_i32)
    region: str | None = None
    age_bucket: str | None = None
    device: str | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "history", _frozen(self.history, np.int32, "history"))
        n = self.history.shape[0]
        if self.watch_ratio is not None:
            set_(self, "watch_ratio", _frozen(self.watch_ratio, np.float32, "watch_ratio"))
            if self.watch_ratio.shape[0] != n:
                raise ValueError(
                    f"watch_ratio has {self.watch_ratio.shape[0]} values for a history of {n}"
                )
        if self.skipped is not None:
            set_(self, "skipped", _frozen(self.skipped, np.bool_, "skipped"))
            if self.skipped.shape[0] != n:
                raise ValueError(f"skipped has {self.skipped.shape[0]} values for a history of {n}")
        set_(self, "tag_idx", _frozen(self.tag_idx, np.int32, "tag_idx"))
        set_(self, "tag_weight", _frozen(self.tag_weight, np.float32, "tag_weight"))
        if self.tag_idx.shape != self.tag_weight.shape:
            raise ValueError(
                f"tag_idx {self.tag_idx.shape} and tag_weight "
                f"{self.tag_weight.shape} differ in shape"
            )
        set_(self, "seen", _frozen(self.seen, np.int32, "seen"))

    @property
    def is_cold(self) -> bool:
        """True for a user without any history."""
        return bool(self.history.shape[0] == 0)


@dataclass(frozen=True)
class Candidates:
    """One source's answer: ``video_idx`` (k,) int32, best first, with ``score`` (k,) float32
    (higher is better; comparable only within one source)."""

    source: str
    video_idx: Idx32
    score: F32

    def __post_init__(self) -> None:
        object.__setattr__(self, "video_idx", _frozen(self.video_idx, np.int32, "video_idx"))
        object.__setattr__(self, "score", _frozen(self.score, np.float32, "score"))
        if self.video_idx.shape != self.score.shape:
            raise ValueError(
                f"{self.source}: video_idx {self.video_idx.shape} and score "
                f"{self.score.shape} differ in shape"
            )

    def __len__(self) -> int:
        return int(self.video_idx.shape[0])

    @staticmethod
    def empty(source: str) -> Candidates:
        return Candidates(source, np.zeros(0, np.int32), np.zeros(0, np.float32))


@dataclass(frozen=True)
class MergedCandidates:
    """The merged candidate set, best first.

    ``video_idx`` (n,) int32 unique and never in the request's seen set; ``score`` (n,) float32
    the fused rank score (weighted reciprocal-rank fusion, higher is better); ``sources`` (n,)
    uint16 bit mask: bit ``b`` set when ``source_names[b]`` proposed the video (whether or not
    that source's quota admitted it).
    """

    video_idx: Idx32
    score: F32
    sources: Mask
    source_names: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "video_idx", _frozen(self.video_idx, np.int32, "video_idx"))
        object.__setattr__(self, "score", _frozen(self.score, np.float32, "score"))
        object.__setattr__(self, "sources", _frozen(self.sources, np.uint16, "sources"))
        if not self.video_idx.shape == self.score.shape == self.sources.shape:
            raise ValueError("video_idx, score and sources differ in shape")
        if len(self.source_names) > 16:
            raise ValueError("at most 16 sources fit the uint16 mask")

    def __len__(self) -> int:
        return int(self.video_idx.shape[0])

    def sources_of(self, i: int) -> tuple[str, ...]:
        """Names of the sources that proposed candidate ``i``."""
        m = int(self.sources[i])
        return tuple(n for b, n in enumerate(self.source_names) if m >> b & 1)

    def from_source(self, name: str) -> BoolArray:
        """Boolean mask (n,) of the candidates that ``name`` proposed."""
        b = self.source_names.index(name)
        return (self.sources >> np.uint16(b) & np.uint16(1)).astype(np.bool_)
