"""Two-tower retrieval model (PyTorch) and its training loop.

The video tower embeds a video from its id, tags (masked mean), creator, category and duration
bucket; the user tower from the user's recent positive history (masked mean and last item) and
profile (region, age bucket, device). Both end in an L2-normalised ``dim`` vector, so the score
is a cosine. Training is in-batch sampled softmax with the log-Q correction of Yi et al.,
"Sampling-Bias-Corrected Neural Modeling for Large Corpus Item Recommendations" (RecSys 2019):
``logit[i, j] = <u_i, v_j> / T - log q_j`` where ``q_j`` is the probability that video ``j``
is a positive of a random training sample (its share of positives). Other rows' positives are
the negatives; a batch row that holds the same video as row ``i`` is masked (it is not a
negative of ``i``). Videos without training positives use a learnt "unknown id" embedding (id
dropout teaches the tower to embed them from content alone), so new uploads get sensible
vectors.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import polars as pl
import torch
import torch.nn.functional as F
from torch import nn

from shortrec import schema as S
from shortrec.config import TwoTowerConfig

Idx32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]
F32 = npt.NDArray[np.float32]

MODEL_FILE = "two_tower.pt"
META_FILE = "two_tower.json"
VIDEO_EMB_FILE = "video_emb.npy"


# ---------------------------------------------------------------- feature spaces
@dataclass(frozen=True)
class Vocab:
    """Sizes of the categorical inputs; index ``n_*`` of each table means unknown/padding."""

    n_videos: int
    n_tags: int
    n_creators: int
    n_categories: int
    regions: tuple[str, ...]
    age_buckets: tuple[str, ...] = S.AGE_BUCKETS
    devices: tuple[str, ...] = S.DEVICES

    def to_json(self) -> dict[str, Any]:
        return {
            "n_videos": self.n_videos,
            "n_tags": self.n_tags,
            "n_creators": self.n_creators,
            "n_categories": self.n_categories,
            "regions": list(self.regions),
            "age_buckets": list(self.age_buckets),
            "devices": list(self.devices),
        }

    @staticmethod
    def from_json(d: dict[str, Any]) -> Vocab:
        return Vocab(
            int(d["n_videos"]),
            int(d["n_tags"]),
            int(d["n_creators"]),
            int(d["n_categories"]),
            tuple(d["regions"]),
            tuple(d["age_buckets"]),
            tuple(d["devices"]),
        )

    @staticmethod
    def from_tables(videos: pl.DataFrame, users: pl.DataFrame) -> Vocab:
        def _size(s: pl.Series) -> int:
            m = s.max()
            return int(m) + 1 if m is not None else 0  # type: ignore[arg-type]

        tags = videos.get_column(S.TAGS).explode()
        regions = users.get_column(S.REGION).drop_nulls().unique().sort().to_list()
        return Vocab(
            n_videos=_size(videos.get_column(S.VIDEO_IDX)),
            n_tags=_size(tags),
            n_creators=_size(videos.get_column(S.CREATOR_IDX)),
            n_categories=_size(videos.get_column(S.CATEGORY)),
            regions=tuple(sorted(set(regions) | set(S.REGIONS))),
        )

    def code(self, values: tuple[str, ...], value: str | None) -> int:
        """Index of ``value`` in ``values``; ``len(values)`` (unknown) when absent."""
        try:
            return values.index(value) if value is not None else len(values)
        except ValueError:
            return len(values)


@dataclass(frozen=True)
class VideoFeatures:
    """Video tower inputs for the whole catalogue, row = video_idx: ``tags`` (n, max_tags)
    padded with ``n_tags``; ``creator``/``category``/``duration`` (n,) with unknown = size."""

    tags: torch.Tensor
    creator: torch.Tensor
    category: torch.Tensor
    duration: torch.Tensor

    @staticmethod
    def from_videos(videos: pl.DataFrame, vocab: Vocab, cfg: TwoTowerConfig) -> VideoFeatures:
        n = vocab.n_videos
        v = videos.sort(S.VIDEO_IDX)
        idx = v.get_column(S.VIDEO_IDX).to_numpy().astype(np.int64)
        tags = np.full((n, cfg.max_tags), vocab.n_tags, dtype=np.int64)
        lists = v.get_column(S.TAGS).list.head(cfg.max_tags)
        lens = lists.list.len().to_numpy().astype(np.int64)
        flat = lists.explode().drop_nulls().to_numpy().astype(np.int64)
        rows = np.repeat(idx, lens)
        cols = np.arange(flat.shape[0]) - np.repeat(np.cumsum(lens) - lens, lens)
        tags[rows, cols] = flat
        creator = np.full(n, vocab.n_creators, dtype=np.int64)
        creator[idx] = v.get_column(S.CREATOR_IDX).to_numpy()
        category = np.full(n, vocab.n_categories, dtype=np.int64)
        category[idx] = v.get_column(S.CATEGORY).fill_null(vocab.n_categories).to_numpy()
        edges = np.asarray(cfg.duration_edges_s, dtype=np.float64)
        dur_raw = v.get_column(S.DURATION_S).cast(pl.Float64).fill_null(np.nan).to_numpy()
        bucket = np.where(
            np.isnan(dur_raw),
            len(edges) + 1,
            np.searchsorted(edges, np.nan_to_num(dur_raw), side="right"),
        )
        duration = np.full(n, len(edges) + 1, dtype=np.int64)
        duration[idx] = bucket
        return VideoFeatures(
            torch.from_numpy(tags),
            torch.from_numpy(creator),
            torch.from_numpy(category),
            torch.from_numpy(duration),
        )


# ---------------------------------------------------------------- model
def _masked_mean(emb: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``emb`` (b, l, d) over positions where ``mask`` (b, l) is True; 0 if none."""
    m = mask.unsqueeze(-1).to(emb.dtype)  # (b, l, 1)
    return (emb * m).sum(1) / m.sum(1).clamp_min(1.0)  # (b, d)


