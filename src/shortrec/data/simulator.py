"""Session-aware synthetic world: batch generation of a complete dataset directory.

:func:`generate` draws a :class:`~shortrec.data.world.World`, then simulates every user's
sessions against a logging policy and writes the dataset (layout of ``data/io.py``) atomically.

How it is fast: users are simulated in *lockstep*. Each lane of a set of arrays is one user
running their sessions one after another; one step advances every lane by one impression with
numpy operations over all lanes (policy sampling, the response model of ``World``, state
update). Finished lanes are compacted away once they are a quarter of the arrays. Users are
processed in chunks of ``SimConfig.chunk_users``; each chunk's events are written as one
``events/part-*.parquet`` file, so memory is bounded by the chunk, not the world. Chunks run
on this process and ``workers - 1`` spawned helpers (:class:`_Workers`).

Determinism: the world is drawn from ``default_rng([seed, 0])`` and chunk ``i`` from
``default_rng([seed, 1, i])``; the same config gives byte-identical Parquet tables.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_EXCEPTION, Future, ProcessPoolExecutor, wait
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl
import pyarrow as pa

from shortrec import schema as S
from shortrec.config import SimConfig
from shortrec.data import io
from shortrec.data.world import (
    N_UNIFORMS,
    U_QUIT,
    US_PER_DAY,
    US_PER_S,
    Arr,
    SessionState,
    StepResponse,
    StepResult,
    World,
    build_world,
)

__all__ = [
    "POLICIES",
    "TOPIC_NAMES",
    "LoggingPolicy",
    "SessionState",
    "StepResponse",
    "StepResult",
    "World",
    "build_world",
    "chunk_bounds",
    "generate",
    "plan_segments",
    "resolve_workers",
    "simulate_users",
    "tag_names",
    "topic_names",
]

#: logging-policy sources, in the order of their integer codes
POLICIES = ("trending", "interest", "explore")
TRENDING, INTEREST, EXPLORE = 0, 1, 2

TOPIC_NAMES = (
    "comedy", "dance", "food", "pets", "gaming", "music", "sports", "beauty", "fashion",
    "travel", "diy", "education", "tech", "cars", "fitness", "news", "movies", "art", "science",
    "nature", "parenting", "finance", "anime", "asmr", "baking", "lifestyle", "motivation",
    "history", "books", "gardening", "photography", "magic", "pranks", "vlogs", "memes",
    "fishing", "camping", "skateboarding", "soccer", "basketball", "esports", "kpop", "makeup",
    "skincare", "home", "crafts", "languages", "cinema",
)  # fmt: skip
_TAG_SUFFIXES = (
    "tips", "challenge", "fails", "daily", "tutorial", "hacks", "review", "trend", "live",
    "funny", "pro", "cute", "best", "howto", "bts", "reaction", "duet", "remix", "beginner",
    "shorts",
)  # fmt: skip
#: minimum gap between two sessions of one user (the ETL's default session gap is 30 min)
MIN_SESSION_GAP_US = 1_800 * US_PER_S
_KEY_SHIFT = 1 << 44  # topic * shift + upload offset: each topic's pool is one sorted run
#: the logging policy's eligibility refresh period (an hourly index build)
SLOT_US = 3_600 * US_PER_S


def topic_names(n_topics: int) -> list[str]:
    """Readable names of ``n_topics`` topics (the categories); ``topicK`` past the list."""
    return [TOPIC_NAMES[i] if i < len(TOPIC_NAMES) else f"topic{i}" for i in range(n_topics)]


def tag_names(n_tags: int, n_topics: int) -> list[str]:
    """Readable tag names: tag ``g`` belongs to topic ``g % n_topics`` (e.g. ``food_hacks``)."""
    topics = topic_names(n_topics)
    out = []
    for g in range(n_tags):
        j = g // n_topics
        suffix = _TAG_SUFFIXES[j % len(_TAG_SUFFIXES)]
        rnd = j // len(_TAG_SUFFIXES)
        out.append(f"{topics[g % n_topics]}_{suffix}{rnd + 1 if rnd else ''}")
    return out


# ---------------------------------------------------------------- logging policy
class LoggingPolicy:
    """The production policy whose impressions the logs record (hence their exposure bias).

    Each impression's source is drawn from the mix (``policy_trending``, ``policy_interest``,
    ``policy_explore``, normalised):

    * trending: popularity-weighted (``World.pop``) among videos uploaded in the last
      ``trending_window_days``;
    * interest: a topic from the user's *start* interests (the policy does not see drift),
      replaced by a uniform topic with probability ``policy_noise``, then a popularity-weighted
      video of that main topic; an empty pool falls back to explore;
    * explore: uniform among all uploaded videos.

    Only videos uploaded before the impression time are eligible (refreshed hourly, like an
    index build): each pool is sorted by upload time, so the eligible set is a prefix whose end
    per hour slot is precomputed, and weighted draws invert the cumulative weights over it.
    """

    def __init__(self, world: World, config: SimConfig) -> None:
        mix = np.array([config.policy_trending, config.policy_interest, config.policy_explore])
        self.cum_mix = np.cumsum(mix / mix.sum())
        self.noise = config.policy_noise
        self.window_us = int(config.trending_window_days * US_PER_DAY)
        self.n_topics = world.n_topics
        up = world.upload_us
        self.base = int(up.min())
        self.order = np.argsort(up, kind="stable")
        self.up_sorted = up[self.order]
        pop = world.pop.astype(np.float64)
        self.cum_pop = np.concatenate([[0.0], np.cumsum(pop[self.order])])
        main = world.main_topic.astype(np.int64)
        self.order_t = np.lexsort((up, main))
        self.key_t = main[self.order_t] * _KEY_SHIFT + (up[self.order_t] - self.base)
        self.topic_start = np.searchsorted(main[self.order_t], np.arange(self.n_topics))
        self.cum_pop_t = np.concatenate([[0.0], np.cumsum(pop[self.order_t])])
        # per-user cumulative start interests, padded with +inf to a multiple of 8 columns
        # (never below a uniform, so counts are unchanged) for :func:`_row_counts`
        cum_theta = np.cumsum(world.theta_a, axis=1, dtype=np.float32)
        pad = -self.n_topics % 8
        self.cum_theta = np.pad(cum_theta, ((0, 0), (0, pad)), constant_values=np.inf)
        # eligibility tables on an hourly grid (like an index refreshed every hour): for slot
        # ``h`` (time in [base + h*slot, base + (h+1)*slot)) the end of the eligible prefix of
        # all videos, of the trending window, and of each topic's pool
        self.slot_us = SLOT_US
        last = world.end_us + 2 * US_PER_DAY  # sessions may run a little past the horizon
        n_slots = (last - self.base) // self.slot_us + 2
        edge = self.base + np.arange(n_slots, dtype=np.int64) * self.slot_us
        self.hi_all = np.searchsorted(self.up_sorted, edge, side="right")
        self.lo_trend = np.searchsorted(self.up_sorted, edge - self.window_us, side="left")
        self.lo_trend = np.where(
            self.cum_pop[self.hi_all] > self.cum_pop[self.lo_trend], self.lo_trend, 0
        )
        topics = np.arange(self.n_topics, dtype=np.int64)
        keys = topics[None, :] * _KEY_SHIFT + (edge - self.base)[:, None]  # (slots, T)
        self.hi_topic = np.searchsorted(self.key_t, keys.ravel(), side="right").reshape(
            n_slots, self.n_topics
        )

    def slot(self, ts_us: Arr) -> Arr:
        """Index of the eligibility slot of times ``ts_us`` (videos uploaded up to the
        slot's start are eligible)."""
        # np.minimum/np.maximum: np.clip's call overhead is several microseconds per call
        slot = (ts_us - self.base) // self.slot_us
        out: Arr = np.minimum(np.maximum(slot, 0), self.hi_all.shape[0] - 1)
        return out

    @staticmethod
    def _weighted(cum: Arr, lo: Arr, hi: Arr, u: Arr) -> Arr:
        """Positions in [lo, hi) drawn with probability proportional to ``diff(cum)``."""
        x = cum[lo] + u * (cum[hi] - cum[lo])
        # searching (nearly) sorted keys walks ``cum`` in order, with far fewer cache misses
        # than keys as they come; a 16-bit key sorts in linear time (radix sort) and is
        # sorted enough (the search itself is exact)
        key = (x * (65535.0 / max(float(cum[-1]), 1e-300))).astype(np.uint16)
        order = np.argsort(key, kind="stable")
        pos = np.empty(x.shape[0], dtype=np.int64)
        pos[order] = np.searchsorted(cum, x[order], side="right")
        pos -= 1
        out: Arr = np.minimum(np.maximum(pos, lo), hi - 1)
        return out

    def serve(
        self, user: Arr, ts_us: Arr, seen_ring: Arr, rng: np.random.Generator
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int8], npt.NDArray[np.bool_]]:
        """:meth:`sample` with one redraw where the video is in the lane's recent-video ring
        ``seen_ring`` (n, S) (a light seen-filter, as production feeds have). Returns videos,
        sources and whether each video is still a recent repeat."""
        video, src = self.sample(user, ts_us, rng)
        seen = _row_counts(seen_ring == video.astype(seen_ring.dtype)[:, None]) > 0
        rep = np.flatnonzero(seen)
        if rep.size:
            video[rep], src[rep] = self.sample(user[rep], ts_us[rep], rng)
            seen[rep] = (seen_ring[rep] == video[rep, None]).any(1)
        return video, src, seen

    def sample(
        self, user: Arr, ts_us: Arr, rng: np.random.Generator
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int8]]:
        """One impression per lane: video indices (n,) and source codes (n,) (``POLICIES``)."""
        n = user.shape[0]
        u = rng.random((n, 3))
        # the index of the mix interval holding u0 (two comparisons: the mix has three)
        u0 = u[:, 0]
        src = (u0 >= self.cum_mix[0]).view(np.int8) + (u0 >= self.cum_mix[1]).view(np.int8)
        slot = self.slot(ts_us)
        hi_all = self.hi_all[slot]
        video = np.empty(n, dtype=np.int64)

        tr = np.flatnonzero(src == TRENDING)
        if tr.size:
            hi, lo = hi_all[tr], self.lo_trend[slot[tr]]
            video[tr] = self.order[self._weighted(self.cum_pop, lo, hi, u[tr, 2])]

        it = np.flatnonzero(src == INTEREST)
        if it.size:
            u1 = u[it, 1]
            noisy = u1 < self.noise
            uu = np.where(
                noisy, u1 / max(self.noise, 1e-12), (u1 - self.noise) / max(1.0 - self.noise, 1e-12)
            )
            beliefs = np.take(self.cum_theta, user[it], axis=0)  # (m, T padded)
            by_belief = _row_counts(beliefs < uu[:, None].astype(np.float32))
            topic = np.where(noisy, (uu * self.n_topics).astype(np.int64), by_belief)
            topic = np.minimum(np.maximum(topic, 0), self.n_topics - 1)
            lo = self.topic_start[topic]
            hi = self.hi_topic.ravel()[slot[it] * self.n_topics + topic]
            ok = hi > lo
            if not ok.all():  # nothing of that topic uploaded yet: explore instead
                src[it[~ok]] = EXPLORE
                it, lo, hi = it[ok], lo[ok], hi[ok]
            pos = self._weighted(self.cum_pop_t, lo, hi, u[it, 2])
            video[it] = self.order_t[pos]

        ex = np.flatnonzero(src == EXPLORE)
        if ex.size:
            h = hi_all[ex]
            pick = np.minimum(np.maximum((u[ex, 2] * h).astype(np.int64), 0), h - 1)
            video[ex] = self.order[pick]
        return video, src


