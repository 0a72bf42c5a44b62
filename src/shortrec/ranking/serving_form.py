"""The exported serving graph: :class:`ContentRanker`'s function, rewritten for ONNX Runtime.

:class:`ServingRanker` computes exactly what a trained :class:`Ranker` computes from content
embeddings (same inputs :data:`CONTENT_INPUT_NAMES`, same outputs, up to float rounding), but
with the weights folded, once, into matrices that make the per-candidate work a few plain
matmuls. Per request the history encoder runs once; per candidate (hundreds of them) the
graph of ``nn.MultiheadAttention`` + ``Linear(4d -> h)`` + ``K`` task heads carried node
overhead (transposes, reshapes, concats) and work that does not depend on the candidate.
The folds, all exact algebra:

* attention, per head ``h`` with ``W*_h`` the head's rows of the in-projection: the score
  ``(q Wq_h^T + bq_h) . (x Wk_h^T + bk_h) / sqrt(d_h)`` is the bilinear form
  ``q QK_h x^T + kb_h . x`` (``QK_h = Wq_h^T Wk_h / sqrt(d_h)``, ``kb_h = bq_h Wk_h / sqrt(d_h)``)
  plus terms constant over the keys, which softmax drops; the output
  ``sum_h P_h (x Wv_h^T + bv_h) Wo_h^T + bo`` is ``sum_h P_h x VO_h + ob``
  (``VO_h = Wv_h^T Wo_h^T``, ``ob = bo + Wo bv``, since each ``P_h`` row sums to 1). For the
  target attention, the per-request matrices ``keys = [QK_h x^T]_h`` (d, H*M) and
  ``values = [x VO_h]_h`` (H*M, d) leave each candidate two matmuls and one softmax;
* the key padding mask becomes an additive ``-inf`` bias; memory slot 0 (the context token) is
  never padding, so every softmax row keeps a finite entry and nothing turns NaN;
* ``Linear(4d -> h)`` over ``[q, a, q*a, ctx]`` is split into its four column blocks, the ctx
  block (with the bias) computed once per request, so no (C, 4d) concat is built;
* the ``K`` task heads become one ``d -> K*h`` matmul, one GELU (exact erf, as trained) and one
  block-diagonal ``K*h -> K`` matmul;
* the pre-norm Transformer encoder layers use the same attention folds, arranged so that no
  transpose of the per-head activations is needed (see :class:`FoldedEncoderLayer`).

Folding happens in float64 at construction, so :class:`ServingRanker` is a snapshot of the
ranker's weights at that moment, for inference only (no dropout). ``encoder="mean"`` keeps
the ranker's own history encoder; the candidate side is folded the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shortrec.ranking.model import ContentRanker, Ranker, TaskHead


def _buffer(module: nn.Module, name: str, value: Tensor) -> None:
    """Register a folded float64 weight as a float32, non-persistent buffer."""
    module.register_buffer(name, value.to(torch.float32).contiguous(), persistent=False)


def fold_attention(mha: nn.MultiheadAttention) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The per-head bilinear forms of ``mha`` (float64; see the module docstring).

    Returns ``(qk (H, d, d), key_bias (H, d), vo (H, d, d), out_bias (d,))`` such that, for a
    query ``q`` and keys = values ``x_n``, head ``h``'s score is
    ``q qk_h x_n^T + key_bias_h . x_n`` up to a term constant in ``n`` (scaling included) and
    the output is ``sum_h sum_n p_h(n) x_n vo_h + out_bias``.
    """
    if mha.in_proj_weight is None or mha.in_proj_bias is None:
        raise ValueError("fold_attention needs a packed in-projection with bias")
    d, n_heads = mha.embed_dim, mha.num_heads
    dh = d // n_heads
    w_q, w_k, w_v = mha.in_proj_weight.detach().double().chunk(3)  # (d, d) each, (out, in)
    # b_k only adds q . b_k_h to every key's score: constant over the keys, dropped
    b_q, _b_k, b_v = mha.in_proj_bias.detach().double().chunk(3)  # (d,) each
    w_o = mha.out_proj.weight.detach().double()  # (d, d)
    b_o = mha.out_proj.bias.detach().double()  # (d,)
    scale = dh**-0.5
    wq_h = w_q.view(n_heads, dh, d)  # (H, dh, d)
    wk_h = w_k.view(n_heads, dh, d)  # (H, dh, d)
    wv_h = w_v.view(n_heads, dh, d)  # (H, dh, d)
    wo_h = w_o.view(d, n_heads, dh).permute(1, 2, 0)  # (H, dh, d): Wo_h^T
    qk = scale * wq_h.transpose(1, 2) @ wk_h  # (H, d, d)
    key_bias = scale * (b_q.view(n_heads, 1, dh) @ wk_h).squeeze(1)  # (H, d)
    vo = wv_h.transpose(1, 2) @ wo_h  # (H, d, d)
    return qk, key_bias, vo, b_o + w_o @ b_v


