"""Generate the provisioned Grafana dashboards of shortrec from code.

    python deploy/grafana/generate.py           # (re)write deploy/grafana/dashboards/*.json
    python deploy/grafana/generate.py --check   # exit 1 if the committed JSON is stale

Three dashboards: service health, recommendation quality and drift, experiments. Every query
uses only metrics that ``src/shortrec/serving/metrics.py`` exports (the contract in
docs/observability.md); ``tests/unit/monitoring/test_dashboards.py`` checks that, and
``tests/integration/test_prometheus.py`` runs every query against a real Prometheus scraping the
real service. ``$__rate_interval`` is Grafana's rate window (at least 4 scrape intervals).

The output is deterministic (sorted keys, fixed ids) so the committed JSON diffs cleanly.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

HERE = Path(__file__).resolve().parent
OUT_DIR = HERE / "dashboards"
#: uid of the datasource provisioned in provisioning/datasources/prometheus.yml
DATASOURCE_UID = "shortrec-prometheus"
DS = {"type": "prometheus", "uid": "${datasource}"}
RATE = "$__rate_interval"

PanelKind = Literal["timeseries", "stat", "heatmap", "table"]


@dataclass(frozen=True)
class Query:
    """One PromQL query of a panel and its legend template."""

    expr: str
    legend: str = ""


@dataclass(frozen=True)
class Panel:
    """A panel: title, queries, unit (Grafana unit id), kind, width in grid columns (of 24),
    optional threshold line(s) and a description shown on hover."""

    title: str
    queries: tuple[Query, ...]
    unit: str = "short"
    kind: PanelKind = "timeseries"
    width: int = 12
    height: int = 8
    thresholds: tuple[float, ...] = ()
    description: str = ""
    min: float | None = None
    max: float | None = None


@dataclass(frozen=True)
class Row:
    title: str
    panels: tuple[Panel, ...]


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    description: str
    rows: tuple[Row, ...]
    tags: tuple[str, ...] = field(default=("shortrec",))


# ---------------------------------------------------------------- query helpers
def rate(metric: str, selector: str = "", window: str = RATE) -> str:
    return f"rate({metric}{{{selector}}}[{window}])" if selector else f"rate({metric}[{window}])"


def quantile(q: float, histogram: str, by: Sequence[str] = (), selector: str = "") -> str:
    """``histogram_quantile`` of a histogram's bucket rates, grouped by ``by``."""
    group = ", ".join([*by, "le"])
    return f"histogram_quantile({q}, sum by ({group}) ({rate(histogram + '_bucket', selector)}))"


def mean(histogram: str, by: Sequence[str] = ()) -> str:
    """Mean of a histogram's observations over the rate window: rate(sum) / rate(count)."""
    grp = f" by ({', '.join(by)})" if by else ""
    return f"sum{grp} ({rate(histogram + '_sum')}) / sum{grp} ({rate(histogram + '_count')})"


def ratio(num: str, den: str, by: Sequence[str] = ()) -> str:
    """Per-group ratio of two counters' rates."""
    grp = f" by ({', '.join(by)})" if by else ""
    return f"sum{grp} ({rate(num)}) / sum{grp} ({rate(den)})"


def percentiles(
    histogram: str, by: Sequence[str], label: str, selector: str = ""
) -> tuple[Query, ...]:
    return tuple(
        Query(quantile(q, histogram, by, selector), f"p{round(q * 100)} {label}")
        for q in (0.5, 0.9, 0.99)
    )


_5XX = 'status=~"5.."'
_HIT = 'result="hit"'
_FINAL = 'head="final"'

#: SRM z-score per arm over one hour (the expression of the ShortrecExperimentSRM alert).
_N_ARM = "sum by (experiment, arm) (increase(shortrec_experiment_assignments_total[1h]))"
_N_EXP = "sum by (experiment) (increase(shortrec_experiment_assignments_total[1h]))"
_ALLOC = "max by (experiment, arm) (shortrec_experiment_allocation)"
SRM_Z = (
    f"({_N_ARM} - on (experiment, arm) ({_ALLOC} * on (experiment) group_left {_N_EXP}))"
    f" / on (experiment, arm) sqrt({_ALLOC} * (1 - {_ALLOC}) * on (experiment) group_left"
    f" {_N_EXP})"
)


