"""The multi-task ranker: encode the history once, score candidates by target attention.

Shapes use ``B`` requests, ``L`` history steps, ``T`` tags per video, ``C`` candidates per
request, ``d`` the model width and ``K`` the enabled tasks. Index inputs are int64 with ``0``
meaning padding / unknown (feature builders add 1 to every real index, see ``batches.py``).

Forward pass, in named steps::

    tokens   = [context token; history tokens]                       (B, 1+L, d)
    memory   = TransformerEncoder(tokens, padding masked)            (B, 1+L, d)   once per request
    query    = content(candidate) + numeric(candidate)               (B, C, d)
    attended = MultiheadAttention(query, memory, memory)             (B, C, d)     target attention
    logits   = heads[task](MLP([query, attended, query*attended, context]))   (B, C, K)
    final    = sum_k w_k * sigmoid(logits_k)                         (B, C)

Candidates only ever act as queries, so a candidate's score does not depend on the other
candidates in the batch; the padded history is excluded through the key padding mask, and the
context token (never padding) keeps every attention row well defined.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from shortrec.config import RankerConfig

#: history action features: capped watch ratio, skipped, liked, log gap to the request
N_ACTION = 4
#: context numeric features (see ``batches.context_features``)
N_CONTEXT = 6
#: profile categoricals: region, age bucket, device
N_PROFILE = 3
#: candidate numeric features before the source flags: log age, 3 smoothed rates, log count
N_CAND_BASE = 5

HISTORY_INPUTS = (
    "hist_video",
    "hist_tags",
    "hist_creator",
    "hist_duration",
    "hist_action",
    "hist_mask",
    "ctx_num",
    "ctx_cat",
)
CANDIDATE_INPUTS = ("cand_video", "cand_tags", "cand_creator", "cand_duration", "cand_num")
INPUT_NAMES = HISTORY_INPUTS + CANDIDATE_INPUTS
OUTPUT_NAMES = ("probs", "final")
#: inputs of :class:`ContentRanker`: video content embeddings instead of video features
CONTENT_INPUT_NAMES = (
    "hist_content",
    "hist_action",
    "hist_mask",
    "ctx_num",
    "ctx_cat",
    "cand_content",
    "cand_num",
)


@dataclass(frozen=True)
class Vocab:
    """Embedding table sizes (index 0 is padding in each)."""

    n_video_buckets: int
    n_creator_buckets: int
    n_tags: int
    n_duration_buckets: int
    n_profile: tuple[int, int, int]


class VideoContent(nn.Module):
    """Sum of id, mean-of-tags, creator and duration-bucket embeddings: ``(..., ) -> (..., d)``."""

    def __init__(self, vocab: Vocab, d: int) -> None:
        super().__init__()
        self.video = nn.Embedding(vocab.n_video_buckets + 1, d, padding_idx=0)
        self.tag = nn.Embedding(vocab.n_tags + 1, d, padding_idx=0)
        self.creator = nn.Embedding(vocab.n_creator_buckets + 1, d, padding_idx=0)
        self.duration = nn.Embedding(vocab.n_duration_buckets + 1, d, padding_idx=0)

    def forward(self, video: Tensor, tags: Tensor, creator: Tensor, duration: Tensor) -> Tensor:
        tag_mask = (tags > 0).unsqueeze(-1).to(torch.float32)  # (..., T, 1)
        tag_sum = (self.tag(tags) * tag_mask).sum(dim=-2)  # (..., d)
        tag_mean = tag_sum / tag_mask.sum(dim=-2).clamp(min=1.0)  # (..., d)
        out: Tensor = self.video(video) + tag_mean + self.creator(creator)
        dur: Tensor = self.duration(duration)  # (..., d)
        return out + dur


class HistoryEncoder(nn.Module):
    """Context + history tokens -> memory ``(B, 1+L, d)`` and its key padding mask ``(B, 1+L)``.

    ``kind="transformer"``: pre-norm ``nn.TransformerEncoder`` with learned recency positions.
    ``kind="mean"`` (ablation): memory is ``[context; masked mean of the history tokens]``.
    """

    def __init__(self, config: RankerConfig, n_profile: tuple[int, int, int]) -> None:
        super().__init__()
        d = config.d_model
        self.kind = config.encoder
        self.action = nn.Linear(N_ACTION, d)
        self.position = nn.Embedding(config.history_len, d)
        self.ctx_num = nn.Linear(N_CONTEXT, d)
        self.profile = nn.ModuleList(nn.Embedding(n + 1, d, padding_idx=0) for n in n_profile)
        layer = nn.TransformerEncoderLayer(
            d,
            config.n_heads,
            dim_feedforward=config.ff_mult * d,
            dropout=config.dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        # nested tensors change numerics with the padding pattern and do not export
        self.encoder = (
            nn.TransformerEncoder(layer, config.n_layers, enable_nested_tensor=False)
            if self.kind == "transformer"
            else None
        )
        self.norm = nn.LayerNorm(d)

    def embed(
        self, content: Tensor, action: Tensor, mask: Tensor, ctx_num: Tensor, ctx_cat: Tensor
    ) -> tuple[Tensor, Tensor]:
        """The encoder's input tokens: ``(history (B, L, d), context (B, d))``, padded history
        steps zeroed (arguments as in :meth:`forward`)."""
        _b, length = mask.shape
        # history is right-aligned: the last slot is the most recent event
        pos = self.position.weight[-length:]  # (L, d)
        hist = content + self.action(action) + pos.unsqueeze(0)  # (B, L, d)
        hist = hist * mask.unsqueeze(-1).to(hist.dtype)  # (B, L, d) padding carries no values
        ctx = self.ctx_num(ctx_num)  # (B, d)
        for i, emb in enumerate(self.profile):
            ctx = ctx + emb(ctx_cat[:, i])  # (B, d)
        return hist, ctx

    def forward(
        self, content: Tensor, action: Tensor, mask: Tensor, ctx_num: Tensor, ctx_cat: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``content`` (B, L, d), ``action`` (B, L, A), ``mask`` (B, L) True on real steps.

        Returns ``(memory, key_padding_mask, context)``; ``key_padding_mask`` is True where a
        memory slot must not be attended; ``context`` (B, d) is the encoded context token.
        """
        hist, ctx = self.embed(content, action, mask, ctx_num, ctx_cat)
        ctx_token = ctx.unsqueeze(1)  # (B, 1, d)
        if self.encoder is None:
            m = mask.unsqueeze(-1).to(hist.dtype)  # (B, L, 1)
            pooled = (hist * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)  # (B, d)
            memory = torch.cat([ctx_token, pooled.unsqueeze(1)], dim=1)  # (B, 2, d)
            pad = torch.cat([torch.zeros_like(mask[:, :1]), ~mask.any(dim=1, keepdim=True)], 1)
        else:
            tokens = torch.cat([ctx_token, hist], dim=1)  # (B, 1+L, d)
            pad = torch.cat([torch.zeros_like(mask[:, :1]), ~mask], dim=1)  # (B, 1+L)
            memory = self.encoder(tokens, src_key_padding_mask=pad)  # (B, 1+L, d)
        memory = self.norm(memory)  # (B, M, d)
        return memory, pad, memory[:, 0]


