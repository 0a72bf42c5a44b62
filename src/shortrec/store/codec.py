"""Binary encodings of stored values, shared by both store implementations.

Compact fixed layouts (little-endian ``struct``/numpy records) instead of JSON keep memory per
user and per video small (``docs/store.md`` has the measured bytes) and make decoding a
``frombuffer``. Layouts:

* video features: ``<i h H f q q f f f f`` = creator_idx, category (-1 none), n_tags,
  duration_s (NaN none), upload_us (``NO_TS`` none), impressions, engage_rate,
  watch_ratio_mean, skip_rate, like_rate (NaN none); then ``n_tags`` int32 tag indices.
* published history: records ``(video_idx i4, ts i8, watch_ratio f4, skipped u1)``, oldest
  first; published affinities: records ``(tag_idx i4, weight f4)``, heaviest first.
* live history entry: ``<i q f f B B i h`` = video_idx, ts_us, watch_ratio, engagement, flags
  (bit 0 skipped, 1 liked, 2 shared, 3 followed), n_tags, creator_idx, category; then the tags.
* session recent entry: ``<i i h B`` = video_idx, creator_idx, category, skipped (11 bytes,
  fixed so a script can trim the blob by length).
* queued event: ``<q q i q f f B`` = event_id, session_id, video_idx, ts_us, watch_ratio,
  engagement, flags; user id and region travel as separate stream fields.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from shortrec.store.types import I32, NO_IDX, StoreEvent, StoreInputError

VIDEO_HEAD = struct.Struct("<ihHfqqffff")
LIVE_HEAD = struct.Struct("<iqffBBih")
SESSION_ENTRY = struct.Struct("<iihB")
EVENT = struct.Struct("<qqiqffB")
HISTORY_DTYPE = np.dtype([("v", "<i4"), ("ts", "<i8"), ("wr", "<f4"), ("sk", "u1")])
AFFINITY_DTYPE = np.dtype([("t", "<i4"), ("w", "<f4")])
_TAG = np.dtype("<i4")
_I16 = (-(2**15), 2**15 - 1)

SKIPPED_BIT, LIKED_BIT, SHARED_BIT, FOLLOWED_BIT = 1, 2, 4, 8


@dataclass(frozen=True)
class VideoRecord:
    """Published features of one video (decoded form of the features blob)."""

    creator_idx: int
    category: int
    tags: tuple[int, ...]
    duration_s: float
    upload_us: int
    impressions: int
    engage_rate: float
    watch_ratio_mean: float
    skip_rate: float
    like_rate: float


def encode_video(r: VideoRecord, max_tags: int) -> bytes:
    if not _I16[0] <= r.category <= _I16[1]:
        raise StoreInputError(f"field category: {r.category} does not fit int16")
    tags = r.tags[:max_tags]
    head = VIDEO_HEAD.pack(
        r.creator_idx,
        r.category,
        len(tags),
        r.duration_s,
        r.upload_us,
        r.impressions,
        r.engage_rate,
        r.watch_ratio_mean,
        r.skip_rate,
        r.like_rate,
    )
    return head + np.asarray(tags, dtype=_TAG).tobytes()


def decode_video(blob: bytes) -> VideoRecord:
    c, cat, nt, dur, up, imp, er, wr, sr, lr = VIDEO_HEAD.unpack_from(blob)
    tags = np.frombuffer(blob, dtype=_TAG, count=nt, offset=VIDEO_HEAD.size)
    return VideoRecord(c, cat, tuple(int(t) for t in tags), dur, up, imp, er, wr, sr, lr)


def flags_of(ev: StoreEvent) -> int:
    return (
        SKIPPED_BIT * bool(ev.skipped)
        | LIKED_BIT * bool(ev.liked)
        | SHARED_BIT * bool(ev.shared)
        | FOLLOWED_BIT * bool(ev.followed)
    )


@dataclass(frozen=True)
class LiveEntry:
    """One live history entry (decoded)."""

    video_idx: int
    ts_us: int
    watch_ratio: float
    engagement: float
    flags: int
    creator_idx: int
    category: int
    tags: tuple[int, ...]

    @property
    def skipped(self) -> bool:
        return bool(self.flags & SKIPPED_BIT)


def encode_live(ev: StoreEvent, video: VideoRecord | None, max_tags: int) -> bytes:
    tags = video.tags[:max_tags] if video is not None else ()
    creator = video.creator_idx if video is not None else NO_IDX
    category = video.category if video is not None else NO_IDX
    head = LIVE_HEAD.pack(
        ev.video_idx,
        ev.ts_us,
        ev.watch_ratio,
        ev.engagement,
        flags_of(ev),
        len(tags),
        creator,
        category,
    )
    return head + np.asarray(tags, dtype=_TAG).tobytes()


def decode_live(blob: bytes) -> LiveEntry:
    v, ts, wr, eng, fl, nt, c, cat = LIVE_HEAD.unpack_from(blob)
    tags = np.frombuffer(blob, dtype=_TAG, count=nt, offset=LIVE_HEAD.size)
    return LiveEntry(v, ts, wr, eng, fl, c, cat, tuple(int(t) for t in tags))


def encode_session_entry(ev: StoreEvent, video: VideoRecord | None) -> bytes:
    creator = video.creator_idx if video is not None else NO_IDX
    category = video.category if video is not None else NO_IDX
    return SESSION_ENTRY.pack(ev.video_idx, creator, category, int(ev.skipped))


def decode_session_recent(blob: bytes) -> tuple[I32, I32, I32, np.ndarray]:
    """``(video_idx, creator_idx, category, skipped)`` arrays of a recent-entries blob."""
    rec = np.dtype([("v", "<i4"), ("c", "<i4"), ("g", "<i2"), ("s", "u1")])
    arr = np.frombuffer(blob, dtype=rec, count=len(blob) // SESSION_ENTRY.size)
    return (
        arr["v"].astype(np.int32),
        arr["c"].astype(np.int32),
        arr["g"].astype(np.int32),
        arr["s"].astype(np.bool_),
    )


def encode_history(
    video_idx: np.ndarray, ts_us: np.ndarray, watch_ratio: np.ndarray, skipped: np.ndarray
) -> bytes:
    out = np.empty(video_idx.shape[0], dtype=HISTORY_DTYPE)
    out["v"], out["ts"], out["wr"], out["sk"] = video_idx, ts_us, watch_ratio, skipped
    return out.tobytes()


def decode_history(blob: bytes | None) -> np.ndarray:
    if not blob:
        return np.zeros(0, dtype=HISTORY_DTYPE)
    return np.frombuffer(blob, dtype=HISTORY_DTYPE)


def encode_affinity(tag_idx: np.ndarray, weight: np.ndarray) -> bytes:
    out = np.empty(tag_idx.shape[0], dtype=AFFINITY_DTYPE)
    out["t"], out["w"] = tag_idx, weight
    return out.tobytes()


def decode_affinity(blob: bytes | None) -> np.ndarray:
    if not blob:
        return np.zeros(0, dtype=AFFINITY_DTYPE)
    return np.frombuffer(blob, dtype=AFFINITY_DTYPE)


def encode_event(ev: StoreEvent) -> dict[str, bytes]:
    """Stream fields of a queued event."""
    body = EVENT.pack(
        ev.event_id,
        ev.session_id,
        ev.video_idx,
        ev.ts_us,
        ev.watch_ratio,
        ev.engagement,
        flags_of(ev),
    )
    out = {"e": body, "u": ev.user_id.encode()}
    if ev.region is not None:
        out["r"] = ev.region.encode()
    return out


def decode_event(fields: dict[bytes, bytes] | dict[str, bytes], where: str) -> StoreEvent:
    """A queued event back from its stream fields; ``where`` names the stream entry."""
    f = {(k.decode() if isinstance(k, bytes) else k): v for k, v in fields.items()}
    try:
        eid, sid, vid, ts, wr, eng, fl = EVENT.unpack(f["e"])
        user = f["u"].decode()
        region = f["r"].decode() if "r" in f else None
    except (KeyError, struct.error, UnicodeDecodeError) as e:
        raise StoreInputError(f"{where}: malformed queued event: {e}") from e
    return StoreEvent(
        event_id=eid,
        user_id=user,
        session_id=sid,
        video_idx=vid,
        ts_us=ts,
        watch_ratio=float(wr),
        skipped=bool(fl & SKIPPED_BIT),
        liked=bool(fl & LIKED_BIT),
        shared=bool(fl & SHARED_BIT),
        followed=bool(fl & FOLLOWED_BIT),
        engagement=float(eng),
        region=region,
    )
