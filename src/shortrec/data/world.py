"""The simulated world: latent users and videos, and the one vectorised user-response model.

Everything the simulator knows but a recommender must never see lives here (and on disk under
``truth/``). The response model is written once, over arrays, and used three ways:

* the batch generator (``data/simulator.py``) calls it on all active lanes at each lockstep step;
* the step API (:meth:`World.start_session`, :meth:`World.step`) calls it on a batch of one, so
  later issues can drive a user online against the serving stack;
* the oracle (:meth:`World.expected_response`, :meth:`World.expected_step`) evaluates the exact
  expectation of the same random outcomes in closed form (no Monte Carlo).

The equations are documented in ``docs/simulator.md`` ("Response model"). Shapes: ``U`` users,
``V`` videos, ``C`` creators, ``T`` topics, ``K`` topics per video (mixture support), ``d``
latent dimensions. Times are int64 microseconds since the Unix epoch (UTC).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from shortrec import schema as S
from shortrec.config import SimBehavior, SimConfig
from shortrec.domain import ExpectedResponse

F32 = npt.NDArray[np.float32]
I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]
Arr = npt.NDArray[Any]

US_PER_S = 1_000_000
US_PER_DAY = 86_400 * US_PER_S
#: durations are expressed relative to this reference (log-odds terms use log(duration / 30 s))
DURATION_REF_S = 30.0
#: columns of the uniform block one impression consumes, in this order
U_SKIP, U_RATIO, U_COMPLETE, U_REPLAY, U_LIKE, U_SHARE, U_FOLLOW, U_QUIT = range(8)
N_UNIFORMS = 8

TRUTH_ARRAYS = "world.npz"
TRUTH_META = "world.json"
TRUTH_VERSION = 1


class WorldError(S.BadInput):
    """A ``truth/`` directory is missing or inconsistent (the message names the file)."""


def _sigmoid(x: Arr) -> F32:
    # float32 logistic; exp overflow to inf is harmless here (gives 0), so silence it.
    with np.errstate(over="ignore"):
        return (1.0 / (1.0 + np.exp(-x, dtype=np.float32))).astype(np.float32, copy=False)


def parse_start_us(start: str) -> int:
    """``SimConfig.start`` (ISO 8601 with an offset) as int64 microseconds since the epoch."""
    t = dt.datetime.fromisoformat(start)
    if t.tzinfo is None:
        raise ValueError(f"SimConfig.start {start!r} needs a UTC offset")
    return round(t.timestamp() * US_PER_S)


# ---------------------------------------------------------------- the step API's value types
@dataclass(frozen=True)
class SessionState:
    """One user's state inside one session. Immutable: :meth:`World.step` returns a new one.

    ``theta`` (T,) are the session's interests (drift applied at the session start);
    ``topic_trace`` (T,) the decayed count of recently shown main topics; ``creators`` (W,) and
    ``seen`` (S,) ring buffers of recent creator / video indices (-1: empty), written at
    ``position % W`` and ``n_seen % S``; ``fatigue`` the accumulated fatigue (log-odds);
    ``elapsed_s`` seconds spent so far; ``budget_s`` the session's time budget.
    """

    user_idx: int
    session_start_us: int
    ts_us: int
    theta: F32
    topic_trace: F32
    creators: I32
    seen: I32
    n_seen: int
    fatigue: float
    skip_streak: int
    position: int
    elapsed_s: float
    budget_s: float


@dataclass(frozen=True)
class StepResponse:
    """One impression's sampled outcome."""

    watch_time_s: float
    watch_ratio: float
    skipped: bool
    liked: bool
    shared: bool
    followed: bool


@dataclass(frozen=True)
class StepResult:
    """What :meth:`World.step` returns: the response, the next state, and whether the session
    ends now (``ended``; the next state is then the final one)."""

    response: StepResponse
    state: SessionState
    ended: bool


@dataclass(frozen=True)
class Probs:
    """Per-impression outcome probabilities (arrays of one common shape, float32).

    ``p_skip``: fast swipe; conditional on no skip: ``p_complete`` (watched to the end),
    ``m_partial`` (mean watch fraction of a partial view), ``p_replay`` (probability of each
    further loop after a completion), ``p_like_complete``/``p_like_partial``, ``p_share``,
    ``p_follow``. ``duration_s`` is carried along for watch times.
    """

    p_skip: F32
    p_complete: F32
    m_partial: F32
    p_replay: F32
    p_like_complete: F32
    p_like_partial: F32
    p_share: F32
    p_follow: F32
    duration_s: F32