class VideoTower(nn.Module):
    """id + tags + creator + category + duration bucket -> MLP -> unit vector (dim)."""

    def __init__(self, vocab: Vocab, cfg: TwoTowerConfig) -> None:
        super().__init__()
        d = cfg.dim
        self.n_videos = vocab.n_videos
        self.n_tags = vocab.n_tags
        self.id = nn.Embedding(vocab.n_videos + 1, d)  # last row: unknown id
        self.tag = nn.Embedding(vocab.n_tags + 1, d, padding_idx=vocab.n_tags)
        self.creator = nn.Embedding(vocab.n_creators + 1, d)
        self.category = nn.Embedding(vocab.n_categories + 1, d)
        self.duration = nn.Embedding(len(cfg.duration_edges_s) + 2, d)
        self.mlp = nn.Sequential(nn.Linear(5 * d, cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, d))

    def forward(
        self, rows: torch.Tensor, use_id: torch.Tensor, feats: VideoFeatures
    ) -> torch.Tensor:
        """``rows`` (b,) video_idx; ``use_id`` (b,) False to use the unknown-id embedding
        (videos without training positives, id dropout) -> (b, dim)."""
        ids = torch.where(use_id, rows, torch.full_like(rows, self.n_videos))  # (b,)
        tags = feats.tags[rows]  # (b, max_tags)
        x = torch.cat(
            [
                self.id(ids),
                _masked_mean(self.tag(tags), tags != self.n_tags),
                self.creator(feats.creator[rows]),
                self.category(feats.category[rows]),
                self.duration(feats.duration[rows]),
            ],
            dim=-1,
        )  # (b, 5 dim)
        return F.normalize(self.mlp(x), dim=-1)


