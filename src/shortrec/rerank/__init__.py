"""Diversity re-ranking (MMR, greedy DPP, calibrated re-ranking to the user's topics,
creator/topic caps with session look-back)."""

from shortrec.rerank.diversify import (
    SIMILARITY_PARTS,
    Caps,
    RerankInputError,
    calibrated,
    content_similarity,
    cosine_similarity,
    dpp_greedy,
    mmr,
    personalised,
    rerank,
    rerank_similarity,
    same_group,
    tag_jaccard,
    topic_log_affinity,
    user_topic_distribution,
)

__all__ = [
    "SIMILARITY_PARTS",
    "Caps",
    "RerankInputError",
    "calibrated",
    "content_similarity",
    "cosine_similarity",
    "dpp_greedy",
    "mmr",
    "personalised",
    "rerank",
    "rerank_similarity",
    "same_group",
    "tag_jaccard",
    "topic_log_affinity",
    "user_topic_distribution",
]
