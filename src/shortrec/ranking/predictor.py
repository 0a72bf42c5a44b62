"""Serving-side scoring: load the "ranker" bundle component and score candidate lists.

``Predictor.load(art)`` reads the component written by ``train.train_ranker``; scoring runs on
ONNX Runtime when the ONNX file and the runtime are available (and the config asks for it),
otherwise on the PyTorch model. Features are built by the same functions as in training
(``batches.py``), from raw per-request arrays.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from shortrec import schema as S
from shortrec.artifacts import BundleError, component_dir, read_manifest
from shortrec.config import RankerConfig
from shortrec.ranking.batches import (
    F32,
    Arrays,
    RankerDataError,
    VideoStats,
    VideoTable,
    candidate_features,
    candidate_numeric,
    context_features,
    history_actions,
    history_features,
)
from shortrec.ranking.export import onnx_session, to_torch
from shortrec.ranking.model import CONTENT_INPUT_NAMES, INPUT_NAMES, ContentRanker, Ranker, Vocab

COMPONENT = "ranker"
MODEL_FILE = "model.pt"
ONNX_FILE = "model.onnx"
#: the serving form of the model (content embeddings in, see ``model.ContentRanker``)
CONTENT_ONNX_FILE = "model_content.onnx"
VIDEOS_FILE = "videos.npz"
STATS_FILE = "stats.npz"
META_FILE = "meta.json"
_US_PER_S = 1_000_000


@dataclass(frozen=True)
class History:
    """One request's user context: past events in chronological order (any length; the last
    ``history_len`` are used), all arrays of shape (n,).

    ``watch_ratio`` NaN = unknown; ``request_us`` the time the page is ranked;
    ``session_start_us`` None = unknown (time in session 0); ``profile`` = (region, age bucket,
    device) strings or None.
    """

    video_idx: npt.NDArray[np.integer]
    ts_us: npt.NDArray[np.integer]
    watch_ratio: npt.NDArray[np.floating]
    skipped: npt.NDArray[np.bool_]
    liked: npt.NDArray[np.bool_]
    request_us: int
    position: int = 0
    session_start_us: int | None = None
    profile: tuple[str | None, str | None, str | None] = (None, None, None)

    @staticmethod
    def empty(request_us: int) -> History:
        z = np.zeros(0, np.int64)
        return History(
            z, z, np.zeros(0, np.float32), np.zeros(0, bool), np.zeros(0, bool), request_us
        )


@dataclass(frozen=True)
class CandidateSet:
    """Candidates of one request: ``video_idx`` (C,); optional ``sources`` (C, S) flags in
    ``RankerConfig.source_names`` order; optional ``stats`` (C, 4) as from
    ``VideoStats.features`` (default: the bundle's statistics over all training events)."""

    video_idx: npt.NDArray[np.integer]
    sources: npt.NDArray[np.floating] | npt.NDArray[np.bool_] | None = None
    stats: npt.NDArray[np.floating] | None = None


@dataclass(frozen=True)
class Scores:
    """Scores of one request's candidates: ``final`` (C,) and per-task probabilities (C,)."""

    final: F32
    heads: dict[str, F32] = field(default_factory=dict)


def _profile(profile: tuple[str | None, str | None, str | None]) -> list[int]:
    out = []
    for value, values in zip(profile, (S.REGIONS, S.AGE_BUCKETS, S.DEVICES), strict=True):
        out.append(values.index(value) + 1 if value in values else 0)
    return out


class Predictor:
    """Scores candidate lists with a trained ranker (ONNX Runtime, or PyTorch as fallback)."""

    def __init__(
        self,
        config: RankerConfig,
        model: Ranker,
        videos: VideoTable,
        stats: VideoStats,
        onnx_path: Path | None,
        trained_sources: Sequence[str] | None = None,
    ) -> None:
        self.config = config
        #: (S,) 1 for the source flags the model saw set in training, 0 for the others, whose
        #: input weights were never trained (None: feed every flag, as for a bundle from
        #: before the training set was recorded)
        self.source_mask: F32 | None = (
            None
            if trained_sources is None
            else np.array([s in trained_sources for s in config.source_names], np.float32)
        )
        self.model = model.eval()
        self.videos = videos
        self.stats = stats
        self.tasks = tuple(config.tasks)
        # statistics after every training event, per video (row -1: padding, zeros)
        self._latest = stats.latest_table(videos.n_videos)
        self.session: Any = None
        #: (n_videos + 1, d) content embeddings (row -1: padding) when ``session`` runs the
        #: content form of the model (``CONTENT_ONNX_FILE`` next to ``onnx_path``)
        self.content_table: F32 | None = None
        if onnx_path is not None and config.backend == "onnx" and onnx_path.is_file():
            content_path = onnx_path.with_name(CONTENT_ONNX_FILE)
            try:
                if content_path.is_file():
                    self.session = onnx_session(content_path, config.threads)
                    self.content_table = self._content_table()
                else:  # a bundle from before the content form: the full model
                    self.session = onnx_session(onnx_path, config.threads)
            except ImportError:  # onnxruntime missing: the declared fallback is PyTorch
                self.session = None
                self.content_table = None

    def _content_table(self) -> F32:
        vt = self.videos
        v = np.arange(vt.n_videos, dtype=np.int64)
        table = ContentRanker(self.model).content_table(
            torch.from_numpy(np.ascontiguousarray(vt.video[v], dtype=np.int64)),
            torch.from_numpy(np.ascontiguousarray(vt.tags[v], dtype=np.int64)),
            torch.from_numpy(np.ascontiguousarray(vt.creator[v], dtype=np.int64)),
            torch.from_numpy(np.ascontiguousarray(vt.duration[v], dtype=np.int64)),
        )
        out: F32 = np.ascontiguousarray(table.numpy(), dtype=np.float32)
        return out

    @property
    def backend(self) -> str:
        return "onnx" if self.session is not None else "torch"

    @staticmethod
    def load(art: Path, backend: str | None = None, threads: int | None = None) -> Predictor:
        """Load the "ranker" component of bundle ``art``; ``backend`` and ``threads`` (ONNX
        Runtime intra-op threads) override the config's."""
        path = component_dir(art, COMPONENT)
        entry = read_manifest(art)["components"][COMPONENT]
        cfg = RankerConfig.model_validate(entry["config"])
        if backend is not None:
            cfg = cfg.model_copy(update={"backend": backend})
        if threads is not None:
            cfg = cfg.model_copy(update={"threads": threads})
        meta_path = path / META_FILE
        for name in (META_FILE, MODEL_FILE, VIDEOS_FILE, STATS_FILE):
            if not (path / name).is_file():
                raise BundleError(f"{path / name}: missing ranker file")
        meta = json.loads(meta_path.read_text())
        vocab = Vocab(**{**meta["vocab"], "n_profile": tuple(meta["vocab"]["n_profile"])})
        model = Ranker(cfg, vocab)
        model.load_state_dict(torch.load(path / MODEL_FILE, weights_only=True))
        onnx_path = path / ONNX_FILE
        return Predictor(
            cfg,
            model,
            VideoTable.load(path / VIDEOS_FILE),
            VideoStats.load(path / STATS_FILE),
            onnx_path if onnx_path.is_file() else None,
            meta.get("trained_sources"),
        )

    # ------------------------------------------------------------ features
    def _features(self, histories: Sequence[History], cands: Sequence[CandidateSet]) -> Arrays:
        cfg = self.config
        b = len(histories)
        length = cfg.history_len
        n_src = len(cfg.source_names)
        c = max(1, *(int(np.asarray(x.video_idx).shape[0]) for x in cands))
        hv = np.full((b, length), -1, np.int64)
        hwr = np.zeros((b, length), np.float32)
        hsk = np.zeros((b, length), np.float32)
        hlk = np.zeros((b, length), np.float32)
        gap = np.zeros((b, length), np.float32)
        n_hist = np.zeros(b, np.int64)
        pos = np.zeros(b, np.int64)
        in_sess = np.zeros(b, np.float32)
        skip_rate = np.zeros(b, np.float32)
        req = np.zeros(b, np.int64)
        prof = np.zeros((b, 3), np.int64)
        cv = np.full((b, c), -1, np.int64)
        src = np.zeros((b, c, n_src), np.float32)
        st = np.zeros((b, c, 4), np.float32)
        for i, (h, cs) in enumerate(zip(histories, cands, strict=True)):
            vid = np.asarray(h.video_idx, np.int64)
            n = vid.shape[0]
            arrays = (h.ts_us, h.watch_ratio, h.skipped, h.liked)
            if any(np.asarray(a).shape != (n,) for a in arrays):
                raise RankerDataError(f"history[{i}]: arrays must all have shape ({n},)")
            self.videos.check_idx(vid, f"history[{i}].video_idx")
            order = np.argsort(np.asarray(h.ts_us, np.int64), kind="stable")[-length:]
            k = order.shape[0]
            if k:
                hv[i, length - k :] = vid[order]
                hwr[i, length - k :] = np.asarray(h.watch_ratio, np.float32)[order]
                hsk[i, length - k :] = np.asarray(h.skipped, np.float32)[order]
                hlk[i, length - k :] = np.asarray(h.liked, np.float32)[order]
                gap[i, length - k :] = (h.request_us - np.asarray(h.ts_us, np.int64)[order]) / (
                    _US_PER_S
                )
                rw = min(cfg.recent_skip_window, k)
                skip_rate[i] = hsk[i, length - rw :].mean()
            n_hist[i] = k
            pos[i] = h.position
            req[i] = h.request_us
            if h.session_start_us is not None:
                in_sess[i] = (h.request_us - h.session_start_us) / _US_PER_S
            prof[i] = _profile(h.profile)
            cvid = np.asarray(cs.video_idx, np.int64)
            m = cvid.shape[0]
            self.videos.check_idx(cvid, f"candidates[{i}].video_idx")
            cv[i, :m] = cvid
            if cs.sources is not None:
                s_arr = np.asarray(cs.sources, np.float32)
                if s_arr.shape != (m, n_src):
                    raise RankerDataError(
                        f"candidates[{i}].sources: shape {s_arr.shape}, expected ({m}, {n_src})"
                    )
                src[i, :m] = s_arr if self.source_mask is None else s_arr * self.source_mask
            if cs.stats is not None:
                t_arr = np.asarray(cs.stats, np.float32)
                if t_arr.shape != (m, 4):
                    raise RankerDataError(
                        f"candidates[{i}].stats: shape {t_arr.shape}, expected ({m}, 4)"
                    )
                st[i, :m] = t_arr
            else:
                st[i, :m] = self._latest[cvid]
        table = self.content_table
        if table is not None:  # the content form: embeddings looked up, not computed
            mask = hv >= 0
            out = {
                "hist_content": table[hv],  # row -1 = padding
                "hist_action": history_actions(hwr, hsk, hlk, gap, mask, cfg),
                "hist_mask": mask,
            }
            out.update(context_features(n_hist, pos, in_sess, skip_rate, req, prof))
            out["cand_content"] = table[cv]
            out["cand_num"] = candidate_numeric(self.videos, cv, req, st, src)
            return out
        out = history_features(self.videos, hv, hwr, hsk, hlk, gap, cfg)
        out.update(context_features(n_hist, pos, in_sess, skip_rate, req, prof))
        out.update(candidate_features(self.videos, cv, req, st, src))
        return out

    def latest_stats(self, video_idx: npt.ArrayLike) -> F32:
        """(n, 4) statistics of ``video_idx`` (``-1``: padding, zeros) after every training
        event: ``stats.features(video_idx[None, :], [END_OF_TIME])[0]`` by table lookup."""
        idx = np.asarray(video_idx, np.int64)
        self.videos.check_idx(idx, "video_idx")
        out: F32 = self._latest[idx]
        return out

    # ------------------------------------------------------------ scoring
    def run(self, inputs: Arrays) -> tuple[F32, F32]:
        """Raw model call on prepared inputs -> ``(probs (B, C, K), final (B, C))``."""
        if self.session is not None:
            names = CONTENT_INPUT_NAMES if "cand_content" in inputs else INPUT_NAMES
            probs, final = self.session.run(None, {k: inputs[k] for k in names})
            return np.asarray(probs, np.float32), np.asarray(final, np.float32)
        if "cand_content" in inputs:
            raise RankerDataError("content-form inputs need the ONNX session")
        with torch.inference_mode():
            p, f = self.model(*to_torch(inputs))
        return p.numpy(), f.numpy()

    def score(self, history: History, candidates: CandidateSet) -> Scores:
        """Scores of one request's candidates (a candidate's score does not depend on the
        others)."""
        return self.score_batch([history], [candidates])[0]

    def score_batch(
        self, histories: Sequence[History], candidates: Sequence[CandidateSet], batch_size: int = 64
    ) -> list[Scores]:
        """Offline scoring of many requests, ``batch_size`` requests per model call."""
        if len(histories) != len(candidates):
            raise RankerDataError(
                f"score_batch: {len(histories)} histories but {len(candidates)} candidate sets"
            )
        out: list[Scores] = []
        for s in range(0, len(histories), batch_size):
            hs, cs = histories[s : s + batch_size], candidates[s : s + batch_size]
            probs, final = self.run(self._features(hs, cs))
            for i, c in enumerate(cs):
                m = int(np.asarray(c.video_idx).shape[0])
                heads = {t: probs[i, :m, k].copy() for k, t in enumerate(self.tasks)}
                out.append(Scores(final=final[i, :m].copy(), heads=heads))
        return out
