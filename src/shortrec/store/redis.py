"""Redis implementation of the online store (the only module that imports ``redis``).

Round trips: a request context is one pipeline (the version pointer travels with it, see
:meth:`RedisStore._versioned`); a batch of videos is one non-atomic pipeline; a batch of
events is three (video features for the batch, one atomic Lua script per event on the user's
keys, then the per-video counters and trending scripts). Per-user scripts touch only keys that
share the ``{u:USER}`` hash tag, the trending script only ``{tr:REGION}`` keys, so they are
valid on Redis Cluster; this class drives a single node (``redis.Redis``), and a cluster client
would run the same commands.

Connection problems of any kind (refused, timeout, loading, too many connections) surface as
:class:`StoreUnavailable`, after at most one immediate retry, within the configured
``connect_timeout_s``/``socket_timeout_s``; other server errors as :class:`StoreError`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import numpy as np
import numpy.typing as npt
import redis
from redis.backoff import NoBackoff
from redis.client import Pipeline
from redis.retry import Retry

from shortrec.config import StoreConfig
from shortrec.store import codec, logic
from shortrec.store.keys import (
    APPLY_GROUP,
    F_AFFINITY,
    F_FEATURES,
    F_HISTORY,
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
    StoreUnavailable,
    VideoFeatureBatch,
    check_id,
)

# KEYS: dedup, hist, seen, sess. ARGV: event_id, ts, video, session_id, live_entry,
# session_entry, skipped(0/1), dedup_cap, dedup_ttl, hist_cap, hist_ttl, seen_min_ts, seen_cap,
# seen_ttl, session_recent_bytes, session_ttl. Numbers that are times stay strings: Lua numbers
# print with 14 digits, which would round µs timestamps. MemoryStore._apply_user is its twin.
APPLY_USER = """
if redis.call('ZADD', KEYS[1], 'NX', ARGV[2], ARGV[1]) == 0 then return 0 end
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -(tonumber(ARGV[8]) + 1))
redis.call('EXPIRE', KEYS[1], ARGV[9])
redis.call('LPUSH', KEYS[2], ARGV[5])
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[10]) - 1)
redis.call('EXPIRE', KEYS[2], ARGV[11])
redis.call('ZADD', KEYS[3], 'GT', ARGV[2], ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', '(' .. ARGV[12])
redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -(tonumber(ARGV[13]) + 1))
redis.call('EXPIRE', KEYS[3], ARGV[14])
local ts = tonumber(ARGV[2])
local cur = redis.call('HMGET', KEYS[4], 'sid', 't1', 'r')
local recent = cur[3]
if cur[1] ~= ARGV[4] then
  if cur[1] and ts < tonumber(cur[2]) then return 1 end
  redis.call('DEL', KEYS[4])
  redis.call('HSET', KEYS[4], 'sid', ARGV[4], 't0', ARGV[2], 't1', ARGV[2], 'n', 0, 'k', 0)
  recent = ''
elseif ts > tonumber(cur[2]) then
  redis.call('HSET', KEYS[4], 't1', ARGV[2])
end
redis.call('HINCRBY', KEYS[4], 'n', 1)
if ARGV[7] == '1' then redis.call('HINCRBY', KEYS[4], 'k', 1) end
recent = (recent or '') .. ARGV[6]
local cap = tonumber(ARGV[15])
if #recent > cap then recent = string.sub(recent, #recent - cap + 1) end
redis.call('HSET', KEYS[4], 'r', recent)
redis.call('EXPIRE', KEYS[4], ARGV[16])
return 1
"""

# KEYS: video hash. ARGV: increments of i e s l sh fo, watch-ratio sum ('' for none).
# Only an existing hash of a live version (no TTL) is updated, so a late write can neither
# recreate an expired key without a TTL nor touch a retiring version.
COUNTERS = """
if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('PTTL', KEYS[1]) >= 0 then return 0 end
local f = {'i', 'e', 's', 'l', 'sh', 'fo'}
for j = 1, 6 do
  if ARGV[j] ~= '0' then redis.call('HINCRBY', KEYS[1], f[j], ARGV[j]) end
end
if ARGV[7] ~= '' then redis.call('HINCRBYFLOAT', KEYS[1], 'w', ARGV[7]) end
return 1
"""

# KEYS: trending zset, landmark. ARGV: half_life_us, cap, max_exp, then (video, weight, ts)
# triples. Forward decay (logic.py): add weight * 2^((ts - L)/h); past max_exp half-lives
# rescale every score by 2^-e and move the landmark to ts. MemoryStore._add_trending is its
# twin.
TRENDING_ADD = """
local l = redis.call('GET', KEYS[2])
if not l or redis.call('PTTL', KEYS[2]) >= 0 then return -1 end
local land = tonumber(l)
local h = tonumber(ARGV[1])
local cap = tonumber(ARGV[2])
local maxe = tonumber(ARGV[3])
for i = 4, #ARGV, 3 do
  local ts = tonumber(ARGV[i + 2])
  local e = (ts - land) / h
  if e > maxe then
    local f = 2 ^ (-e)
    local all = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
    for j = 1, #all, 2 do
      redis.call('ZADD', KEYS[1], string.format('%.17g', tonumber(all[j + 1]) * f), all[j])
    end
    redis.call('SET', KEYS[2], ARGV[i + 2], 'KEEPTTL')
    land = ts
    e = 0
  end
  redis.call('ZINCRBY', KEYS[1], string.format('%.17g', tonumber(ARGV[i + 1]) * 2 ^ e),
             ARGV[i])
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -(cap + 1))
end
return 1
"""

# KEYS: current. ARGV: version, pointer value. Compare-and-set: never go back to an older
# version (a slow publish finishing after a newer one).
ACTIVATE = """
local cur = redis.call('GET', KEYS[1])
if cur then
  local cv = tonumber(string.match(cur, '^(%d+):'))
  if cv >= tonumber(ARGV[1]) then return cv end