# ---------------------------------------------------------------- the dashboards
def service_health() -> Dashboard:
    traffic = Row(
        "Traffic and errors",
        (
            Panel(
                "Requests by route",
                (Query(f"sum by (route) ({rate('shortrec_http_requests_total')})", "{{route}}"),),
                unit="reqps",
                width=8,
            ),
            Panel(
                "Responses by status",
                (Query(f"sum by (status) ({rate('shortrec_http_requests_total')})", "{{status}}"),),
                unit="reqps",
                width=8,
            ),
            Panel(
                "5xx ratio",
                (
                    Query(
                        f"(sum({rate('shortrec_http_requests_total', _5XX)})"
                        f" or vector(0)) / sum({rate('shortrec_http_requests_total')})",
                        "5xx",
                    ),
                ),
                unit="percentunit",
                width=8,
                thresholds=(0.02,),
                description="Alert ShortrecHighErrorRate above 2% for 5 minutes.",
                min=0,
            ),
        ),
    )
    latency = Row(
        "Latency",
        (
            Panel(
                "Request latency by route",
                percentiles(
                    "shortrec_http_request_duration_seconds",
                    ("route",),
                    "{{route}}",
                    'route!="/metrics"',
                ),
                unit="s",
                thresholds=(0.2,),
                description="p50/p90/p99. Alert ShortrecHighLatencyP99: p99 above the 200 ms "
                "budget for 10 minutes.",
            ),
            Panel(
                "Feed pipeline stages, p99",
                (
                    Query(
                        quantile(0.99, "shortrec_stage_duration_seconds", ("stage",)),
                        "{{stage}}",
                    ),
                ),
                unit="s",
            ),
            Panel(
                "Requests in flight",
                (Query("sum(shortrec_http_requests_in_flight)", "in flight"),),
                width=8,
            ),
            Panel(
                "Ranking batch size (mean)",
                (Query(mean("shortrec_rank_batch_size"), "requests per model call"),),
                width=8,
            ),
            Panel(
                "Candidates per source (mean)",
                (Query(mean("shortrec_candidates", ("source",)), "{{source}}"),),
                width=8,
            ),
        ),
    )
    model_store = Row(
        "Model and online store",
        (
            Panel(
                "Model ready",
                (Query("min(shortrec_model_ready)", "ready"),),
                kind="stat",
                width=4,
                thresholds=(1,),
                description="0: no bundle loaded (alert ShortrecModelNotReady).",
            ),
            Panel(
                "Degraded mode",
                (Query("max(shortrec_degraded)", "degraded"),),
                kind="stat",
                width=4,
                thresholds=(1,),
                description="1: serving from the in-process snapshot (alert ShortrecDegradedMode).",
            ),
            Panel(
                "Loaded model",
                (Query("shortrec_model_info", "{{model_version}} ({{ranker_backend}})"),),
                kind="table",
                width=16,
            ),
            Panel(
                "Store latency by operation",
                percentiles("shortrec_store_duration_seconds", ("op",), "{{op}}"),
                unit="s",
            ),
            Panel(
                "Store errors",
                (
                    Query(f"sum({rate('shortrec_store_errors_total')}) or vector(0)", "errors/s"),
                    Query(f"sum({rate('shortrec_degraded_responses_total')})", "degraded pages/s"),
                ),
                unit="ops",
                description="Alert ShortrecStoreErrors above 5% of calls for 2 minutes.",
            ),
            Panel(
                "Fallbacks by reason",
                (Query(f"sum by (reason) ({rate('shortrec_fallbacks_total')})", "{{reason}}"),),
                unit="ops",
            ),
            Panel(
                "Cache hit ratio",
                (
                    Query(
                        f"sum by (cache) ({rate('shortrec_cache_requests_total', _HIT)})"
                        f" / sum by (cache) ({rate('shortrec_cache_requests_total')})",
                        "{{cache}}",
                    ),
                ),
                unit="percentunit",
                min=0,
                max=1,
            ),
        ),
    )
    events = Row(
        "Events",
        (
            Panel(
                "Events ingested and rejected",
                (
                    Query(f"sum({rate('shortrec_events_ingested_total')})", "ingested"),
                    Query(
                        f"sum by (reason) ({rate('shortrec_events_rejected_total')})",
                        "rejected: {{reason}}",
                    ),
                ),
                unit="ops",
                width=12,
                description="Alert ShortrecNoEventsIngested: none for 15 minutes while feeds "
                "are served.",
            ),
            Panel(
                "Event lag (receive time - event time)",
                percentiles("shortrec_event_lag_seconds", (), "lag"),
                unit="s",
                width=12,
            ),
        ),
    )
    return Dashboard(
        uid="shortrec-service",
        title="shortrec / Service health",
        description="Traffic, errors, latency, model and online-store health of the service.",
        rows=(traffic, latency, model_store, events),
    )


