"""The demo (`make demo` / `shortrec demo`) runs the whole loop end to end on the tiny preset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shortrec import demo


@pytest.mark.slow
def test_demo_runs_the_whole_loop_on_tiny(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SHORTREC_REDIS_URL", raising=False)
    out = tmp_path / "demo"
    summary = demo.run(out, preset="tiny", progress=False)
    assert summary["generate"]["counts"]["events"] > 0
    assert summary["api"]["feed_items"] == 5
    assert summary["api"]["readyz"]
    for protocol in ("oracle", "temporal"):
        rep = json.loads((out / "eval" / protocol / "report.json").read_text())
        assert "shortrec" in rep["recommenders"], protocol
    reports = list((out / "abtest" / "reports").glob("*/index.html"))
    assert reports, "the A/B report was not written"
    written = json.loads((out / "demo-summary.json").read_text())
    assert written["seconds"] > 0
    stages = written["stage_seconds"]  # bench/bench_demo.py reports these per stage
    assert {"generate", "etl", "train ranker", "evaluate (temporal)", "publish"} <= set(stages)
    assert sum(stages.values()) <= written["seconds"] + 1