class UserTower(nn.Module):
    """Recent positive history (masked mean + last item) and profile -> MLP -> unit vector."""

    def __init__(self, vocab: Vocab, cfg: TwoTowerConfig) -> None:
        super().__init__()
        d = cfg.dim
        self.pad = vocab.n_videos
        self.item = nn.Embedding(vocab.n_videos + 1, d, padding_idx=vocab.n_videos)
        self.region = nn.Embedding(len(vocab.regions) + 1, d)
        self.age = nn.Embedding(len(vocab.age_buckets) + 1, d)
        self.device = nn.Embedding(len(vocab.devices) + 1, d)
        self.mlp = nn.Sequential(nn.Linear(5 * d, cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, d))

    def forward(self, history: torch.Tensor, profile: torch.Tensor) -> torch.Tensor:
        """``history`` (b, L) video_idx left-padded with ``n_videos`` (most recent last);
        ``profile`` (b, 3) codes of region, age bucket, device -> (b, dim)."""
        h = self.item(history)  # (b, L, dim)
        x = torch.cat(
            [
                _masked_mean(h, history != self.pad),
                h[:, -1],  # the most recent item (padding row is 0 when there is none)
                self.region(profile[:, 0]),
                self.age(profile[:, 1]),
                self.device(profile[:, 2]),
            ],
            dim=-1,
        )  # (b, 5 dim)
        return F.normalize(self.mlp(x), dim=-1)


class TwoTower(nn.Module):
    def __init__(self, vocab: Vocab, cfg: TwoTowerConfig) -> None:
        super().__init__()
        self.user = UserTower(vocab, cfg)
        self.video = VideoTower(vocab, cfg)


def sampled_softmax_loss(
    u: torch.Tensor,
    v: torch.Tensor,
    vid: torch.Tensor,
    log_q: torch.Tensor | None,
    temperature: float,
) -> torch.Tensor:
    """In-batch softmax with log-Q correction (Yi et al. 2019, eq. 3).

    ``u``/``v`` (b, d) user/positive-video vectors; ``vid`` (b,) video ids; ``log_q`` (b,)
    log sampling probability of each row's video (None: no correction).
    """
    logits = u @ v.T / temperature  # (b, b)
    if log_q is not None:
        logits = logits - log_q.unsqueeze(0)  # correct column j by its sampling rate
    dup = (vid.unsqueeze(0) == vid.unsqueeze(1)) & ~torch.eye(
        vid.shape[0], dtype=torch.bool
    )  # (b, b): the same video in another row is not a negative
    logits = logits.masked_fill(dup, float("-inf"))
    return F.cross_entropy(logits, torch.arange(vid.shape[0]))


# ---------------------------------------------------------------- training data
@dataclass(frozen=True)
class Positives:
    """Positive interactions in per-user chronological order (flat arrays, length N).

    ``start[i]`` is the flat position of the first positive of row ``i``'s user, so row ``i``'s
    history is ``video[max(start[i], i - L):i]``.
    """

    user: I64
    video: I64
    start: I64

    @staticmethod
    def from_frame(pos: pl.DataFrame) -> Positives:
        """``pos``: positive events with user_idx, video_idx, ts, event_id (any order)."""
        p = pos.sort(S.USER_IDX, S.TS, S.EVENT_ID)
        user = p.get_column(S.USER_IDX).to_numpy().astype(np.int64)
        video = p.get_column(S.VIDEO_IDX).to_numpy().astype(np.int64)
        first = np.ones(user.shape[0], dtype=np.bool_)
        first[1:] = user[1:] != user[:-1]
        start = np.maximum.accumulate(np.where(first, np.arange(user.shape[0]), 0))
        return Positives(user, video, start.astype(np.int64))

    def histories(self, rows: I64, length: int, pad: int) -> I64:
        """(len(rows), length) histories strictly before each row, left-padded with ``pad``."""
        pos = rows[:, None] - length + np.arange(length)[None, :]  # (b, L)
        valid = pos >= self.start[rows][:, None]
        return np.where(valid, self.video[np.maximum(pos, 0)], pad)

    def last(self, length: int, pad: int) -> dict[int, I64]:
        """Each user's last ``length`` positives (the history after all of them)."""
        if self.user.shape[0] == 0:
            return {}
        ends = np.flatnonzero(np.r_[self.user[1:] != self.user[:-1], True])
        out: dict[int, I64] = {}
        for e in ends:
            s = max(int(self.start[e]), int(e) + 1 - length)
            out[int(self.user[e])] = self.video[s : e + 1]
        return out