def _behaviour(by: Sequence[str], legend: str) -> tuple[Panel, ...]:
    """Skip rate, like rate and watch time per impression, grouped by ``by``."""
    return (
        Panel(
            "Skip rate",
            (Query(ratio("shortrec_skips_total", "shortrec_impressions_total", by), legend),),
            unit="percentunit",
            width=8,
            min=0,
            max=1,
            description="Skipped share of reported impressions (alert ShortrecSkipRateJump).",
        ),
        Panel(
            "Like rate",
            (Query(ratio("shortrec_likes_total", "shortrec_impressions_total", by), legend),),
            unit="percentunit",
            width=8,
            min=0,
        ),
        Panel(
            "Watch time per impression",
            (
                Query(
                    ratio("shortrec_watch_seconds_total", "shortrec_impressions_total", by),
                    legend,
                ),
            ),
            unit="s",
            width=8,
            min=0,
        ),
    )


def quality_and_drift() -> Dashboard:
    engagement = Row(
        "Engagement (from POST /v1/events)",
        (
            *_behaviour((), "all users"),
            Panel(
                "Feeds served and events ingested",
                (
                    Query(f"sum({rate('shortrec_feeds_served_total')})", "feeds/s"),
                    Query(f"sum({rate('shortrec_events_ingested_total')})", "events/s"),
                ),
                unit="ops",
                width=24,
            ),
        ),
    )
    outputs = Row(
        "What the ranker serves",
        (
            Panel(
                "Median score by head",
                (Query(quantile(0.5, "shortrec_score", ("head",)), "{{head}}"),),
                unit="percentunit",
                min=0,
                max=1,
            ),
            Panel(
                "Final score distribution",
                (Query(f"sum by (le) ({rate('shortrec_score_bucket', _FINAL)})", "{{le}}"),),
                kind="heatmap",
            ),
            Panel(
                "Page diversity and fresh share (mean)",
                (
                    Query(mean("shortrec_feed_diversity"), "intra-list diversity"),
                    Query(mean("shortrec_feed_fresh_share"), "fresh share"),
                ),
                unit="percentunit",
                min=0,
                max=1,
                width=24,
            ),
        ),
    )
    drift = Row(
        "Drift against the training reference",
        (
            Panel(
                "PSI by feature",
                (Query("max by (feature) (shortrec_drift_psi)", "{{feature}}"),),
                thresholds=(0.1, 0.25),
                min=0,
                description="Population stability index over the rolling window. < 0.1 stable, "
                "0.1-0.25 moderate, > 0.25 major shift (alerts ShortrecScoreDrift, "
                "ShortrecFeatureDrift).",
            ),
            Panel(
                "KS statistic by feature",
                (Query("max by (feature) (shortrec_drift_ks)", "{{feature}}"),),
                thresholds=(0.2,),
                min=0,
                max=1,
                description="Two-sample Kolmogorov-Smirnov distance, window vs reference.",
            ),
        ),
    )
    return Dashboard(
        uid="shortrec-quality",
        title="shortrec / Recommendation quality and drift",
        description="User behaviour, ranker outputs and drift of scores and inputs.",
        rows=(engagement, outputs, drift),
    )


def experiments() -> Dashboard:
    assign = Row(
        "Assignment and sample ratio",
        (
            Panel(
                "Assignments by arm",
                (
                    Query(
                        "sum by (experiment, arm) "
                        f"({rate('shortrec_experiment_assignments_total')})",
                        "{{experiment}} / {{arm}}",
                    ),
                ),
                unit="reqps",
                width=8,
            ),
            Panel(
                "Observed share vs allocation",
                (
                    Query(
                        "sum by (experiment, arm) "
                        f"({rate('shortrec_experiment_assignments_total')})"
                        " / on (experiment) group_left sum by (experiment) "
                        f"({rate('shortrec_experiment_assignments_total')})",
                        "observed {{experiment}} / {{arm}}",
                    ),
                    Query(_ALLOC, "allocated {{experiment}} / {{arm}}"),
                ),
                unit="percentunit",
                width=8,
                min=0,
                max=1,
            ),
            Panel(
                "Sample-ratio mismatch z (1 h)",
                (Query(SRM_Z, "{{experiment}} / {{arm}}"),),
                width=8,
                thresholds=(-4, 4),
                description="(n_arm - N p) / sqrt(N p (1-p)) over the last hour; alert "
                "ShortrecExperimentSRM when |z| > 4 with N > 200.",
            ),
        ),
    )
    outcomes = Row(
        "Outcomes by arm (arm = EXPERIMENT:ARM)",
        (
            *_behaviour(("arm",), "{{arm}}"),
            Panel(
                "Feeds served by arm",
                (Query(f"sum by (arm) ({rate('shortrec_feeds_served_total')})", "{{arm}}"),),
                unit="reqps",
                width=24,
            ),
        ),
    )
    return Dashboard(
        uid="shortrec-experiments",
        title="shortrec / Experiments",
        description="Assignment health (sample ratio) and per-arm outcomes of running "
        "experiments. Decisions come from `shortrec abtest analyze`, not from this board.",
        rows=(assign, outcomes),
    )


