"""Features and training lists for the ranker, built from polars frames with numpy.

One featurisation path serves training and inference, so the two cannot drift apart:

* :class:`VideoTable` — per-video content (bucketed id, tags, creator, duration bucket, upload
  time) looked up by ``video_idx``; saved in the artifact bundle.
* :class:`VideoStats` — leakage-free smoothed statistics (engage / complete / like rates and
  impression counts) as of any time, from prefix sums over ``(ts, event_id)`` order.
* :func:`history_features`, :func:`context_features`, :func:`candidate_features` turn raw arrays
  into the model inputs of ``model.INPUT_NAMES``.
* :func:`build_lists` turns events into training lists: one list per request (the impressions
  sharing ``request_id``), with the history of the user's last ``L`` events strictly before the
  request's first impression by ``(ts, event_id)`` — the moment the page was ranked, so no
  impression of a list is in its own history. Skipped impressions are real negatives; for logs
  without impressions, ``n_sampled_negatives`` sampled videos are added per list
  (uniform, by popularity, or mixed: :func:`sample_negatives`).

Index conventions: every categorical input is ``index + 1`` with ``0`` for padding / unknown.
Times are int64 microseconds since the epoch (UTC).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import polars as pl

from shortrec import schema as S
from shortrec.config import RankerConfig

I64 = npt.NDArray[np.int64]
F32 = npt.NDArray[np.float32]
B8 = npt.NDArray[np.bool_]
Arrays = dict[str, npt.NDArray[np.generic]]

#: label columns of a list, in this order (the model's tasks are a subset)
LABELS = ("engage", "complete", "like", "diversity")
N_STATS = 4  # smoothed engage, complete, like rates and log1p(impressions) / 10
_US_PER_S = 1_000_000
_US_PER_H = 3_600 * _US_PER_S
#: sentinel anchor "after every event" for serving-time statistics
END_OF_TIME = np.iinfo(np.int64).max


class RankerDataError(S.BadInput):
    """Events or videos that the ranker cannot learn from (the message names the field)."""


def _require(df: pl.DataFrame, cols: tuple[str, ...], source: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise RankerDataError(f"{source}: missing column(s) {missing}")


# ---------------------------------------------------------------- per-video content
@dataclass(frozen=True)
class VideoTable:
    """Content features by ``video_idx``: rows ``0..n_videos-1`` (+1-shifted indices, 0 = pad).

    ``video`` (n,), ``tags`` (n, T), ``creator`` (n,), ``duration`` (n,) int64;
    ``upload_us`` (n,) int64 (``-1`` when unknown); ``category`` (n,) int64 (``-1`` unknown).
    """

    video: I64
    tags: I64
    creator: I64
    duration: I64
    upload_us: I64
    category: I64
    n_tags: int
    n_video_buckets: int
    n_creator_buckets: int
    n_duration_buckets: int

    @property
    def n_videos(self) -> int:
        return int(self.video.shape[0])

    @staticmethod
    def from_frame(videos: pl.DataFrame, config: RankerConfig) -> VideoTable:
        """Build from a ``schema.VIDEOS`` frame (any row order; ``video_idx`` must be dense)."""
        _require(videos, (S.VIDEO_IDX, S.CREATOR_IDX, S.TAGS, S.DURATION_S, S.UPLOAD_TS), "videos")
        v = videos.sort(S.VIDEO_IDX)
        idx = v.get_column(S.VIDEO_IDX).to_numpy().astype(np.int64)
        n = int(idx.shape[0])
        if n == 0 or idx[0] != 0 or idx[-1] != n - 1 or np.any(np.diff(idx) != 1):
            raise RankerDataError(f"videos.{S.VIDEO_IDX}: must be dense 0..n-1 and unique")
        t = config.max_tags
        exploded = v.select(pl.col(S.TAGS).list.head(t)).with_row_index("r").explode(S.TAGS)
        exploded = exploded.drop_nulls(S.TAGS).with_columns(
            pl.int_range(pl.len()).over("r").alias("k")
        )
        rows = exploded.get_column("r").to_numpy().astype(np.int64)
        ks = exploded.get_column("k").to_numpy().astype(np.int64)
        tag_vals = exploded.get_column(S.TAGS).to_numpy().astype(np.int64)
        if tag_vals.size and tag_vals.min() < 0:
            raise RankerDataError(f"videos.{S.TAGS}: negative tag index")
        tags = np.zeros((n, t), np.int64)
        tags[rows, ks] = tag_vals + 1
        n_tags = int(tag_vals.max()) + 1 if tag_vals.size else 1
        creator = v.get_column(S.CREATOR_IDX).to_numpy().astype(np.int64)
        n_creator_b = int(min(config.max_creator_buckets, creator.max() + 1))
        n_video_b = int(min(config.max_id_buckets, n))
        dur = v.get_column(S.DURATION_S).cast(pl.Float64).to_numpy()
        dur_b = np.where(
            np.isnan(dur), 0, np.searchsorted(np.asarray(config.duration_edges_s), dur) + 1
        )
        up = v.get_column(S.UPLOAD_TS).dt.epoch("us")
        upload = up.fill_null(-1).to_numpy().astype(np.int64)
        cat = (
            v.get_column(S.CATEGORY).cast(pl.Int64).fill_null(-1).to_numpy()
            if S.CATEGORY in v.columns
            else np.full(n, -1, np.int64)
        )
        return VideoTable(
            video=idx % n_video_b + 1,
            tags=tags,
            creator=creator % n_creator_b + 1,
            duration=dur_b.astype(np.int64),
            upload_us=upload,
            category=cat.astype(np.int64),
            n_tags=n_tags,
            n_video_buckets=n_video_b,
            n_creator_buckets=n_creator_b,
            n_duration_buckets=len(config.duration_edges_s) + 1,
        )

    def save(self, path: Path) -> None:
        np.savez(
            path,
            video=self.video,
            tags=self.tags,
            creator=self.creator,
            duration=self.duration,
            upload_us=self.upload_us,
            category=self.category,
            sizes=np.array(
                [
                    self.n_tags,
                    self.n_video_buckets,
                    self.n_creator_buckets,
                    self.n_duration_buckets,
                ],
                np.int64,
            ),
        )

    @staticmethod
    def load(path: Path) -> VideoTable:
        with np.load(path) as z:
            sizes = z["sizes"]
            return VideoTable(
                video=z["video"],
                tags=z["tags"],
                creator=z["creator"],
                duration=z["duration"],
                upload_us=z["upload_us"],
                category=z["category"],
                n_tags=int(sizes[0]),
                n_video_buckets=int(sizes[1]),
                n_creator_buckets=int(sizes[2]),
                n_duration_buckets=int(sizes[3]),
            )

    def check_idx(self, video_idx: npt.NDArray[np.integer], field: str) -> None:
        """Raise :class:`RankerDataError` if an index (``-1`` = padding) is out of range."""
        idx = np.asarray(video_idx)
        if idx.size == 0 or (idx.min() >= -1 and idx.max() < self.n_videos):
            return  # two reductions: the common, valid case stays cheap
        bad = (idx < -1) | (idx >= self.n_videos)
        if np.any(bad):
            ex = idx[bad][:3].tolist()
            raise RankerDataError(f"{field}: video_idx out of range [0, {self.n_videos}): {ex}")


# ---------------------------------------------------------------- labels
def event_labels(events: pl.DataFrame, config: RankerConfig) -> tuple[F32, F32]:
    """Per-event ``(labels, label_mask)``, each (n, 3): engage, complete, like.

    engage = not a fast skip (``skipped`` null: watch ratio > 0, else 1 — a logged interaction
    without impressions is a positive); complete = ``watch_ratio >= complete_threshold``
    (or ``min(watch_ratio, cap) / cap`` in regression mode); like = ``liked``. A null
    ``watch_ratio`` / ``liked`` masks that task out for the event.
    """
    skipped = events.get_column(S.SKIPPED)
    wr = events.get_column(S.WATCH_RATIO).cast(pl.Float64).to_numpy()
    liked = events.get_column(S.LIKED)
    wr_known = ~np.isnan(wr)
    engage = np.where(
        skipped.is_null().to_numpy(),
        np.where(wr_known, wr > 0, True),
        ~skipped.fill_null(False).to_numpy(),
    ).astype(np.float32)
    wr0 = np.nan_to_num(wr, nan=0.0)
    if config.complete_mode == "binary":
        complete = (wr0 >= config.complete_threshold).astype(np.float32)
    else:
        complete = (np.minimum(wr0, config.complete_cap) / config.complete_cap).astype(np.float32)
    like = liked.fill_null(False).to_numpy().astype(np.float32)
    labels = np.stack([engage, complete, like], axis=1)
    mask = np.stack(
        [
            np.ones_like(engage),
            wr_known.astype(np.float32),
            (~liked.is_null().to_numpy()).astype(np.float32),
        ],
        axis=1,
    )
    return labels, mask


def tag_novelty(cand_tags: I64, hist_tags: I64) -> F32:
    """``1 - max_j Jaccard(tags(c), tags(h_j))`` over the history items, in [0, 1].

    ``cand_tags`` (N, T) and ``hist_tags`` (N, H, T), 0 = padding; an empty history or an
    untagged candidate gives novelty 1.
    """
    c = cand_tags[:, None, :, None]  # (N, 1, T, 1)
    h = hist_tags[:, :, None, :]  # (N, H, 1, T)
    inter = ((c == h) & (c > 0)).any(axis=3).sum(axis=2)  # (N, H)
    nc = (cand_tags > 0).sum(axis=1)[:, None]  # (N, 1)
    nh = (hist_tags > 0).sum(axis=2)  # (N, H)
    union = nc + nh - inter
    jac = np.where(union > 0, inter / np.maximum(union, 1), 0.0)  # (N, H)
    best = jac.max(axis=1) if jac.shape[1] else np.zeros(jac.shape[0])
    return (1.0 - best).astype(np.float32)


# ---------------------------------------------------------------- point-in-time statistics
@dataclass(frozen=True)
class VideoStats:
    """Smoothed per-video rates as of any time, from prefix sums (no look-ahead).

    ``keys`` (N,) sorted ``video_idx * (N + 1) + rank`` where ``rank`` is the event's position in
    global ``(ts, event_id)`` order; ``cum`` (N + 1, 3) prefix sums of engage / complete / like
    in that sorted order; ``order_ts`` (N,) timestamps in global order; ``prior`` (3,) global
    rates; ``strength`` the pseudo-count. Rate = ``(sum + strength * prior) / (n + strength)``
    (empirical-Bayes smoothing toward the global mean).
    """

    keys: I64
    cum: npt.NDArray[np.float64]
    order_ts: I64
    order_eid: I64
    prior: npt.NDArray[np.float64]
    strength: float

    @staticmethod
    def build(events: pl.DataFrame, labels: F32, mask: F32, strength: float) -> VideoStats:
        """``events`` with ``video_idx``, ``ts``, ``event_id``; ``labels``/``mask`` (n, 3)."""
        ts = events.get_column(S.TS).dt.epoch("us").to_numpy().astype(np.int64)
        eid = events.get_column(S.EVENT_ID).to_numpy().astype(np.int64)
        vid = events.get_column(S.VIDEO_IDX).to_numpy().astype(np.int64)
        n = ts.shape[0]
        order = np.lexsort((eid, ts))
        rank = np.empty(n, np.int64)
        rank[order] = np.arange(n)
        keys = vid * (n + 1) + rank
        by_key = np.argsort(keys, kind="stable")
        lab = (labels * mask).astype(np.float64)
        cum = np.zeros((n + 1, 3))
        np.cumsum(lab[by_key], axis=0, out=cum[1:])
        denom = np.maximum(mask.sum(axis=0), 1.0)
        prior = lab.sum(axis=0) / denom if n else np.zeros(3)
        return VideoStats(
            keys=keys[by_key],
            cum=cum,
            order_ts=ts[order],
            order_eid=eid[order],
            prior=prior,
            strength=strength,
        )

    def anchor_rank(self, ts_us: I64, event_id: I64 | None = None) -> I64:
        """Number of events strictly before ``(ts, event_id)`` (``event_id`` None: before ts)."""
        left = np.searchsorted(self.order_ts, ts_us, side="left")
        if event_id is None:
            return left.astype(np.int64)
        right = np.searchsorted(self.order_ts, ts_us, side="right")
        out = left.copy()
        # ties on ts are broken by event_id; they are rare, so a loop over them is cheap
        for i in np.flatnonzero(right > left):
            seg = self.order_eid[left[i] : right[i]]
            out[i] = left[i] + np.searchsorted(seg, event_id[i], side="left")
        return out.astype(np.int64)

    def features(self, video_idx: I64, rank: I64) -> F32:
        """Stats of ``video_idx`` (B, C) (``-1`` = pad) from events with rank < ``rank`` (B,).

        Returns (B, C, 4): smoothed engage, complete, like rates, ``log1p(count) / 10``.
        """
        n = self.order_ts.shape[0]
        v = np.maximum(video_idx, 0)
        r = np.minimum(rank, n)[:, None]
        start = np.searchsorted(self.keys, v * (n + 1), side="left")
        stop = np.searchsorted(self.keys, v * (n + 1) + r, side="left")
        count = (stop - start).astype(np.float64)
        sums = self.cum[stop] - self.cum[start]  # (B, C, 3)
        rates = (sums + self.strength * self.prior) / (count[..., None] + self.strength)
        if self.strength == 0:
            rates = np.where(count[..., None] > 0, rates, self.prior)
        out = np.concatenate([rates, np.log1p(count)[..., None] / 10.0], axis=-1)
        out[video_idx < 0] = 0.0
        return out.astype(np.float32)

    def latest_table(self, n_videos: int) -> F32:
        """:meth:`features` of every video after all events, as a lookup table
        ``(n_videos + 1, 4)`` by ``video_idx`` whose last row (index ``-1``, padding) is zero.

        Serving ranks "now", after every training event, so a candidate's statistics are a
        constant of the bundle: ``table[video_idx]`` equals
        ``features(video_idx[None, :], [END_OF_TIME])[0]`` without two binary searches per
        candidate and request.
        """
        table = np.zeros((n_videos + 1, N_STATS), np.float32)
        table[:n_videos] = self.features(
            np.arange(n_videos, dtype=np.int64)[None, :], np.array([END_OF_TIME])
        )[0]
        table.flags.writeable = False
        return table

    def save(self, path: Path) -> None:
        np.savez(
            path,
            keys=self.keys,
            cum=self.cum,
            order_ts=self.order_ts,
            order_eid=self.order_eid,
            prior=self.prior,
            strength=np.array(self.strength),
        )

    @staticmethod
    def load(path: Path) -> VideoStats:
        with np.load(path) as z:
            return VideoStats(
                keys=z["keys"],
                cum=z["cum"],
                order_ts=z["order_ts"],
                order_eid=z["order_eid"],
                prior=z["prior"],
                strength=float(z["strength"]),
            )


# ---------------------------------------------------------------- model inputs
def history_features(
    vt: VideoTable,
    video_idx: I64,
    watch_ratio: F32,
    skipped: F32,
    liked: F32,
    gap_s: F32,
    config: RankerConfig,
) -> Arrays:
    """History inputs from right-aligned arrays of shape (B, L) (``video_idx = -1``: padding).

    ``gap_s`` is the time from the event to the request, seconds. Returns ``hist_video``,
    ``hist_tags`` (B, L, T), ``hist_creator``, ``hist_duration``, ``hist_action`` (B, L, 4),
    ``hist_mask`` (B, L) bool.
    """
    mask = video_idx >= 0
    v = np.maximum(video_idx, 0)
    return {
        "hist_video": _masked(vt.video[v], mask),
        "hist_tags": _masked(vt.tags[v], mask),
        "hist_creator": _masked(vt.creator[v], mask),
        "hist_duration": _masked(vt.duration[v], mask),
        "hist_action": history_actions(watch_ratio, skipped, liked, gap_s, mask, config),
        "hist_mask": mask,
    }


def history_actions(
    watch_ratio: F32, skipped: F32, liked: F32, gap_s: F32, mask: B8, config: RankerConfig
) -> F32:
    """``hist_action`` (B, L, 4) of :func:`history_features` (zero where ``mask`` is False)."""
    wr = np.minimum(np.nan_to_num(watch_ratio, nan=1.0), config.complete_cap)
    action = np.stack(
        [wr / config.complete_cap, skipped, liked, np.log1p(np.maximum(gap_s, 0.0)) / 16.0], axis=-1
    )
    out: F32 = _masked(action, mask).astype(np.float32)
    return out


def _masked(values: npt.NDArray[np.generic], mask: B8) -> npt.NDArray[np.generic]:
    """``values`` (``mask.shape`` + trailing dims) with the rows where ``mask`` is False
    zeroed: times the mask (floats) or its int64 cast (integers, as int64). An all-True
    mask changes nothing (``x * 1 == x``), so its multiplication is skipped."""
    if mask.all() and (values.dtype.kind == "f" or values.dtype == np.int64):
        return values
    m = mask.reshape(mask.shape + (1,) * (values.ndim - mask.ndim))
    out: npt.NDArray[np.generic] = values * (m if values.dtype.kind == "f" else m.astype(np.int64))
    return out


def context_features(
    n_history: I64,
    position: I64,
    time_in_session_s: F32,
    recent_skip_rate: F32,
    request_us: I64,
    profile: I64,
) -> Arrays:
    """Context inputs for B requests: ``ctx_num`` (B, 6) float32, ``ctx_cat`` (B, 3) int64.

    ``ctx_num`` = [log1p(history length)/5, log1p(position in session)/5,
    log1p(seconds in session)/10, skip rate of the recent history, sin and cos of the UTC hour];
    ``profile`` (B, 3) = region, age bucket, device indices + 1 (0 unknown).
    """
    hour = (request_us // _US_PER_S % 86_400) / 86_400.0 * 2 * np.pi
    num = np.stack(
        [
            np.log1p(n_history) / 5.0,
            np.log1p(np.maximum(position, 0)) / 5.0,
            np.log1p(np.maximum(time_in_session_s, 0.0)) / 10.0,
            recent_skip_rate,
            np.sin(hour),
            np.cos(hour),
        ],
        axis=-1,
    ).astype(np.float32)
    return {"ctx_num": num, "ctx_cat": profile.astype(np.int64)}


def candidate_features(
    vt: VideoTable,
    video_idx: I64,
    request_us: I64,
    stats: F32,
    sources: F32,
) -> Arrays:
    """Candidate inputs from (B, C) ``video_idx`` (``-1`` padding), request times (B,),
    ``stats`` (B, C, 4) from :meth:`VideoStats.features` and ``sources`` (B, C, S) flags.

    ``cand_num`` = [log1p(hours since upload)/8 (0 if unknown), stats..., sources...].
    """
    v = np.maximum(video_idx, 0)
    mask = video_idx >= 0
    return {
        "cand_video": _masked(vt.video[v], mask),
        "cand_tags": _masked(vt.tags[v], mask),
        "cand_creator": _masked(vt.creator[v], mask),
        "cand_duration": _masked(vt.duration[v], mask),
        "cand_num": candidate_numeric(vt, video_idx, request_us, stats, sources),
    }


def candidate_numeric(
    vt: VideoTable, video_idx: I64, request_us: I64, stats: F32, sources: F32
) -> F32:
    """``cand_num`` (B, C, F) of :func:`candidate_features` (zero on padding)."""
    v = np.maximum(video_idx, 0)
    mask = video_idx >= 0
    up = vt.upload_us[v]
    age_h = np.where(up >= 0, (request_us[:, None] - up) / _US_PER_H, 0.0)
    age = np.log1p(np.maximum(age_h, 0.0)) / 8.0
    num = np.concatenate([age[..., None], stats, sources], axis=-1)
    if not mask.all():  # as a product with the int64 mask (float64, like the values)
        num = num * mask.astype(np.int64)[..., None]
    out: F32 = num.astype(np.float32)
    return out


# ---------------------------------------------------------------- training lists
@dataclass(frozen=True)
class Lists:
    """Training lists over events sorted by ``(user_idx, ts, event_id)``.

    Event arrays (n_events,): ``ev_video``, ``ev_ts``, ``ev_wr``, ``ev_skipped``, ``ev_liked``.
    List arrays (n_lists, ...): ``hist_idx`` (L) indices into the event arrays (-1 pad,
    right-aligned), ``request_us``, ``rank`` (events strictly before the request, global),
    ``ctx_num`` (6), ``ctx_cat`` (3), ``cand`` (C) video_idx (-1 pad), ``sources`` (C, S),
    ``labels`` and ``label_mask`` (C, 4) in :data:`LABELS` order, ``split`` (str).
    """

    ev_video: I64
    ev_ts: I64
    ev_wr: F32
    ev_skipped: F32
    ev_liked: F32
    hist_idx: I64
    request_us: I64
    rank: I64
    ctx_num: F32
    ctx_cat: I64
    cand: I64
    sources: F32
    labels: F32
    label_mask: F32
    split: npt.NDArray[np.str_]

    @property
    def n_lists(self) -> int:
        return int(self.cand.shape[0])

    def select(self, rows: I64) -> Lists:
        return Lists(
            self.ev_video,
            self.ev_ts,
            self.ev_wr,
            self.ev_skipped,
            self.ev_liked,
            self.hist_idx[rows],
            self.request_us[rows],
            self.rank[rows],
            self.ctx_num[rows],
            self.ctx_cat[rows],
            self.cand[rows],
            self.sources[rows],
            self.labels[rows],
            self.label_mask[rows],
            self.split[rows],
        )


def _profile_codes(users: pl.DataFrame | None, user_idx: I64) -> I64:
    out = np.zeros((user_idx.shape[0], 3), np.int64)
    if users is None or users.height == 0:
        return out
    cols = ((S.REGION, S.REGIONS), (S.AGE_BUCKET, S.AGE_BUCKETS), (S.DEVICE, S.DEVICES))
    uid = users.get_column(S.USER_IDX).to_numpy().astype(np.int64)
    for j, (col, values) in enumerate(cols):
        if col not in users.columns:
            continue
        lut = np.zeros(int(uid.max()) + 1 if uid.size else 1, np.int64)
        codes = (
            users.get_column(col)
            .replace_strict(
                list(values), list(range(1, len(values) + 1)), default=0, return_dtype=pl.Int64
            )
            .to_numpy()
        )
        lut[uid] = codes
        inside = user_idx < lut.shape[0]
        out[inside, j] = lut[user_idx[inside]]
    return out


def use_exposure(events: pl.DataFrame, config: RankerConfig) -> bool:
    """Whether lists use logged exposures (skips as negatives) or sampled negatives."""
    if config.negatives != "auto":
        return config.negatives == "exposure"
    skipped = events.get_column(S.SKIPPED)
    has_neg = bool(skipped.fill_null(False).any())
    return (
        skipped.null_count() < skipped.len() and has_neg and events[S.REQUEST_ID].null_count() == 0
    )


def sample_negatives(
    engaged: I64, n_videos: int, n: int, config: RankerConfig, rng: np.random.Generator
) -> I64:
    """``n`` negative video indices for lists without logged exposures.

    ``uniform``: every video alike. ``popularity``: in proportion to ``count ** power`` of its
    engaged training views (``config.negative_pop_power``; word2vec's unigram^0.75), so the
    ranker learns to separate a user's items from what is popular, as retrieval candidates
    are. ``mixed``: half of each (Yang et al., "Mixed Negative Sampling for Learning Two-tower
    Neural Networks in Recommendations", WWW 2020), the default: uniform negatives alone teach
    mostly popularity, popular ones alone unlearn it. Videos never engaged get no popularity
    mass; with no engaged rows at all the popularity part falls back to uniform.
    """
    mode = config.negative_sampling
    n_pop = {"uniform": 0, "popularity": n, "mixed": n // 2}[mode]
    out = rng.integers(0, n_videos, n).astype(np.int64)
    if n_pop and engaged.size:
        counts = np.bincount(engaged, minlength=n_videos).astype(np.float64)
        w = np.where(counts > 0, counts**config.negative_pop_power, 0.0)
        cdf = np.cumsum(w)
        pick = np.searchsorted(cdf, rng.random(n_pop) * cdf[-1], side="right")
        out[rng.permutation(n)[:n_pop]] = np.minimum(pick, n_videos - 1)
    return out


def build_lists(
    events: pl.DataFrame,
    vt: VideoTable,
    config: RankerConfig,
    rng: np.random.Generator,
    users: pl.DataFrame | None = None,
) -> Lists:
    """Training lists from ``events`` (columns of ``schema.EVENTS`` plus ``split``).

    A list is one request's impressions (``request_id``; a null request id makes the event its
    own list), at most ``max_list_len`` by position. With sampled negatives only engaged events
    form lists and ``n_sampled_negatives`` videos drawn by :func:`sample_negatives` (labels 0)
    are appended.
    The diversity label is ``engage * novelty``, novelty being :func:`tag_novelty` against the
    last ``novelty_lookback`` history events: an engaging item that adds something new.
    """
    _require(
        events,
        (
            S.EVENT_ID,
            S.REQUEST_ID,
            S.SESSION_ID,
            S.USER_IDX,
            S.VIDEO_IDX,
            S.TS,
            S.POSITION,
            S.WATCH_RATIO,
            S.SKIPPED,
            S.LIKED,
            S.POLICY,
            S.SPLIT,
        ),
        "events",
    )
    if events.height == 0:
        raise RankerDataError("events: no rows to learn from")
    ev = events.sort([S.USER_IDX, S.TS, S.EVENT_ID])
    vid = ev.get_column(S.VIDEO_IDX).to_numpy().astype(np.int64)
    vt.check_idx(vid, f"events.{S.VIDEO_IDX}")
    exposure = use_exposure(ev, config)
    labels, lmask = event_labels(ev, config)
    n = ev.height
    ts = ev.get_column(S.TS).dt.epoch("us").to_numpy().astype(np.int64)
    eid = ev.get_column(S.EVENT_ID).to_numpy().astype(np.int64)
    user = ev.get_column(S.USER_IDX).to_numpy().astype(np.int64)
    skipped_f = (1.0 - labels[:, 0]).astype(np.float32)
    wr = ev.get_column(S.WATCH_RATIO).cast(pl.Float32).fill_null(np.nan).to_numpy()
    wr = wr.astype(np.float32)
    liked_f = labels[:, 2] * lmask[:, 2]
    # position of each event in its user's sorted sequence
    user_start = np.zeros(n, np.int64)
    change = np.flatnonzero(np.diff(user)) + 1
    starts = np.concatenate([[0], change])
    user_start[starts] = starts
    user_start = np.maximum.accumulate(user_start)
    # session start time of each event (sessions are per user; null: the user's first event)
    sess = ev.get_column(S.SESSION_ID).fill_null(-1).to_numpy().astype(np.int64)
    sess_key = pl.DataFrame({"u": user, "s": sess, "t": ts})
    sess_start = sess_key.select(pl.col("t").min().over(["u", "s"])).to_series().to_numpy()
    # the list key: request id, or the event itself when the request is unknown
    req = ev.get_column(S.REQUEST_ID).to_numpy()
    req_null = ev.get_column(S.REQUEST_ID).is_null().to_numpy()
    pos = ev.get_column(S.POSITION).fill_null(0).to_numpy().astype(np.int64)
    list_key = np.where(req_null, -1 - np.arange(n), np.nan_to_num(req, nan=0).astype(np.int64))
    keep = np.ones(n, bool) if exposure else labels[:, 0] > 0
    rows = np.flatnonzero(keep)
    if rows.size == 0:
        raise RankerDataError("events: no engaged events to build lists from")
    # group rows by list key, each list in (ts, event_id) order (rows are per-user sorted)
    order = rows[np.lexsort((eid[rows], ts[rows], list_key[rows]))]
    keys = list_key[order]
    bounds = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1], True])
    first = order[bounds[:-1]]
    sizes = np.minimum(np.diff(bounds), config.max_list_len)
    n_lists = first.shape[0]
    n_neg = 0 if exposure else config.n_sampled_negatives
    c = int(min(config.max_list_len, sizes.max())) + n_neg
    cand = np.full((n_lists, c), -1, np.int64)
    member = np.full((n_lists, c), -1, np.int64)
    offs = np.arange(c)[None, :]
    pos_mask = offs < sizes[:, None]
    src_idx = bounds[:-1, None] + np.minimum(offs, sizes[:, None] - 1)
    member[pos_mask] = order[src_idx[pos_mask]]
    cand[pos_mask] = vid[member[pos_mask]]
    lab = np.zeros((n_lists, c, 4), np.float32)
    lm = np.zeros((n_lists, c, 4), np.float32)
    lab[pos_mask, :3] = labels[member[pos_mask]]
    lm[pos_mask, :3] = lmask[member[pos_mask]]
    if n_neg:
        neg_slots = (offs >= sizes[:, None]) & (offs < sizes[:, None] + n_neg)
        train_rows = rows[ev.get_column(S.SPLIT).to_numpy()[rows] == S.TRAIN]
        cand[neg_slots] = sample_negatives(
            vid[train_rows], vt.n_videos, int(neg_slots.sum()), config, rng
        )
        lm[neg_slots, :3] = 1.0  # sampled negatives: all three tasks are known zeros
    # history: the user's last L events strictly before the list's first impression
    length = config.history_len
    hist = first[:, None] - length + np.arange(length)[None, :]
    hist = np.where(hist >= user_start[first][:, None], hist, -1)
    # diversity label: engage * novelty against the most recent history tags
    look = min(config.novelty_lookback, length)
    recent = hist[:, length - look :]
    recent_tags = np.where(recent[..., None] >= 0, vt.tags[vid[np.maximum(recent, 0)]], 0)
    valid_c = cand >= 0
    ctags = vt.tags[np.maximum(cand, 0)]
    nov = np.ones((n_lists, c), np.float32)
    li, ci = np.nonzero(valid_c)
    chunk = 50_000
    for s in range(0, li.shape[0], chunk):
        a, b = li[s : s + chunk], ci[s : s + chunk]
        nov[a, b] = tag_novelty(ctags[a, b], recent_tags[a])
    lab[..., 3] = lab[..., 0] * nov
    lm[..., 3] = lm[..., 0]
    # context at the request
    request_us = ts[first]
    hist_ok = hist >= 0
    n_hist = hist_ok.sum(axis=1)
    rw = min(config.recent_skip_window, length)
    rec = hist[:, length - rw :]
    rec_ok = rec >= 0
    skip_rate = np.where(rec_ok, skipped_f[np.maximum(rec, 0)], 0.0).sum(axis=1) / np.maximum(
        rec_ok.sum(axis=1), 1
    )
    in_session = (request_us - sess_start[first]) / _US_PER_S
    ctx = context_features(
        n_hist,
        pos[first],
        in_session.astype(np.float32),
        skip_rate.astype(np.float32),
        request_us,
        _profile_codes(users, user[first]),
    )
    # which retrieval source proposed each exposure (the logging policy, when names match)
    sources = np.zeros((n_lists, c, len(config.source_names)), np.float32)
    if exposure:
        policy = ev.get_column(S.POLICY).fill_null("").to_numpy()
        for j, name in enumerate(config.source_names):
            hit = policy == name
            sources[pos_mask, j] = hit[member[pos_mask]].astype(np.float32)
    split = ev.get_column(S.SPLIT).to_numpy()[first].astype(str)
    # global (ts, event_id) rank of the request, for point-in-time statistics
    g_order = np.lexsort((eid, ts))
    g_rank = np.empty(n, np.int64)
    g_rank[g_order] = np.arange(n)
    return Lists(
        ev_video=vid,
        ev_ts=ts,
        ev_wr=wr,
        ev_skipped=skipped_f,
        ev_liked=liked_f.astype(np.float32),
        hist_idx=hist,
        request_us=request_us,
        rank=g_rank[first],
        ctx_num=ctx["ctx_num"].astype(np.float32),
        ctx_cat=ctx["ctx_cat"].astype(np.int64),
        cand=cand,
        sources=sources,
        labels=lab,
        label_mask=lm,
        split=split,
    )


def batch_inputs(lists: Lists, vt: VideoTable, stats: VideoStats, config: RankerConfig) -> Arrays:
    """All model inputs (``model.INPUT_NAMES``) for the lists in ``lists``."""
    h = lists.hist_idx
    ok = h >= 0
    hi = np.maximum(h, 0)
    gap = np.where(ok, (lists.request_us[:, None] - lists.ev_ts[hi]) / _US_PER_S, 0.0)
    out = history_features(
        vt,
        np.where(ok, lists.ev_video[hi], -1),
        np.where(ok, lists.ev_wr[hi], 0.0),
        np.where(ok, lists.ev_skipped[hi], 0.0),
        np.where(ok, lists.ev_liked[hi], 0.0),
        gap.astype(np.float32),
        config,
    )
    out["ctx_num"] = lists.ctx_num
    out["ctx_cat"] = lists.ctx_cat
    st = stats.features(lists.cand, lists.rank)
    out.update(candidate_features(vt, lists.cand, lists.request_us, st, lists.sources))
    return out