def _row_counts(eq: npt.NDArray[np.bool_]) -> Arr:
    """The number of True values in each row of an (n, m) bool array.

    With ``m`` a multiple of 8 (and C order) every 8 bytes are read as one uint64 whose set
    bits are counted (each True byte has exactly one set bit): several times faster than
    ``eq.sum(1)`` on short rows. Callers pad their rings and tables to 8 columns for this.
    """
    if eq.ndim != 2 or eq.shape[1] % 8 or not eq.flags.c_contiguous:
        out: Arr = eq.sum(1)
        return out
    words = eq.view(np.uint64)  # (n, m / 8)
    out = np.bitwise_count(words[:, 0]).astype(np.int32)
    for j in range(1, words.shape[1]):
        out += np.bitwise_count(words[:, j])
    return out


# ---------------------------------------------------------------- lockstep simulation
@dataclass
class _Lanes:
    """Per-lane state of the lockstep simulation (arrays indexed by lane).

    A lane is one *segment* of one user's timeline (``entity``): sessions starting in
    ``[segment start, seg_end)``, simulated one after another. The rings ``creators`` and
    ``seen`` are padded with -1 columns (never written) to a multiple of 8 for
    :func:`_row_counts`.
    """

    entity: npt.NDArray[np.int32]
    user: npt.NDArray[np.int64]
    seg_end: npt.NDArray[np.int64]
    ts: npt.NDArray[np.int64]
    theta: npt.NDArray[np.float32]
    trace: npt.NDArray[np.float32]
    creators: npt.NDArray[np.int32]
    seen: npt.NDArray[np.int32]
    n_seen: npt.NDArray[np.int64]
    fatigue: npt.NDArray[np.float32]
    streak: npt.NDArray[np.float32]
    position: npt.NDArray[np.int32]
    elapsed: npt.NDArray[np.float32]
    budget: npt.NDArray[np.float32]
    seq: npt.NDArray[np.int32]
    alive: npt.NDArray[np.bool_]

    def take(self, keep: Arr) -> _Lanes:
        return _Lanes(**{k: np.take(v, keep, axis=0) for k, v in self.__dict__.items()})


