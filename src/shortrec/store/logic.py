"""Pure logic shared by both store implementations: turning raw stored values into the store's
value types, and events into the writes they cause. No I/O here.

Decay is exponential with half-life ``h``: a weight ``w`` at time ``t`` is worth
``w * 2**(-(now - t) / h)`` at ``now``. Trending lists use *forward decay* (Cormode, Shkapenyuk,
Srivastava and Xu, "Forward Decay: A Practical Time Decay Model for Streaming Systems", ICDE
2009): an event adds ``w * 2**((t - L) / h)`` for a landmark ``L``, so adding never touches the
other members and the order of the stored scores is the order of the decayed scores at any
``now``; reading multiplies by ``2**(-(now - L) / h)``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from shortrec.config import StoreConfig
from shortrec.store import codec
from shortrec.store.keys import COUNTER_FIELDS, F_WATCH_SUM
from shortrec.store.types import (
    GLOBAL_REGION,
    NO_IDX,
    NO_TS,
    RequestContext,
    SessionState,
    StoreEvent,
    VideoFeatureBatch,
)

US_PER_S = 1_000_000
#: Forward-decay exponent above which a trending list is rescaled to a new landmark; 2**64
#: keeps scores far from float64 overflow (2**1024) while rescaling at most every 64 half-lives.
MAX_FORWARD_EXP = 64.0


def decay_factor(now_us: int, t_us: int, half_life_s: float) -> float:
    """``2 ** (-(now - t) / h)`` with times in µs and ``h`` in seconds."""
    return float(2.0 ** (-(now_us - t_us) / US_PER_S / half_life_s))


def _to_int(raw: bytes | str | int | None, default: int) -> int:
    return default if raw is None else int(raw)


def build_session(
    session_id: int, now_us: int, raw: Sequence[bytes | str | None], cfg: StoreConfig
) -> SessionState:
    """Session state from the session hash fields (:data:`keys.SESSION_FIELDS` order).

    A stored session with another id, or idle for longer than ``session_ttl_s`` at ``now_us``,
    is not this request's session: the result is then empty.
    """
    sid, t0, t1, n, k, recent = raw
    last = _to_int(t1, NO_TS)
    if sid is None or int(sid) != session_id or now_us - last > cfg.session_ttl_s * US_PER_S:
        return SessionState(session_id=session_id)
    blob = recent.encode() if isinstance(recent, str) else (recent or b"")
    v, c, g, s = codec.decode_session_recent(blob)
    return SessionState(
        session_id=session_id,
        started_us=_to_int(t0, NO_TS),
        last_us=last,
        n_served=_to_int(n, 0),
        n_skips=_to_int(k, 0),
        recent_video_idx=v,
        recent_creator_idx=c,
        recent_category=g,
        recent_skipped=s,
    )


def build_context(
    cfg: StoreConfig,
    user_id: str,
    session_id: int,
    now_us: int,
    version: int,
    as_of_us: int,
    base_history: bytes | None,
    base_affinity: bytes | None,
    live: Sequence[bytes],
    seen: Sequence[bytes | str | int],
    session: Sequence[bytes | str | None],
) -> RequestContext:
    """Assemble a :class:`RequestContext` from what one round trip read.

    ``live`` are live history entries newest first; only those after the published snapshot
    (``ts > as_of_us``) count, since the snapshot already holds the earlier ones. History is
    the published one then the live one ordered by time (stable), last ``history_cap`` kept.
    Tag affinity at ``now``: published weights decayed from ``as_of_us`` plus, for each live
    entry after the snapshot, its engagement shared equally among its video's tags and decayed
    from the entry's time (the offline definition, so the two add up).
    """
    base = codec.decode_history(base_history)
    entries = [codec.decode_live(b) for b in reversed(live)]
    entries = [e for e in entries if e.ts_us > as_of_us]
    entries.sort(key=lambda e: e.ts_us)
    n_live = len(entries)
    if n_live:
        hist = np.concatenate(
            [
                base["v"].astype(np.int32),
                np.fromiter((e.video_idx for e in entries), np.int32, n_live),
            ]
        )
        hts = np.concatenate(
            [base["ts"].astype(np.int64), np.fromiter((e.ts_us for e in entries), np.int64, n_live)]
        )
        wr = np.concatenate(
            [
                base["wr"].astype(np.float32),
                np.fromiter((e.watch_ratio for e in entries), np.float32, n_live),
            ]
        )
        sk = np.concatenate(
            [
                base["sk"].astype(np.bool_),
                np.fromiter((e.skipped for e in entries), np.bool_, n_live),
            ]
        )
    else:  # the published history alone (copies: the blob's buffer is read-only)
        hist, hts = base["v"].astype(np.int32), base["ts"].astype(np.int64)
        wr, sk = base["wr"].astype(np.float32), base["sk"].astype(np.bool_)
    cap = cfg.history_cap
    hist, hts, wr, sk = hist[-cap:], hts[-cap:], wr[-cap:], sk[-cap:]

    weights: dict[int, float] = defaultdict(float)
    aff = codec.decode_affinity(base_affinity)
    if aff.shape[0]:
        f = decay_factor(now_us, as_of_us, cfg.affinity_half_life_s)
        for t, w in zip(aff["t"].tolist(), aff["w"].tolist(), strict=True):
            weights[t] += w * f
    for e in entries:
        if e.engagement > 0 and e.tags:
            share = (
                e.engagement / len(e.tags) * decay_factor(now_us, e.ts_us, cfg.affinity_half_life_s)
            )
            for t in e.tags:
                weights[t] += share
    ranked = sorted(weights.items(), key=lambda kv: (-kv[1], kv[0]))[: cfg.max_user_tags]

    seen_ids = np.fromiter((int(x) for x in seen), np.int64, len(seen))
    all_seen = np.sort(np.concatenate([seen_ids, base["v"].astype(np.int64)]))
    if all_seen.shape[0] > 1:  # sorted unique (np.unique, without its general machinery)
        all_seen = all_seen[np.concatenate([[True], all_seen[1:] != all_seen[:-1]])]
    return RequestContext(
        user_id=user_id,
        now_us=now_us,
        version=version,
        history=hist,
        history_ts=hts,
        watch_ratio=wr,
        skipped=sk,
        seen=all_seen.astype(np.int32),
        tag_idx=np.array([t for t, _ in ranked], dtype=np.int32),
        tag_weight=np.array([w for _, w in ranked], dtype=np.float32),
        session=build_session(session_id, now_us, session, cfg),
    )


def build_features(
    video_idx: np.ndarray,
    blobs: Sequence[bytes | None],
    counters: Sequence[Sequence[bytes | str | None]],
) -> VideoFeatureBatch:
    """Columnar features from per-video feature blobs (None: unknown video) and counter fields
    (:data:`keys.COUNTER_FIELDS` then :data:`keys.F_WATCH_SUM`, None when never counted)."""
    n = video_idx.shape[0]
    known = np.zeros(n, np.bool_)
    creator = np.full(n, NO_IDX, np.int32)
    category = np.full(n, NO_IDX, np.int32)
    offsets = np.zeros(n + 1, np.int64)
    dur = np.full(n, np.nan, np.float32)
    upload = np.full(n, NO_TS, np.int64)
    imp = np.zeros(n, np.int64)
    rates = np.full((4, n), np.nan, np.float32)
    live = np.zeros((len(COUNTER_FIELDS), n), np.int64)
    wsum = np.zeros(n, np.float64)
    tags: list[int] = []
    for i, blob in enumerate(blobs):
        if blob is not None:
            r = codec.decode_video(blob)
            known[i] = True
            creator[i], category[i], dur[i], upload[i] = (
                r.creator_idx,
                r.category,
                r.duration_s,
                r.upload_us,
            )
            imp[i] = r.impressions
            rates[:, i] = (r.engage_rate, r.watch_ratio_mean, r.skip_rate, r.like_rate)
            tags.extend(r.tags)
        offsets[i + 1] = len(tags)
        c = counters[i]
        for j in range(len(COUNTER_FIELDS)):
            live[j, i] = _to_int(c[j], 0)
        wsum[i] = float(c[len(COUNTER_FIELDS)] or 0.0)
    return VideoFeatureBatch(
        video_idx=video_idx,
        known=known,
        creator_idx=creator,
        category=category,
        tag_offsets=offsets,
        tag_values=np.array(tags, np.int32),
        duration_s=dur,
        upload_us=upload,
        impressions=imp,
        engage_rate=rates[0],
        watch_ratio_mean=rates[1],
        skip_rate=rates[2],
        like_rate=rates[3],
        live_impressions=live[0],
        live_engaged=live[1],
        live_skips=live[2],
        live_likes=live[3],
        live_shares=live[4],
        live_follows=live[5],
        live_watch_ratio_sum=wsum,
    )


# ---------------------------------------------------------------- event writes
@dataclass(frozen=True)
class UserWrite:
    """The per-user part of applying one event (atomic with its idempotency check).

    Strings are what the Redis script receives; the in-process store reads the same fields.
    """

    event_id: str
    ts: str
    video: str
    session_id: str
    live_entry: bytes
    session_entry: bytes
    skipped: bool
    seen_min_ts: str


def user_write(ev: StoreEvent, video: codec.VideoRecord | None, cfg: StoreConfig) -> UserWrite:
    return UserWrite(
        event_id=str(ev.event_id),
        ts=str(ev.ts_us),
        video=str(ev.video_idx),
        session_id=str(ev.session_id),
        live_entry=codec.encode_live(ev, video, cfg.max_video_tags),
        session_entry=codec.encode_session_entry(ev, video),
        skipped=ev.skipped,
        seen_min_ts=str(ev.ts_us - cfg.seen_ttl_s * US_PER_S),
    )


@dataclass(frozen=True)
class GlobalWrites:
    """Per-video counter increments (video -> counts in :data:`keys.COUNTER_FIELDS` order,
    watch-ratio sum) and trending additions (region -> [(video, weight, ts_us)])."""

    counters: dict[int, tuple[list[int], float]]
    trending: dict[str, list[tuple[int, float, int]]]


def global_writes(applied: Sequence[StoreEvent], known: set[int]) -> GlobalWrites:
    """Aggregate the global effects of newly applied events on videos of the published
    catalogue (``known``); other videos have no global state to update."""
    counters: dict[int, tuple[list[int], float]] = {}
    trending: dict[str, list[tuple[int, float, int]]] = defaultdict(list)
    for ev in applied:
        if ev.video_idx not in known:
            continue
        c, w = counters.get(ev.video_idx, ([0] * len(COUNTER_FIELDS), 0.0))
        inc = (
            1,
            int(not ev.skipped),
            int(ev.skipped),
            int(ev.liked),
            int(ev.shared),
            int(ev.followed),
        )
        c = [a + b for a, b in zip(c, inc, strict=True)]
        if not math.isnan(ev.watch_ratio):
            w += ev.watch_ratio
        counters[ev.video_idx] = (c, w)
        if ev.engagement > 0:
            trending[GLOBAL_REGION].append((ev.video_idx, ev.engagement, ev.ts_us))
            if ev.region is not None and ev.region != GLOBAL_REGION:
                trending[ev.region].append((ev.video_idx, ev.engagement, ev.ts_us))
    return GlobalWrites(counters, dict(trending))


def counter_fields() -> tuple[str, ...]:
    """Fields of a video hash read for the live counters, in :func:`build_features` order."""
    return (*COUNTER_FIELDS, F_WATCH_SUM)
