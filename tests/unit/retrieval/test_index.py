from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shortrec.config import IndexConfig
from shortrec.retrieval.index import IndexError_, VectorIndex, exact_search, recall_vs_exact


def _clustered(n: int, d: int = 16, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((20, d))
    x = centres[rng.integers(0, 20, n)] + 0.3 * rng.standard_normal((n, d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32)


@pytest.mark.parametrize(
    ("n", "ann", "kind"), [(500, "hnsw", "flat"), (3000, "hnsw", "hnsw"), (3000, "ivf", "ivf")]
)
def test_kind_by_catalogue_size_and_recall(n: int, ann: str, kind: str) -> None:
    x = _clustered(n)
    idx = VectorIndex.build(
        x,
        IndexConfig(
            exact_max=1000,
            ann=ann,
            hnsw_ef_search=16,
            ivf_nprobe=16,
        ),
    )
    assert idx.kind == kind
    r = recall_vs_exact(idx, x, x[:50], k=100)
    assert r >= 0.95 if kind != "flat" else r == 1.0


def test_exact_search_known_answer_and_padding() -> None:
    x = np.eye(4, dtype=np.float32)
    idx = VectorIndex.build(x, IndexConfig())
    sc, ids = idx.search(np.array([[0.0, 0.9, 0.1, 0.0]]), k=6)
    assert ids[0, :2].tolist() == [1, 2]
    assert ids[0, 4:].tolist() == [-1, -1] and np.isneginf(sc[0, 4:]).all()
    assert exact_search(x, x[:1], 1).tolist() == [[0]]
    with pytest.raises(ValueError, match="dimension"):
        idx.search(np.zeros((1, 3)), 1)
    with pytest.raises(ValueError, match="zero vectors"):
        VectorIndex.build(np.zeros((0, 4)), IndexConfig())


def test_save_load_round_trip(tmp_path: Path) -> None:
    x = _clustered(2000)
    idx = VectorIndex.build(x, IndexConfig(exact_max=100, ann="hnsw"))
    idx.save(tmp_path)
    back = VectorIndex.load(tmp_path)
    assert (back.kind, back.dim, back.size, back.ef_search) == ("hnsw", 16, 2000, 128)
    a, b = idx.search(x[:20], 50), back.search(x[:20], 50)
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_allclose(a[0], b[0])
    (tmp_path / "index.json").write_text(
        '{"kind": "hnsw", "dim": 8, "size": 2000, "ef_search": 1, "nprobe": 1}'
    )
    with pytest.raises(IndexError_, match="metadata"):
        VectorIndex.load(tmp_path)
    with pytest.raises(IndexError_, match="not found"):
        VectorIndex.load(tmp_path / "missing")