#: bits of the per-event ``flags`` byte recorded at each step (the policy code takes 2 bits)
_SKIPPED, _LIKED, _SHARED, _FOLLOWED, _POLICY_SHIFT, _ALIVE = 1, 2, 4, 8, 4, 64
#: one recorded impression: reordering whole records moves each event's fields together
#: (one scattered write per event instead of one per column)
_RECORD = np.dtype(
    [("ts", "<i8"), ("entity", "<i4"), ("seq", "<i4"), ("video", "<i4"), ("position", "<i4"),
     ("watch", "<f4"), ("flags", "u1")],
    align=True,
)  # fmt: skip
#: the event columns :func:`simulate_users` returns
_EVENT_FIELDS = ("user", "video", "ts", "position", "watch", "skipped", "liked", "shared",
                 "followed", "policy")  # fmt: skip
#: expected impressions per session used only to plan segments (a performance heuristic)
_PLAN_SESSION_LEN = 12.0
#: finished lanes are compacted away once they are this share of the arrays (they keep
#: running until then: a performance trade-off between wasted steps and copying). Finished
#: lanes still draw random numbers, so a new value changes the events (not their distribution)
_COMPACT_FINISHED = 0.25


def max_session_span_us(world: World) -> int:
    """An upper bound on how long one session lasts: the largest budget plus the longest
    possible last impression (180 s watched ``1 + max_replays + loop_tail`` < ``2 +
    max_replays`` times) plus a swipe gap."""
    b = world.behavior
    return int((b.budget_max_s + 180.0 * (2 + b.max_replays) + b.swipe_gap_s + 1.0) * US_PER_S)


