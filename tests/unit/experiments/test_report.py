"""The HTML report: self-contained, atomic, with the SRM status and every comparison."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from shortrec.config import AnalysisConfig
from shortrec.experiments.analysis import analyze
from shortrec.experiments.report import REPORT_FILE, RESULT_FILE, write_report
from shortrec.experiments.synthetic import ArmEffect, synthetic_logs


def test_report_is_self_contained(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x, e = synthetic_logs(
        "exp",
        [ArmEffect("control"), ArmEffect("treatment", 1.0, -0.2)],
        1_500,
        rng,
        sessions_per_user=2,
        mean_session_len=6,
    )
    res = analyze(x.lazy(), e.lazy(), "exp", AnalysisConfig(n_bootstrap=100))
    out = tmp_path / "report"
    (out / "stale").mkdir(parents=True)  # replaced as a whole
    page = write_report(res, out)
    assert page == out / REPORT_FILE and not (out / "stale").exists()
    text = page.read_text()
    assert not re.search(r"(src|href)=['\"]?(https?:)?//", text)  # no network fetches
    assert text.count("data:image/png;base64,") == 4
    assert "Sample ratio OK" in text
    for c in res.comparisons:
        assert c.metric in text
    doc = json.loads((out / RESULT_FILE).read_text())
    assert doc["experiment"] == "exp" and len(doc["comparisons"]) == len(res.comparisons)
    assert {p.name for p in out.glob("*.png")} == {
        "lift.png",
        "timeline.png",
        "watch_ratio.png",
        "session_length.png",
    }
    assert not list(tmp_path.glob(".report*"))


def test_report_flags_sample_ratio_mismatch(tmp_path: Path) -> None:
    from shortrec.config import ArmConfig, ExperimentConfig
    from shortrec.experiments.analysis import SampleRatioMismatchWarning

    rng = np.random.default_rng(2)
    x, e = synthetic_logs(
        "exp",
        [ArmEffect("control", 0.6), ArmEffect("treatment", 0.4)],
        2_000,
        rng,
        sessions_per_user=1,
        mean_session_len=3,
    )
    decl = ExperimentConfig(
        name="exp", arms=(ArmConfig(name="control"), ArmConfig(name="treatment"))
    )
    with pytest.warns(SampleRatioMismatchWarning):
        res = analyze(x.lazy(), e.lazy(), decl, AnalysisConfig(n_bootstrap=0))
    text = write_report(res, tmp_path / "r").read_text()
    assert "SAMPLE RATIO MISMATCH" in text and "class='bad'" in text


def test_lift_interval_that_excludes_the_estimate_still_draws(tmp_path: Path) -> None:
    """A percentile-bootstrap interval can lie wholly on one side of the point estimate."""
    import dataclasses

    rng = np.random.default_rng(2)
    x, e = synthetic_logs("exp", [ArmEffect("control"), ArmEffect("treatment")], 400, rng)
    res = analyze(x.lazy(), e.lazy(), "exp", AnalysisConfig(n_bootstrap=50))
    c0 = res.comparisons[0]
    shifted = dataclasses.replace(c0, lift_ci_low=c0.lift + 0.01, lift_ci_high=c0.lift + 0.02)
    res = dataclasses.replace(res, comparisons=(shifted, *res.comparisons[1:]))
    assert (write_report(res, tmp_path / "r")).is_file()
