"""The metric-name contract (docs/observability.md) pinned against serving/metrics.py, and
every metric and label that alert rules and dashboards use checked against it."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from shortrec.monitoring.promql import scan

ROOT = Path(__file__).resolve().parents[3]
DOC = ROOT / "docs" / "observability.md"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARDS = sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))
#: labels Prometheus attaches to every scraped series
TARGET_LABELS = frozenset({"job", "instance"})
#: series Prometheus writes itself for each scrape (not exported by the service)
SYNTHETIC = {"up": TARGET_LABELS}
_ROW = re.compile(r"^\| `(shortrec_[a-z0-9_]+)` \| (counter|gauge|histogram) \|([^|]*)\|")


@dataclass(frozen=True)
class Family:
    name: str  # as documented: counters with _total
    kind: str
    labels: frozenset[str]

    def samples(self) -> dict[str, frozenset[str]]:
        """Sample names a query may use, with the labels each carries."""
        base = self.labels | TARGET_LABELS
        if self.kind == "histogram":
            return {
                f"{self.name}_bucket": base | {"le"},
                f"{self.name}_sum": base,
                f"{self.name}_count": base,
            }
        return {self.name: base}


def contract() -> dict[str, Family]:
    out: dict[str, Family] = {}
    for line in DOC.read_text().splitlines():
        m = _ROW.match(line)
        if m:
            labels = frozenset(re.findall(r"`([a-z_]+)`", m.group(3)))
            out[m.group(1)] = Family(m.group(1), m.group(2), labels)
    return out


def sample_labels() -> dict[str, frozenset[str]]:
    out: dict[str, frozenset[str]] = {}
    for fam in contract().values():
        out.update(fam.samples())
    out.update(SYNTHETIC)
    return out


def alert_exprs() -> list[tuple[str, str]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [
        (f"alert {r['alert']}", r["expr"])
        for g in doc["groups"]
        for r in g["rules"]
        if "alert" in r
    ]


def dashboard_exprs() -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for path in DASHBOARDS:
        doc: dict[str, Any] = json.loads(path.read_text())
        for panel in doc["panels"]:
            for t in panel.get("targets", []):
                out.append((f"{path.name}: {panel['title']} [{t['refId']}]", t["expr"]))
    return out


def test_contract_table_is_complete() -> None:
    c = contract()
    assert len(c) == 29
    assert c["shortrec_http_requests_total"].labels == {"route", "method", "status"}
    assert c["shortrec_score"].kind == "histogram"
    assert c["shortrec_experiment_allocation"].labels == {"experiment", "arm"}
    assert c["shortrec_degraded"].labels == frozenset()


def test_service_exports_exactly_the_contract() -> None:
    metrics_mod = pytest.importorskip("shortrec.serving.metrics")
    from prometheus_client.metrics import MetricWrapperBase

    m = metrics_mod.Metrics(metrics_mod.new_registry())
    exported: dict[str, Family] = {}
    for value in vars(m).values():
        if isinstance(value, MetricWrapperBase):
            kind = value._type
            name = f"{value._name}_total" if kind == "counter" else value._name
            exported[name] = Family(name, kind, frozenset(value._labelnames))
    assert exported == contract()


def problems(expr: str) -> list[str]:
    """Why ``expr`` does not fit the contract (empty: it fits)."""
    samples = sample_labels()
    s = scan(expr)
    if not s.selectors:
        return ["no metric"]
    out: list[str] = []
    known_labels: set[str] = {"le"} | TARGET_LABELS
    for sel in s.selectors:
        if sel.metric not in samples:
            out.append(f"{sel.metric!r} is not an exported metric")
            continue
        bad = sel.labels - samples[sel.metric]
        if bad:
            out.append(f"{sel.metric} has no label(s) {sorted(bad)}")
        known_labels |= samples[sel.metric]
    bad = s.grouping_labels - known_labels
    if bad:
        out.append(f"groups on label(s) {sorted(bad)} no referenced metric has")
    return out


@pytest.mark.parametrize(("where", "expr"), alert_exprs() + dashboard_exprs())
def test_every_referenced_metric_and_label_is_in_the_contract(where: str, expr: str) -> None:
    assert problems(expr) == [], where


def test_dashboards_and_alerts_cover_the_key_metrics() -> None:
    used = set().union(*(scan(e).metrics for _, e in alert_exprs() + dashboard_exprs()))
    families = {re.sub(r"_(bucket|sum|count)$", "", u) for u in used}
    missing = [
        name
        for name, fam in contract().items()
        if name not in used and not (fam.kind == "histogram" and name in families)
    ]
    assert missing == [], f"metrics on no dashboard or alert: {missing}"


@pytest.mark.parametrize(
    ("expr", "problem"),
    [
        ("rate(shortrec_http_requests[5m])", "'shortrec_http_requests' is not"),  # no _total
        ('shortrec_drift_psi{route="/v1/feed"}', "no label(s) ['route']"),
        ("sum by (route) (shortrec_drift_psi)", "groups on label(s) ['route']"),
        ("shortrec_score", "'shortrec_score' is not"),  # a histogram has no bare sample
        ("vector(1)", "no metric"),
    ],
)
def test_checker_rejects_what_the_service_does_not_export(expr: str, problem: str) -> None:
    assert any(problem in p for p in problems(expr)), problems(expr)
    assert problems('sum by (head, le) (rate(shortrec_score_bucket{head="final"}[5m]))') == []