def key_padding_bias(pad: Tensor) -> Tensor:
    """Key padding mask ``(B, M)`` (True = not attended) -> additive bias ``(B, M)``: 0 or -inf."""
    return torch.where(pad, float("-inf"), 0.0)


class FoldedTargetAttention(nn.Module):
    """``nn.MultiheadAttention(query, memory, memory)`` with the projections folded into
    per-request keys and values: ``query (B, C, d)`` -> ``attended (B, C, d)``."""

    key_maps: Tensor
    key_bias_map: Tensor
    value_maps: Tensor
    out_bias: Tensor

    def __init__(self, mha: nn.MultiheadAttention) -> None:
        super().__init__()
        qk, key_bias, vo, out_bias = fold_attention(mha)
        _buffer(self, "key_maps", qk)  # (H, d, d): keys_h = qk_h x^T
        _buffer(self, "key_bias_map", key_bias)  # (H, d)
        _buffer(self, "value_maps", vo)  # (H, d, d): values_h = x vo_h
        _buffer(self, "out_bias", out_bias)  # (d,)

    def forward(self, query: Tensor, memory: Tensor, key_bias: Tensor) -> Tensor:
        """``query (B, C, d)``, ``memory (B, M, d)``, ``key_bias (B, M)`` from
        :func:`key_padding_bias` -> ``(B, C, d)``."""
        b, m, _d = memory.shape
        heads = self.key_maps.shape[0]
        # once per request; concatenating per-head results avoids permuting head axes
        memory_t = memory.transpose(1, 2)  # (B, d, M)
        keys = torch.cat([qk @ memory_t for qk in self.key_maps], dim=-1)  # (B, d, H*M)
        values = torch.cat([memory @ vo for vo in self.value_maps], dim=1)  # (B, H*M, d)
        bias = self.key_bias_map @ memory_t + key_bias.unsqueeze(1)  # (B, H, M)
        bias = bias.view(b, 1, heads * m)  # (B, 1, H*M)
        # per candidate: one softmax per head, the heads' outputs summed by the second matmul
        c = query.shape[1]
        scores = (query @ keys + bias).view(b, c, heads, m)  # (B, C, H, M)
        weights = torch.softmax(scores, dim=-1).view(b, c, heads * m)  # (B, C, H*M)
        out: Tensor = weights @ values + self.out_bias  # (B, C, d)
        return out


