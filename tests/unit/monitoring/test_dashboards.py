"""Grafana dashboards (generated from deploy/grafana/generate.py), provisioning files, and the
compose file: committed output up to date, valid structure, consistent references."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy"
GRAFANA = DEPLOY / "grafana"


@pytest.fixture(scope="module")
def gen() -> ModuleType:
    spec = importlib.util.spec_from_file_location("grafana_generate", GRAFANA / "generate.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(mod)
    return mod


def _dashboards() -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text()) for p in sorted(GRAFANA.glob("dashboards/*.json"))}


def test_committed_dashboards_match_the_generator(gen: ModuleType) -> None:
    files = gen.outputs()
    assert {p.name for p in files} == set(_dashboards())
    for path, text in files.items():
        assert path.read_text() == text, f"{path.name} is stale: run deploy/grafana/generate.py"
    assert gen.main(["--check"]) == 0


def test_check_mode_reports_stale_output(
    gen: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gen, "OUT_DIR", tmp_path / "dashboards")
    monkeypatch.setattr(gen, "HERE", tmp_path / "deploy" / "grafana")
    assert gen.main(["--check"]) == 1  # nothing generated yet
    assert gen.main([]) == 0
    assert gen.main(["--check"]) == 0
    assert sorted(p.name for p in (tmp_path / "dashboards").iterdir()) == [
        "shortrec-experiments.json",
        "shortrec-quality.json",
        "shortrec-service.json",
    ]


def test_three_dashboards_with_valid_panels() -> None:
    boards = _dashboards()
    assert {d["uid"] for d in boards.values()} == {
        "shortrec-service",
        "shortrec-quality",
        "shortrec-experiments",
    }
    for name, d in boards.items():
        assert d["schemaVersion"] >= 36 and d["title"].startswith("shortrec / ")
        ids = [p["id"] for p in d["panels"]]
        assert len(ids) == len(set(ids)), f"{name}: duplicate panel ids"
        cells: set[tuple[int, int]] = set()
        for p in d["panels"]:
            g = p["gridPos"]
            assert g["x"] >= 0 and g["x"] + g["w"] <= 24, f"{name}: {p['title']} off-grid"
            cover = {
                (x, y)
                for x in range(g["x"], g["x"] + g["w"])
                for y in range(g["y"], g["y"] + g["h"])
            }
            assert not cells & cover, f"{name}: {p['title']} overlaps another panel"
            cells |= cover
            if p["type"] == "row":
                continue
            assert p["targets"], f"{name}: {p['title']} has no query"
            assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            refs = [t["refId"] for t in p["targets"]]
            assert len(refs) == len(set(refs))
            for t in p["targets"]:
                assert t["expr"].strip() and t["expr"].count("(") == t["expr"].count(")")


def test_drift_and_srm_panels_use_the_alert_thresholds() -> None:
    quality = _dashboards()["shortrec-quality.json"]
    psi = next(p for p in quality["panels"] if p["title"] == "PSI by feature")
    steps = [s["value"] for s in psi["fieldConfig"]["defaults"]["thresholds"]["steps"]]
    assert steps == [None, 0.1, 0.25]
    alerts = (DEPLOY / "prometheus" / "alerts.yml").read_text()
    assert "> 0.25" in alerts and "> 4" in alerts


def test_provisioning_points_at_the_dashboards_and_datasource(gen: ModuleType) -> None:
    ds = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    (source,) = ds["datasources"]
    assert source["type"] == "prometheus" and source["uid"] == gen.DATASOURCE_UID
    prov = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "shortrec.yml").read_text())
    (provider,) = prov["providers"]
    assert provider["type"] == "file"
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./grafana/dashboards:{provider['options']['path']}:ro" in mounts


def test_compose_file_is_valid_and_wires_the_stack() -> None:
    doc = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = doc["services"]
    assert set(services) == {"redis", "shortrec", "prometheus", "grafana"}
    for name, svc in services.items():
        assert "image" in svc or "build" in svc, name
        for dep in svc.get("depends_on", []):
            assert dep in services, f"{name} depends on unknown {dep}"
        for vol in svc.get("volumes", []):
            src = vol.split(":")[0]
            if src.startswith("./"):
                assert (DEPLOY / src).exists(), f"{name}: mount source {src} missing"
            elif not src.startswith(("../", "/")):
                assert src in doc.get("volumes", {}), f"{name}: undeclared volume {src}"
    # Prometheus scrapes the service by its compose name and port, with the rules mounted.
    prom = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    job = next(j for j in prom["scrape_configs"] if j["job_name"] == "shortrec")
    assert job["static_configs"][0]["targets"] == ["shortrec:8000"]
    assert "8000" in " ".join(services["shortrec"]["command"])
    assert "redis://redis:6379/0" in services["shortrec"]["command"]
    assert prom["rule_files"] == ["alerts.yml"]
    assert (
        "./prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro" in services["prometheus"]["volumes"]
    )
