"""Training loop of the ranker: lists -> multi-task model -> "ranker" bundle component.

``train_ranker`` is deterministic for a given ``seed`` (numpy generator + torch seed, fixed
thread count), early-stops on validation NDCG@``eval_k`` and keeps the best checkpoint, then
exports ONNX and checks its parity with PyTorch before the component is published. Ablations and
sweeps are config switches (``encoder``, ``tasks``, ``diversity_lambda``).
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl
import torch

from shortrec import schema as S
from shortrec.artifacts import write_component
from shortrec.config import RankerConfig
from shortrec.ranking.batches import (
    LABELS,
    Lists,
    RankerDataError,
    VideoStats,
    VideoTable,
    batch_inputs,
    build_lists,
    event_labels,
)
from shortrec.ranking.export import export_content_onnx, export_onnx, parity, to_torch
from shortrec.ranking.losses import (
    embedding_similarity,
    intra_list_diversity,
    tag_similarity,
    weighted_bce,
)
from shortrec.ranking.metrics import auc, ndcg_at_k
from shortrec.ranking.model import Ranker, Vocab
from shortrec.ranking.predictor import (
    CONTENT_ONNX_FILE,
    META_FILE,
    MODEL_FILE,
    ONNX_FILE,
    STATS_FILE,
    VIDEOS_FILE,
)

CHECKPOINT_FILE = "checkpoint.pt"


class _Bar:
    """A rich progress bar when enabled, otherwise a no-op with the same calls."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._p: Any = None

    @contextlib.contextmanager
    def open(self) -> Iterator[_Bar]:
        if not self.enabled:
            yield self
            return
        from rich.progress import Progress

        with Progress(transient=False) as p:
            self._p = p
            yield self

    def task(self, text: str, total: int) -> Any:
        return self._p.add_task(text, total=total) if self._p is not None else None

    def advance(self, task: Any, text: str | None = None) -> None:
        if self._p is not None:
            self._p.update(task, advance=1, description=text)


def _tensors(
    lists: Lists,
    vt: VideoTable,
    stats: VideoStats,
    config: RankerConfig,
) -> tuple[tuple[torch.Tensor, ...], torch.Tensor, torch.Tensor]:
    """Model inputs, labels and label mask for a batch, trimmed to its longest list."""
    c = max(1, int((lists.cand >= 0).sum(axis=1).max()))
    trimmed = Lists(
        lists.ev_video,
        lists.ev_ts,
        lists.ev_wr,
        lists.ev_skipped,
        lists.ev_liked,
        lists.hist_idx,
        lists.request_us,
        lists.rank,
        lists.ctx_num,
        lists.ctx_cat,
        lists.cand[:, :c],
        lists.sources[:, :c],
        lists.labels[:, :c],
        lists.label_mask[:, :c],
        lists.split,
    )
    inputs = batch_inputs(trimmed, vt, stats, config)
    task_cols = [LABELS.index(t) for t in config.tasks]
    labels = torch.from_numpy(np.ascontiguousarray(trimmed.labels[..., task_cols]))
    mask = torch.from_numpy(np.ascontiguousarray(trimmed.label_mask[..., task_cols]))
    return to_torch(inputs), labels, mask


def evaluate(
    model: Ranker,
    lists: Lists,
    vt: VideoTable,
    stats: VideoStats,
    config: RankerConfig,
    batch_size: int = 256,
) -> dict[str, float]:
    """Validation metrics: NDCG@k of the final score against graded gains
    ``engage + complete + like`` per list, and per-task AUC over all valid candidates."""
    model.eval()
    finals, probs = [], []
    with torch.inference_mode():
        for s in range(0, lists.n_lists, batch_size):
            rows = np.arange(s, min(s + batch_size, lists.n_lists))
            part = lists.select(rows)
            inputs, _, _ = _tensors(part, vt, stats, config)
            p, f = model(*inputs)
            pad = lists.cand.shape[1] - f.shape[1]
            finals.append(np.pad(f.numpy(), ((0, 0), (0, pad))))
            probs.append(np.pad(p.numpy(), ((0, 0), (0, pad), (0, 0))))
    final = np.concatenate(finals)
    prob = np.concatenate(probs)
    valid = lists.cand >= 0
    gains = (lists.labels[..., :3] * lists.label_mask[..., :3]).sum(axis=-1)
    out = {f"ndcg@{config.eval_k}": ndcg_at_k(final, gains, valid, config.eval_k)}
    for k, t in enumerate(config.tasks):
        col = LABELS.index(t)
        m = valid & (lists.label_mask[..., col] > 0)
        out[f"auc_{t}"] = auc(prob[..., k][m], lists.labels[..., col][m])
    out["auc_final_engage"] = auc(
        final[valid & (lists.label_mask[..., 0] > 0)],
        lists.labels[..., 0][valid & (lists.label_mask[..., 0] > 0)],
    )
    return out


