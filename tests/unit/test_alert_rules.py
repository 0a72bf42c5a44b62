"""Alert rules: `promtool check rules`, `promtool check config` and `promtool test rules`, plus
the structure every alert must have (severity, runbook section, firing and silent tests).

promtool comes from Debian's `prometheus` package (scripts/ci_prometheus.sh installs it). The
promtool tests are skipped only when promtool is missing AND the environment variable CI is
not set; under CI a missing promtool is a failure.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "deploy" / "prometheus"
RUNBOOK = ROOT / "docs" / "runbook.md"
SEVERITIES = {"page", "ticket"}


def _promtool() -> str:
    exe = shutil.which("promtool")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("promtool not found but CI is set: run scripts/ci_prometheus.sh first")
        pytest.skip("promtool not installed (scripts/ci_prometheus.sh installs it)")
    return exe


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_promtool(), *args], cwd=PROM, capture_output=True, text=True, timeout=120, check=False
    )


def _rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load((PROM / "alerts.yml").read_text())
    return [r for g in doc["groups"] for r in g["rules"] if "alert" in r]


def _tests() -> list[dict[str, Any]]:
    doc = yaml.safe_load((PROM / "alerts_test.yml").read_text())
    return list(doc["tests"])


def test_promtool_check_rules() -> None:
    res = _run("check", "rules", "alerts.yml")
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in res.stdout


def test_promtool_check_config() -> None:
    res = _run("check", "config", "prometheus.yml")
    assert res.returncode == 0, res.stdout + res.stderr


def test_promtool_test_rules() -> None:
    res = _run("test", "rules", "alerts_test.yml")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout


def test_promtool_test_rules_fails_on_a_broken_rule(tmp_path: Path) -> None:
    # The unit tests must be able to fail: loosen one threshold and expect promtool to object.
    text = (PROM / "alerts.yml").read_text()
    broken = text.replace("> 0.25\n", "> 0.35\n", 1)
    assert broken != text
    (tmp_path / "alerts.yml").write_text(broken)
    doc = yaml.safe_load((PROM / "alerts_test.yml").read_text())
    doc["tests"] = [  # only the drift cases, to keep this fast
        t
        for t in doc["tests"]
        if any(c["alertname"] == "ShortrecScoreDrift" for c in t.get("alert_rule_test", []))
    ]
    assert doc["tests"]
    (tmp_path / "alerts_test.yml").write_text(yaml.safe_dump(doc))
    res = subprocess.run(
        [_promtool(), "test", "rules", "alerts_test.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert res.returncode != 0
    assert "ShortrecScoreDrift" in res.stdout + res.stderr


def test_every_alert_has_severity_annotations_and_runbook_section() -> None:
    runbook = RUNBOOK.read_text()
    headings = {
        re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-")
        for h in re.findall(r"^#+ (.+)$", runbook, flags=re.M)
    }
    names = [r["alert"] for r in _rules()]
    assert len(names) == len(set(names)), "duplicate alert names"
    for r in _rules():
        name = r["alert"]
        assert r["labels"]["severity"] in SEVERITIES, name
        ann = r["annotations"]
        assert ann["summary"] and ann["description"], name
        assert ann["runbook_url"] == f"docs/runbook.md#{name.lower()}", name
        assert name.lower() in headings, f"{name}: no section in docs/runbook.md"
        assert "for" in r, f"{name}: alerts need a `for` to ride out one bad scrape"


def test_every_alert_has_firing_and_silent_promtool_cases() -> None:
    firing: set[str] = set()
    silent: set[str] = set()
    for case in _tests():
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else silent).add(check["alertname"])
    names = {r["alert"] for r in _rules()}
    assert names - firing == set(), "alerts without a firing test"
    assert names - silent == set(), "alerts without a not-firing test"
