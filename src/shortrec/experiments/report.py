"""Self-contained HTML report (+ PNGs + JSON) of an :class:`AnalysisResult`.

``index.html`` opens from disk with no server and no network: figures are embedded as base64
PNG data URIs and the styles are inline. The same PNGs are written beside it, and
``result.json`` holds :meth:`AnalysisResult.to_dict`. The directory appears atomically.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: no display, deterministic PNGs
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from shortrec.experiments.analysis import METRIC_BY_NAME, AnalysisResult

REPORT_FILE = "index.html"
RESULT_FILE = "result.json"


def _fmt(v: float, digits: int = 4) -> str:
    if v is None or not math.isfinite(v):
        return "–"
    return f"{v:.{digits}g}"


def _pct(v: float) -> str:
    return "–" if v is None or not math.isfinite(v) else f"{100 * v:+.2f}%"


def _pval(p: float) -> str:
    if p is None or not math.isfinite(p):
        return "–"
    return f"{p:.2e}" if p < 1e-3 else f"{p:.4f}"


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def _lift_figure(result: AnalysisResult) -> bytes:
    comps = result.comparisons
    fig, ax = plt.subplots(figsize=(8, 0.45 * max(len(comps), 2) + 1))
    labels = [f"{c.metric} ({c.arm})" for c in comps]
    y = list(range(len(comps)))
    lifts = [100 * c.lift for c in comps]
    # a percentile-bootstrap interval need not contain the point estimate (skewed metrics):
    # draw the bar from the estimate to the interval's far end, never a negative length
    err_lo = [
        100 * max(0.0, c.lift - c.lift_ci_low) if math.isfinite(c.lift_ci_low) else 0 for c in comps
    ]
    err_hi = [
        100 * max(0.0, c.lift_ci_high - c.lift) if math.isfinite(c.lift_ci_high) else 0
        for c in comps
    ]
    colors = ["tab:green" if c.significant else "tab:gray" for c in comps]
    for yi, lift, lo, hi, color in zip(y, lifts, err_lo, err_hi, colors, strict=True):
        ax.errorbar([lift], [yi], xerr=[[lo], [hi]], fmt="o", color=color, capsize=3)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    ax.set_xlabel(
        f"relative lift vs {result.control} (%), {100 * (1 - result.config.alpha):.0f}% CI"
    )
    return _png(fig)


def _timeline_figure(result: AnalysisResult) -> bytes | None:
    if not result.timeline:
        return None
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(8, 5), sharex=True)
    for arm in sorted({p.arm for p in result.timeline}):
        pts = [p for p in result.timeline if p.arm == arm]
        x = list(range(len(pts)))
        ax.plot(x, [100 * p.lift for p in pts], marker="o", label=arm)
        ax.fill_between(
            x, [100 * p.lift_ci_low for p in pts], [100 * p.lift_ci_high for p in pts], alpha=0.2
        )
        ax2.plot(x, [p.p_always_valid for p in pts], marker="o", label=arm)
        ax2.set_xticks(x, [p.ts[:10] for p in pts], rotation=45, ha="right")
    ax.axhline(0, color="black", lw=0.8)
    ax.set_ylabel(f"cumulative lift (%)\n{result.config.sequential_metric}")
    ax.legend()
    ax2.axhline(result.config.alpha, color="red", lw=0.8, ls="--")
    ax2.set_yscale("log")
    ax2.set_ylabel("always-valid p (mSPRT)")
    return _png(fig)


def _histogram_figure(result: AnalysisResult, name: str) -> bytes | None:
    hist = next((h for h in result.histograms if h.name == name), None)
    if hist is None or not any(sum(c) for c in hist.counts.values()):
        return None
    fig, ax = plt.subplots(figsize=(8, 3.2))
    for arm, counts in hist.counts.items():
        total = sum(counts) or 1
        ax.stairs([c / total for c in counts], hist.edges, label=arm)
    ax.set_xlabel(name.replace("_", " ") + " (last bin open-ended)")
    ax.set_ylabel("share")
    ax.legend()
    return _png(fig)


_CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;
text-align:right}th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}
.sig{background:#e8f6e8}.bad{background:#c0392b;color:white;padding:1em;font-weight:bold}
.ok{background:#e8f6e8;padding:.5em}img{max-width:100%}"""