def _split(
    lists: Lists,
    config: RankerConfig,
    rng: np.random.Generator,
) -> tuple[Lists, Lists]:
    train = np.flatnonzero(lists.split == S.TRAIN)
    valid = np.flatnonzero(lists.split == S.VALID)
    if train.size == 0:
        raise RankerDataError(f"events.{S.SPLIT}: no '{S.TRAIN}' rows to train on")
    if valid.size == 0:
        # no validation split given: hold out the latest 10% of training requests in time
        order = train[np.argsort(lists.request_us[train], kind="stable")]
        cut = max(1, int(0.9 * order.size))
        train, valid = order[:cut], order[cut:]
        if valid.size == 0:
            raise RankerDataError("events: too few requests to hold out a validation set")
    if config.max_train_lists is not None and train.size > config.max_train_lists:
        train = np.sort(rng.choice(train, config.max_train_lists, replace=False))
    if valid.size > config.max_valid_lists:
        valid = np.sort(rng.choice(valid, config.max_valid_lists, replace=False))
    return lists.select(train), lists.select(valid)


def _vocab(vt: VideoTable) -> Vocab:
    return Vocab(
        n_video_buckets=vt.n_video_buckets,
        n_creator_buckets=vt.n_creator_buckets,
        n_tags=vt.n_tags,
        n_duration_buckets=vt.n_duration_buckets,
        n_profile=(len(S.REGIONS), len(S.AGE_BUCKETS), len(S.DEVICES)),
    )


def trained_sources(sources: npt.NDArray[np.float32], config: RankerConfig) -> list[str]:
    """The ``config.source_names`` whose flag is set on some training candidate (``sources``
    (lists, C, S)). The logs name the logging policy's sources, not retrieval's, so some
    flags are never set in training; their input weights stay at their random
    initialisation, and :class:`Predictor` must not feed them (see ``trained_sources``
    there)."""
    flags = np.asarray(sources).reshape(-1, len(config.source_names))  # (lists * C, S)
    return [n for j, n in enumerate(config.source_names) if bool(flags[:, j].any())]


def fit_model(
    events: pl.DataFrame,
    videos: pl.DataFrame,
    config: RankerConfig,
    seed: int,
    progress: bool = False,
    users: pl.DataFrame | None = None,
    checkpoint_dir: Path | None = None,
) -> tuple[Ranker, VideoTable, VideoStats, dict[str, Any]]:
    """Train a ranker in memory; returns ``(model, videos, stats, metrics)``.

    ``events`` has the ``schema.EVENTS`` columns plus ``split`` (``loo_split`` and extra columns
    are ignored); ``videos`` is ``schema.VIDEOS``; ``users`` (optional) ``schema.USERS``.
    """
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(config.threads)
    vt = VideoTable.from_frame(videos, config)
    lists = build_lists(events, vt, config, rng, users)
    labels, mask = event_labels(events, config)
    stats = VideoStats.build(events, labels, mask, config.stats_prior)
    train, valid = _split(lists, config, rng)
    model = Ranker(config, _vocab(vt))
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    weights = torch.tensor([config.loss_weights.get(t, 0.0) for t in config.tasks])
    key = f"ndcg@{config.eval_k}"
    best: dict[str, float] = {key: -math.inf}
    best_state = copy.deepcopy(model.state_dict())
    best_epoch, stale, history = -1, 0, []
    bar = _Bar(progress)
    n_batches = math.ceil(train.n_lists / config.batch_size)
    with bar.open():
        epochs = bar.task("ranker epochs", config.max_epochs)
        for epoch in range(config.max_epochs):
            model.train()
            perm = rng.permutation(train.n_lists)
            steps = bar.task(f"epoch {epoch}", n_batches)
            total = 0.0
            for s in range(0, train.n_lists, config.batch_size):
                inputs, y, m = _tensors(
                    train.select(perm[s : s + config.batch_size]), vt, stats, config
                )
                encoded = model.encode(*inputs[:8])
                logits = model.score(encoded, *inputs[8:])
                _, final = model.combine(logits)
                loss, _ = weighted_bce(logits, y, m, weights)
                if config.diversity_lambda > 0:
                    valid_c = inputs[8] > 0
                    sim = (
                        tag_similarity(inputs[9])
                        if config.diversity_similarity == "tags"
                        else embedding_similarity(model.candidate_content(*inputs[8:12]))
                    )
                    loss = loss + config.diversity_lambda * intra_list_diversity(
                        final, sim, valid_c, config.diversity_tau
                    )
                opt.zero_grad(set_to_none=True)
                loss.backward()  # type: ignore[no-untyped-call]
                torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
                opt.step()
                total += float(loss.detach())
                bar.advance(steps)
            metrics = evaluate(model, valid, vt, stats, config)
            metrics["train_loss"] = total / max(n_batches, 1)
            history.append({"epoch": epoch, **metrics})
            bar.advance(epochs, f"ranker epochs ({key} {metrics[key]:.4f})")
            score = metrics[key] if not math.isnan(metrics[key]) else -math.inf
            if score > best[key]:
                best, best_epoch, stale = metrics, epoch, 0
                best_state = copy.deepcopy(model.state_dict())
                if checkpoint_dir is not None:
                    torch.save(
                        {
                            "epoch": epoch,
                            "model": best_state,
                            "optimizer": opt.state_dict(),
                            "metrics": metrics,
                        },
                        checkpoint_dir / CHECKPOINT_FILE,
                    )
            else:
                stale += 1
                if stale >= config.patience:
                    break
    model.load_state_dict(best_state)
    model.eval()
    out: dict[str, Any] = {
        **{f"valid_{k}": v for k, v in best.items()},
        "trained_sources": trained_sources(lists.sources, config),
        "best_epoch": best_epoch,
        "epochs_run": len(history),
        "history": history,
        "n_train_lists": train.n_lists,
        "n_valid_lists": valid.n_lists,
        "train_seconds": round(time.perf_counter() - t0, 3),
    }
    return model, vt, stats, out


