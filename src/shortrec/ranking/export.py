"""ONNX export of the ranker and its parity check against PyTorch.

The legacy TorchScript exporter fails on the fused Transformer encoder layer, so the
dynamo-based exporter (``torch.onnx.export(..., dynamo=True)``) is used, with dynamic batch,
history length (up to ``history_len``) and candidate count.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from shortrec.config import RankerConfig
from shortrec.ranking.batches import Arrays
from shortrec.ranking.model import (
    CONTENT_INPUT_NAMES,
    INPUT_NAMES,
    N_CAND_BASE,
    N_CONTEXT,
    OUTPUT_NAMES,
    Ranker,
)
from shortrec.ranking.serving_form import ServingRanker


def example_inputs(
    model: Ranker,
    config: RankerConfig,
    batch: int,
    history: int,
    candidates: int,
    rng: np.random.Generator,
) -> Arrays:
    """Random valid inputs of the given sizes (padding in the oldest history slots)."""
    v = model.vocab
    t = config.max_tags
    n_pad = min(history - 1, history // 5)
    mask = np.ones((batch, history), bool)
    mask[:, :n_pad] = False
    keep = mask.astype(np.int64)
    return {
        "hist_video": rng.integers(1, v.n_video_buckets + 1, (batch, history)) * keep,
        "hist_tags": rng.integers(0, v.n_tags + 1, (batch, history, t)) * keep[..., None],
        "hist_creator": rng.integers(1, v.n_creator_buckets + 1, (batch, history)) * keep,
        "hist_duration": rng.integers(1, v.n_duration_buckets + 1, (batch, history)) * keep,
        "hist_action": (rng.random((batch, history, 4)) * mask[..., None]).astype(np.float32),
        "hist_mask": mask,
        "ctx_num": rng.random((batch, N_CONTEXT)).astype(np.float32),
        "ctx_cat": np.stack([rng.integers(0, n + 1, batch) for n in v.n_profile], axis=1),
        "cand_video": rng.integers(1, v.n_video_buckets + 1, (batch, candidates)),
        "cand_tags": rng.integers(0, v.n_tags + 1, (batch, candidates, t)),
        "cand_creator": rng.integers(1, v.n_creator_buckets + 1, (batch, candidates)),
        "cand_duration": rng.integers(1, v.n_duration_buckets + 1, (batch, candidates)),
        "cand_num": rng.random((batch, candidates, N_CAND_BASE + len(config.source_names))).astype(
            np.float32
        ),
    }


def to_torch(inputs: Arrays) -> tuple[torch.Tensor, ...]:
    """Model inputs in :data:`INPUT_NAMES` order as tensors (no copy where possible)."""
    return tuple(torch.from_numpy(np.ascontiguousarray(inputs[k])) for k in INPUT_NAMES)


def content_inputs(model: Ranker, inputs: Arrays) -> Arrays:
    """:data:`CONTENT_INPUT_NAMES` inputs equivalent to the :data:`INPUT_NAMES` ``inputs``
    (content embeddings computed by the model's :class:`VideoContent`)."""
    with torch.inference_mode():
        model.eval()
        t = {k: torch.from_numpy(np.ascontiguousarray(inputs[k])) for k in INPUT_NAMES}
        hist = model.content(t["hist_video"], t["hist_tags"], t["hist_creator"], t["hist_duration"])
        cand = model.content(t["cand_video"], t["cand_tags"], t["cand_creator"], t["cand_duration"])
    return {
        "hist_content": hist.numpy(),
        "hist_action": inputs["hist_action"],
        "hist_mask": inputs["hist_mask"],
        "ctx_num": inputs["ctx_num"],
        "ctx_cat": inputs["ctx_cat"],
        "cand_content": cand.numpy(),
        "cand_num": inputs["cand_num"],
    }


def _export(
    module: torch.nn.Module,
    inputs: Arrays,
    names: tuple[str, ...],
    config: RankerConfig,
    path: Path,
) -> None:
    batch = torch.export.Dim("batch", min=1)
    hist = torch.export.Dim("history", min=1, max=config.history_len)
    cand = torch.export.Dim("candidates", min=1)
    dyn: list[dict[int, torch.export.Dim]] = []
    for name in names:
        if name.startswith("hist_"):
            dyn.append({0: batch, 1: hist})
        elif name.startswith("ctx_"):
            dyn.append({0: batch})
        else:
            dyn.append({0: batch, 1: cand})
    args = tuple(torch.from_numpy(np.ascontiguousarray(inputs[k])) for k in names)
    with warnings.catch_warnings():
        # the exporter warns about axis renaming and deprecations that do not affect the graph
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module,
            args,
            dynamo=True,
            input_names=list(names),
            output_names=list(OUTPUT_NAMES),
            dynamic_shapes=tuple(dyn),
            optimize=True,
            verbose=False,
        )
        if program is None:
            raise RuntimeError("torch.onnx.export returned no program")
        program.save(str(path))


def export_onnx(model: Ranker, config: RankerConfig, path: Path, seed: int = 0) -> None:
    """Export ``model`` (put in eval mode) to ``path`` with dynamic batch/history/candidates."""
    model.eval()
    ex = example_inputs(
        model, config, 2, max(2, config.history_len), 3, np.random.default_rng(seed)
    )
    _export(model, ex, INPUT_NAMES, config, path)


def export_content_onnx(model: Ranker, config: RankerConfig, path: Path, seed: int = 0) -> None:
    """Export the serving form of ``model`` (content embeddings in, inputs
    :data:`CONTENT_INPUT_NAMES`) to ``path``, as :class:`ServingRanker`: the function of
    :class:`ContentRanker` with the candidate-independent work folded out of the graph."""
    model.eval()
    ex = example_inputs(
        model, config, 2, max(2, config.history_len), 3, np.random.default_rng(seed)
    )
    _export(
        ServingRanker(model).eval(), content_inputs(model, ex), CONTENT_INPUT_NAMES, config, path
    )


def onnx_session(path: Path, threads: int) -> object:
    """An ONNX Runtime CPU session with ``threads`` intra-op threads and full optimisation."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def parity(
    model: Ranker,
    config: RankerConfig,
    path: Path,
    seed: int = 0,
    shapes: tuple[tuple[int, int, int], ...] = ((1, 50, 500), (3, 17, 7), (2, 1, 1)),
    content: bool = False,
) -> float:
    """Max abs difference between ONNX Runtime and PyTorch outputs (probs and final) over
    random inputs of the (batch, history, candidates) ``shapes`` (history capped at
    ``history_len``); ``content=True`` checks a :func:`export_content_onnx` file."""
    model.eval()
    sess = onnx_session(path, config.threads)
    rng = np.random.default_rng(seed)
    worst = 0.0
    for b, h, c in shapes:
        ex = example_inputs(model, config, b, max(1, min(h, config.history_len)), c, rng)
        with torch.inference_mode():
            ref = [t.numpy() for t in model(*to_torch(ex))]
        if content:  # the serving form: content embeddings in, the same outputs expected
            feeds = content_inputs(model, ex)
            got = sess.run(None, {k: feeds[k] for k in CONTENT_INPUT_NAMES})  # type: ignore[attr-defined]
        else:
            got = sess.run(None, {k: ex[k] for k in INPUT_NAMES})  # type: ignore[attr-defined]
        for r, g in zip(ref, got, strict=True):
            worst = max(worst, float(np.abs(np.asarray(g) - r).max()))
    return worst
