"""Atomic writes and dataset opening."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from shortrec.data import io


def test_atomic_dir_replaces_only_on_success(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    with io.atomic_dir(out) as d:
        (d / "a.txt").write_text("one")
    assert (out / "a.txt").read_text() == "one"
    with pytest.raises(RuntimeError), io.atomic_dir(out) as d:
        (d / "a.txt").write_text("two")
        raise RuntimeError("boom")
    assert (out / "a.txt").read_text() == "one"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_write_parquet_atomic_leaves_no_temp_files(tmp_path: Path) -> None:
    path = tmp_path / "x.parquet"
    io.write_parquet_atomic(pl.DataFrame({"a": [1, 2]}), path)
    assert pl.read_parquet(path)["a"].to_list() == [1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["x.parquet"]


def test_open_names_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(io.DatasetError, match="dataset directory not found"):
        io.Dataset.open(tmp_path / "nope")
    with pytest.raises(io.DatasetError, match=r"missing manifest\.json"):
        io.Dataset.open(tmp_path)


def test_read_json_reports_line(tmp_path: Path) -> None:
    p = tmp_path / "m.json"
    p.write_text('{\n "a": 1,\n oops\n}')
    with pytest.raises(io.DatasetError, match=r"m\.json: line 3"):
        io.read_json(p)
