"""The folded serving graph (``ServingRanker``) computes the ranker's function: in PyTorch on
random weights and awkward histories, and after ONNX export; candidates stay independent."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from shortrec.config import RankerConfig
from shortrec.ranking.export import (
    content_inputs,
    example_inputs,
    export_content_onnx,
    onnx_session,
    parity,
    to_torch,
)
from shortrec.ranking.model import CONTENT_INPUT_NAMES, ContentRanker, Ranker, Vocab
from shortrec.ranking.serving_form import ServingRanker

VOCAB = Vocab(
    n_video_buckets=50, n_creator_buckets=10, n_tags=20, n_duration_buckets=9, n_profile=(8, 5, 3)
)
Arrays = dict[str, np.ndarray]


def _model(**kw: object) -> tuple[Ranker, RankerConfig]:
    """A ranker with random weights everywhere: biases and LayerNorm affines are perturbed off
    their initial 0 / 1 so that every folded term is exercised (embeddings keep their zero
    padding rows)."""
    base: dict[str, object] = {
        "history_len": 12,
        "d_model": 16,
        "n_heads": 2,
        "n_layers": 2,
        "head_hidden": 16,
    }
    cfg = RankerConfig(**{**base, **kw})
    torch.manual_seed(0)
    model = Ranker(cfg, VOCAB).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Embedding):
                continue
            for p in module.parameters(recurse=False):
                p.add_(0.2 * torch.randn_like(p))
    return model, cfg


def _inputs(model: Ranker, cfg: RankerConfig, history: int, candidates: int, seed: int) -> Arrays:
    """Four requests: a full history, a left-padded one, one with holes, and an empty one
    (only the context token is left to attend to)."""
    x = example_inputs(model, cfg, 4, history, candidates, np.random.default_rng(seed))
    mask = np.ones((4, history), bool)
    mask[1, : history // 2] = False
    mask[2, ::3] = False
    mask[3] = False
    x["hist_mask"] = mask
    x["hist_action"] = x["hist_action"] * mask[..., None]
    return x


def _serve(model: Ranker, x: Arrays) -> tuple[np.ndarray, np.ndarray]:
    cx = content_inputs(model, x)
    with torch.inference_mode():
        p, f = ServingRanker(model)(*(torch.from_numpy(cx[k]) for k in CONTENT_INPUT_NAMES))
    return p.numpy(), f.numpy()


def _reference(model: Ranker, x: Arrays) -> tuple[np.ndarray, np.ndarray]:
    with torch.inference_mode():
        p, f = model(*to_torch(x))
    return p.numpy(), f.numpy()


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"n_heads": 4},
        {"n_layers": 1, "tasks": ("engage",)},
        {"encoder": "mean"},
    ],
    ids=["default", "4-heads", "1-layer-1-task", "mean-encoder"],
)
@pytest.mark.parametrize(("history", "candidates"), [(12, 1), (12, 40), (5, 7)])
def test_serving_form_equals_the_ranker(
    kw: dict[str, object], history: int, candidates: int
) -> None:
    model, cfg = _model(**kw)
    x = _inputs(model, cfg, history, candidates, seed=history + candidates)
    want, got = _reference(model, x), _serve(model, x)
    for w, g in zip(want, got, strict=True):
        assert np.all(np.isfinite(g))
        np.testing.assert_allclose(g, w, rtol=0, atol=1e-5)
    # the test can fail: the scores do depend on the history
    assert np.abs(want[1][0] - want[1][3]).max() > 1e-4


@pytest.mark.parametrize("encoder", ["transformer", "mean"])
def test_padding_is_never_attended(encoder: str) -> None:
    model, cfg = _model(encoder=encoder)
    x = _inputs(model, cfg, 12, 6, seed=3)
    cx = content_inputs(model, x)
    y = {k: v.copy() for k, v in cx.items()}
    rng = np.random.default_rng(4)
    pad = ~x["hist_mask"]
    # garbage in every padded slot, the empty history's included
    y["hist_content"][pad] = rng.normal(0, 5, (int(pad.sum()), cfg.d_model))
    y["hist_action"][pad] = 9.0
    serve = ServingRanker(model)
    with torch.inference_mode():
        base = serve(*(torch.from_numpy(cx[k]) for k in CONTENT_INPUT_NAMES))
        other = serve(*(torch.from_numpy(y[k]) for k in CONTENT_INPUT_NAMES))
    for b, o in zip(base, other, strict=True):
        torch.testing.assert_close(o, b, rtol=0, atol=1e-6)


def test_candidate_scores_do_not_depend_on_the_other_candidates_or_requests() -> None:
    model, cfg = _model()
    x = _inputs(model, cfg, 12, 30, seed=5)
    _, full = _serve(model, x)
    sub = np.random.default_rng(6).permutation(30)[:7]
    part = {k: (v[:, sub] if k.startswith("cand_") else v) for k, v in x.items()}
    _, got = _serve(model, part)
    np.testing.assert_allclose(got, full[:, sub], rtol=0, atol=1e-6)
    for i in range(4):  # each request alone scores as it does in the batch
        one = {k: v[i : i + 1] for k, v in x.items()}
        np.testing.assert_allclose(_serve(model, one)[1][0], full[i], rtol=0, atol=1e-6)


def test_content_table_is_inherited() -> None:
    model, cfg = _model()
    rng = np.random.default_rng(7)
    video = torch.from_numpy(rng.integers(1, VOCAB.n_video_buckets + 1, 9))
    tags = torch.from_numpy(rng.integers(0, VOCAB.n_tags + 1, (9, cfg.max_tags)))
    creator = torch.from_numpy(rng.integers(1, VOCAB.n_creator_buckets + 1, 9))
    duration = torch.from_numpy(rng.integers(1, VOCAB.n_duration_buckets + 1, 9))
    torch.testing.assert_close(
        ServingRanker(model).content_table(video, tags, creator, duration),
        ContentRanker(model).content_table(video, tags, creator, duration),
    )


@pytest.mark.parametrize("encoder", ["transformer", "mean"])
def test_exported_serving_graph_matches_the_ranker(encoder: str, tmp_path: Path) -> None:
    model, cfg = _model(encoder=encoder)
    path = tmp_path / "model_content.onnx"
    export_content_onnx(model, cfg, path)
    shapes = ((1, 12, 500), (3, 7, 9), (2, 1, 1))
    assert parity(model, cfg, path, shapes=shapes, content=True) < 1e-4
    # padded, holed and empty histories in one batch (parity's inputs only pad the oldest)
    x = _inputs(model, cfg, 12, 25, seed=8)
    cx = content_inputs(model, x)
    sess = onnx_session(path, 1)
    got = sess.run(None, {k: cx[k] for k in CONTENT_INPUT_NAMES})  # type: ignore[attr-defined]
    for w, g in zip(_reference(model, x), got, strict=True):
        assert np.all(np.isfinite(g))
        np.testing.assert_allclose(g, w, rtol=0, atol=1e-4)