def plan_segments(
    world: World, users: npt.NDArray[np.int64], target_events: float, min_days: float = 2.0
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Cut each user's timeline into segments of about ``target_events`` expected events.

    Returns ``(local_user, seg_start_us, seg_end_us)`` per segment, ordered by (user, time).
    Heavy users get several segments so that one lockstep step advances them in parallel
    (no long single-lane tail); a segment spans at least ``min_days``.
    """
    origin = np.maximum(world.signup_us[users], world.start_us)
    span = np.maximum(world.end_us - origin, 0)
    days = span / US_PER_DAY
    expected = world.activity[users] * days * _PLAN_SESSION_LEN
    n_seg = np.clip(
        np.ceil(expected / target_events), 1, np.maximum(1, np.floor(days / min_days))
    ).astype(np.int64)
    local = np.repeat(np.arange(users.shape[0], dtype=np.int64), n_seg)
    first = np.concatenate([[0], np.cumsum(n_seg)[:-1]])
    j = np.arange(local.shape[0]) - np.repeat(first, n_seg)
    tot = n_seg[local]
    seg_start = origin[local] + span[local] * j // tot
    seg_end = origin[local] + span[local] * (j + 1) // tot
    return local, seg_start.astype(np.int64), seg_end.astype(np.int64)


def _ring(n: int, width: int) -> npt.NDArray[np.int32]:
    """An empty (n, width) ring buffer (-1), padded to a multiple of 8 columns."""
    return np.full((n, width + (-width % 8)), -1, dtype=np.int32)


def simulate_users(
    world: World,
    policy: LoggingPolicy,
    users: npt.NDArray[np.int64],
    rng: np.random.Generator,
    on_users_done: Callable[[int], None] | None = None,
    target_events: float = 128.0,
) -> dict[str, Arr]:
    """Simulate all sessions of ``users`` (m,), sorted, over the horizon; return the event
    columns ``_EVENT_FIELDS`` (arrays (n,)), ordered by (user, time).

    Every impression: the policy draws a video, :meth:`World.engagement` / ``probs`` /
    ``sample`` give the response (one (n, 8) uniform block, as in :meth:`World.step`), the
    session state advances, and the quit / budget / length rules may end the session; the next
    session then starts after ``30 min + Exp(1 / activity)`` days, until the segment ends.

    Segments (:func:`plan_segments`) run as separate lanes; a segment after the first opens
    with a session ``max_session_span_us + Exp`` after its start, so sessions of one user never
    overlap, and its recent-video memory (novelty) starts empty.
    """
    b = world.behavior
    t_n, w_c, w_s = world.n_topics, b.creator_window, b.seen_window
    local, seg_start, seg_end = plan_segments(world, users, target_events)
    n_ent = local.shape[0]
    is_first = np.ones(n_ent, dtype=bool)
    is_first[1:] = local[1:] != local[:-1]
    user_e = users[local]
    gap_days = rng.exponential(1.0, size=n_ent) / world.activity[user_e]
    start_ts = (
        seg_start
        + np.where(is_first, 0, max_session_span_us(world))
        + (gap_days * US_PER_DAY).astype(np.int64)
    )
    lanes = _Lanes(
        entity=np.arange(n_ent, dtype=np.int32),
        user=user_e,
        seg_end=seg_end,
        ts=start_ts,
        theta=np.zeros((n_ent, t_n), dtype=np.float32),
        trace=np.zeros((n_ent, t_n), dtype=np.float32),
        creators=_ring(n_ent, w_c),
        seen=_ring(n_ent, w_s),
        n_seen=np.zeros(n_ent, dtype=np.int64),
        fatigue=np.zeros(n_ent, dtype=np.float32),
        streak=np.zeros(n_ent, dtype=np.float32),
        position=np.zeros(n_ent, dtype=np.int32),
        elapsed=np.zeros(n_ent, dtype=np.float32),
        budget=np.zeros(n_ent, dtype=np.float32),
        seq=np.zeros(n_ent, dtype=np.int32),
        alive=start_ts < seg_end,
    )
    # progress is reported in users: a user is done when its last segment is
    last_seg = np.ones(n_ent, dtype=bool)
    last_seg[:-1] = local[1:] != local[:-1]

    def report(done_entities: Arr) -> None:
        if on_users_done is not None:
            k = int(last_seg[done_entities].sum())
            if k:
                on_users_done(k)

    report(lanes.entity[~lanes.alive])
    lanes = lanes.take(np.flatnonzero(lanes.alive))
    # events per entity: a lane's events are kept while it is alive, so this is its ``seq``
    # when it finishes
    counts = np.zeros(n_ent, dtype=np.int64)
    # one ``_RECORD`` array per step; outcomes, source and liveness share the ``flags`` byte
    rec: list[npt.NDArray[np.void]] = []
    main = world.main_topic.astype(np.int64)
    decay = np.float32(b.topic_decay)
    while lanes.user.shape[0]:
        n = lanes.user.shape[0]
        lane = np.arange(n)
        # --- sessions that start now: fresh state, interests drifted to the start time
        st = np.flatnonzero(lanes.position == 0)
        if st.size:
            lanes.theta[st] = world.interests(lanes.user[st], lanes.ts[st])
            lanes.trace[st] = 0.0
            lanes.creators[st] = -1
            lanes.fatigue[st] = 0.0
            lanes.streak[st] = 0.0
            lanes.elapsed[st] = 0.0
            lanes.budget[st] = world.draw_budget(lanes.user[st], rng)
        # --- the logging policy serves one video per lane
        video, src, seen = policy.serve(lanes.user, lanes.ts, lanes.seen, rng)
        vcreator = world.creator[video]
        flat = lane * t_n + main[video]
        # --- the response model (the same functions the step API uses)
        s, bore = world.engagement(
            lanes.user, video, lanes.theta, lane, lanes.ts, lanes.fatigue,
            lanes.trace.ravel()[flat], _row_counts(lanes.creators == vcreator[:, None]), seen,
        )  # fmt: skip
        u = rng.random((n, N_UNIFORMS), dtype=np.float32)
        out = world.sample(world.probs(s, video), u)
        r = np.empty(n, dtype=_RECORD)
        for k, v in (("ts", lanes.ts), ("entity", lanes.entity), ("seq", lanes.seq),
                     ("video", video), ("position", lanes.position),
                     ("watch", out.watch_time_s)):  # fmt: skip
            r[k] = v
        r["flags"] = (
            out.skipped.view(np.uint8) * np.uint8(_SKIPPED)
            | out.liked.view(np.uint8) * np.uint8(_LIKED)
            | out.shared.view(np.uint8) * np.uint8(_SHARED)
            | out.followed.view(np.uint8) * np.uint8(_FOLLOWED)
            | src.view(np.uint8) << np.uint8(_POLICY_SHIFT)
            | lanes.alive.view(np.uint8) * np.uint8(_ALIVE)
        )
        rec.append(r)
        # --- state update
        lanes.fatigue += np.float32(b.fatigue_step) + np.float32(b.fatigue_skip) * out.skipped
        lanes.streak = np.where(out.skipped, lanes.streak + 1, 0).astype(np.float32)
        p_quit = world.quit_prob(s, bore, lanes.fatigue, lanes.streak)
        spent = out.watch_time_s + np.float32(b.swipe_gap_s)
        lanes.elapsed += spent
        lanes.ts += (spent.astype(np.float64) * US_PER_S).round().astype(np.int64)
        lanes.trace *= decay
        lanes.trace.ravel()[flat] += 1.0
        # ring writes through flat indices (np.put beats 2-d fancy indexing)
        np.put(lanes.creators, lane * lanes.creators.shape[1] + lanes.position % w_c, vcreator)
        np.put(lanes.seen, lane * lanes.seen.shape[1] + lanes.n_seen % w_s, video)
        lanes.n_seen += 1
        lanes.position += 1
        lanes.seq += 1
        ended = (
            (u[:, U_QUIT] < p_quit)
            | (lanes.elapsed >= lanes.budget)
            | (lanes.position >= b.max_session_len)
        )
        e = np.flatnonzero(ended)
        if e.size:
            gap = rng.exponential(1.0, size=e.size) / world.activity[lanes.user[e]]
            lanes.ts[e] += MIN_SESSION_GAP_US + (gap * US_PER_DAY).astype(np.int64)
            lanes.position[e] = 0
            finished = e[lanes.alive[e] & (lanes.ts[e] >= lanes.seg_end[e])]
            lanes.alive[finished] = False
            counts[lanes.entity[finished]] = lanes.seq[finished]
            report(lanes.entity[finished])
        # --- compact once enough lanes are finished (finished lanes keep running until then;
        # their events are dropped below)
        if np.count_nonzero(lanes.alive) <= (1.0 - _COMPACT_FINISHED) * n:
            lanes = lanes.take(np.flatnonzero(lanes.alive))
    return _assemble(rec, counts, user_e)


def _assemble(
    rec: list[npt.NDArray[np.void]], counts: npt.NDArray[np.int64], user_e: npt.NDArray[np.int64]
) -> dict[str, Arr]:
    """The events recorded step by step (``rec``: one ``_RECORD`` array per step), less those
    of finished lanes, ordered by (user, time) and unpacked into ``_EVENT_FIELDS``.

    O(n), no sort: entities are ordered by (user, time), entity ``e`` has ``counts[e]`` kept
    events and numbers them 0..c-1 by ``seq``, so every event's destination is its entity's
    offset plus ``seq``. Each step's records are scattered straight to their destinations.
    """
    n = int(counts.sum())
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
    placed = np.empty(n + 1, dtype=_RECORD)  # dropped events go to the spare last slot
    # records are moved as raw bytes: a structured dtype would be copied field by field
    raw = np.dtype(f"V{_RECORD.itemsize}")
    while rec:
        r = rec.pop(0)
        keep = (r["flags"] & _ALIVE) != 0
        placed.view(raw)[np.where(keep, offsets[r["entity"]] + r["seq"], n)] = r.view(raw)
    placed = placed[:n]
    flags = placed["flags"]
    return {  # the record fields are strided views; consumers copy what they keep
        "user": np.repeat(user_e.astype(np.int32), counts),
        "video": placed["video"],
        "ts": placed["ts"],
        "position": placed["position"],
        "watch": placed["watch"],
        "skipped": (flags & _SKIPPED) != 0,
        "liked": (flags & _LIKED) != 0,
        "shared": (flags & _SHARED) != 0,
        "followed": (flags & _FOLLOWED) != 0,
        "policy": ((flags >> _POLICY_SHIFT) & 3).astype(np.int8),
    }


# ---------------------------------------------------------------- tables
def _events_frame(
    world: World, cols: dict[str, Arr], event0: int, session0: int, request0: int, page: int
) -> pl.DataFrame:
    """The events table of one chunk (schema.EVENTS) with global ids starting at the offsets."""
    n = cols["user"].shape[0]
    pos = np.ascontiguousarray(cols["position"], dtype=np.int32)
    video = np.ascontiguousarray(cols["video"], dtype=np.int32)
    dur = world.duration_s[video]
    watch = np.ascontiguousarray(cols["watch"], dtype=np.float32)
    ratio = (watch / dur).astype(np.float32)
    session = session0 + np.cumsum(pos == 0, dtype=np.int64) - 1
    request = request0 + np.cumsum(pos % page == 0, dtype=np.int64) - 1
    policy = pl.Series(S.POLICY, POLICIES, dtype=pl.String).gather(cols["policy"].astype(np.int64))
    return pl.DataFrame(
        [
            pl.Series(S.EVENT_ID, np.arange(event0, event0 + n, dtype=np.int64)),
            pl.Series(S.REQUEST_ID, request),
            pl.Series(S.SESSION_ID, session),
            pl.Series(S.USER_IDX, np.ascontiguousarray(cols["user"], dtype=np.int32)),
            pl.Series(S.VIDEO_IDX, video),
            pl.Series(S.TS, np.ascontiguousarray(cols["ts"], dtype=np.int64)).cast(S.UTC_TS),
            pl.Series(S.POSITION, pos),
            pl.Series(S.WATCH_TIME_S, watch),
            pl.Series(S.WATCH_RATIO, ratio),
            pl.Series(S.SKIPPED, cols["skipped"].astype(bool)),
            pl.Series(S.LIKED, cols["liked"].astype(bool)),
            pl.Series(S.SHARED, cols["shared"].astype(bool)),
            pl.Series(S.FOLLOWED, cols["followed"].astype(bool)),
            policy.alias(S.POLICY),
        ]
    )


def _video_tags(world: World, config: SimConfig, rng: np.random.Generator) -> pl.Series:
    """Tags per video: 1..``tags_per_video_max`` tags, each from a topic of the video's
    mixture (by weight) or, with probability ``tag_noise``, from a random topic (cross-topic
    noise); within a topic, tags are skewed towards its first ones. Duplicates dropped."""
    n_v, t, g = world.n_videos, world.n_topics, config.n_tags
    mx = config.tags_per_video_max
    n_tags = rng.integers(1, mx + 1, size=n_v)
    cum_w = np.cumsum(world.video_topic_w, axis=1)
    u = rng.random((n_v, mx, 3))
    slot = (cum_w[:, None, :] < u[:, :, 0:1]).sum(2).clip(0, cum_w.shape[1] - 1)
    topic = np.take_along_axis(world.video_topics.astype(np.int64), slot, axis=1)
    noisy = u[:, :, 1] < config.tag_noise
    topic = np.where(
        noisy, (u[:, :, 1] / max(config.tag_noise, 1e-12) * t).astype(np.int64), topic
    ).clip(0, t - 1)
    n_in = (g - topic + t - 1) // t  # tags of topic k: k, k + t, k + 2t, ... < g
    tag = topic + t * (u[:, :, 2] ** 2 * n_in).astype(np.int64).clip(0, n_in - 1)
    tag = np.where(np.arange(mx)[None, :] < n_tags[:, None], tag, np.iinfo(np.int64).max)
    tag.sort(axis=1)
    keep = tag != np.iinfo(np.int64).max
    keep[:, 1:] &= tag[:, 1:] != tag[:, :-1]
    offsets = np.concatenate([[0], np.cumsum(keep.sum(1))]).astype(np.int32)
    values = tag[keep].astype(np.int32)
    arr = pa.ListArray.from_arrays(pa.array(offsets), pa.array(values))
    return pl.Series(S.TAGS, arr, dtype=pl.List(pl.Int32))


def _videos_frame(world: World, config: SimConfig, rng: np.random.Generator) -> pl.DataFrame:
    tags = _video_tags(world, config, rng)
    names = pl.Series(tag_names(config.n_tags, config.n_topics), dtype=pl.String)
    first = names.gather(tags.list.first().cast(pl.Int64))
    idx = np.arange(world.n_videos, dtype=np.int32)
    df = pl.DataFrame(
        [
            pl.Series(S.VIDEO_IDX, idx),
            pl.Series(S.CREATOR_IDX, world.creator.astype(np.int32)),
            pl.Series(S.CATEGORY, world.main_topic.astype(np.int16)),
            tags,
            pl.Series(S.DURATION_S, world.duration_s.astype(np.float32)),
            pl.Series(S.UPLOAD_TS, world.upload_us).cast(S.UTC_TS),
            pl.Series("_first", first),
        ]
    )
    return df.with_columns(
        pl.format("#{} clip {}", pl.col("_first"), pl.col(S.VIDEO_IDX)).alias(S.TITLE)
    ).drop("_first")


def _users_frame(world: World, rng: np.random.Generator) -> pl.DataFrame:
    n = world.n_users
    region_p = np.array([0.22, 0.14, 0.2, 0.12, 0.1, 0.08, 0.07, 0.07])
    age_p = np.array([0.12, 0.34, 0.28, 0.16, 0.1])
    dev_p = np.array([0.62, 0.33, 0.05])
    pick = [rng.choice(len(p), size=n, p=p / p.sum()) for p in (region_p, age_p, dev_p)]
    return pl.DataFrame(
        [
            pl.Series(S.USER_IDX, np.arange(n, dtype=np.int32)),
            pl.Series(S.SIGNUP_TS, world.signup_us).cast(S.UTC_TS),
            pl.Series(S.REGION, S.REGIONS, dtype=pl.String).gather(pick[0]),
            pl.Series(S.AGE_BUCKET, S.AGE_BUCKETS, dtype=pl.String).gather(pick[1]),
            pl.Series(S.DEVICE, S.DEVICES, dtype=pl.String).gather(pick[2]),
        ]
    )


def _id_series(prefix: str, n: int) -> pl.Series:
    return pl.select(pl.format(prefix + "{}", pl.int_range(0, n, dtype=pl.Int64))).to_series()


#: zstd level of the event parts: level 1 writes them about a third faster than the default
#: (3) for files about 15% larger (measured on ``medium``)
EVENTS_ZSTD_LEVEL = 1


def _write_checked(
    df: pl.DataFrame, schema: S.TableSchema, path: Path, zstd_level: int | None = None
) -> None:
    """Validate at the boundary, then write atomically."""
    io.write_parquet_atomic(S.check(df, schema, str(path)), path, zstd_level)


# ---------------------------------------------------------------- chunks and workers
def chunk_bounds(n_users: int, chunk_users: int) -> list[int]:
    """User index boundaries of ``ceil(n_users / chunk_users)`` near-equal chunks: chunk ``i``
    holds users ``[bounds[i], bounds[i + 1])``. Depends only on the config, never on the
    number of workers, so the output does not either."""
    n_chunks = max(1, -(-n_users // chunk_users))
    return [n_users * i // n_chunks for i in range(n_chunks + 1)]


def resolve_workers(workers: int | None) -> int:
    """``SimConfig.workers``, or ``min(2, os.cpu_count())`` when None."""
    return workers if workers is not None else max(1, min(2, os.cpu_count() or 1))


class _Offsets:
    """Coordination of the processes that simulate chunks: who takes which chunk, and the
    global id offsets of the chunks.

    Chunk ``i``'s event, session and request ids start at the totals of chunks ``0..i-1``. A
    chunk publishes its counts as soon as it is simulated and waits only for lower chunks, so
    the ids are the same in whatever order chunks finish (and with any number of processes).
    Chunks are taken from one shared counter in index order (:meth:`take`), so the lowest
    unfinished chunk is always being simulated and never waits: no deadlock. Helper processes
    start before the world exists and wait for :meth:`set_ready` before loading it.

    State: ``3 * n_chunks`` counts, ``n_chunks`` published flags, then the abort flag, the
    next chunk to take and the world-ready flag, in a shared ``multiprocessing`` array
    guarded by a condition (``ctx`` given) or a plain list (``ctx`` None: one process).
    """

    def __init__(self, n_chunks: int, ctx: Any | None) -> None:
        self.n_chunks = n_chunks
        n = n_chunks
        self._abort, self._next, self._ready = 4 * n, 4 * n + 1, 4 * n + 2
        size = 4 * n + 3
        if ctx is None:
            self.shared: Any = [0] * size
            self.cond: Any = None
        else:
            self.cond = ctx.Condition()
            self.shared = ctx.Array("q", size, lock=False)

    def abort(self) -> None:
        """Wake every waiter and make it fail (a chunk failed or the run was interrupted)."""
        if self.cond is None:
            return
        with self.cond:
            self.shared[self._abort] = 1
            self.cond.notify_all()

    def set_ready(self) -> None:
        """The world is on disk: helper processes may load it."""
        if self.cond is None:
            return
        with self.cond:
            self.shared[self._ready] = 1
            self.cond.notify_all()

    def wait_ready(self) -> None:
        """Block until :meth:`set_ready` (raise if the run is aborted first)."""
        with self.cond:
            while not self.shared[self._ready]:
                if self.shared[self._abort]:
                    raise RuntimeError("simulation aborted before the world was ready")
                self.cond.wait(1.0)

    def take(self) -> int | None:
        """The next chunk to simulate, None when all are taken or the run is aborted."""
        if self.cond is None:
            i = self.shared[self._next]
            self.shared[self._next] = i + 1
            return i if i < self.n_chunks else None
        with self.cond:
            i = self.shared[self._next]
            if i >= self.n_chunks or self.shared[self._abort]:
                return None
            self.shared[self._next] = i + 1
            return int(i)

    def publish_and_wait(self, i: int, counts: tuple[int, int, int]) -> tuple[int, int, int]:
        """Record chunk ``i``'s ``(events, sessions, requests)``; return its id offsets."""
        n, sh = self.n_chunks, self.shared
        if self.cond is None:
            sh[3 * i : 3 * i + 3] = counts
            sh[3 * n + i] = 1
        else:
            with self.cond:
                sh[3 * i : 3 * i + 3] = counts
                sh[3 * n + i] = 1
                self.cond.notify_all()
                while not all(sh[3 * n + j] for j in range(i)):
                    if sh[self._abort]:
                        raise RuntimeError(f"simulation aborted before chunk {i} was written")
                    self.cond.wait(1.0)
        if not all(sh[3 * n + j] for j in range(i)):  # in process: chunks run in order
            raise RuntimeError(f"chunk {i} written before the chunks before it")
        e = sum(sh[3 * j] for j in range(i))
        s_ = sum(sh[3 * j + 1] for j in range(i))
        r = sum(sh[3 * j + 2] for j in range(i))
        return int(e), int(s_), int(r)


@dataclass
class _ChunkJob:
    """Everything a chunk needs; one per process (a helper builds its own in ``_helper``)."""

    config: SimConfig
    world: World
    policy: LoggingPolicy
    bounds: list[int]
    events_dir: Path
    offsets: _Offsets
    advance: Callable[[int], None]


def _run_chunks(job: _ChunkJob) -> dict[int, tuple[int, int, int]]:
    """Take chunks until none is left; return the counts of those this process ran."""
    done: dict[int, tuple[int, int, int]] = {}
    while (i := job.offsets.take()) is not None:
        done[i] = _run_chunk(job, i)
    return done


@dataclass
class _HelperSetup:
    """What a helper process is started with (pickled once per process)."""

    config: SimConfig
    root: Path
    bounds: list[int]
    offsets: _Offsets
    done: Any


_SETUP: _HelperSetup | None = None  # the helper process's setup, set by _init_helper


def _init_helper(setup: _HelperSetup) -> None:
    """Helper start-up: only keep the setup (the world does not exist yet)."""
    global _SETUP  # noqa: PLW0603 - per-process helper state, set once at start-up
    _SETUP = setup


def _helper() -> dict[int, tuple[int, int, int]]:
    """A helper process's one task: wait for the world that the parent saved to
    ``root/truth`` (arrays read once, nothing pickled per chunk), then take chunks."""
    setup = _SETUP
    if setup is None:
        raise RuntimeError("helper not initialised")
    try:
        setup.offsets.wait_ready()
        world = World.load(setup.root)

        def advance(k: int) -> None:
            with setup.done.get_lock():
                setup.done.value += k

        job = _ChunkJob(setup.config, world, LoggingPolicy(world, setup.config), setup.bounds,
                        setup.root / io.EVENTS_DIR, setup.offsets, advance)  # fmt: skip
        return _run_chunks(job)
    except S.BadInput as e:
        setup.offsets.abort()
        # pickled back to the parent: a subclass with other __init__ arguments (SchemaError)
        # would not unpickle, so it travels as its message
        raise S.BadInput(str(e)) from None
    except BaseException:
        setup.offsets.abort()
        raise


def _run_chunk(job: _ChunkJob, i: int) -> tuple[int, int, int]:
    """Simulate chunk ``i`` (generator ``default_rng([seed, 1, i])``), take its id offsets
    and write ``events/part-{i:05d}.parquet``. Returns ``(events, sessions, requests)``."""
    c = job.config
    users = np.arange(job.bounds[i], job.bounds[i + 1], dtype=np.int64)
    rng = np.random.default_rng([c.seed, 1, i])
    cols = simulate_users(job.world, job.policy, users, rng, job.advance)
    pos = cols["position"]
    counts = (
        int(pos.shape[0]),
        int((pos == 0).sum()),
        int((pos % c.page_size == 0).sum()),
    )
    e0, s0, r0 = job.offsets.publish_and_wait(i, counts)
    df = _events_frame(job.world, cols, e0, s0, r0, c.page_size)
    del cols
    _write_checked(df, S.EVENTS, job.events_dir / f"part-{i:05d}.parquet", EVENTS_ZSTD_LEVEL)
    return counts


@contextmanager
def _env(**values: str) -> Iterator[None]:
    """Set environment variables while helper processes are started (they copy it)."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class _Workers:
    """This process plus ``workers - 1`` spawned helpers, simulating the chunks together.

    ``with _Workers(...) as w:`` starts the helpers at once (their start-up, mostly imports,
    overlaps the parent's world building); :meth:`run` then marks the world ready, calls
    ``meanwhile`` (the parent's own table writes), takes chunks in this process too, and
    waits for the helpers. The parent simulating (instead of one more process) saves one
    process start-up and one copy of the world in memory.

    ``spawn``, not ``fork``: forking a process whose Polars thread pool is running deadlocks
    the child (measured), and each helper must start with ``POLARS_MAX_THREADS`` set, which
    a shared ``forkserver`` would fix once for the whole process.
    """

    def __init__(self, config: SimConfig, root: Path, bounds: list[int], workers: int) -> None:
        self.config, self.root, self.bounds = config, root, bounds
        self.n_helpers = workers - 1
        n_chunks = len(bounds) - 1
        self.ctx = mp.get_context("spawn") if self.n_helpers else None
        self.offsets = _Offsets(n_chunks, self.ctx)
        self.done: Any = self.ctx.Value("q", 0) if self.ctx is not None else None
        self.threads = str(max(1, (os.cpu_count() or 1) // workers))
        self._stack = ExitStack()
        self.futures: list[Future[dict[int, tuple[int, int, int]]]] = []

    def __enter__(self) -> _Workers:
        if self.ctx is None:
            return self
        setup = _HelperSetup(self.config, self.root, self.bounds, self.offsets, self.done)
        try:
            with _env(POLARS_MAX_THREADS=self.threads):
                pool = self._stack.enter_context(
                    ProcessPoolExecutor(self.n_helpers, mp_context=self.ctx,
                                        initializer=_init_helper, initargs=(setup,))
                )  # fmt: skip
                # submitting starts the processes (each takes one task and keeps it)
                self.futures = [pool.submit(_helper) for _ in range(self.n_helpers)]
        except BaseException:
            self.__exit__(*sys.exc_info())
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is not None:
            self.offsets.abort()
            for f in self.futures:
                f.cancel()
        self._stack.close()

    def run(
        self,
        world: World,
        advance: Callable[[int], None],
        meanwhile: Callable[[], None],
    ) -> list[tuple[int, int, int]]:
        """Simulate every chunk (``world`` already saved under ``root/truth``); return each
        chunk's counts, in chunk order. ``advance(k)``: ``k`` more users are done."""
        self.offsets.set_ready()
        reported = 0

        def poll() -> None:  # forward the helpers' progress
            nonlocal reported
            if self.done is not None and (now := int(self.done.value)) > reported:
                advance(now - reported)
                reported = now

        def advance_own(k: int) -> None:
            advance(k)
            poll()

        meanwhile()
        job = _ChunkJob(self.config, world, LoggingPolicy(world, self.config), self.bounds,
                        self.root / io.EVENTS_DIR, self.offsets, advance_own)  # fmt: skip
        try:
            counts = _run_chunks(job)
        except BaseException:
            self.offsets.abort()
            # a helper's failure aborts this process's wait: report the helper's error
            for f in self.futures:
                if f.done() and not f.cancelled() and f.exception() is not None:
                    raise f.exception() from None  # type: ignore[misc]
            raise
        pending = set(self.futures)
        while pending:
            _, pending = wait(pending, timeout=0.25, return_when=FIRST_EXCEPTION)
            poll()
            for f in self.futures:
                if f.done() and f.exception() is not None:
                    raise f.exception()  # type: ignore[misc]
        for f in self.futures:
            counts.update(f.result())
        poll()
        return [counts[i] for i in range(len(self.bounds) - 1)]


# ---------------------------------------------------------------- entry point
def generate(config: SimConfig, out: Path, progress: bool = True) -> dict[str, Any]:
    """Generate a complete synthetic dataset into ``out`` (atomically replaced).

    Writes ``manifest.json``, ``videos.parquet``, ``users.parquet``, ``events/part-*.parquet``
    (one part per chunk of :func:`chunk_bounds`; event ids are ``0..n-1`` in (chunk, user,
    time) order), ``vocab/*.parquet`` and ``truth/`` (:meth:`World.save`). Chunks run on
    ``config.workers`` processes (this one and spawned helpers); the files are byte-identical
    for any number of workers. Returns a summary: ``{"counts": {...}, "seconds": float,
    "events_per_s": float, "out": str, "workers": int}``.
    """
    t0 = time.perf_counter()
    out = Path(out)
    bounds = chunk_bounds(config.n_users, config.chunk_users)
    n_chunks = len(bounds) - 1
    workers = min(resolve_workers(config.workers), n_chunks)
    with (
        io.atomic_dir(out) as tmp,
        _progress_bar(progress, config.n_users) as advance,
        _Workers(config, tmp, bounds, workers) as pool,
    ):
        # the helpers start up while the world is drawn; they load it from disk
        world = build_world(config, np.random.default_rng([config.seed, 0]))
        table_rng = np.random.default_rng([config.seed, 2])
        (tmp / io.EVENTS_DIR).mkdir(parents=True, exist_ok=True)
        world.save(tmp / io.TRUTH_DIR)

        def write_tables() -> None:
            _write_checked(_videos_frame(world, config, table_rng), S.VIDEOS, tmp / io.VIDEOS_FILE)
            _write_checked(_users_frame(world, table_rng), S.USERS, tmp / io.USERS_FILE)
            vocabs = {
                "users": _id_series("u", world.n_users),
                "videos": _id_series("v", world.n_videos),
                "creators": _id_series("c", config.n_creators),
                "tags": pl.Series(tag_names(config.n_tags, config.n_topics)),
                "categories": pl.Series(topic_names(config.n_topics)),
            }
            for name, ids in vocabs.items():
                path = tmp / io.VOCAB_DIR / f"{name}.parquet"
                _write_checked(io.vocab_frame(ids), S.VOCAB, path)

        per_chunk = pool.run(world, advance, write_tables)
        n_events, n_sessions, n_requests = (sum(c[k] for c in per_chunk) for k in range(3))
        seconds = time.perf_counter() - t0
        counts = {
            "users": world.n_users,
            "videos": world.n_videos,
            "creators": config.n_creators,
            "tags": config.n_tags,
            "categories": config.n_topics,
            "events": n_events,
            "sessions": n_sessions,
            "requests": n_requests,
        }
        manifest = {
            "kind": "synthetic",
            "preset": config.preset,
            "seed": config.seed,
            # ``workers`` changes how, not what: it stays out so the files do not depend on it
            "config": config.model_dump(mode="json", exclude={"workers"}),
            "counts": counts,
            "skip_threshold_s": config.skip_threshold_s,
            "start_us": world.start_us,
            "end_us": world.end_us,
        }
        io.write_json_atomic(manifest, tmp / io.MANIFEST)
    return {
        "counts": counts,
        "seconds": seconds,
        "events_per_s": n_events / max(seconds, 1e-9),
        "out": str(out),
        "workers": workers,
    }


class _progress_bar:  # lower-case: used like a function in a ``with``
    """A Rich progress bar over users (a no-op when disabled); yields an ``advance(n)``."""

    def __init__(self, enabled: bool, total: int) -> None:
        self.enabled, self.total = enabled, total
        self._p: Any = None

    def __enter__(self) -> Callable[[int], None]:
        if not self.enabled:
            return lambda n: None
        from rich.progress import Progress

        self._p = Progress(transient=False)
        self._p.start()
        task = self._p.add_task("simulating users", total=self.total)
        return lambda n: self._p.advance(task, n)

    def __exit__(self, *exc: object) -> None:
        if self._p is not None:
            self._p.stop()
