"""In-process implementation of the online store, for tests, the demo and degraded serving.

It keeps the same keys (``keys.py``), encodings (``codec.py``), TTLs and bounds as the Redis
store, in dictionaries guarded by one lock, so every operation is atomic and the contract suite
can check both with the same assertions. Expiry follows an injectable monotonic ``clock``
(seconds), checked lazily on access.
"""

from __future__ import annotations

import itertools
import math
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from shortrec.config import StoreConfig
from shortrec.store import codec, logic
from shortrec.store.keys import (
    COUNTER_FIELDS,
    F_AFFINITY,
    F_FEATURES,
    F_HISTORY,
    F_LAST,
    F_RECENT,
    F_SERVED,
    F_SESSION_ID,
    F_SKIPS,
    F_STARTED,
    F_WATCH_SUM,
    SESSION_FIELDS,
    Keys,
    decode_pointer,
    encode_pointer,
)
from shortrec.store.types import (
    RequestContext,
    ScoredList,
    StoreError,
    StoreEvent,
    StoreInputError,
    VideoFeatureBatch,
    check_id,
)


class _Hash(dict[str, Any]):
    pass


class _ZSet(dict[str, float]):
    def ranked(self, desc: bool = True) -> list[tuple[str, float]]:
        # Redis orders equal scores by member bytes; reversed for descending ranges
        items = sorted(self.items(), key=lambda kv: (kv[1], kv[0].encode()))
        return items[::-1] if desc else items

    def trim_lowest(self, keep: int) -> None:
        if len(self) > keep:
            for m, _ in self.ranked(desc=False)[: len(self) - keep]:
                del self[m]


