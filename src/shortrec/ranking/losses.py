"""Training losses: weighted multi-task BCE plus an intra-list diversity term.

``loss = sum_k w_k * BCE_k + lambda * D`` where, for one list with final scores ``s`` (C,),
valid mask and pairwise similarity ``S`` (C, C) with ``S_ii = 1``::

    p = softmax(s / tau)            over the valid items
    D = p^T S p = sum_ij p_i p_j S_ij

``D`` is the expected similarity of two items drawn independently (with replacement) from
``p``: it is 1 when all mass sits on one item (or on identical items) and falls as mass spreads
over mutually dissimilar items. Its gradient is
``dD/ds_k = (2 / tau) p_k ((S p)_k - D)``: an item whose expected similarity to the list is above
average is pushed down, below average pushed up, scaled by its own probability — so the term
reorders near-ties toward diverse lists and barely moves items far down the softmax. See
``docs/ranking.md``.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F


def weighted_bce(
    logits: Tensor, labels: Tensor, mask: Tensor, weights: Tensor
) -> tuple[Tensor, Tensor]:
    """Per-task masked BCE with logits, combined with ``weights``.

    ``logits``, ``labels`` (soft labels in [0, 1] allowed) and ``mask`` are (B, C, K);
    ``weights`` (K,). Returns ``(sum_k w_k * mean_k, per_task_means (K,))`` where ``mean_k``
    averages over entries with ``mask > 0`` (0 for a task with no labelled entry).
    """
    per = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")  # (B, C, K)
    num = (per * mask).sum(dim=(0, 1))  # (K,)
    den = mask.sum(dim=(0, 1))  # (K,)
    means = torch.where(den > 0, num / den.clamp(min=1.0), torch.zeros_like(num))  # (K,)
    return (means * weights).sum(), means


def tag_similarity(tags: Tensor) -> Tensor:
    """Jaccard similarity of tag sets: ``tags`` (B, C, T), 0 = padding -> (B, C, C).

    The diagonal is 1 (an item is identical to itself, tagged or not).
    """
    present = tags > 0  # (B, C, T)
    eq = tags.unsqueeze(2).unsqueeze(-1) == tags.unsqueeze(1).unsqueeze(-2)  # (B, C, C, T, T)
    eq = eq & present.unsqueeze(2).unsqueeze(-1)
    inter = eq.any(dim=-1).sum(dim=-1).to(torch.float32)  # (B, C, C)
    count = present.sum(dim=-1).to(torch.float32)  # (B, C)
    union = count.unsqueeze(2) + count.unsqueeze(1) - inter  # (B, C, C)
    sim = torch.where(union > 0, inter / union.clamp(min=1.0), torch.zeros_like(inter))
    eye = torch.eye(tags.shape[1], dtype=torch.bool, device=tags.device)
    return torch.where(eye, torch.ones_like(sim), sim)


def embedding_similarity(emb: Tensor) -> Tensor:
    """Cosine similarity clipped at 0 of (detached) content embeddings (B, C, d) -> (B, C, C)."""
    z = F.normalize(emb.detach(), dim=-1)
    return (z @ z.transpose(1, 2)).clamp(min=0.0)  # (B, C, C)


def intra_list_diversity(final: Tensor, sim: Tensor, valid: Tensor, tau: float) -> Tensor:
    """Mean over lists with >= 2 valid items of ``p^T S p``, ``p = softmax(final / tau)``.

    ``final`` (B, C), ``sim`` (B, C, C), ``valid`` (B, C) bool. Returns a scalar (0 when no list
    has two valid items).
    """
    logits = (final / tau).masked_fill(~valid, float("-inf"))  # (B, C)
    p = torch.softmax(logits, dim=-1)  # (B, C)
    p = torch.where(valid, p, torch.zeros_like(p))  # rows with no valid item softmax to NaN
    d = torch.einsum("bi,bij,bj->b", p, sim, p)  # (B,)
    use = valid.sum(dim=-1) >= 2  # (B,)
    if not bool(use.any()):
        return final.sum() * 0.0
    return d[use].mean()