@dataclass(frozen=True)
class Outcome:
    """Sampled outcomes of a batch of impressions (arrays of shape (n,))."""

    watch_time_s: F32
    skipped: npt.NDArray[np.bool_]
    completed: npt.NDArray[np.bool_]
    liked: npt.NDArray[np.bool_]
    shared: npt.NDArray[np.bool_]
    followed: npt.NDArray[np.bool_]


# ---------------------------------------------------------------- the world
@dataclass(frozen=True, eq=False)
class World:
    """Latent parameters of a synthetic world and its user-response model.

    Users: ``theta_a``/``theta_b`` (U, T) interest mixtures (rows sum to 1) at the start and
    after full drift; ``drift_per_day`` (U,) the fraction of the way from a to b travelled per
    day; ``z_user`` (U, d) latent taste; ``patience`` (U,) a per-user engagement offset;
    ``activity`` (U,) sessions per day; ``budget_s`` (U,) median session time budget;
    ``signup_us`` (U,).
    Videos: ``video_topics`` (V, K) int16 with weights ``video_topic_w`` (V, K) (rows sum to 1,
    column 0 the main topic = category); ``z_video`` (V, d); ``quality`` (V,); ``duration_s``
    (V,); ``creator`` (V,); ``upload_us`` (V,) — a video exists only from its upload time on;
    ``pop`` (V,) the logging policy's prior popularity weight. ``creator_quality`` (C,).
    """

    behavior: SimBehavior
    start_us: int
    horizon_us: int
    skip_threshold_s: float
    n_topics: int
    theta_a: F32
    theta_b: F32
    drift_per_day: F32
    z_user: F32
    patience: F32
    activity: F32
    budget_s: F32
    signup_us: I64
    video_topics: npt.NDArray[np.int16]
    video_topic_w: F32
    z_video: F32
    quality: F32
    duration_s: F32
    creator: I32
    upload_us: I64
    pop: F32
    creator_quality: F32

    # -------------------------------------------------- sizes and derived per-video terms
    @property
    def n_users(self) -> int:
        return int(self.theta_a.shape[0])

    @property
    def n_videos(self) -> int:
        return int(self.duration_s.shape[0])

    @property
    def end_us(self) -> int:
        return self.start_us + self.horizon_us

    @property
    def main_topic(self) -> npt.NDArray[np.int16]:
        return self.video_topics[:, 0]

    @property
    def log_duration(self) -> F32:
        """``log(duration_s / 30)`` per video (V,), cached."""
        return self._cached("log_duration", lambda: np.log(self.duration_s / DURATION_REF_S))

    @property
    def video_static(self) -> F32:
        """The session-independent part of the engagement score per video (V,), cached:
        ``w_quality * quality - w_duration * log(duration / 30)``."""
        b = self.behavior
        return self._cached(
            "video_static", lambda: b.w_quality * self.quality - b.w_duration * self.log_duration
        )

    @property
    def video_creator_quality(self) -> F32:
        """``creator_quality`` of each video's creator (V,), cached."""
        return self._cached("video_creator_quality", lambda: self.creator_quality[self.creator])

    @property
    def topics_by_slot(self) -> I64:
        """``video_topics`` transposed (K, V) int64, cached: one contiguous row per mixture
        slot, so that per-impression gathers are one-dimensional (much faster than gathering
        (n, K) rows)."""
        return self._cached("topics_by_slot", lambda: self.video_topics.T, np.int64)

    @property
    def topic_w_by_slot(self) -> F32:
        """``video_topic_w`` transposed (K, V), cached (see :attr:`topics_by_slot`)."""
        return self._cached("topic_w_by_slot", lambda: self.video_topic_w.T)

    def _cached(self, name: str, fn: Any, dtype: Any = np.float32) -> Arr:
        cache: dict[str, Arr] = self.__dict__.setdefault("_cache", {})
        if name not in cache:
            cache[name] = np.ascontiguousarray(fn(), dtype=dtype)
        return cache[name]

    def videos_available(self, ts_us: int) -> I32:
        """Indices of the videos uploaded at or before ``ts_us`` (new uploads keep arriving)."""
        return np.flatnonzero(self.upload_us <= ts_us).astype(np.int32)

    # -------------------------------------------------- interests with drift
    def interests(self, user_idx: Arr, ts_us: Arr) -> F32:
        """Interest mixtures (n, T) of users ``user_idx`` (n,) at times ``ts_us`` (n,).

        ``theta(t) = theta_a + w(t) (theta_b - theta_a)``, ``w(t) = clip(drift_per_day *
        days since start, 0, 1)``: a slow, linear drift; rows stay on the simplex.
        """
        u = np.asarray(user_idx, dtype=np.int64)
        days = (np.asarray(ts_us, dtype=np.int64) - self.start_us) / US_PER_DAY
        w = np.clip(self.drift_per_day[u] * days, 0.0, 1.0).astype(np.float32)[:, None]
        # np.take(axis=0): row gathers several times faster than fancy indexing
        a = np.take(self.theta_a, u, axis=0)
        return (a + w * (np.take(self.theta_b, u, axis=0) - a)).astype(np.float32, copy=False)

    # -------------------------------------------------- the response model
    def engagement(
        self,
        user: Arr,
        video: Arr,
        theta: F32,
        theta_row: Arr,
        ts_us: Arr,
        fatigue: Arr | float,
        bore_topic: Arr | float,
        creator_count: Arr | float,
        seen: Arr | float,
    ) -> tuple[F32, F32]:
        """Engagement score ``s`` and boredom penalty of impressions (any common shape).

        ``theta`` (R, T) holds interest rows and ``theta_row`` picks one per impression;
        ``bore_topic`` is the topic trace at the video's main topic, ``creator_count`` how often
        its creator is in the recent-creator ring, ``seen`` 1 if the video is in the seen ring.
        ``s = bias + patience_u + w_aff (sum_j w_vj theta[t_vj] - ref) + w_lat z_u.z_v
        + w_q q_v - w_dur log(dur/30) + w_fresh exp(-age_days/fresh_days) - fatigue - boredom
        - w_repeat seen``, ``boredom = w_tb bore_topic + w_cb creator_count``.
        """
        b = self.behavior
        rows = np.asarray(theta_row, dtype=np.int64) * self.n_topics  # (...)
        flat = theta.ravel()
        # sum over the K mixture slots, one slot at a time: 1-d gathers are much faster than
        # gathering (..., K) blocks, and the additions keep the order of ``.sum(-1)``
        slot_topic, slot_w = self.topics_by_slot, self.topic_w_by_slot  # (K, V)
        aff = flat[rows + slot_topic[0][video]] * slot_w[0][video]  # (...)
        for k in range(1, slot_topic.shape[0]):
            aff += flat[rows + slot_topic[k][video]] * slot_w[k][video]
        lat = np.einsum(
            "...d,...d->...",
            np.take(self.z_user, user, axis=0),  # (..., d)
            np.take(self.z_video, video, axis=0),  # (..., d)
        )
        age_days = np.maximum(np.asarray(ts_us, dtype=np.int64) - self.upload_us[video], 0)
        fresh = np.exp(age_days.astype(np.float32) * np.float32(-1.0 / (b.fresh_days * 86_400e6)))
        boredom = np.float32(b.w_topic_bore) * np.asarray(
            bore_topic, dtype=np.float32
        ) + np.float32(b.w_creator_bore) * np.asarray(creator_count, dtype=np.float32)
        s = (
            np.float32(b.bias - b.w_affinity * b.affinity_ref)
            + self.patience[user]
            + np.float32(b.w_affinity) * aff
            + np.float32(b.w_latent) * lat
            + self.video_static[video]
            + np.float32(b.w_fresh) * fresh
            - np.asarray(fatigue, dtype=np.float32)
            - boredom
            - np.float32(b.w_repeat) * np.asarray(seen, dtype=np.float32)
        )
        return s.astype(np.float32, copy=False), boredom.astype(np.float32, copy=False)

    def probs(self, s: F32, video: Arr) -> Probs:
        """Outcome probabilities for engagement scores ``s`` of videos ``video`` (same shape)."""
        b = self.behavior
        ld = self.log_duration[video]
        like = np.float32(b.like_bias) + np.float32(b.like_slope) * s
        return Probs(
            p_skip=_sigmoid(np.float32(b.skip_bias) - s),
            p_complete=_sigmoid(
                np.float32(b.complete_bias)
                + np.float32(b.complete_slope) * s
                - np.float32(b.complete_duration) * ld
            ),
            m_partial=_sigmoid(np.float32(b.partial_bias) + np.float32(b.partial_slope) * s),
            p_replay=np.float32(b.replay_cap)
            * _sigmoid(np.float32(b.replay_bias) + np.float32(b.replay_slope) * s),
            p_like_complete=_sigmoid(like + np.float32(b.like_complete)),
            p_like_partial=_sigmoid(like),
            p_share=_sigmoid(np.float32(b.share_bias) + np.float32(b.share_slope) * s),
            p_follow=_sigmoid(
                np.float32(b.follow_bias)
                + np.float32(b.follow_slope) * s
                + np.float32(b.follow_creator) * self.video_creator_quality[video]
            ),
            duration_s=self.duration_s[video],
        )

    def sample(self, p: Probs, u: F32) -> Outcome:
        """Draw outcomes from probabilities ``p`` (shape (n,)) with uniforms ``u`` (n, 8).

        Skip: watch ``thr (f + (1-f) U)`` seconds, always under the threshold ``thr``.
        Partial view: ``thr + (dur - thr) U^c`` with ``c = (1 - m)/m`` so that the mean
        fraction is ``m``. Completion: ``dur (1 + K + loop_tail U)``, ``K`` replays, truncated
        geometric (``P(K >= k) = p_replay^k``, ``k <= max_replays``), then a part of one more
        loop before the swipe. Like/share/follow need a non-skip.
        """
        b = self.behavior
        thr = np.float32(self.skip_threshold_s)
        dur = p.duration_s
        skipped = u[:, U_SKIP] < p.p_skip
        completed = ~skipped & (u[:, U_COMPLETE] < p.p_complete)
        ur = u[:, U_RATIO]
        skip_t = thr * (np.float32(b.skip_min_frac) + np.float32(1.0 - b.skip_min_frac) * ur)
        # float32 rounding could land exactly on the threshold; a skip must stay under it
        skip_t = np.minimum(skip_t, np.nextafter(thr, np.float32(0.0)))
        m = p.m_partial
        partial_t = thr + (dur - thr) * ur ** ((1.0 - m) / m)
        # = np.clip, without its call overhead (this runs once per lockstep step)
        pr = np.minimum(np.maximum(p.p_replay, np.float32(1e-9)), np.float32(1.0 - 1e-6))
        k = np.floor(np.log(np.maximum(u[:, U_REPLAY], np.float32(1e-30))) / np.log(pr))
        loops = np.float32(1.0) + np.minimum(k, np.float32(b.max_replays))
        # after the last full loop the next one starts playing before the swipe: a fraction
        # U * loop_tail of it is watched (``ur`` is free here: skip/partial/complete exclude)
        loops = loops + np.float32(b.loop_tail) * ur
        watch = np.where(skipped, skip_t, np.where(completed, dur * loops, partial_t))
        p_like = np.where(completed, p.p_like_complete, p.p_like_partial)
        return Outcome(
            watch_time_s=watch.astype(np.float32, copy=False),
            skipped=skipped,
            completed=completed,
            liked=~skipped & (u[:, U_LIKE] < p_like),
            shared=~skipped & (u[:, U_SHARE] < p.p_share),
            followed=~skipped & (u[:, U_FOLLOW] < p.p_follow),
        )

    def expect(self, p: Probs) -> ExpectedResponse:
        """Exact expectation of :meth:`sample`'s outcomes (closed form, same shapes as ``p``).

        ``E[watch] = p_skip thr (1+f)/2 + (1-p_skip) [p_c dur (1 + E K + tail/2) + (1-p_c)(thr +
        (dur-thr) m)]`` with ``E K = sum_{k=1..M} p_r^k``; ``E[ratio] = E[watch] / dur``.
        """
        b = self.behavior
        thr = np.float32(self.skip_threshold_s)
        dur = p.duration_s
        pr = np.clip(p.p_replay, np.float32(1e-9), np.float32(1.0 - 1e-6))
        m_rep = b.max_replays
        e_k = pr * (1.0 - pr**m_rep) / (1.0 - pr)
        e_skip = thr * np.float32((1.0 + b.skip_min_frac) / 2.0)
        e_view = p.p_complete * dur * (1.0 + e_k + b.loop_tail / 2.0) + (1.0 - p.p_complete) * (
            thr + (dur - thr) * p.m_partial
        )
        watch = p.p_skip * e_skip + (1.0 - p.p_skip) * e_view
        like = (1.0 - p.p_skip) * (
            p.p_complete * p.p_like_complete + (1.0 - p.p_complete) * p.p_like_partial
        )
        return ExpectedResponse(
            watch_ratio=(watch / dur).astype(np.float32),
            p_skip=p.p_skip.astype(np.float32),
            p_like=like.astype(np.float32),
            watch_time_s=watch.astype(np.float32),
        )

    def quit_prob(self, s: F32, boredom: F32, fatigue: Arr, skip_streak: Arr) -> F32:
        """Probability of leaving after an impression: ``sigmoid(quit_bias + quit_fatigue
        fatigue' + quit_boredom boredom + quit_skip_streak streak' - quit_engagement s)``,
        with the state after the impression (fatigue', streak')."""
        b = self.behavior
        x = (
            np.float32(b.quit_bias)
            + np.float32(b.quit_fatigue) * np.asarray(fatigue, dtype=np.float32)
            + np.float32(b.quit_boredom) * boredom
            + np.float32(b.quit_skip_streak) * np.asarray(skip_streak, dtype=np.float32)
            - np.float32(b.quit_engagement) * s
        )
        return _sigmoid(x)

    def draw_budget(self, user: Arr, rng: np.random.Generator | None) -> F32:
        """Session time budgets (s) for users ``user`` (n,): the user's median times a
        lognormal factor (none without ``rng``), capped at ``budget_max_s``."""
        base = self.budget_s[np.asarray(user, dtype=np.int64)]
        cap = np.float32(self.behavior.budget_max_s)
        if rng is None:
            out: F32 = np.minimum(base, cap).astype(np.float32)
            return out
        z = rng.standard_normal(base.shape[0], dtype=np.float32)
        out = np.minimum(base * np.exp(np.float32(self.behavior.budget_sd_log) * z), cap)
        return out.astype(np.float32)

    # -------------------------------------------------- oracle (domain.Oracle)
    def expected_response(self, user_idx: Arr, video_idx: Arr, ts_us: Arr) -> ExpectedResponse:
        """Exact expected response of user ``user_idx[i]`` (n,) to ``video_idx[i, j]`` (n, k)
        at the start of a fresh session at ``ts_us[i]`` (n,), interest drift applied.
        Returns arrays of shape (n, k)."""
        user = np.asarray(user_idx, dtype=np.int64)
        video = np.asarray(video_idx, dtype=np.int64)
        ts = np.asarray(ts_us, dtype=np.int64)
        if video.ndim != 2 or user.shape != (video.shape[0],) or ts.shape != user.shape:
            raise ValueError(
                f"expected user_idx (n,), video_idx (n, k), ts_us (n,); got {user.shape}, "
                f"{video.shape}, {ts.shape}"
            )
        self._check_idx(user, video)
        theta = self.interests(user, ts)
        rows = np.arange(user.shape[0])[:, None]
        s, _ = self.engagement(user[:, None], video, theta, rows, ts[:, None], 0.0, 0.0, 0.0, 0.0)
        return self.expect(self.probs(s, video))

    def _check_idx(self, user: Arr, video: Arr) -> None:
        if user.size and (user.min() < 0 or user.max() >= self.n_users):
            raise IndexError(f"user_idx out of range [0, {self.n_users})")
        if video.size and (video.min() < 0 or video.max() >= self.n_videos):
            raise IndexError(f"video_idx out of range [0, {self.n_videos})")

    # -------------------------------------------------- step API
    def start_session(
        self, user_idx: int, ts_us: int, rng: np.random.Generator | None = None
    ) -> SessionState:
        """A fresh session of ``user_idx`` opening the app at ``ts_us``. The time budget is a
        random draw when ``rng`` is given, else the user's median budget."""
        self._check_idx(np.array([user_idx]), np.array([], dtype=np.int64))
        b = self.behavior
        u = np.array([user_idx], dtype=np.int64)
        return SessionState(
            user_idx=int(user_idx),
            session_start_us=int(ts_us),
            ts_us=int(ts_us),
            theta=self.interests(u, np.array([ts_us], dtype=np.int64))[0],
            topic_trace=np.zeros(self.n_topics, dtype=np.float32),
            creators=np.full(b.creator_window, -1, dtype=np.int32),
            seen=np.full(b.seen_window, -1, dtype=np.int32),
            n_seen=0,
            fatigue=0.0,
            skip_streak=0,
            position=0,
            elapsed_s=0.0,
            budget_s=float(self.draw_budget(u, rng)[0]),
        )

    def _state_terms(self, state: SessionState, video: I64) -> tuple[F32, F32]:
        """Engagement and boredom of videos ``video`` (k,) in ``state``."""
        k = video.shape[0]
        s, bore = self.engagement(
            np.full(k, state.user_idx, dtype=np.int64),
            video,
            state.theta[None, :],
            np.zeros(k, dtype=np.int64),
            np.full(k, state.ts_us, dtype=np.int64),
            float(state.fatigue),
            state.topic_trace[self.main_topic[video]],
            (state.creators[None, :] == self.creator[video][:, None]).sum(1),
            (state.seen[None, :] == video[:, None]).any(1),
        )
        return s, bore

    def expected_step(self, state: SessionState, video_idx: Arr) -> ExpectedResponse:
        """Exact expected response to each of ``video_idx`` (k,) shown next in ``state``
        (fatigue, boredom and novelty of the session applied). Arrays of shape (k,)."""
        video = np.asarray(video_idx, dtype=np.int64).reshape(-1)
        self._check_idx(np.array([state.user_idx]), video)
        s, _ = self._state_terms(state, video)
        return self.expect(self.probs(s, video))

    def step(self, state: SessionState, video_idx: int, rng: np.random.Generator) -> StepResult:
        """Show ``video_idx`` next: sample the response, advance the state, decide the end.

        Consumes exactly one ``(1, 8)`` float32 uniform block from ``rng`` (the batch
        generator draws the same block per impression), so the two agree in distribution.
        """
        video = np.array([video_idx], dtype=np.int64)
        self._check_idx(np.array([state.user_idx]), video)
        s, bore = self._state_terms(state, video)
        u = rng.random((1, N_UNIFORMS), dtype=np.float32)
        out = self.sample(self.probs(s, video), u)
        b = self.behavior
        skipped = bool(out.skipped[0])
        fatigue = state.fatigue + b.fatigue_step + b.fatigue_skip * skipped
        streak = state.skip_streak + 1 if skipped else 0
        p_quit = self.quit_prob(s, bore, np.array([fatigue]), np.array([streak]))
        watch = float(out.watch_time_s[0])
        elapsed = state.elapsed_s + watch + b.swipe_gap_s
        ended = bool(
            u[0, U_QUIT] < p_quit[0]
            or elapsed >= state.budget_s
            or state.position + 1 >= b.max_session_len
        )
        trace = state.topic_trace * np.float32(b.topic_decay)
        trace[self.main_topic[video_idx]] += 1.0
        creators = state.creators.copy()
        creators[state.position % b.creator_window] = self.creator[video_idx]
        seen = state.seen.copy()
        seen[state.n_seen % b.seen_window] = video_idx
        nxt = dataclasses.replace(
            state,
            ts_us=state.ts_us + round((watch + b.swipe_gap_s) * US_PER_S),
            topic_trace=trace.astype(np.float32),
            creators=creators,
            seen=seen,
            n_seen=state.n_seen + 1,
            fatigue=float(fatigue),
            skip_streak=streak,
            position=state.position + 1,
            elapsed_s=elapsed,
        )
        dur = float(self.duration_s[video_idx])
        resp = StepResponse(
            watch_time_s=watch,
            watch_ratio=float(np.float32(watch) / np.float32(dur)),
            skipped=skipped,
            liked=bool(out.liked[0]),
            shared=bool(out.shared[0]),
            followed=bool(out.followed[0]),
        )
        return StepResult(response=resp, state=nxt, ended=ended)

    # -------------------------------------------------- persistence (truth/)
    def arrays(self) -> dict[str, Arr]:
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if isinstance(getattr(self, f.name), np.ndarray)
        }

    def save(self, truth_dir: Path) -> None:
        """Write ``world.npz`` (arrays, uncompressed so :meth:`load` is fast) and
        ``world.json`` (scalars, behaviour coefficients, array descriptions) to ``truth_dir``.
        Callers write into a directory that appears atomically (``io.atomic_dir``)."""
        truth_dir = Path(truth_dir)
        truth_dir.mkdir(parents=True, exist_ok=True)
        arrays = self.arrays()
        with open(truth_dir / TRUTH_ARRAYS, "wb") as fh:
            np.savez(fh, **arrays)  # type: ignore[arg-type]
        meta = {
            "version": TRUTH_VERSION,
            "start_us": self.start_us,
            "horizon_us": self.horizon_us,
            "skip_threshold_s": self.skip_threshold_s,
            "n_topics": self.n_topics,
            "behavior": self.behavior.model_dump(),
            "arrays": {
                k: {"dtype": str(v.dtype), "shape": list(v.shape)} for k, v in arrays.items()
            },
            "doc": "Latent state of the simulated world (never a feature); see "
            "docs/simulator.md and shortrec.data.world.World.",
        }
        (truth_dir / TRUTH_META).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")

    @staticmethod
    def load(dataset_root: Path) -> World:
        """Read ``dataset_root/truth/`` written by :meth:`save` (via ``generate``)."""
        truth = Path(dataset_root) / "truth"
        meta_path, arr_path = truth / TRUTH_META, truth / TRUTH_ARRAYS
        for p in (meta_path, arr_path):
            if not p.is_file():
                raise WorldError(f"{p}: not found (is this a synthetic dataset?)")
        try:
            meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as e:
            raise WorldError(f"{meta_path}: line {e.lineno}: invalid JSON: {e.msg}") from e
        if meta.get("version") != TRUTH_VERSION:
            raise WorldError(
                f"{meta_path}: field version: {meta.get('version')!r}, expected {TRUTH_VERSION}"
            )
        names = [f.name for f in dataclasses.fields(World)]
        with np.load(arr_path) as z:
            arrays = {k: z[k] for k in z.files}
        missing = [n for n in names if n not in arrays and n not in meta and n != "behavior"]
        if missing:
            raise WorldError(f"{arr_path}: missing arrays {missing}")
        try:
            behavior = SimBehavior(**meta["behavior"])
            scalars = {
                k: meta[k] for k in ("start_us", "horizon_us", "skip_threshold_s", "n_topics")
            }
        except (KeyError, ValueError) as e:
            raise WorldError(f"{meta_path}: field {e}: invalid or missing") from e
        return World(behavior=behavior, **scalars, **{k: arrays[k] for k in names if k in arrays})


