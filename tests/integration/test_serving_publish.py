"""``shortrec.publish.publish``: the dataset + bundle land in the store under a new version,
per-user state included; missing inputs are named."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from shortrec import schema as S
from shortrec.publish import publish
from shortrec.store import MemoryStore


def test_publish_into_memory_store(tiny_bundle: Any) -> None:
    store = MemoryStore()
    out = publish(tiny_bundle.root, tiny_bundle.art, progress=False, store=store)
    assert out["version"] == 1 and out["videos"] > 0 and out["users"] > 0
    assert store.current_version() == (1, out["as_of_us"])
    vocab = pl.read_parquet(tiny_bundle.root / "vocab" / "users.parquet")
    hist = pl.read_parquet(tiny_bundle.root / "etl" / "histories.parquet")
    row = hist.row(0, named=True)
    uid = vocab.filter(pl.col(S.IDX) == row[S.USER_IDX]).get_column(S.ID)[0]
    ctx = store.read_request_context(uid, 1, out["as_of_us"])
    assert ctx.history.tolist() == row[S.HIST_VIDEO_IDX][-store.cfg.history_cap :]
    assert len(store.trending(5, out["as_of_us"])) == 5
    again = publish(tiny_bundle.root, tiny_bundle.art, progress=False, store=store)
    assert again["version"] == 2


def test_publish_names_missing_inputs(tiny_bundle: Any, tmp_path: Path) -> None:
    root = tmp_path / "world"
    shutil.copytree(tiny_bundle.root, root)
    (root / "etl" / "histories.parquet").unlink()
    with pytest.raises(S.BadInput, match=r"histories\.parquet"):
        publish(root, tiny_bundle.art, progress=False, store=MemoryStore())
    with pytest.raises(S.BadInput, match="nope"):
        publish(root, tmp_path / "nope", progress=False, store=MemoryStore())
