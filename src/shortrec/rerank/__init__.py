"""Diversity re-ranking (MMR, greedy DPP, creator/topic caps with session look-back)."""

from shortrec.rerank.diversify import (
    SIMILARITY_PARTS,
    Caps,
    RerankInputError,
    content_similarity,
    cosine_similarity,
    dpp_greedy,
    mmr,
    rerank,
    rerank_similarity,
    same_group,
    tag_jaccard,
)

__all__ = [
    "SIMILARITY_PARTS",
    "Caps",
    "RerankInputError",
    "content_similarity",
    "cosine_similarity",
    "dpp_greedy",
    "mmr",
    "rerank",
    "rerank_similarity",
    "same_group",
    "tag_jaccard",
]
