"""Model shapes, padding masks, batch invariance, and the losses (no data world needed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shortrec.config import RankerConfig
from shortrec.ranking.export import example_inputs, to_torch
from shortrec.ranking.losses import (
    embedding_similarity,
    intra_list_diversity,
    tag_similarity,
    weighted_bce,
)
from shortrec.ranking.model import INPUT_NAMES, Ranker, Vocab

VOCAB = Vocab(
    n_video_buckets=50, n_creator_buckets=10, n_tags=20, n_duration_buckets=9, n_profile=(8, 5, 3)
)


def _model(**kw: object) -> tuple[Ranker, RankerConfig]:
    cfg = RankerConfig(history_len=12, d_model=16, n_heads=2, n_layers=1, head_hidden=16, **kw)  # type: ignore[arg-type]
    torch.manual_seed(0)
    return Ranker(cfg, VOCAB).eval(), cfg


def _run(model: Ranker, x: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    with torch.inference_mode():
        p, f = model(*to_torch(x))
    return p.numpy(), f.numpy()


@pytest.mark.parametrize("encoder", ["transformer", "mean"])
def test_output_shapes_and_final_is_weighted_sum(encoder: str) -> None:
    model, cfg = _model(encoder=encoder)
    x = example_inputs(model, cfg, 3, 12, 7, np.random.default_rng(0))
    probs, final = _run(model, x)
    assert probs.shape == (3, 7, 4)
    assert final.shape == (3, 7)
    assert np.all((probs > 0) & (probs < 1))
    w = np.array([cfg.score_weights[t] for t in cfg.tasks], np.float32)
    np.testing.assert_allclose(final, (probs * w).sum(-1), rtol=1e-6)


def test_single_task_config_has_one_head() -> None:
    model, cfg = _model(tasks=("engage",))
    assert list(model.heads) == ["engage"]
    probs, final = _run(model, example_inputs(model, cfg, 2, 12, 5, np.random.default_rng(1)))
    assert probs.shape == (2, 5, 1)
    np.testing.assert_allclose(final, probs[..., 0] * cfg.score_weights["engage"], rtol=1e-6)


@pytest.mark.parametrize("encoder", ["transformer", "mean"])
def test_padding_is_never_attended(encoder: str) -> None:
    model, cfg = _model(encoder=encoder)
    rng = np.random.default_rng(2)
    x = example_inputs(model, cfg, 2, 12, 6, rng)
    x["hist_mask"][:, :5] = False  # five padded slots
    _, base = _run(model, x)
    y = {k: v.copy() for k, v in x.items()}
    # garbage in the padded slots (ids, tags, actions) must not change any score
    y["hist_video"][:, :5] = rng.integers(1, 50, (2, 5))
    y["hist_tags"][:, :5] = rng.integers(1, 20, (2, 5, cfg.max_tags))
    y["hist_creator"][:, :5] = 3
    y["hist_action"][:, :5] = 9.0
    _, other = _run(model, y)
    np.testing.assert_allclose(other, base, atol=1e-6)
    # while a real slot does change them (the test can fail)
    y["hist_video"][:, 8] = (x["hist_video"][:, 8] % 49) + 1
    y["hist_action"][:, 8] += 1.0
    _, changed = _run(model, y)
    assert np.abs(changed - base).max() > 1e-4


def test_fully_padded_history_gives_finite_scores() -> None:
    model, cfg = _model()
    x = example_inputs(model, cfg, 2, 12, 4, np.random.default_rng(3))
    x["hist_mask"][:] = False
    probs, final = _run(model, x)
    assert np.all(np.isfinite(probs)) and np.all(np.isfinite(final))


def test_candidate_scores_do_not_depend_on_the_other_candidates() -> None:
    model, cfg = _model()
    rng = np.random.default_rng(4)
    x = example_inputs(model, cfg, 1, 12, 40, rng)
    _, full = _run(model, x)
    perm = rng.permutation(40)
    sub = perm[:9]
    y = {k: (v[:, sub] if k.startswith("cand_") else v) for k, v in x.items()}
    _, part = _run(model, y)
    np.testing.assert_allclose(part[0], full[0, sub], atol=1e-5)
    one = {k: (v[:, sub[:1]] if k.startswith("cand_") else v) for k, v in x.items()}
    _, single = _run(model, one)
    np.testing.assert_allclose(single[0, 0], full[0, sub[0]], atol=1e-5)


def test_encode_once_then_score_equals_forward() -> None:
    model, cfg = _model()
    x = to_torch(example_inputs(model, cfg, 2, 12, 5, np.random.default_rng(5)))
    with torch.inference_mode():
        enc = model.encode(*x[:8])
        _, f1 = model.combine(model.score(enc, *x[8:]))
        _, f2 = model(*x)
    torch.testing.assert_close(f1, f2)
    assert len(INPUT_NAMES) == len(x)


def test_weighted_bce_matches_hand_computation_and_respects_mask() -> None:
    logits = torch.tensor([[[0.0, 2.0], [1.0, -1.0]]])  # (1, 2, 2)
    labels = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    mask = torch.tensor([[[1.0, 1.0], [1.0, 0.0]]])
    total, per = weighted_bce(logits, labels, mask, torch.tensor([1.0, 0.5]))
    t0 = (np.log(2.0) + np.log1p(np.exp(1.0))) / 2  # task 0: both entries
    t1 = np.log1p(np.exp(2.0))  # task 1: only the first entry is labelled
    np.testing.assert_allclose(per.numpy(), [t0, t1], rtol=1e-5)
    np.testing.assert_allclose(float(total), t0 + 0.5 * t1, rtol=1e-5)


def test_tag_similarity_is_jaccard() -> None:
    tags = torch.tensor([[[1, 2, 0], [2, 3, 0], [0, 0, 0]]])  # {1,2}, {2,3}, {}
    sim = tag_similarity(tags)[0].numpy()
    np.testing.assert_allclose(sim, [[1, 1 / 3, 0], [1 / 3, 1, 0], [0, 0, 1]], rtol=1e-6)
    emb = embedding_similarity(torch.tensor([[[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]]))[0]
    np.testing.assert_allclose(emb.numpy(), [[1, 0, 0], [0, 1, 0], [0, 0, 1]], atol=1e-6)


def test_diversity_loss_decreases_when_scores_move_toward_dissimilar_items() -> None:
    # items 0 and 1 are near-duplicates, item 2 is different
    sim = torch.tensor([[[1.0, 0.9, 0.0], [0.9, 1.0, 0.0], [0.0, 0.0, 1.0]]])
    valid = torch.ones(1, 3, dtype=torch.bool)
    scores = torch.tensor([[1.0, 0.9, 0.2]], requires_grad=True)
    d0 = intra_list_diversity(scores, sim, valid, tau=0.5)
    d0.backward()  # type: ignore[no-untyped-call]
    grad = scores.grad
    assert grad is not None
    # gradient descent raises the dissimilar item and lowers the duplicates
    assert grad[0, 2] < 0 < grad[0, 0]
    moved = torch.tensor([[1.0, 0.9, 0.9]])
    assert float(intra_list_diversity(moved, sim, valid, 0.5)) < float(d0.detach())
    # analytic gradient (2/tau) p_k ((S p)_k - D)
    p = torch.softmax(scores.detach() / 0.5, -1)[0]
    sp = sim[0] @ p
    expected = 2 / 0.5 * p * (sp - p @ sp)
    torch.testing.assert_close(grad[0], expected, rtol=1e-5, atol=1e-6)


def test_diversity_loss_ignores_padding_and_short_lists() -> None:
    sim = torch.eye(3).unsqueeze(0).repeat(2, 1, 1)
    valid = torch.tensor([[True, True, False], [True, False, False]])
    scores = torch.tensor([[0.0, 0.0, 50.0], [1.0, 2.0, 3.0]])
    # list 0: two equal items, p = (1/2, 1/2), D = 1/2; list 1 has one item and is skipped
    np.testing.assert_allclose(float(intra_list_diversity(scores, sim, valid, 1.0)), 0.5)
    none = intra_list_diversity(scores, sim, torch.zeros(2, 3, dtype=torch.bool), 1.0)
    assert float(none) == 0.0


def test_config_rejects_unknown_tasks() -> None:
    with pytest.raises(ValueError, match="tasks"):
        RankerConfig(tasks=("engage", "watch"))


def test_content_form_equals_the_full_model() -> None:
    """ContentRanker on content embeddings (looked up from its table) gives the full model's
    outputs, padding included."""
    from shortrec.ranking.export import content_inputs
    from shortrec.ranking.model import CONTENT_INPUT_NAMES, ContentRanker

    model, cfg = _model()
    x = example_inputs(model, cfg, 3, 12, 9, np.random.default_rng(3))
    with torch.inference_mode():
        want = model(*to_torch(x))
        cx = content_inputs(model, x)
        got = ContentRanker(model)(*(torch.from_numpy(cx[k]) for k in CONTENT_INPUT_NAMES))
    for w, g in zip(want, got, strict=True):
        torch.testing.assert_close(g, w, rtol=0, atol=1e-6)
    # the table reproduces the per-video content, and its last row is the zero padding row
    v, n = model.vocab, 20
    rng = np.random.default_rng(4)
    feats = [
        torch.from_numpy(rng.integers(1, v.n_video_buckets + 1, n)),
        torch.from_numpy(rng.integers(0, v.n_tags + 1, (n, cfg.max_tags))),
        torch.from_numpy(rng.integers(1, v.n_creator_buckets + 1, n)),
        torch.from_numpy(rng.integers(1, v.n_duration_buckets + 1, n)),
    ]
    table = ContentRanker(model).content_table(*feats, chunk=7)
    with torch.inference_mode():
        direct = model.content(*feats)
    assert table.shape == (n + 1, cfg.d_model)
    torch.testing.assert_close(table[:n], direct)
    assert not table[-1].any()