class FoldedEncoderLayer(nn.Module):
    """A pre-norm ``nn.TransformerEncoderLayer`` (GELU) with its self-attention folded:
    ``tokens (B, M, d)``, ``key_bias (B, M)`` -> ``(B, M, d)``.

    Scores come from ``(x @ [qk_h]_h)`` viewed as ``(B, M*H, d)`` times ``x^T``, so each
    (token, head) row is softmaxed in place; the value side multiplies the weights by ``x``
    first and applies ``[vo_h]_h`` stacked ``(H*d, d)`` last, which sums the heads. No per-head
    activation is ever transposed.
    """

    score_map: Tensor
    key_bias_map: Tensor
    value_map: Tensor
    out_bias: Tensor

    def __init__(self, layer: nn.TransformerEncoderLayer) -> None:
        super().__init__()
        if not layer.norm_first or layer.activation_relu_or_gelu != 2:
            raise ValueError("FoldedEncoderLayer needs a pre-norm (norm_first) GELU layer")
        qk, key_bias, vo, out_bias = fold_attention(layer.self_attn)
        self.n_heads, d = layer.self_attn.num_heads, layer.self_attn.embed_dim
        # x @ score_map = [x qk_h]_h: column h*d + i is (x qk_h)_i
        _buffer(self, "score_map", qk.permute(1, 0, 2).reshape(d, -1))  # (d, H*d)
        _buffer(self, "key_bias_map", key_bias)  # (H, d)
        _buffer(self, "value_map", vo.reshape(-1, d))  # (H*d, d)
        _buffer(self, "out_bias", out_bias)  # (d,)
        self.norm1, self.norm2 = layer.norm1, layer.norm2
        self.linear1, self.linear2 = layer.linear1, layer.linear2

    def forward(self, tokens: Tensor, key_bias: Tensor) -> Tensor:
        b, m, d = tokens.shape
        heads = self.n_heads
        x = self.norm1(tokens)  # (B, M, d)
        x_t = x.transpose(1, 2)  # (B, d, M)
        scores = (x @ self.score_map).view(b, m * heads, d) @ x_t  # (B, M*H, M)
        bias = self.key_bias_map @ x_t + key_bias.unsqueeze(1)  # (B, H, M)
        scores = scores.view(b, m, heads, m) + bias.unsqueeze(1)  # (B, M, H, M)
        weights = torch.softmax(scores, dim=-1).view(b, m * heads, m)  # (B, M*H, M)
        mixed = (weights @ x).view(b, m, heads * d)  # (B, M, H*d)
        tokens = tokens + mixed @ self.value_map + self.out_bias  # (B, M, d)
        ff: Tensor = self.linear2(F.gelu(self.linear1(self.norm2(tokens))))  # (B, M, d)
        return tokens + ff


