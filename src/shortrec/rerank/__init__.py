"""Diversity re-ranking (MMR, greedy DPP, creator/topic caps with session look-back)."""

from shortrec.rerank.diversify import (
    Caps,
    RerankInputError,
    cosine_similarity,
    dpp_greedy,
    mmr,
    rerank,
    tag_jaccard,
)

__all__ = [
    "Caps",
    "RerankInputError",
    "cosine_similarity",
    "dpp_greedy",
    "mmr",
    "rerank",
    "tag_jaccard",
]
