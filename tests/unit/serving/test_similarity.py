"""The request-path tag Jaccard equals the reference implementation of ``rerank``."""

from __future__ import annotations

import numpy as np

from shortrec.rerank import tag_jaccard
from shortrec.serving.service import fast_tag_jaccard


def test_fast_tag_jaccard_matches_rerank() -> None:
    rng = np.random.default_rng(0)
    tags = rng.integers(-1, 12, size=(40, 6))
    tags[3] = -1  # an untagged video
    tags[4] = [5, 5, 5, -1, -1, -1]  # repeated tags: counted per position, as the reference
    np.testing.assert_allclose(fast_tag_jaccard(tags), tag_jaccard(tags))


def test_hand_computed_case() -> None:
    tags = np.array([[1, 2, -1], [2, 3, -1], [-1, -1, -1]])
    sim = fast_tag_jaccard(tags)
    assert sim[0, 1] == 1 / 3 and sim[0, 2] == 0 and sim[2, 2] == 1