class TaskHead(nn.Module):
    """One task's MLP: ``(B, C, h) -> (B, C)`` logits."""

    def __init__(self, hidden: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(hidden, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, 1)
        )

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.net(x)  # (B, C, 1)
        return out.squeeze(-1)  # (B, C)


class Ranker(nn.Module):
    """Multi-task ranker; ``encode`` once per request, ``score`` any number of candidates."""

    score_weights: Tensor

    def __init__(self, config: RankerConfig, vocab: Vocab) -> None:
        super().__init__()
        d = config.d_model
        self.tasks = tuple(config.tasks)
        self.vocab = vocab
        self.content = VideoContent(vocab, d)
        self.history = HistoryEncoder(config, vocab.n_profile)
        self.cand_num = nn.Linear(N_CAND_BASE + len(config.source_names), d)
        self.target_attention = nn.MultiheadAttention(
            d, config.n_heads, dropout=config.dropout, batch_first=True
        )
        self.shared = nn.Sequential(
            nn.Linear(4 * d, config.head_hidden), nn.GELU(), nn.Dropout(config.dropout)
        )
        self.heads = nn.ModuleDict(
            {t: TaskHead(config.head_hidden, config.dropout) for t in self.tasks}
        )
        w = [float(config.score_weights.get(t, 0.0)) for t in self.tasks]
        self.register_buffer("score_weights", torch.tensor(w, dtype=torch.float32))

    def encode(
        self,
        hist_video: Tensor,
        hist_tags: Tensor,
        hist_creator: Tensor,
        hist_duration: Tensor,
        hist_action: Tensor,
        hist_mask: Tensor,
        ctx_num: Tensor,
        ctx_cat: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """History ``(B, L[, T])`` -> ``(memory (B, M, d), pad (B, M), context (B, d))``."""
        content = self.content(hist_video, hist_tags, hist_creator, hist_duration)  # (B, L, d)
        out: tuple[Tensor, Tensor, Tensor] = self.history(
            content, hist_action, hist_mask, ctx_num, ctx_cat
        )
        return out

    def candidate_content(
        self, cand_video: Tensor, cand_tags: Tensor, cand_creator: Tensor, cand_duration: Tensor
    ) -> Tensor:
        """Content embedding of candidates ``(B, C[, T]) -> (B, C, d)`` (also the diversity
        loss's embedding similarity)."""
        return self.content(cand_video, cand_tags, cand_creator, cand_duration)  # type: ignore[no-any-return]

    def score(
        self,
        encoded: tuple[Tensor, Tensor, Tensor],
        cand_video: Tensor,
        cand_tags: Tensor,
        cand_creator: Tensor,
        cand_duration: Tensor,
        cand_num: Tensor,
    ) -> Tensor:
        """Candidates ``(B, C[, T|F])`` against ``encode``'s output -> logits ``(B, C, K)``."""
        content = self.candidate_content(cand_video, cand_tags, cand_creator, cand_duration)
        return self.score_content(encoded, content, cand_num)

    def score_content(
        self, encoded: tuple[Tensor, Tensor, Tensor], content: Tensor, cand_num: Tensor
    ) -> Tensor:
        """Like :meth:`score`, from the candidates' content embeddings ``(B, C, d)``."""
        memory, pad, context = encoded
        query = content + self.cand_num(cand_num)  # (B, C, d)
        attended, _ = self.target_attention(
            query, memory, memory, key_padding_mask=pad, need_weights=False
        )  # (B, C, d)
        ctx = context.unsqueeze(1).expand_as(query)  # (B, C, d)
        h = self.shared(torch.cat([query, attended, query * attended, ctx], dim=-1))  # (B, C, h)
        return torch.stack([self.heads[t](h) for t in self.tasks], dim=-1)  # (B, C, K)

    def combine(self, logits: Tensor) -> tuple[Tensor, Tensor]:
        """Logits ``(B, C, K)`` -> ``(probs (B, C, K), final (B, C))``,
        ``final = sum_k w_k sigmoid(logit_k)``."""
        probs = torch.sigmoid(logits)  # (B, C, K)
        return probs, (probs * self.score_weights).sum(dim=-1)  # (B, C)

    def forward(
        self,
        hist_video: Tensor,
        hist_tags: Tensor,
        hist_creator: Tensor,
        hist_duration: Tensor,
        hist_action: Tensor,
        hist_mask: Tensor,
        ctx_num: Tensor,
        ctx_cat: Tensor,
        cand_video: Tensor,
        cand_tags: Tensor,
        cand_creator: Tensor,
        cand_duration: Tensor,
        cand_num: Tensor,
    ) -> tuple[Tensor, Tensor]:
        """All inputs of :data:`INPUT_NAMES` -> ``(probs (B, C, K), final (B, C))``."""
        encoded = self.encode(
            hist_video,
            hist_tags,
            hist_creator,
            hist_duration,
            hist_action,
            hist_mask,
            ctx_num,
            ctx_cat,
        )
        logits = self.score(encoded, cand_video, cand_tags, cand_creator, cand_duration, cand_num)
        return self.combine(logits)


class ContentRanker(nn.Module):
    """The serving form of a trained :class:`Ranker`: the same computation from the videos'
    content embeddings instead of their features (inputs :data:`CONTENT_INPUT_NAMES`).

    A video's content embedding (id, tags, creator, duration) does not depend on the request,
    so serving looks it up in a table computed once per bundle (:meth:`content_table`) and
    the exported graph skips the embedding gathers and tag pooling of every candidate.
    Padding rows are zero vectors, exactly what :class:`VideoContent` gives padding inputs.

    This is the reference form, built from the ranker's own modules; the exported graph is
    ``serving_form.ServingRanker``, the same function with the weights folded for ONNX Runtime.
    """

    def __init__(self, ranker: Ranker) -> None:
        super().__init__()
        self.ranker = ranker

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
        r = self.ranker
        encoded = r.history(hist_content, hist_action, hist_mask, ctx_num, ctx_cat)
        return r.combine(r.score_content(encoded, cand_content, cand_num))

    @torch.inference_mode()
    def content_table(
        self, video: Tensor, tags: Tensor, creator: Tensor, duration: Tensor, chunk: int = 65_536
    ) -> Tensor:
        """Content embeddings of n videos from their features ``(n[, T])`` -> ``(n + 1, d)``;
        the last row (index -1) is the zero padding row."""
        self.ranker.eval()
        n = int(video.shape[0])
        parts = [
            self.ranker.content(
                video[i : i + chunk],
                tags[i : i + chunk],
                creator[i : i + chunk],
                duration[i : i + chunk],
            )
            for i in range(0, n, chunk)
        ]
        d = self.ranker.cand_num.out_features
        return torch.cat([*parts, torch.zeros(1, d)], dim=0)