def left_pad(seq: npt.ArrayLike, length: int, pad: int) -> I64:
    """The last ``length`` items of ``seq``, left-padded with ``pad`` -> (length,)."""
    s = np.asarray(seq, dtype=np.int64)[-length:] if length else np.zeros(0, np.int64)
    out = np.full(length, pad, dtype=np.int64)
    if s.shape[0]:
        out[length - s.shape[0] :] = s
    return out


# ---------------------------------------------------------------- request-time user tower
@dataclass(frozen=True)
class NumpyUserTower:
    """The :class:`UserTower` forward pass in numpy (inference only; training keeps the module).

    Serving embeds one user per request; PyTorch's per-call overhead (module dispatch,
    tensor wrapping) costs far more than the arithmetic on such tiny tensors, so the request
    path runs this twin instead (float32, equal to the module's output up to rounding).
    The embedding tables are read-only views of the module's weights (no second copy of the
    item table); the small MLP weights are transposed copies, so build the twin only once the
    module is trained.
    """

    pad: int
    item: F32  # (n_videos + 1, dim), row ``pad`` = padding
    region: F32  # (n_regions + 1, dim)
    age: F32  # (n_age_buckets + 1, dim)
    device: F32  # (n_devices + 1, dim)
    w1: F32  # (5 dim, hidden), transposed nn.Linear weight
    b1: F32  # (hidden,)
    w2: F32  # (hidden, dim)
    b2: F32  # (dim,)

    @staticmethod
    def from_module(tower: UserTower) -> NumpyUserTower:
        def arr(t: torch.Tensor) -> F32:
            out = np.ascontiguousarray(t.detach().cpu().numpy(), dtype=np.float32)
            out = out.view()  # a read-only view that leaves the module's tensor writable
            out.flags.writeable = False
            return out

        lin1, lin2 = cast(nn.Linear, tower.mlp[0]), cast(nn.Linear, tower.mlp[2])
        return NumpyUserTower(
            pad=int(tower.pad),
            item=arr(tower.item.weight),
            region=arr(tower.region.weight),
            age=arr(tower.age.weight),
            device=arr(tower.device.weight),
            w1=arr(lin1.weight.T),
            b1=arr(lin1.bias),
            w2=arr(lin2.weight.T),
            b2=arr(lin2.bias),
        )

    def __call__(self, history: I64, profile: I64) -> F32:
        """``history`` (b, L) video_idx left-padded with ``pad``; ``profile`` (b, 3) -> (b, dim).

        Raises ``IndexError`` for an index outside a table (as the module does)."""
        if history.size and (history.min() < 0 or history.max() >= self.item.shape[0]):
            raise IndexError("history: video index out of range")
        sizes = (self.region.shape[0], self.age.shape[0], self.device.shape[0])
        if profile.size and (profile.min() < 0 or (profile.max(axis=0) >= sizes).any()):
            raise IndexError("profile: code out of range")
        mask = history != self.pad  # (b, L)
        h = self.item[history]  # (b, L, dim)
        m = mask.astype(np.float32)[:, :, None]  # (b, L, 1)
        mean = (h * m).sum(axis=1) / np.maximum(m.sum(axis=1), np.float32(1.0))  # (b, dim)
        x = np.concatenate(
            [
                mean,
                h[:, -1],
                self.region[profile[:, 0]],
                self.age[profile[:, 1]],
                self.device[profile[:, 2]],
            ],
            axis=-1,
        )  # (b, 5 dim)
        z = np.maximum(x @ self.w1 + self.b1, np.float32(0.0)) @ self.w2 + self.b2  # (b, dim)
        norm = np.sqrt(np.einsum("bd,bd->b", z, z))[:, None]  # (b, 1)
        out: F32 = z / np.maximum(norm, np.float32(1e-12))
        return out