class MemoryStore:
    """The online store in process memory (thread-safe)."""

    def __init__(
        self, cfg: StoreConfig | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.cfg = cfg if cfg is not None else StoreConfig()
        self.keys = Keys(self.cfg)
        self._clock = clock
        self._lock = threading.RLock()
        self._data: dict[str, Any] = {}
        self._exp: dict[str, float] = {}
        self._stream: dict[int, StoreEvent] = {}
        self._stream_ids = itertools.count(1)
        self._delivered = 0
        self._pending: dict[int, tuple[str, float]] = {}
        self._closed = False

    # ------------------------------------------------------------ tiny key-value core
    def _live(self, key: str) -> bool:
        exp = self._exp.get(key)
        if exp is not None and exp <= self._clock():
            self._data.pop(key, None)
            self._exp.pop(key, None)
        return key in self._data

    def _get(self, key: str) -> Any:
        return self._data[key] if self._live(key) else None

    def _typed(self, key: str, kind: type) -> Any:
        cur = self._get(key)
        if cur is None:
            cur = kind()
            self._data[key] = cur
        elif not isinstance(cur, kind):
            raise StoreError(f"{key}: holds a {type(cur).__name__}, expected {kind.__name__}")
        return cur

    def _expire(self, key: str, seconds: float) -> None:
        if key in self._data:
            self._exp[key] = self._clock() + seconds

    def _has_ttl(self, key: str) -> bool:
        return self._live(key) and key in self._exp

    def _delete(self, key: str) -> None:
        self._data.pop(key, None)
        self._exp.pop(key, None)

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("store is closed")

    # ------------------------------------------------------------ health
    def ping(self) -> bool:
        return not self._closed

    def close(self) -> None:
        self._closed = True

    def current_version(self) -> tuple[int, int]:
        with self._lock:
            self._check_open()
            return decode_pointer(self._get(self.keys.current))

    # ------------------------------------------------------------ reads
    def read_request_context(self, user_id: str, session_id: int, now_us: int) -> RequestContext:
        check_id(user_id, "user_id")
        k = self.keys
        with self._lock:
            self._check_open()
            version, as_of = decode_pointer(self._get(k.current))
            base = self._get(k.user_base(version, user_id)) or {}
            live = list(self._get(k.history(user_id)) or [])
            seen_z = self._get(k.seen(user_id)) or {}
            min_seen = now_us - self.cfg.seen_ttl_s * logic.US_PER_S
            seen = [m for m, s in seen_z.items() if s >= min_seen]
            sess = self._get(k.session(user_id)) or {}
            sess_raw = [sess.get(f) for f in SESSION_FIELDS]
        return logic.build_context(
            self.cfg,
            user_id,
            session_id,
            now_us,
            version,
            as_of,
            base.get(F_HISTORY),
            base.get(F_AFFINITY),
            live,
            seen,
            sess_raw,
        )

    def video_features(self, video_idx: npt.ArrayLike) -> VideoFeatureBatch:
        vids = np.asarray(video_idx, dtype=np.int64).reshape(-1)
        fields = logic.counter_fields()
        with self._lock:
            self._check_open()
            version, _ = decode_pointer(self._get(self.keys.current))
            blobs: list[bytes | None] = []
            counters: list[list[Any]] = []
            for v in vids.tolist():
                h = self._get(self.keys.video(version, v)) or {}
                blobs.append(h.get(F_FEATURES))
                counters.append([h.get(f) for f in fields])
        return logic.build_features(vids.astype(np.int32), blobs, counters)

    def trending(self, n: int, now_us: int, region: str = "*") -> ScoredList:
        check_id(region, "region")
        with self._lock:
            self._check_open()
            version, _ = decode_pointer(self._get(self.keys.current))
            z = self._get(self.keys.trend(version, region)) or _ZSet()
            land = self._get(self.keys.trend_landmark(version, region))
            top = z.ranked()[: max(n, 0)]
        if land is None or not top:
            return ScoredList(np.zeros(0, np.int32), np.zeros(0))
        f = logic.decay_factor(now_us, int(land), self.cfg.trending_half_life_s)
        return ScoredList(
            np.array([int(m) for m, _ in top], np.int32),
            np.array([s * f for _, s in top], np.float64),
        )

    def tag_top(self, tag_idx: npt.ArrayLike, n: int) -> list[ScoredList]:
        tags = np.asarray(tag_idx, dtype=np.int64).reshape(-1)
        out: list[ScoredList] = []
        with self._lock:
            self._check_open()
            version, _ = decode_pointer(self._get(self.keys.current))
            for t in tags.tolist():
                z = self._get(self.keys.tag_top(version, t)) or _ZSet()
                top = z.ranked()[: max(n, 0)]
                out.append(
                    ScoredList(
                        np.array([int(m) for m, _ in top], np.int32),
                        np.array([s for _, s in top], np.float64),
                    )
                )
        return out

    def fresh(self, n: int) -> ScoredList:
        with self._lock:
            self._check_open()
            version, _ = decode_pointer(self._get(self.keys.current))
            z = self._get(self.keys.fresh(version)) or _ZSet()
            top = z.ranked()[: max(n, 0)]
        return ScoredList(
            np.array([int(m) for m, _ in top], np.int32), np.array([s for _, s in top], np.float64)
        )

    # ------------------------------------------------------------ event writes
    def _apply_user(self, user_id: str, w: logic.UserWrite) -> bool:
        """Python twin of the Redis ``APPLY_USER`` script (same steps, same order)."""
        k, c = self.keys, self.cfg
        ts = int(w.ts)
        dedup = self._typed(k.dedup(user_id), _ZSet)
        if w.event_id in dedup:
            return False
        dedup[w.event_id] = float(ts)
        dedup.trim_lowest(c.dedup_cap)
        self._expire(k.dedup(user_id), c.dedup_ttl_s)
        hist = self._typed(k.history(user_id), list)
        hist.insert(0, w.live_entry)
        del hist[c.history_cap :]
        self._expire(k.history(user_id), c.history_ttl_s)
        seen = self._typed(k.seen(user_id), _ZSet)
        if ts > seen.get(w.video, -math.inf):
            seen[w.video] = float(ts)
        for m in [m for m, s in seen.items() if s < int(w.seen_min_ts)]:
            del seen[m]
        seen.trim_lowest(c.seen_cap)
        self._expire(k.seen(user_id), c.seen_ttl_s)
        skey = k.session(user_id)
        sess = self._get(skey)
        if sess is None or sess.get(F_SESSION_ID) != w.session_id:
            if sess is not None and ts < int(sess[F_LAST]):
                return True  # a late event of an older session: the current one stays
            sess = _Hash(
                {
                    F_SESSION_ID: w.session_id,
                    F_STARTED: w.ts,
                    F_LAST: w.ts,
                    F_SERVED: 0,
                    F_SKIPS: 0,
                    F_RECENT: b"",
                }
            )
            self._data[skey] = sess
        elif ts > int(sess[F_LAST]):
            sess[F_LAST] = w.ts
        sess[F_SERVED] = int(sess[F_SERVED]) + 1
        if w.skipped:
            sess[F_SKIPS] = int(sess[F_SKIPS]) + 1
        cap = c.session_recent_cap * codec.SESSION_ENTRY.size
        sess[F_RECENT] = (sess.get(F_RECENT, b"") + w.session_entry)[-cap:]
        self._expire(skey, c.session_ttl_s)
        return True

    def _add_trending(
        self, version: int, region: str, adds: Sequence[tuple[int, float, int]]
    ) -> None:
        """Python twin of the Redis ``TRENDING_ADD`` script."""
        zkey, lkey = self.keys.trend(version, region), self.keys.trend_landmark(version, region)
        land = self._get(lkey)
        if land is None or self._has_ttl(lkey):
            return  # no such list in this version, or the version is being retired
        z = self._typed(zkey, _ZSet)
        h_us = self.cfg.trending_half_life_s * logic.US_PER_S
        landmark = int(land)
        for vid, weight, ts in adds:
            e = (ts - landmark) / h_us
            if e > logic.MAX_FORWARD_EXP:
                f = 2.0 ** (-e)
                for m in list(z):
                    z[m] *= f
                landmark = ts
                self._data[lkey] = str(ts)
                e = 0.0
            m = str(vid)
            z[m] = z.get(m, 0.0) + weight * 2.0**e
            z.trim_lowest(self.cfg.trending_cap)

    def apply_events(self, events: Sequence[StoreEvent]) -> int:
        for ev in events:
            if not isinstance(ev, StoreEvent):
                raise StoreInputError(f"apply_events: expected StoreEvent, got {type(ev)}")
        with self._lock:
            self._check_open()
            version, _ = decode_pointer(self._get(self.keys.current))
            videos: dict[int, codec.VideoRecord] = {}
            for vid in {ev.video_idx for ev in events}:
                h = self._get(self.keys.video(version, vid))
                if h is not None and F_FEATURES in h:
                    videos[vid] = codec.decode_video(h[F_FEATURES])
            applied = [
                ev
                for ev in events
                if self._apply_user(
                    ev.user_id, logic.user_write(ev, videos.get(ev.video_idx), self.cfg)
                )
            ]
            gw = logic.global_writes(applied, set(videos))
            for vid, (counts, wsum) in gw.counters.items():
                key = self.keys.video(version, vid)
                h = self._get(key)
                if h is None or self._has_ttl(key):
                    continue
                for f, inc in zip(COUNTER_FIELDS, counts, strict=True):
                    h[f] = int(h.get(f, 0)) + inc
                h[F_WATCH_SUM] = float(h.get(F_WATCH_SUM, 0.0)) + wsum
            for region, adds in gw.trending.items():
                self._add_trending(version, region, adds)
        return len(applied)

    def enqueue_events(self, events: Sequence[StoreEvent]) -> int:
        for ev in events:
            if not isinstance(ev, StoreEvent):
                raise StoreInputError(f"enqueue_events: expected StoreEvent, got {type(ev)}")
        with self._lock:
            self._check_open()
            for ev in events:
                self._stream[next(self._stream_ids)] = ev
            excess = len(self._stream) - self.cfg.stream_maxlen
            for sid in list(itertools.islice(self._stream, max(excess, 0))):
                del self._stream[sid]
                self._pending.pop(sid, None)
        return len(events)

    def drain_events(self, consumer: str, max_events: int) -> tuple[int, int]:
        check_id(consumer, "consumer")
        with self._lock:
            self._check_open()
            now = self._clock()
            idle_s = self.cfg.stream_claim_idle_ms / 1000.0
            ids = [
                sid
                for sid, (_, at) in self._pending.items()
                if now - at >= idle_s and sid in self._stream
            ][:max_events]
            fresh = [sid for sid in self._stream if sid > self._delivered]
            ids += fresh[: max_events - len(ids)]
            for sid in ids:
                self._pending[sid] = (consumer, now)
                self._delivered = max(self._delivered, sid)
            events = [self._stream[sid] for sid in ids]
            applied = self.apply_events(events)
            for sid in ids:
                self._pending.pop(sid, None)
        return len(ids), applied

    # ------------------------------------------------------------ publishing
    def begin_version(self) -> int:
        with self._lock:
            self._check_open()
            v = int(self._get(self.keys.version_seq) or 0) + 1
            self._data[self.keys.version_seq] = str(v)
            return v

    def write_videos(self, version: int, rows: Sequence[tuple[int, bytes]]) -> None:
        with self._lock:
            self._check_open()
            for vid, blob in rows:
                self._data[self.keys.video(version, int(vid))] = _Hash({F_FEATURES: blob})

    def write_users(self, version: int, rows: Sequence[tuple[str, bytes, bytes]]) -> None:
        with self._lock:
            self._check_open()
            for uid, hist, aff in rows:
                check_id(uid, "user_id")
                self._data[self.keys.user_base(version, uid)] = _Hash(
                    {F_HISTORY: hist, F_AFFINITY: aff}
                )

    def write_ranked(
        self,
        version: int,
        kind: str,
        group: str,
        video_idx: npt.ArrayLike,
        score: npt.ArrayLike,
        landmark_us: int | None = None,
    ) -> None:
        vids = np.asarray(video_idx, np.int64).reshape(-1).tolist()
        scores = np.asarray(score, np.float64).reshape(-1).tolist()
        k = self.keys
        with self._lock:
            self._check_open()
            if kind == "trending":
                if landmark_us is None:
                    raise StoreInputError("write_ranked: trending needs landmark_us")
                check_id(group, "region")
                key = k.trend(version, group)
                self._data[k.trend_landmark(version, group)] = str(int(landmark_us))
            elif kind == "tag":
                key = k.tag_top(version, int(group))
            elif kind == "fresh":
                key = k.fresh(version)
            else:
                raise StoreInputError(f"write_ranked: unknown kind {kind!r}")
            z = _ZSet(zip((str(v) for v in vids), scores, strict=True))
            if z:
                self._data[key] = z

    def activate(self, version: int, as_of_us: int) -> None:
        k = self.keys
        with self._lock:
            self._check_open()
            cur, _ = decode_pointer(self._get(k.current))
            if cur >= version:
                raise StoreError(f"activate: version {cur} is live, not older than {version}")
            self._data[k.meta(version)] = str(as_of_us)
            self._data[k.current] = encode_pointer(version, as_of_us)
            for key in list(self._data):
                v = k.version_of(key)
                if v is not None and v < version and not self._has_ttl(key):
                    self._expire(key, self.cfg.old_version_grace_s)

    # ------------------------------------------------------------ introspection
    def key_ttls(self) -> dict[str, float | None]:
        with self._lock:
            now = self._clock()
            out: dict[str, float | None] = {}
            for key in list(self._data):
                if self._live(key):
                    exp = self._exp.get(key)
                    out[key] = None if exp is None else exp - now
            if self._stream:
                out[self.keys.events] = None
            return out

    def memory_usage(self, keys: Sequence[str]) -> int:
        with self._lock:
            return sum(_size(k) + _size(self._get(k)) for k in keys if self._live(k))


def _size(obj: Any) -> int:
    """Rough deep size in bytes (an estimate: the in-process store is not memory-tuned)."""
    if isinstance(obj, dict):
        return sys.getsizeof(obj) + sum(_size(k) + _size(v) for k, v in obj.items())
    if isinstance(obj, list):
        return sys.getsizeof(obj) + sum(_size(v) for v in obj)
    return sys.getsizeof(obj) if obj is not None else 0