end
redis.call('SET', KEYS[1], ARGV[2])
return 0
"""

_UNAVAILABLE = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
    ConnectionError,
    TimeoutError,
)
_NO_VERSION = decode_pointer(None)
_EMPTY = ScoredList(np.zeros(0, np.int32), np.zeros(0))


class RedisStore:
    """The online store on a Redis server (thread-safe: one connection pool)."""

    def __init__(self, cfg: StoreConfig | None = None) -> None:
        self.cfg = cfg if cfg is not None else StoreConfig()
        self.keys = Keys(self.cfg)
        try:
            self._r = redis.Redis.from_url(
                self.cfg.url,
                db=self.cfg.db,
                socket_connect_timeout=self.cfg.connect_timeout_s,
                socket_timeout=self.cfg.socket_timeout_s,
                max_connections=self.cfg.max_connections,
                retry=Retry(NoBackoff(), 1),
                decode_responses=False,
            )
        except ValueError as e:
            raise StoreInputError(f"store url {self.cfg.url!r}: {e}") from e
        self._sha: dict[str, str] = {}
        # Last published version seen, refreshed by every read (the pointer travels with it).
        self._version: tuple[int, int] = _NO_VERSION

    # ------------------------------------------------------------ plumbing
    def _call(self, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except _UNAVAILABLE as e:
            raise StoreUnavailable(f"redis at {self.cfg.url} db {self.cfg.db}: {e}") from e
        except redis.exceptions.RedisError as e:
            raise StoreError(f"redis at {self.cfg.url} db {self.cfg.db}: {e}") from e

    def _script(self, name: str, source: str) -> str:
        sha = self._sha.get(name)
        if sha is None:
            sha = str(self._call(lambda: self._r.script_load(source)))
            self._sha[name] = sha
        return sha

    def _pipeline(self, build: Callable[[Pipeline], None]) -> list[Any]:
        """Run one non-atomic pipeline; reload scripts once if the server lost them."""
        for attempt in range(2):
            pipe = self._r.pipeline(transaction=False)
            build(pipe)
            try:
                return list(self._call(pipe.execute))
            except StoreError as e:
                if attempt or not isinstance(e.__cause__, redis.exceptions.NoScriptError):
                    raise
                self._sha.clear()
        raise AssertionError("unreachable")

    def _evalsha(
        self, pipe: Pipeline, name: str, source: str, keys: Sequence[str], args: Sequence[Any]
    ) -> None:
        pipe.evalsha(self._script(name, source), len(keys), *keys, *args)

    def _versioned(self, build: Callable[[Pipeline, int], None]) -> tuple[int, int, list[Any]]:
        """One pipelined read under the cached published version, with the pointer and the
        version's meta key read in the same round trip.

        The result is always from one version. Normally that is the live one (one round
        trip). When the pointer shows that another version went live, the read is repeated
        under it (once per switch per client); if the pointer keeps moving, the last complete
        read is returned (a replaced version lives ``old_version_grace_s`` longer).
        """
        res: list[Any] = []
        version, as_of = self._version
        for _ in range(4):
            version, as_of = self._version

            def full(pipe: Pipeline, v: int = version) -> None:
                pipe.get(self.keys.current)
                pipe.exists(self.keys.meta(v))
                build(pipe, v)

            res = self._pipeline(full)
            live = decode_pointer(res[0])
            self._advance(live)
            if live[0] != version and not res[1]:
                self._version = live  # the cached version is gone (e.g. the data was wiped)
            if live[0] == version:
                return version, as_of, res[2:]
        if version != 0 and res[1]:
            return version, as_of, res[2:]
        raise StoreError("the published version kept changing during a read")

    def _advance(self, pointer: tuple[int, int]) -> None:
        # concurrent requests may finish out of order: the cache only moves forward
        if pointer[0] > self._version[0]:
            self._version = pointer

    # ------------------------------------------------------------ health
    def ping(self) -> bool:
        try:
            return bool(self._r.ping())
        except redis.exceptions.RedisError:
            return False
        except OSError:
            return False

    def close(self) -> None:
        self._r.close()

    def current_version(self) -> tuple[int, int]:
        pointer = decode_pointer(self._call(lambda: self._r.get(self.keys.current)))
        self._advance(pointer)
        return pointer

    # ------------------------------------------------------------ reads
    def read_request_context(self, user_id: str, session_id: int, now_us: int) -> RequestContext:
        check_id(user_id, "user_id")
        k = self.keys
        min_seen = now_us - self.cfg.seen_ttl_s * logic.US_PER_S

        def build(pipe: Pipeline, v: int) -> None:
            pipe.hmget(k.user_base(v, user_id), [F_HISTORY, F_AFFINITY])
            pipe.lrange(k.history(user_id), 0, -1)
            pipe.zrangebyscore(k.seen(user_id), min_seen, "+inf")
            pipe.hmget(k.session(user_id), list(SESSION_FIELDS))

        version, as_of, (base, live, seen, sess) = self._versioned(build)
        return logic.build_context(
            self.cfg,
            user_id,
            session_id,
            now_us,
            version,
            as_of,
            base[0],
            base[1],
            live,
            seen,
            sess,
        )

    def video_features(self, video_idx: npt.ArrayLike) -> VideoFeatureBatch:
        vids = np.asarray(video_idx, dtype=np.int64).reshape(-1)
        fields = [F_FEATURES, *logic.counter_fields()]
        ids = vids.tolist()

        def build(pipe: Pipeline, v: int) -> None:
            for vid in ids:
                pipe.hmget(self.keys.video(v, vid), fields)

        _, _, rows = self._versioned(build)
        return logic.build_features(
            vids.astype(np.int32), [r[0] for r in rows], [r[1:] for r in rows]
        )

    def trending(self, n: int, now_us: int, region: str = "*") -> ScoredList:
        check_id(region, "region")
        k = self.keys

        def build(pipe: Pipeline, v: int) -> None:
            pipe.zrevrange(k.trend(v, region), 0, n - 1, withscores=True)
            pipe.get(k.trend_landmark(v, region))

        if n <= 0:
            return _EMPTY
        _, _, (top, land) = self._versioned(build)
        if land is None or not top:
            return _EMPTY
        f = logic.decay_factor(now_us, int(land), self.cfg.trending_half_life_s)
        return ScoredList(
            np.array([int(m) for m, _ in top], np.int32),
            np.array([s * f for _, s in top], np.float64),
        )

    def tag_top(self, tag_idx: npt.ArrayLike, n: int) -> list[ScoredList]:
        tags = np.asarray(tag_idx, dtype=np.int64).reshape(-1).tolist()

        def build(pipe: Pipeline, v: int) -> None:
            for t in tags:
                pipe.zrevrange(self.keys.tag_top(v, t), 0, n - 1, withscores=True)

        if n <= 0:
            return [_EMPTY for _ in tags]
        _, _, rows = self._versioned(build)
        return [
            ScoredList(
                np.array([int(m) for m, _ in r], np.int32), np.array([s for _, s in r], np.float64)
            )
            for r in rows
        ]

    def fresh(self, n: int) -> ScoredList:
        def build(pipe: Pipeline, v: int) -> None:
            pipe.zrevrange(self.keys.fresh(v), 0, n - 1, withscores=True)

        if n <= 0:
            return _EMPTY
        _, _, (top,) = self._versioned(build)
        return ScoredList(
            np.array([int(m) for m, _ in top], np.int32), np.array([s for _, s in top], np.float64)
        )

    # ------------------------------------------------------------ event writes
    def apply_events(self, events: Sequence[StoreEvent]) -> int:
        for ev in events:
            if not isinstance(ev, StoreEvent):
                raise StoreInputError(f"apply_events: expected StoreEvent, got {type(ev)}")
        if not events:
            return 0
        c, k = self.cfg, self.keys
        distinct = sorted({ev.video_idx for ev in events})

        def read_videos(pipe: Pipeline, v: int) -> None:
            for vid in distinct:
                pipe.hget(k.video(v, vid), F_FEATURES)

        version, _, blobs = self._versioned(read_videos)
        videos = {
            vid: codec.decode_video(b)
            for vid, b in zip(distinct, blobs, strict=True)
            if b is not None
        }
        writes = [logic.user_write(ev, videos.get(ev.video_idx), c) for ev in events]
        recent_bytes = c.session_recent_cap * codec.SESSION_ENTRY.size

        def user_part(pipe: Pipeline) -> None:
            for ev, w in zip(events, writes, strict=True):
                u = ev.user_id
                self._evalsha(
                    pipe,
                    "apply_user",
                    APPLY_USER,
                    [k.dedup(u), k.history(u), k.seen(u), k.session(u)],
                    [
                        w.event_id,
                        w.ts,
                        w.video,
                        w.session_id,
                        w.live_entry,
                        w.session_entry,
                        int(w.skipped),
                        c.dedup_cap,
                        c.dedup_ttl_s,
                        c.history_cap,
                        c.history_ttl_s,
                        w.seen_min_ts,
                        c.seen_cap,
                        c.seen_ttl_s,
                        recent_bytes,
                        c.session_ttl_s,
                    ],
                )

        flags = self._pipeline(user_part)
        applied = [ev for ev, f in zip(events, flags, strict=True) if int(f) == 1]
        gw = logic.global_writes(applied, set(videos))
        if gw.counters or gw.trending:
            h_us = c.trending_half_life_s * logic.US_PER_S

            def global_part(pipe: Pipeline) -> None:
                for vid, (counts, wsum) in gw.counters.items():
                    self._evalsha(
                        pipe,
                        "counters",
                        COUNTERS,
                        [k.video(version, vid)],
                        [*counts, repr(wsum) if wsum else ""],
                    )
                for region, adds in gw.trending.items():
                    args: list[Any] = [repr(h_us), c.trending_cap, repr(logic.MAX_FORWARD_EXP)]
                    for vid, weight, ts in adds:
                        args += [vid, repr(weight), ts]
                    self._evalsha(
                        pipe,
                        "trending",
                        TRENDING_ADD,
                        [k.trend(version, region), k.trend_landmark(version, region)],
                        args,
                    )

            self._pipeline(global_part)
        return len(applied)

    def enqueue_events(self, events: Sequence[StoreEvent]) -> int:
        for ev in events:
            if not isinstance(ev, StoreEvent):
                raise StoreInputError(f"enqueue_events: expected StoreEvent, got {type(ev)}")
        if not events:
            return 0
        encoded = [codec.encode_event(ev) for ev in events]

        def build(pipe: Pipeline) -> None:
            for fields in encoded:
                pipe.xadd(
                    self.keys.events,
                    fields,  # type: ignore[arg-type]
                    maxlen=self.cfg.stream_maxlen,
                    approximate=True,
                )

        self._pipeline(build)
        return len(events)

    def _ensure_group(self) -> None:
        try:
            self._call(
                lambda: self._r.xgroup_create(self.keys.events, APPLY_GROUP, id="0", mkstream=True)
            )
        except StoreError as e:
            if "BUSYGROUP" not in str(e):
                raise

    def drain_events(self, consumer: str, max_events: int) -> tuple[int, int]:
        check_id(consumer, "consumer")
        if max_events <= 0:
            return 0, 0
        self._ensure_group()
        key = self.keys.events
        claimed = self._call(
            lambda: self._r.xautoclaim(
                key, APPLY_GROUP, consumer, self.cfg.stream_claim_idle_ms, "0-0", count=max_events
            )
        )
        msgs: list[tuple[bytes, Any]] = list(claimed[1])
        if len(msgs) < max_events:
            new = self._call(
                lambda: self._r.xreadgroup(
                    APPLY_GROUP, consumer, {key: ">"}, count=max_events - len(msgs)
                )
            )
            for _, part in new or []:
                msgs += part
        ids = [i for i, _ in msgs]
        # an entry trimmed from the stream while pending comes back without fields
        entries = [(i, f) for i, f in msgs if f]
        events = [codec.decode_event(f, f"{key} entry {i!r}") for i, f in entries]
        applied = self.apply_events(events)
        if ids:
            self._call(lambda: self._r.xack(key, APPLY_GROUP, *ids))
        return len(events), applied

    # ------------------------------------------------------------ publishing
    def begin_version(self) -> int:
        return int(self._call(lambda: self._r.incr(self.keys.version_seq)))

    def write_videos(self, version: int, rows: Sequence[tuple[int, bytes]]) -> None:
        def build(pipe: Pipeline) -> None:
            for vid, blob in rows:
                key = self.keys.video(version, int(vid))
                pipe.delete(key)
                pipe.hset(key, F_FEATURES, blob)

        self._pipeline(build)

    def write_users(self, version: int, rows: Sequence[tuple[str, bytes, bytes]]) -> None:
        for uid, _, _ in rows:
            check_id(uid, "user_id")

        def build(pipe: Pipeline) -> None:
            for uid, hist, aff in rows:
                pipe.hset(
                    self.keys.user_base(version, uid), mapping={F_HISTORY: hist, F_AFFINITY: aff}
                )

        self._pipeline(build)

    def write_ranked(
        self,
        version: int,
        kind: str,
        group: str,
        video_idx: npt.ArrayLike,
        score: npt.ArrayLike,
        landmark_us: int | None = None,
    ) -> None:
        vids = [str(v) for v in np.asarray(video_idx, np.int64).reshape(-1).tolist()]
        scores = np.asarray(score, np.float64).reshape(-1).tolist()
        k = self.keys
        if kind == "trending":
            if landmark_us is None:
                raise StoreInputError("write_ranked: trending needs landmark_us")
            check_id(group, "region")
            key = k.trend(version, group)
        elif kind == "tag":
            key = k.tag_top(version, int(group))
        elif kind == "fresh":
            key = k.fresh(version)
        else:
            raise StoreInputError(f"write_ranked: unknown kind {kind!r}")

        def build(pipe: Pipeline) -> None:
            pipe.delete(key)
            step = self.cfg.publish_chunk
            for lo in range(0, len(vids), step):
                pipe.zadd(key, dict(zip(vids[lo : lo + step], scores[lo : lo + step], strict=True)))
            if kind == "trending":
                pipe.set(k.trend_landmark(version, group), str(int(landmark_us or 0)))

        self._pipeline(build)

    def activate(self, version: int, as_of_us: int) -> None:
        k = self.keys
        self._call(lambda: self._r.set(k.meta(version), str(as_of_us)))
        cur = int(
            self._call(
                lambda: self._r.eval(
                    ACTIVATE, 1, k.current, version, encode_pointer(version, as_of_us)
                )
            )
        )
        if cur:
            raise StoreError(f"activate: version {cur} is live, not older than {version}")
        self._advance((version, as_of_us))
        grace = self.cfg.old_version_grace_s
        batch: list[bytes] = []

        def expire(pipe: Pipeline) -> None:
            for key in batch:
                # NX: a version already retiring keeps its earlier deadline
                pipe.expire(key, grace, nx=True)

        for key in self._call(lambda: list(self._r.scan_iter(match=f"{k.base}:v*", count=1_000))):
            v = k.version_of(key.decode())
            if v is not None and v < version:
                batch.append(key)
                if len(batch) >= self.cfg.publish_chunk:
                    self._pipeline(expire)
                    batch = []
        if batch:
            self._pipeline(expire)

    # ------------------------------------------------------------ introspection
    def key_ttls(self) -> dict[str, float | None]:
        keys = [
            key.decode()
            for key in self._call(
                lambda: list(self._r.scan_iter(match=f"{self.keys.base}:*", count=1_000))
            )
        ]

        def build(pipe: Pipeline) -> None:
            for key in keys:
                pipe.pttl(key)

        ttls = self._pipeline(build)
        return {
            key: (None if t == -1 else t / 1000.0)
            for key, t in zip(keys, ttls, strict=True)
            if t != -2
        }

    def memory_usage(self, keys: Sequence[str]) -> int:
        def build(pipe: Pipeline) -> None:
            for key in keys:
                pipe.memory_usage(key, samples=0)

        sizes = self._pipeline(build)
        return sum(int(s or 0) for s in sizes)

    def flush_prefix(self) -> int:
        """Delete every key of this store's prefix (tests, benchmarks); return how many."""
        keys = self._call(lambda: list(self._r.scan_iter(match=f"{self.keys.base}:*", count=1_000)))
        step = self.cfg.publish_chunk
        for lo in range(0, len(keys), step):
            part: list[Any] = keys[lo : lo + step]
            self._call(partial(self._r.unlink, *part))
        self._version = _NO_VERSION
        return len(keys)
