"""Value types of the online store: what goes in (events, published tables) and what comes out
(a request's context, a batch of video features, ranked lists).

Every value is a frozen dataclass; numpy arrays are copied and made read-only on construction,
so a value cannot change after it was made. Times are int64 microseconds since the Unix epoch
(UTC). Users are keyed by their external id string (what the API receives, so a user seen for
the first time online needs no dense index); videos, creators, tags and categories by their
dense indices (what the catalogue, the index and the ranker use).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from shortrec import schema as S

I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]
F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
Bools = npt.NDArray[np.bool_]

#: Sentinel for a missing timestamp in int64 arrays (e.g. a video without an upload time).
NO_TS = int(np.iinfo(np.int64).min)
#: Sentinel for a missing index (creator, category) in integer arrays.
NO_IDX = -1
#: Region name of the global trending list.
GLOBAL_REGION = "*"
_MAX_IDX = 2**31 - 1
_MAX_ID_LEN = 256
# Braces would break the Redis Cluster hash tag; whitespace and control characters make keys
# unreadable in tooling. Everything else (unicode included) is a valid external id.
_BAD_ID = re.compile(r"[{}\s\x00-\x1f\x7f]")


class StoreError(RuntimeError):
    """Base of every error the online store raises that is not caused by bad input."""


class StoreUnavailable(StoreError):
    """The store cannot be reached (refused, timed out, loading): serving should degrade."""


class StoreInputError(S.BadInput):
    """A value handed to the store is malformed; the message names the record and field."""


def check_id(value: object, what: str, where: str = "") -> str:
    """Return ``value`` if it is a valid external id / region name, else raise.

    Valid: a non-empty ``str`` of at most 256 characters without braces, whitespace or control
    characters.
    """
    at = f"{where}: " if where else ""
    if not isinstance(value, str) or not value:
        raise StoreInputError(f"{at}field {what}: expected a non-empty string, got {value!r}")
    if len(value) > _MAX_ID_LEN:
        raise StoreInputError(f"{at}field {what}: longer than {_MAX_ID_LEN} characters")
    if _BAD_ID.search(value):
        raise StoreInputError(
            f"{at}field {what}: {value!r} contains braces, whitespace or control characters"
        )
    return value


def _check_int(value: object, what: str, where: str, lo: int = 0, hi: int = 2**63 - 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise StoreInputError(f"{where}: field {what}: expected an integer, got {value!r}")
    v = int(value)
    if not lo <= v <= hi:
        raise StoreInputError(f"{where}: field {what}: {v} not in [{lo}, {hi}]")
    return v


def _frozen(a: npt.ArrayLike, dtype: type[np.generic], name: str) -> Any:
    out = np.array(a, dtype=dtype, copy=True)
    if out.ndim != 1:
        raise ValueError(f"{name}: expected a 1-d array, got shape {out.shape}")
    out.flags.writeable = False
    return out


def _freeze_fields(obj: object, spec: dict[str, type[np.generic]]) -> int:
    """Freeze the named array fields of a dataclass; return their common length."""
    n: int | None = None
    for name, dtype in spec.items():
        arr = _frozen(getattr(obj, name), dtype, name)
        object.__setattr__(obj, name, arr)
        if n is None:
            n = arr.shape[0]
        elif arr.shape[0] != n:
            raise ValueError(f"{type(obj).__name__}.{name}: length {arr.shape[0]}, expected {n}")
    return n or 0


# ---------------------------------------------------------------- inputs
@dataclass(frozen=True)
class StoreEvent:
    """One impression outcome reported by a client, as the store applies it.

    ``engagement`` (>= 0) is the impression's engagement computed by the caller with the same
    formula as the offline tables (retrieval's ``engagement_expr``): it feeds the decayed tag
    affinities and trending. ``watch_ratio`` is NaN when unknown. ``region`` (optional) also
    updates that region's trending list when the published version has one.
    """

    event_id: int
    user_id: str
    session_id: int
    video_idx: int
    ts_us: int
    watch_ratio: float = math.nan
    skipped: bool = False
    liked: bool = False
    shared: bool = False
    followed: bool = False
    engagement: float = 0.0
    region: str | None = None

    def __post_init__(self) -> None:
        where = f"event {self.event_id!r}"
        _check_int(self.event_id, S.EVENT_ID, where)
        check_id(self.user_id, "user_id", where)
        _check_int(self.session_id, S.SESSION_ID, where)
        _check_int(self.video_idx, S.VIDEO_IDX, where, hi=_MAX_IDX)
        _check_int(self.ts_us, S.TS, where, lo=0)
        wr = float(self.watch_ratio)
        if not (math.isnan(wr) or (math.isfinite(wr) and wr >= 0)):
            raise StoreInputError(f"{where}: field {S.WATCH_RATIO}: {wr} is not NaN or >= 0")
        eng = float(self.engagement)
        if not (math.isfinite(eng) and eng >= 0):
            raise StoreInputError(f"{where}: field engagement: {eng} is not finite and >= 0")
        for name in (S.SKIPPED, S.LIKED, S.SHARED, S.FOLLOWED):
            if not isinstance(getattr(self, name), bool | np.bool_):
                raise StoreInputError(f"{where}: field {name}: expected a bool")
        if self.region is not None:
            check_id(self.region, S.REGION, where)
        object.__setattr__(self, "watch_ratio", wr)
        object.__setattr__(self, "engagement", eng)


@dataclass(frozen=True)
class ScoredRows:
    """Ranked lists to publish, one row per (group, video): ``group`` (n,) the list key (a
    region name for trending, a tag index for per-tag lists), ``video_idx`` (n,) int32,
    ``score`` (n,) float64 (higher first; for trending the decayed score at ``as_of_us``)."""

    group: npt.NDArray[Any]
    video_idx: I32
    score: F64

    def __post_init__(self) -> None:
        g = np.asarray(self.group)
        if g.ndim != 1:
            raise StoreInputError(f"ScoredRows.group: expected 1-d, got shape {g.shape}")
        g = g.copy()
        g.flags.writeable = False
        object.__setattr__(self, "group", g)
        vid = np.asarray(self.video_idx)
        if vid.size and (vid.min() < 0 or vid.max() > _MAX_IDX):
            raise StoreInputError(f"ScoredRows.{S.VIDEO_IDX}: values outside [0, 2^31)")
        sc = np.asarray(self.score, dtype=np.float64)
        if not np.isfinite(sc).all():
            raise StoreInputError("ScoredRows.score: NaN or infinite values")
        if not g.shape[0] == vid.shape[0] == sc.shape[0]:
            raise StoreInputError("ScoredRows: group, video_idx and score differ in length")
        _freeze_fields(self, {"video_idx": np.int32, "score": np.float64})

    @staticmethod
    def from_frame(df: pl.DataFrame, group_col: str, score_col: str) -> ScoredRows:
        """Rows from a frame with ``group_col``, ``video_idx`` and ``score_col`` columns."""
        for c in (group_col, S.VIDEO_IDX, score_col):
            if c not in df.columns:
                raise StoreInputError(f"ranked list frame: missing column {c!r}")
        return ScoredRows(
            df.get_column(group_col).to_numpy(),
            df.get_column(S.VIDEO_IDX).to_numpy(),
            df.get_column(score_col).cast(pl.Float64).to_numpy(),
        )

    def groups(self) -> list[tuple[Any, I32, F64]]:
        """Per group (in first-appearance order): its videos and scores, best first."""
        out: list[tuple[Any, I32, F64]] = []
        if not self.group.shape[0]:
            return out
        _, first, inverse = np.unique(self.group, return_index=True, return_inverse=True)
        for g in np.argsort(first, kind="stable"):
            rows = np.flatnonzero(inverse == g)
            # best first; ties by video_idx so the stored order is reproducible
            order = np.lexsort((self.video_idx[rows], -self.score[rows]))
            rows = rows[order]
            out.append((self.group[rows[0]], self.video_idx[rows], self.score[rows]))
        return out


# ---------------------------------------------------------------- outputs
@dataclass(frozen=True)
class ScoredList:
    """One ranked list: ``video_idx`` (k,) int32 best first with ``score`` (k,) float64."""

    video_idx: I32
    score: F64

    def __post_init__(self) -> None:
        _freeze_fields(self, {"video_idx": np.int32, "score": np.float64})

    def __len__(self) -> int:
        return int(self.video_idx.shape[0])


@dataclass(frozen=True)
class SessionState:
    """What this session has served so far.

    ``n_served``/``n_skips`` count every impression/skip of the session; the ``recent_*`` arrays
    (aligned, most recent last, at most ``StoreConfig.session_recent_cap``) name the last videos
    served with their creator, category (:data:`NO_IDX` when unknown) and whether they were
    skipped. A new session (or none yet) has zero counts and empty arrays.
    """

    session_id: int
    started_us: int = NO_TS
    last_us: int = NO_TS
    n_served: int = 0
    n_skips: int = 0
    recent_video_idx: I32 = field(default_factory=lambda: np.zeros(0, np.int32))
    recent_creator_idx: I32 = field(default_factory=lambda: np.zeros(0, np.int32))
    recent_category: I32 = field(default_factory=lambda: np.zeros(0, np.int32))
    recent_skipped: Bools = field(default_factory=lambda: np.zeros(0, np.bool_))

    def __post_init__(self) -> None:
        _freeze_fields(
            self,
            {
                "recent_video_idx": np.int32,
                "recent_creator_idx": np.int32,
                "recent_category": np.int32,
                "recent_skipped": np.bool_,
            },
        )

    @property
    def creators(self) -> frozenset[int]:
        """Creators among the recent videos of this session."""
        return frozenset(int(c) for c in self.recent_creator_idx if c != NO_IDX)

    @property
    def categories(self) -> frozenset[int]:
        """Topics (categories) among the recent videos of this session."""
        return frozenset(int(c) for c in self.recent_category if c != NO_IDX)

    @property
    def recent_skips(self) -> I32:
        """video_idx of the recent videos the user skipped, most recent last."""
        out: I32 = self.recent_video_idx[self.recent_skipped]
        return out


@dataclass(frozen=True)
class RequestContext:
    """Everything one feed request needs from the store, read in one round trip.

    ``history`` (h,) int32 video_idx, most recent last, with ``history_ts`` (h,) int64,
    ``watch_ratio`` (h,) float32 (NaN unknown) and ``skipped`` (h,) bool; it is the published
    history followed by live impressions after the published snapshot, capped at
    ``StoreConfig.history_cap``. ``seen`` (s,) int32 sorted unique: videos not to show again
    (live seen set within its TTL plus the published history). ``tag_idx``/``tag_weight``
    (t,) the decayed tag affinities at ``now_us`` (heaviest first, at most
    ``StoreConfig.max_user_tags``). ``version`` is the published version read (0: none).
    """

    user_id: str
    now_us: int
    version: int
    history: I32
    history_ts: I64
    watch_ratio: F32
    skipped: Bools
    seen: I32
    tag_idx: I32
    tag_weight: F32
    session: SessionState

    def __post_init__(self) -> None:
        _freeze_fields(
            self,
            {
                "history": np.int32,
                "history_ts": np.int64,
                "watch_ratio": np.float32,
                "skipped": np.bool_,
            },
        )
        _freeze_fields(self, {"tag_idx": np.int32, "tag_weight": np.float32})
        _freeze_fields(self, {"seen": np.int32})

    @property
    def is_cold(self) -> bool:
        """True for a user without any history."""
        return bool(self.history.shape[0] == 0)


@dataclass(frozen=True)
class VideoFeatureBatch:
    """Features of a batch of videos, columnar, aligned with ``video_idx`` (n,).

    ``known`` is False for a video the published version does not have (its other fields are
    then missing values). Published: ``creator_idx``/``category`` int32 (:data:`NO_IDX`
    missing), tags as CSR (``tags(i)`` = ``tag_values[tag_offsets[i]:tag_offsets[i+1]]``),
    ``duration_s`` float32 (NaN missing), ``upload_us`` int64 (:data:`NO_TS` missing), and the
    smoothed offline statistics ``impressions`` int64, ``engage_rate``, ``watch_ratio_mean``,
    ``skip_rate``, ``like_rate`` float32 (NaN missing). Live counters since the version went
    live: ``live_impressions``, ``live_engaged``, ``live_skips``, ``live_likes``,
    ``live_shares``, ``live_follows`` int64 and ``live_watch_ratio_sum`` float64.
    """

    video_idx: I32
    known: Bools
    creator_idx: I32
    category: I32
    tag_offsets: I64
    tag_values: I32
    duration_s: F32
    upload_us: I64
    impressions: I64
    engage_rate: F32
    watch_ratio_mean: F32
    skip_rate: F32
    like_rate: F32
    live_impressions: I64
    live_engaged: I64
    live_skips: I64
    live_likes: I64
    live_shares: I64
    live_follows: I64
    live_watch_ratio_sum: F64

    def __post_init__(self) -> None:
        n = _freeze_fields(
            self,
            {
                "video_idx": np.int32,
                "known": np.bool_,
                "creator_idx": np.int32,
                "category": np.int32,
                "duration_s": np.float32,
                "upload_us": np.int64,
                "impressions": np.int64,
                "engage_rate": np.float32,
                "watch_ratio_mean": np.float32,
                "skip_rate": np.float32,
                "like_rate": np.float32,
                "live_impressions": np.int64,
                "live_engaged": np.int64,
                "live_skips": np.int64,
                "live_likes": np.int64,
                "live_shares": np.int64,
                "live_follows": np.int64,
                "live_watch_ratio_sum": np.float64,
            },
        )
        _freeze_fields(self, {"tag_offsets": np.int64})
        _freeze_fields(self, {"tag_values": np.int32})
        if self.tag_offsets.shape[0] != n + 1:
            raise ValueError(f"tag_offsets: length {self.tag_offsets.shape[0]}, expected {n + 1}")

    def __len__(self) -> int:
        return int(self.video_idx.shape[0])

    def tags(self, i: int) -> I32:
        """Tag indices of the ``i``-th video."""
        out: I32 = self.tag_values[self.tag_offsets[i] : self.tag_offsets[i + 1]]
        return out