# ---------------------------------------------------------------- trained model
@dataclass(frozen=True)
class TrainedTwoTower:
    """A trained model ready to serve: the user tower (torch, eval mode) and the video
    embeddings ``video_emb`` (n_videos, dim) float32, unit norm, row = video_idx.

    ``user_tower`` is the numpy twin of ``model.user`` that serves user embeddings, built
    from the model's weights at construction (the model must not be trained afterwards).
    """

    model: TwoTower
    vocab: Vocab
    config: TwoTowerConfig
    video_emb: F32
    metrics: dict[str, float]
    user_tower: NumpyUserTower = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "user_tower", NumpyUserTower.from_module(self.model.user))

    def profile_codes(self, region: str | None, age: str | None, device: str | None) -> I64:
        v = self.vocab
        return np.array(
            [v.code(v.regions, region), v.code(v.age_buckets, age), v.code(v.devices, device)],
            dtype=np.int64,
        )

    def user_embeddings(self, histories: I64, profiles: I64) -> F32:
        """(b, L) padded histories (pad = n_videos) and (b, 3) profile codes -> (b, dim).

        Runs the numpy twin of the user tower (see :class:`NumpyUserTower`)."""
        h = np.asarray(histories, dtype=np.int64)
        p = np.asarray(profiles, dtype=np.int64)
        return np.ascontiguousarray(self.user_tower(h, p), dtype=np.float32)

    def user_embedding(
        self,
        history: npt.ArrayLike,
        region: str | None = None,
        age: str | None = None,
        device: str | None = None,
    ) -> F32:
        """One user's vector (dim,) from positive history video_idx (most recent last)."""
        h = np.asarray(history, dtype=np.int64)
        h = h[(h >= 0) & (h < self.vocab.n_videos)]  # ids outside the model are unknown
        hist = left_pad(h, self.config.history_len, self.vocab.n_videos)
        prof = self.profile_codes(region, age, device)
        emb: F32 = self.user_embeddings(hist[None, :], prof[None, :])[0]  # (dim,)
        return emb

    def save(self, directory: Path) -> None:
        """Write model weights, metadata and video embeddings (atomic per file)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        _atomic(directory / MODEL_FILE, lambda p: torch.save(self.model.state_dict(), p))
        _atomic(directory / VIDEO_EMB_FILE, lambda p: _save_npy(p, self.video_emb))
        meta = {
            "vocab": self.vocab.to_json(),
            "config": self.config.model_dump(mode="json"),
            "metrics": self.metrics,
        }
        _atomic(directory / META_FILE, lambda p: Path(p).write_text(json.dumps(meta)))

    @staticmethod
    def load(directory: Path) -> TrainedTwoTower:
        directory = Path(directory)
        for name in (MODEL_FILE, VIDEO_EMB_FILE, META_FILE):
            if not (directory / name).is_file():
                raise S.BadInput(f"{directory / name}: file not found")
        meta = json.loads((directory / META_FILE).read_text())
        vocab = Vocab.from_json(meta["vocab"])
        cfg = TwoTowerConfig.model_validate(meta["config"])
        model = TwoTower(vocab, cfg)
        model.load_state_dict(torch.load(directory / MODEL_FILE, weights_only=True))
        model.eval()
        emb = np.load(directory / VIDEO_EMB_FILE)
        if emb.shape != (vocab.n_videos, cfg.dim):
            raise S.BadInput(
                f"{directory / VIDEO_EMB_FILE}: shape {emb.shape}, expected "
                f"{(vocab.n_videos, cfg.dim)}"
            )
        return TrainedTwoTower(
            model,
            vocab,
            cfg,
            emb.astype(np.float32),
            {k: float(v) for k, v in meta["metrics"].items()},
        )


def _save_npy(path: str, array: F32) -> None:
    with open(path, "wb") as fh:  # a file object: np.save would append ".npy" to a name
        np.save(fh, array)


def _atomic(path: Path, write: Callable[[str], object]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------- training
Progress = Callable[[str, int, int, dict[str, float]], None]
"""Progress callback ``(phase, done, total, metrics)``; ``phase`` is "epoch N" or "done"."""


def _video_embeddings(
    model: TwoTower, feats: VideoFeatures, known: torch.Tensor, n: int, batch: int = 65_536
) -> torch.Tensor:
    out = []
    with torch.inference_mode():
        for s in range(0, n, batch):
            rows = torch.arange(s, min(n, s + batch))
            out.append(model.video(rows, known[rows], feats))
    return torch.cat(out)


def _recall_at_k(
    user_emb: torch.Tensor, video_emb: torch.Tensor, targets: list[I64], seen: list[I64], k: int
) -> float:
    """Mean over users of |top-k ∩ targets| / |targets|, seen videos excluded."""
    hits, chunk = 0.0, 512
    for s in range(0, user_emb.shape[0], chunk):
        sc = user_emb[s : s + chunk] @ video_emb.T  # (c, n_videos)
        for r in range(sc.shape[0]):
            sc[r, torch.from_numpy(seen[s + r])] = float("-inf")
        top = torch.topk(sc, min(k, sc.shape[1]), dim=1).indices.numpy()
        for r in range(sc.shape[0]):
            t = targets[s + r]
            hits += np.isin(t, top[r]).sum() / t.shape[0]
    return float(hits) / max(1, user_emb.shape[0])


def _profile_table(users: pl.DataFrame, vocab: Vocab, min_users: int) -> I64:
    """(n_users, 3) profile codes per user_idx (region, age bucket, device); unknown = size."""
    uidx = users.get_column(S.USER_IDX).to_numpy().astype(np.int64)
    n = max(min_users, int(uidx.max()) + 1 if uidx.shape[0] else 0)
    sizes = (len(vocab.regions), len(vocab.age_buckets), len(vocab.devices))
    tab = np.tile(np.array(sizes, dtype=np.int64), (n, 1))  # (n, 3)
    cols = ((S.REGION, vocab.regions), (S.AGE_BUCKET, vocab.age_buckets), (S.DEVICE, vocab.devices))
    for j, (col, values) in enumerate(cols):
        tab[uidx, j] = [vocab.code(values, v) for v in users.get_column(col).to_list()]
    return tab


def train_two_tower(
    train_events: pl.DataFrame,
    valid_events: pl.DataFrame,
    videos: pl.DataFrame,
    users: pl.DataFrame,
    config: TwoTowerConfig,
    is_positive: pl.Expr,
    seed: int | None = None,
    progress: Progress | None = None,
) -> TrainedTwoTower:
    """Train on ``train_events``' positives; early-stop on recall@``eval_k`` of
    ``valid_events``' positives (the user vector from the train history, train-seen videos
    excluded). Returns the best epoch's model.

    Events have the ``schema.EVENTS`` columns; ``is_positive`` selects positive rows (see
    ``features.positive_expr``). ``seed`` (default ``config.seed``) fixes initialisation and
    sample order: same inputs and seed, same model. Metrics: ``valid_recall``, ``epochs``,
    ``best_epoch``, ``samples_per_s``, ``train_samples``.
    """
    cfg = config
    seed = cfg.seed if seed is None else seed
    torch.set_num_threads(cfg.threads)
    vocab = Vocab.from_tables(videos, users)
    if vocab.n_videos == 0:
        raise S.BadInput("videos: empty catalogue, nothing to train")
    bad = train_events.filter(pl.col(S.VIDEO_IDX) >= vocab.n_videos)
    if bad.height:
        raise S.BadInput(
            f"events.{S.VIDEO_IDX}: {bad.height} rows refer to videos not in "
            f"the catalogue (e.g. {bad.get_column(S.VIDEO_IDX)[0]})"
        )
    feats = VideoFeatures.from_videos(videos, vocab, cfg)
    pos = Positives.from_frame(train_events.filter(is_positive))
    n_pos = pos.user.shape[0]
    if n_pos == 0:
        raise S.BadInput("events: no positive interactions to train the two-tower model on")

    counts = np.bincount(pos.video, minlength=vocab.n_videos).astype(np.float64)
    known = torch.from_numpy(counts > 0)
    log_q = torch.from_numpy(np.log(np.maximum(counts, 1.0) / n_pos).astype(np.float32))
    prof_tab = _profile_table(users, vocab, int(pos.user.max()) + 1)
    n_users = prof_tab.shape[0]

    # validation: each valid user's train history, targets and train-seen set
    vpos = valid_events.filter(is_positive)
    last = pos.last(cfg.history_len, vocab.n_videos)
    vt = vpos.group_by(S.USER_IDX).agg(pl.col(S.VIDEO_IDX).unique()).sort(S.USER_IDX)
    rng = np.random.default_rng(seed)
    if vt.height > cfg.max_valid_users:
        vt = vt[np.sort(rng.choice(vt.height, cfg.max_valid_users, replace=False))]
    v_users = vt.get_column(S.USER_IDX).to_numpy().astype(np.int64)
    v_targets = [np.asarray(t, dtype=np.int64) for t in vt.get_column(S.VIDEO_IDX).to_list()]
    seen_map = dict(train_events.group_by(S.USER_IDX).agg(pl.col(S.VIDEO_IDX).unique()).iter_rows())
    v_seen = [np.asarray(seen_map.get(int(u), []), dtype=np.int64) for u in v_users]
    v_hist = (
        np.stack([left_pad(last.get(int(u), []), cfg.history_len, vocab.n_videos) for u in v_users])
        if v_users.shape[0]
        else np.zeros((0, cfg.history_len), np.int64)
    )
    v_prof = (
        prof_tab[np.minimum(v_users, n_users - 1)]
        if v_users.shape[0]
        else np.zeros((0, 3), np.int64)
    )

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = TwoTower(vocab, cfg)
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        per_epoch = min(n_pos, cfg.max_samples_per_epoch or n_pos)
        best: tuple[float, int, dict[str, torch.Tensor]] | None = None
        train_s, seen_samples, epoch, stale = 0.0, 0, 0, 0
        for epoch in range(1, cfg.max_epochs + 1):
            model.train()
            order = rng.permutation(n_pos)[:per_epoch]
            t0 = time.perf_counter()
            for b, s in enumerate(range(0, per_epoch, cfg.batch_size)):
                rows = order[s : s + cfg.batch_size]
                if rows.shape[0] < 2:
                    continue
                vid = torch.from_numpy(pos.video[rows])
                hist = torch.from_numpy(pos.histories(rows, cfg.history_len, vocab.n_videos))
                prof = torch.from_numpy(prof_tab[pos.user[rows]])
                # id dropout teaches the tower to embed videos from content alone
                use_id = torch.rand(vid.shape[0]) >= cfg.id_dropout
                u = model.user(hist, prof)
                v = model.video(vid, use_id, feats)
                lq = log_q[vid] if cfg.logq_correction else None
                loss = sampled_softmax_loss(u, v, vid, lq, cfg.temperature)
                opt.zero_grad(set_to_none=True)
                loss.backward()  # type: ignore[no-untyped-call]
                opt.step()
                seen_samples += rows.shape[0]
                if progress is not None and b % 20 == 0:
                    progress(
                        f"epoch {epoch}",
                        s + rows.shape[0],
                        per_epoch,
                        {"loss": float(loss.detach())},
                    )
            train_s += time.perf_counter() - t0
            model.eval()
            vemb = _video_embeddings(model, feats, known, vocab.n_videos)
            with torch.inference_mode():
                uemb = model.user(torch.from_numpy(v_hist), torch.from_numpy(v_prof))
            rec = _recall_at_k(uemb, vemb, v_targets, v_seen, cfg.eval_k)
            if progress is not None:
                progress(f"epoch {epoch}", per_epoch, per_epoch, {"valid_recall": rec})
            if best is None or rec > best[0]:
                state = {k: t.detach().clone() for k, t in model.state_dict().items()}
                best, stale = (rec, epoch, state), 0
            else:
                stale += 1
                if stale >= cfg.patience:
                    break
    assert best is not None  # the loop runs at least once (max_epochs >= 1)
    model.load_state_dict(best[2])
    model.eval()
    vemb = _video_embeddings(model, feats, known, vocab.n_videos)
    metrics = {
        "valid_recall": best[0],
        "best_epoch": float(best[1]),
        "epochs": float(epoch),
        "samples_per_s": seen_samples / train_s if train_s > 0 else 0.0,
        "train_samples": float(n_pos),
        "valid_users": float(v_users.shape[0]),
    }
    if progress is not None:
        progress("done", 1, 1, metrics)
    return TrainedTwoTower(model, vocab, cfg, vemb.numpy().astype(np.float32), metrics)
