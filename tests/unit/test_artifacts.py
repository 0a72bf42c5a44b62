"""Artifact bundle: atomic components and manifest."""

from __future__ import annotations

from pathlib import Path

import pytest

from shortrec import artifacts
from shortrec.config import EtlConfig


def test_component_written_atomically_and_recorded(tmp_path: Path) -> None:
    with artifacts.write_component(tmp_path, "ranker", EtlConfig(), "fp1") as (d, info):
        (d / "w.bin").write_bytes(b"1")
        info["metrics"] = {"auc": 0.7}
    doc = artifacts.read_manifest(tmp_path)
    entry = doc["components"]["ranker"]
    assert entry["data_fingerprint"] == "fp1"
    assert entry["metrics"] == {"auc": 0.7}
    assert entry["config_hash"] == artifacts.config_hash(EtlConfig())
    v1 = doc["model_version"]
    assert (artifacts.component_dir(tmp_path, "ranker") / "w.bin").read_bytes() == b"1"

    with (
        pytest.raises(ValueError, match="bad"),
        artifacts.write_component(tmp_path, "ranker", EtlConfig(valid_frac=0.2), "fp2") as (d, _),
    ):
        (d / "w.bin").write_bytes(b"2")
        raise ValueError("bad")
    assert (tmp_path / "ranker" / "w.bin").read_bytes() == b"1"
    assert artifacts.read_manifest(tmp_path)["model_version"] == v1


def test_missing_component_is_named(tmp_path: Path) -> None:
    with pytest.raises(artifacts.BundleError, match="no component 'retrieval'"):
        artifacts.component_dir(tmp_path, "retrieval")
