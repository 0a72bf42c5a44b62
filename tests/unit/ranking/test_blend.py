from __future__ import annotations

import numpy as np
import pytest

from shortrec.config import DEFAULT_RETRIEVAL_BLEND, ServingConfig
from shortrec.fullpipeline import FullPipelineConfig
from shortrec.ranking.blend import blend_with_retrieval, rank_percentile


def test_rank_percentile_best_is_one_ties_by_position() -> None:
    assert rank_percentile(np.array([0.2, 0.9, 0.5, 0.9])).tolist() == [0.25, 1.0, 0.5, 0.75]
    assert rank_percentile(np.zeros(0)).shape == (0,)


def test_blend_endpoints_and_mix() -> None:
    final = np.array([0.1, 0.3, 0.9, 0.5])  # candidates best-first by retrieval
    assert blend_with_retrieval(final, 0.0).tolist() == rank_percentile(final).tolist()
    # weight 1: the retrieval order (the input order) exactly
    assert np.argsort(-blend_with_retrieval(final, 1.0), kind="stable").tolist() == [0, 1, 2, 3]
    mixed = blend_with_retrieval(final, 0.5)
    # ranker percentiles 0.25, 0.5, 1.0, 0.75; retrieval 1.0, 0.75, 0.5, 0.25
    assert mixed.tolist() == pytest.approx([0.625, 0.625, 0.75, 0.5])
    with pytest.raises(ValueError, match="retrieval blend weight"):
        blend_with_retrieval(final, 1.5)


def test_offline_and_online_share_the_default() -> None:
    assert FullPipelineConfig().retrieval_blend == DEFAULT_RETRIEVAL_BLEND
    assert ServingConfig().retrieval_blend == DEFAULT_RETRIEVAL_BLEND