class FoldedScorer(nn.Module):
    """``shared`` + task heads + ``Ranker.combine``: ``query``, ``attended`` ``(B, C, d)`` and
    ``context (B, d)`` -> ``(probs (B, C, K), final (B, C))``."""

    w_query: Tensor
    w_attended: Tensor
    w_product: Tensor
    w_context: Tensor
    b_shared: Tensor
    w_hidden: Tensor
    b_hidden: Tensor
    w_logit: Tensor
    b_logit: Tensor
    score_weights: Tensor

    def __init__(
        self,
        shared: nn.Linear,
        heads: Sequence[tuple[nn.Linear, nn.Linear]],
        score_weights: Tensor,
    ) -> None:
        """``heads``: each task's (first, second) layer, in the order of ``score_weights``."""
        super().__init__()
        blocks = shared.weight.detach().T.chunk(4)  # 4 x (d, h): rows of [q, a, q*a, ctx]
        names = ("w_query", "w_attended", "w_product", "w_context")
        for name, w in zip(names, blocks, strict=True):
            _buffer(self, name, w)
        _buffer(self, "b_shared", shared.bias.detach())  # (h,)
        firsts = [first for first, _ in heads]  # K x Linear(h, h)
        seconds = [second for _, second in heads]  # K x Linear(h, 1)
        _buffer(self, "w_hidden", torch.cat([f.weight.detach().T for f in firsts], 1))  # (h, K*h)
        _buffer(self, "b_hidden", torch.cat([f.bias.detach() for f in firsts]))  # (K*h,)
        # block k maps head k's hidden units to logit k
        w_logit: Tensor = torch.block_diag(  # type: ignore[no-untyped-call]
            *(s.weight.detach().T for s in seconds)
        )  # (K*h, K)
        _buffer(self, "w_logit", w_logit)
        _buffer(self, "b_logit", torch.cat([s.bias.detach() for s in seconds]))  # (K,)
        _buffer(self, "score_weights", score_weights.detach())  # (K,)

    def forward(self, query: Tensor, attended: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:
        ctx = (context @ self.w_context + self.b_shared).unsqueeze(1)  # (B, 1, h) per request
        pre = (
            query @ self.w_query
            + attended @ self.w_attended
            + (query * attended) @ self.w_product
            + ctx
        )  # (B, C, h)
        hidden = F.gelu(F.gelu(pre) @ self.w_hidden + self.b_hidden)  # (B, C, K*h)
        probs = torch.sigmoid(hidden @ self.w_logit + self.b_logit)  # (B, C, K)
        # a Mul + ReduceSum: ORT runs a (C, K) x (K,) MatMul far slower
        return probs, (probs * self.score_weights).sum(dim=-1)  # (B, C)


def _linear(module: nn.Module) -> nn.Linear:
    """``module``, checked to be the ``nn.Linear`` a fold expects."""
    if not isinstance(module, nn.Linear):
        raise TypeError(f"expected nn.Linear, got {type(module).__name__}")
    return module


class ServingRanker(ContentRanker):
    """The graph exported as ``model_content.onnx``: :class:`ContentRanker`'s inputs and
    outputs, with the folds of this module (a snapshot of ``ranker``'s weights, inference only).
    """

    def __init__(self, ranker: Ranker) -> None:
        super().__init__(ranker)
        encoder = ranker.history.encoder
        self.layers: nn.ModuleList | None = None
        if encoder is not None:
            self.layers = nn.ModuleList()
            for layer in encoder.layers:
                if not isinstance(layer, nn.TransformerEncoderLayer):
                    raise TypeError(f"expected nn.TransformerEncoderLayer, got {type(layer)}")
                self.layers.append(FoldedEncoderLayer(layer))
        self.target = FoldedTargetAttention(ranker.target_attention)
        heads = []
        for task in ranker.tasks:
            head = ranker.heads[task]
            if not isinstance(head, TaskHead):
                raise TypeError(f"head {task!r}: expected TaskHead")
            heads.append((_linear(head.net[0]), _linear(head.net[3])))
        self.scorer = FoldedScorer(_linear(ranker.shared[0]), heads, ranker.score_weights)

    def encode(
        self, content: Tensor, action: Tensor, mask: Tensor, ctx_num: Tensor, ctx_cat: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """History -> ``(memory (B, M, d), key_bias (B, M), context (B, d))``, as
        ``HistoryEncoder.forward`` with the padding mask as an additive bias."""
        history = self.ranker.history
        if self.layers is None:  # the mean-pooling ablation: nothing to fold
            memory, pad, context = history(content, action, mask, ctx_num, ctx_cat)
            return memory, key_padding_bias(pad), context
        hist, ctx = history.embed(content, action, mask, ctx_num, ctx_cat)
        tokens = torch.cat([ctx.unsqueeze(1), hist], dim=1)  # (B, 1+L, d)
        key_bias = F.pad(key_padding_bias(~mask), (1, 0))  # (B, 1+L): the context token is real
        for layer in self.layers:
            tokens = layer(tokens, key_bias)  # (B, 1+L, d)
        memory = history.norm(tokens)  # (B, 1+L, d)
        return memory, key_bias, memory[:, 0]

    def forward(
        self,
        hist_content: Tensor,
        hist_action: Tensor,
        hist_mask: Tensor,
        ctx_num: Tensor,
        ctx_cat: Tensor,
        cand_content: Tensor,
        cand_num: Tensor,
    ) -> tuple[Tensor, Tensor]:
        """:data:`CONTENT_INPUT_NAMES` -> ``(probs (B, C, K), final (B, C))``."""
        memory, key_bias, context = self.encode(
            hist_content, hist_action, hist_mask, ctx_num, ctx_cat
        )
        query = cand_content + self.ranker.cand_num(cand_num)  # (B, C, d)
        attended = self.target(query, memory, key_bias)  # (B, C, d)
        out: tuple[Tensor, Tensor] = self.scorer(query, attended, context)
        return out