def render_html(result: AnalysisResult, figures: dict[str, bytes]) -> str:
    """The report page as one string (figures embedded as data URIs)."""
    e = html.escape
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>A/B report: "
        f"{e(result.experiment)}</title><style>{_CSS}</style></head><body>",
        f"<h1>Experiment <code>{e(result.experiment)}</code></h1>",
    ]
    srm = result.srm
    if srm.mismatch:
        parts.append(
            f"<p class='bad' id='srm'>SAMPLE RATIO MISMATCH: observed {srm.observed} "
            f"vs expected {tuple(round(v, 1) for v in srm.expected)} users "
            f"(chi² = {srm.chi2:.2f}, p = {_pval(srm.p_value)}). The split is broken; "
            f"do not trust the results below.</p>"
        )
    else:
        parts.append(
            f"<p class='ok' id='srm'>Sample ratio OK: users {dict(result.users)} "
            f"(chi² = {srm.chi2:.2f}, p = {_pval(srm.p_value)}).</p>"
        )
    for note in result.notes:
        parts.append(f"<p>{e(note)}</p>")
    parts.append(
        "<h2>Comparisons</h2><table><tr><th>metric</th><th>arm</th><th>test</th>"
        f"<th>{e(result.control)}</th><th>arm value</th><th>lift</th><th>lift CI</th>"
        "<th>p</th><th>p (BH)</th><th>MDE</th></tr>"
    )
    for c in result.comparisons:
        cls = " class='sig'" if c.significant else ""
        label = METRIC_BY_NAME[c.metric].label if c.metric in METRIC_BY_NAME else c.metric
        parts.append(
            f"<tr{cls}><td title='{e(c.metric)}'>{e(label)}</td><td>{e(c.arm)}</td>"
            f"<td>{e(c.test)}</td><td>{_fmt(c.control_value)}</td>"
            f"<td>{_fmt(c.treatment_value)}</td><td>{_pct(c.lift)}</td>"
            f"<td>[{_pct(c.lift_ci_low)}, {_pct(c.lift_ci_high)}]</td>"
            f"<td>{_pval(c.p_value)}</td><td>{_pval(c.p_adjusted)}</td>"
            f"<td>{_pct(c.mde_rel)}</td></tr>"
        )
    parts.append(
        "</table><h2>Estimates per arm</h2><table><tr><th>metric</th><th>arm</th>"
        "<th>users</th><th>estimate</th><th>CI</th></tr>"
    )
    for est in result.estimates:
        parts.append(
            f"<tr><td>{e(est.metric)}</td><td>{e(est.arm)}</td><td>{est.users}</td>"
            f"<td>{_fmt(est.estimate)}</td><td>[{_fmt(est.ci_low)}, "
            f"{_fmt(est.ci_high)}]</td></tr>"
        )
    parts.append(
        "</table><h2>Coverage of served feeds</h2><table><tr><th>arm</th><th>coverage</th></tr>"
    )
    for arm, cov in sorted(result.coverage.items()):
        parts.append(f"<tr><td>{e(arm)}</td><td>{_fmt(cov)}</td></tr>")
    parts.append("</table>")
    titles = {
        "lift": "Relative lift per metric",
        "timeline": "Cumulative lift over time",
        "watch_ratio": "Watch ratio per impression",
        "session_length": "Session length (impressions)",
    }
    for key, png in figures.items():
        b64 = base64.b64encode(png).decode()
        parts.append(
            f"<h2>{e(titles.get(key, key))}</h2>"
            f"<img alt='{e(key)}' src='data:image/png;base64,{b64}'>"
        )
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(result: AnalysisResult, out: Path | str) -> Path:
    """Write ``index.html``, one PNG per figure and ``result.json`` into the directory ``out``
    (replaced atomically); return the path of ``index.html``."""
    out = Path(out)
    figures: dict[str, bytes] = {"lift": _lift_figure(result)}
    for key, png in (
        ("timeline", _timeline_figure(result)),
        ("watch_ratio", _histogram_figure(result, "watch_ratio")),
        ("session_length", _histogram_figure(result, "session_length")),
    ):
        if png is not None:
            figures[key] = png
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        for key, png in figures.items():
            (tmp / f"{key}.png").write_bytes(png)
        (tmp / RESULT_FILE).write_text(json.dumps(result.to_dict(), indent=2, sort_keys=True))
        (tmp / REPORT_FILE).write_text(render_html(result, figures), encoding="utf-8")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(out)
    return out / REPORT_FILE