def train_ranker(
    events: pl.DataFrame,
    videos: pl.DataFrame,
    config: RankerConfig,
    art: Path,
    data_fingerprint: str,
    seed: int = 0,
    progress: bool = False,
    users: pl.DataFrame | None = None,
) -> dict[str, Any]:
    """Train, export and publish the "ranker" component of bundle ``art``; returns metrics.

    Files: ``model.pt`` (state dict), ``model.onnx`` and ``model_content.onnx`` (the serving
    form, see :class:`ServingRanker`; both when ``export_onnx``), ``videos.npz``,
    ``stats.npz``, ``meta.json``, ``checkpoint.pt`` (best epoch with optimizer state). Raises
    ``RuntimeError`` if the ONNX outputs differ from PyTorch by more than ``parity_tol``.
    """
    with write_component(Path(art), "ranker", config, data_fingerprint) as (path, info):
        model, vt, stats, metrics = fit_model(
            events, videos, config, seed, progress, users, checkpoint_dir=path
        )
        torch.save(model.state_dict(), path / MODEL_FILE)
        vt.save(path / VIDEOS_FILE)
        stats.save(path / STATS_FILE)
        v = model.vocab
        (path / META_FILE).write_text(
            json.dumps(
                {
                    "vocab": {
                        "n_video_buckets": v.n_video_buckets,
                        "n_creator_buckets": v.n_creator_buckets,
                        "n_tags": v.n_tags,
                        "n_duration_buckets": v.n_duration_buckets,
                        "n_profile": list(v.n_profile),
                    },
                    "tasks": list(config.tasks),
                    "trained_sources": metrics["trained_sources"],
                    "seed": seed,
                },
                indent=2,
            )
        )
        if config.export_onnx:
            export_onnx(model, config, path / ONNX_FILE, seed)
            err = parity(model, config, path / ONNX_FILE, seed)
            metrics["onnx_max_abs_error"] = err
            if err > config.parity_tol:
                raise RuntimeError(f"ONNX parity {err:.3g} exceeds tolerance {config.parity_tol}")
            # the serving form (content embeddings in), held to the same tolerance
            export_content_onnx(model, config, path / CONTENT_ONNX_FILE, seed)
            err = parity(model, config, path / CONTENT_ONNX_FILE, seed, content=True)
            metrics["onnx_content_max_abs_error"] = err
            if err > config.parity_tol:
                raise RuntimeError(
                    f"ONNX (content form) parity {err:.3g} exceeds tolerance {config.parity_tol}"
                )
        info["metrics"] = {k: v for k, v in metrics.items() if k != "history"}
    return metrics