DASHBOARDS = (service_health, quality_and_drift, experiments)


# ---------------------------------------------------------------- Grafana JSON
def _panel_json(p: Panel, pid: int, x: int, y: int) -> dict[str, Any]:
    steps: list[dict[str, Any]] = [{"color": "green", "value": None}]
    colors = ("orange", "red") if len(p.thresholds) > 1 else ("red",)
    steps += [{"color": c, "value": t} for c, t in zip(colors, p.thresholds, strict=False)]
    defaults: dict[str, Any] = {
        "unit": p.unit,
        "thresholds": {"mode": "absolute", "steps": steps},
    }
    if p.min is not None:
        defaults["min"] = p.min
    if p.max is not None:
        defaults["max"] = p.max
    options: dict[str, Any]
    if p.kind == "timeseries":
        defaults["custom"] = {
            "drawStyle": "line",
            "lineWidth": 1,
            "fillOpacity": 10,
            "showPoints": "never",
            "thresholdsStyle": {"mode": "line" if p.thresholds else "off"},
        }
        options = {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        }
    elif p.kind == "stat":
        options = {
            "colorMode": "background",
            "graphMode": "none",
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        }
    elif p.kind == "heatmap":
        options = {
            "calculate": False,
            "yAxis": {"unit": "short"},
            "color": {"mode": "scheme", "scheme": "Oranges"},
        }
    else:
        options = {"showHeader": True}
    targets: list[dict[str, Any]] = []
    for i, q in enumerate(p.queries):
        t: dict[str, Any] = {
            "datasource": DS,
            "expr": q.expr,
            "legendFormat": q.legend,
            "refId": chr(ord("A") + i),
        }
        if p.kind == "heatmap":
            t["format"] = "heatmap"
        elif p.kind == "table":
            t["format"] = "table"
            t["instant"] = True
        targets.append(t)
    return {
        "datasource": DS,
        "description": p.description,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "gridPos": {"h": p.height, "w": p.width, "x": x, "y": y},
        "id": pid,
        "options": options,
        "targets": targets,
        "title": p.title,
        "type": p.kind,
    }


def render(d: Dashboard) -> dict[str, Any]:
    """Grafana dashboard JSON model (schemaVersion 39) of ``d``; panels flow left to right in
    rows of 24 grid columns."""
    panels: list[dict[str, Any]] = []
    pid, y = 1, 0
    for row in d.rows:
        panels.append(
            {
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "id": pid,
                "panels": [],
                "title": row.title,
                "type": "row",
            }
        )
        pid, y = pid + 1, y + 1
        x, line_h = 0, 0
        for p in row.panels:
            if not 1 <= p.width <= 24:
                raise ValueError(f"{d.uid}: panel {p.title!r}: width {p.width} not in 1..24")
            if x + p.width > 24:
                x, y, line_h = 0, y + line_h, 0
            panels.append(_panel_json(p, pid, x, y))
            pid, x, line_h = pid + 1, x + p.width, max(line_h, p.height)
        y += line_h
    return {
        "annotations": {"list": []},
        "description": d.description,
        "editable": True,
        "graphTooltip": 1,
        "links": [],
        "panels": panels,
        "refresh": "30s",
        "schemaVersion": 39,
        "tags": list(d.tags),
        "templating": {
            "list": [
                {
                    "current": {"selected": False, "text": "Prometheus", "value": DATASOURCE_UID},
                    "hide": 0,
                    "label": "Data source",
                    "name": "datasource",
                    "options": [],
                    "query": "prometheus",
                    "refresh": 1,
                    "type": "datasource",
                }
            ]
        },
        "time": {"from": "now-1h", "to": "now"},
        "timezone": "browser",
        "title": d.title,
        "uid": d.uid,
        "version": 1,
    }


def dump(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def outputs() -> dict[Path, str]:
    """Every generated file and its content."""
    out: dict[Path, str] = {}
    for build in DASHBOARDS:
        d = build()
        out[OUT_DIR / f"{d.uid}.json"] = dump(render(d))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--check", action="store_true", help="fail if committed files are stale")
    args = ap.parse_args(argv)
    files = outputs()
    stale = [p for p, text in files.items() if not p.is_file() or p.read_text() != text]
    if args.check:
        for p in stale:
            print(f"stale: {p.relative_to(HERE.parent.parent)} (run {Path(__file__).name})")
        return 1 if stale else 0
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for p in stale:
        tmp = p.with_name(f".{p.name}.tmp")
        tmp.write_text(files[p])
        tmp.replace(p)  # atomic: a reader sees the old or the new dashboard
        print(f"wrote {p.relative_to(HERE.parent.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
