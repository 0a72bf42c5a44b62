"""Realism report: metric formulas on hand-computed data and the report files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from shortrec.config import SimConfig
from shortrec.data import io
from shortrec.data.realism import REPORT_FILE, TARGETS, gini, realism_report
from shortrec.data.simulator import generate


def test_gini_hand_computed() -> None:
    assert gini([1, 1, 1, 1]) == 0.0
    assert gini([0, 0, 0, 4]) == pytest.approx(0.75)  # (n-1)/n for one holder of everything
    assert gini([1, 2, 3]) == pytest.approx(2 / 9)  # mean |xi - xj| / (2 mean) = (8/9) / 4
    assert gini([]) == 0.0
    with pytest.raises(ValueError):
        gini([-1, 2])


def test_report_on_the_tiny_world(tmp_path: Path) -> None:
    root = tmp_path / "tiny"
    generate(SimConfig.preset_config("tiny", seed=1), root, progress=False)
    rep = realism_report(root, tmp_path / "report")
    on_disk = json.loads((tmp_path / "report" / REPORT_FILE).read_text())
    assert on_disk == json.loads(json.dumps(rep))
    assert set(rep["metrics"]) == set(TARGETS)
    for name, m in rep["metrics"].items():
        lo, hi = m["target"]
        assert m["in_range"] == (lo <= m["value"] <= hi), name
        assert m["source"], name
    for f in rep["plots"]:
        assert (tmp_path / "report" / f).read_bytes()[:4] == b"\x89PNG"
    ev = io.Dataset.open(root).events().collect()
    assert rep["metrics"]["skip_rate"]["value"] == pytest.approx(ev["skipped"].mean())
    assert rep["events"] == ev.height


def test_the_small_world_is_calibrated_to_every_target(tmp_path: Path) -> None:
    root = tmp_path / "small"
    generate(SimConfig.preset_config("small"), root, progress=False)
    rep = realism_report(root, tmp_path / "report")
    off = {k: m["value"] for k, m in rep["metrics"].items() if not m["in_range"]}
    assert not off, off


def test_report_names_a_missing_dataset(tmp_path: Path) -> None:
    with pytest.raises(io.DatasetError, match="not found"):
        realism_report(tmp_path / "nope", tmp_path / "out")


def test_popularity_gini_rises_with_a_trending_only_policy(tmp_path: Path) -> None:
    base = SimConfig.preset_config("tiny", seed=2).model_copy(update={"n_users": 80})
    ginis = []
    for mix in ((0.0, 0.0, 1.0), (1.0, 0.0, 0.0)):
        cfg = base.model_copy(
            update=dict(
                zip(("policy_trending", "policy_interest", "policy_explore"), mix, strict=True)
            )
        )
        generate(cfg, tmp_path / str(mix), progress=False)
        rep = realism_report(tmp_path / str(mix), tmp_path / f"r{mix}")
        ginis.append(rep["metrics"]["popularity_gini"]["value"])
    assert ginis[1] > ginis[0] + 0.2
    assert np.isfinite(ginis).all()