# ---------------------------------------------------------------- building a world
def build_world(config: SimConfig, rng: np.random.Generator) -> World:
    """Draw a world's latent parameters from ``config`` (see docs/simulator.md, "World")."""
    c = config
    n_u, n_v, n_c, t = c.n_users, c.n_videos, c.n_creators, c.n_topics
    start = parse_start_us(c.start)
    horizon = round(c.horizon_days * US_PER_DAY)
    b = c.behavior

    # --- users: sparse Dirichlet interests over a random subset of topics
    k_u = rng.integers(c.user_topics_min, min(c.user_topics_max, t) + 1, size=n_u)
    theta_a = _sparse_mixture(rng, n_u, t, k_u, c.interest_alpha)
    # drift target: the start mixture moved partly onto one new topic
    new_topic = rng.integers(0, t, size=n_u)
    share = (c.drift_strength * rng.uniform(0.5, 1.0, size=n_u)).astype(np.float32)
    theta_b = theta_a * (1.0 - share)[:, None]
    theta_b[np.arange(n_u), new_topic] += share
    drift_per_day = (rng.uniform(0.5, 1.5, size=n_u) / c.horizon_days).astype(np.float32)
    d = c.latent_dim
    z_user = (rng.standard_normal((n_u, d)) / np.sqrt(d)).astype(np.float32)
    patience = (b.patience_sd * rng.standard_normal(n_u)).astype(np.float32)
    activity = c.sessions_per_day * np.exp(c.activity_sd_log * rng.standard_normal(n_u))
    # at most one session per 30 min
    activity32: F32 = np.minimum(activity, 48.0).astype(np.float32)
    budget_s = (b.budget_median_s * np.exp(0.5 * rng.standard_normal(n_u))).astype(np.float32)
    is_new = rng.random(n_u) < c.new_user_frac
    signup = np.where(
        is_new,
        start + (rng.random(n_u) * horizon).astype(np.int64),
        start - (rng.random(n_u) * 365 * US_PER_DAY).astype(np.int64),
    ).astype(np.int64)

    # --- creators: quality, popularity and a topic focus (1-2 topics)
    creator_quality = rng.standard_normal(n_c).astype(np.float32)
    creator_pop = rng.standard_normal(n_c).astype(np.float32)
    creator_topic = rng.integers(0, t, size=(n_c, 2))

    # --- videos
    creator = _zipf_choice(rng, n_c, n_v, 0.8).astype(np.int32)
    main = np.where(
        rng.random(n_v) < 0.85,
        creator_topic[creator, (rng.random(n_v) < 0.3).astype(np.int64)],
        rng.integers(0, t, size=n_v),
    )
    k_v = 3
    topics = np.empty((n_v, k_v), dtype=np.int16)
    topics[:, 0] = main
    topics[:, 1:] = rng.integers(0, t, size=(n_v, k_v - 1))
    w_main = rng.uniform(0.55, 0.9, size=n_v)
    rest = rng.dirichlet(np.ones(k_v - 1), size=n_v) * (1.0 - w_main)[:, None]
    topic_w = np.concatenate([w_main[:, None], rest], axis=1).astype(np.float32)
    z_video = (rng.standard_normal((n_v, d)) / np.sqrt(d)).astype(np.float32)
    quality = (0.6 * creator_quality[creator] + 0.8 * rng.standard_normal(n_v)).astype(np.float32)
    duration = np.exp(np.log(c.duration_median_s) + c.duration_sd_log * rng.standard_normal(n_v))
    duration = np.round(np.clip(duration, 5.0, 180.0), 1).astype(np.float32)
    n_back = max(1, round(c.backcatalogue_frac * n_v))
    back = np.arange(n_v) < n_back
    rng.shuffle(back)
    back_span = int(c.backcatalogue_days * US_PER_DAY)
    upload = np.where(
        back,
        start - 1 - (rng.random(n_v) * back_span).astype(np.int64),
        start + (rng.random(n_v) * horizon).astype(np.int64),
    ).astype(np.int64)
    pop = np.exp(quality + 1.2 * creator_pop[creator] + rng.standard_normal(n_v))
    return World(
        behavior=b,
        start_us=start,
        horizon_us=horizon,
        skip_threshold_s=c.skip_threshold_s,
        n_topics=t,
        theta_a=theta_a,
        theta_b=theta_b.astype(np.float32),
        drift_per_day=drift_per_day,
        z_user=z_user,
        patience=patience,
        activity=activity32,
        budget_s=budget_s,
        signup_us=signup,
        video_topics=topics,
        video_topic_w=topic_w,
        z_video=z_video,
        quality=quality,
        duration_s=duration,
        creator=creator,
        upload_us=upload,
        pop=pop.astype(np.float32),
        creator_quality=creator_quality,
    )


def _sparse_mixture(
    rng: np.random.Generator, n: int, t: int, k: npt.NDArray[np.int64], alpha: float
) -> F32:
    """(n, t) rows on the simplex, row i supported on ``k[i]`` random topics, Dirichlet(alpha)
    weights there (drawn as normalised Gamma variates)."""
    keys = rng.random((n, t))
    rank = np.argsort(np.argsort(keys, axis=1), axis=1)
    g = rng.gamma(alpha, 1.0, size=(n, t)) * (rank < k[:, None])
    g += 1e-12 * (rank == 0)  # a row never ends up all-zero
    out: F32 = (g / g.sum(1, keepdims=True)).astype(np.float32)
    return out


def _zipf_choice(rng: np.random.Generator, n_items: int, n_draws: int, a: float) -> I64:
    """Indices in [0, n_items) with P(i) proportional to (i+1)^-a (few prolific creators)."""
    w = (np.arange(1, n_items + 1, dtype=np.float64)) ** -a
    cum = np.cumsum(w)
    perm = rng.permutation(n_items)  # which creator is prolific is random
    pos = np.searchsorted(cum, rng.random(n_draws) * cum[-1], side="right").clip(0, n_items - 1)
    out: I64 = perm[pos].astype(np.int64)
    return out
