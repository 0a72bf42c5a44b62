"""Evaluation report: the stable JSON document, a markdown table and PNG plots.

JSON shape (a stable interface; scripts depend on it)::

    {"protocol": "temporal", "k": 10, "ks": [1, 5, 10, ...], "sampled": false,
     "data": {"fingerprint", "users", "items", "interactions", "train_interactions",
              "eval_users"},
     "recommenders": {NAME: {"ndcg@10": ..., "hit@10": ..., ...}},   # every metric at every k
     "curves": {NAME: {"ndcg": {"1": ..., "5": ..., ...}, ...}},      # the same, metric vs k
     "recommender_info": {NAME: {"fit_by_runner": bool}},
     "logged": {...}, "notes": [...], "config": {...}, "versions": {...}, "timing": {...}}

``sampled`` is true for ``loo-sampled`` (then ``sampling`` says how), and every output says
so. Undefined values (e.g. GAUC without skips) are ``null``. Everything except ``timing`` is a
deterministic function of the inputs and the seed.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

#: Metrics shown in the markdown table, in order, when the protocol produces them.
TABLE_METRICS = (
    "ndcg",
    "hit",
    "recall",
    "mrr",
    "exp_watch_ratio",
    "exp_skip_rate",
    "exp_watch_time_s",
    "gauc",
    "replay_skip_rate",
    "replay_watch_ratio",
    "coverage",
    "ild_tags",
    "ild_embedding",
    "novelty",
    "popularity_percentile",
    "creator_gini",
)
_CURVE_METRICS = ("ndcg", "hit", "recall", "exp_watch_ratio", "exp_skip_rate", "coverage")


def _clean(v: Any) -> Any:
    """JSON-safe copy: NaN/inf -> None, tuples -> lists."""
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_clean(x) for x in v]
    return v


def _split(name: str) -> tuple[str, int | None]:
    base, _, k = name.partition("@")
    return (base, int(k)) if k.isdigit() else (name, None)


@dataclass(frozen=True)
class EvalReport:
    """All metrics of one evaluation run: per recommender, ``{"metric@k": value}``."""

    protocol: str
    k: int
    ks: tuple[int, ...]
    sampled: bool
    data: dict[str, Any]
    metrics: dict[str, dict[str, float]]
    sampling: dict[str, Any] | None = None
    recommender_info: dict[str, dict[str, Any]] = field(default_factory=dict)
    logged: dict[str, float] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    config: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    timing: dict[str, Any] = field(default_factory=dict)

    @property
    def title(self) -> str:
        t = f"Offline evaluation — protocol `{self.protocol}`, k = {self.k}"
        if self.sampled and self.sampling:
            t += (
                f" — SAMPLED metrics (1 held-out + {self.sampling['n_negatives']} "
                f"{self.sampling['negatives']} negatives)"
            )
        return t

    def curves(self) -> dict[str, dict[str, dict[str, float]]]:
        """``{recommender: {metric: {str(k): value}}}`` for every metric measured at a k."""
        out: dict[str, dict[str, dict[str, float]]] = {}
        for name, m in self.metrics.items():
            per: dict[str, dict[str, float]] = {}
            for key, value in m.items():
                base, k = _split(key)
                if k is not None:
                    per.setdefault(base, {})[str(k)] = value
            out[name] = {
                b: dict(sorted(c.items(), key=lambda kv: int(kv[0]))) for b, c in per.items()
            }
        return out

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "protocol": self.protocol,
            "k": self.k,
            "ks": list(self.ks),
            "sampled": self.sampled,
            "data": self.data,
            "recommenders": self.metrics,
            "curves": self.curves(),
            "recommender_info": self.recommender_info,
            "logged": self.logged,
            "notes": list(self.notes),
            "config": self.config,
            "versions": self.versions,
            "timing": self.timing,
        }
        if self.sampling is not None:
            doc["sampling"] = self.sampling
        return dict(_clean(doc))

    def table_columns(self) -> list[str]:
        present = set().union(*(m.keys() for m in self.metrics.values())) if self.metrics else set()
        cols = []
        for base in TABLE_METRICS:
            for key in (f"{base}@{self.k}", base):
                if key in present:
                    cols.append(key)
                    break
        return cols

    def markdown(self) -> str:
        cols = self.table_columns()
        d = self.data
        lines = [
            f"## {self.title}",
            "",
            f"Data `{d.get('fingerprint', '')}`: {d.get('users')} users, {d.get('items')} "
            f"items, {d.get('interactions')} interactions; {d.get('eval_users')} users "
            "evaluated.",
            "",
        ]
        if self.sampled:
            lines += [
                "**These are sampled metrics: they are not comparable with "
                "full-catalogue metrics and can rank models differently "
                "(Krichene & Rendle 2020).**",
                "",
            ]
        lines.append("| recommender | " + " | ".join(cols) + " |")
        lines.append("|---|" + "---:|" * len(cols))
        for name, m in self.metrics.items():
            cells = [_fmt(m.get(c)) for c in cols]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        if self.logged:
            lines += [
                "",
                "Logged test window (the logging policy, not a recommender): "
                + ", ".join(f"{k} {_fmt_logged(v)}" for k, v in sorted(self.logged.items())),
            ]
        if self.notes:
            lines += ["", *[f"- {n}" for n in self.notes]]
        return "\n".join(lines) + "\n"


def _fmt_logged(v: float | None) -> str:
    if isinstance(v, float) and math.isfinite(v) and v.is_integer():
        return str(int(v))  # counts
    return _fmt(v)


def _fmt(v: float | None) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{v:.4f}"


# ---------------------------------------------------------------- plots
def plot_metric_vs_k(report: EvalReport) -> Figure:
    """One panel per headline metric, one line per recommender, x = k (log scale)."""
    curves = report.curves()
    bases = [b for b in _CURVE_METRICS if any(b in c for c in curves.values())]
    fig = Figure(figsize=(4.0 * max(1, len(bases)), 3.4), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, max(1, len(bases)), squeeze=False)[0]
    for ax, base in zip(axes, bases, strict=False):
        for name, c in curves.items():
            if base not in c:
                continue
            pts = [(int(k), v) for k, v in c[base].items() if v is not None and math.isfinite(v)]
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", label=name)
        ax.set_xscale("log")
        ax.set_xticks(list(report.ks), [str(k) for k in report.ks])
        ax.minorticks_off()
        ax.set_xlabel("k")
        ax.set_title(f"{base}@k")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize="small")
    fig.suptitle(report.title, fontsize="small")
    return fig


def plot_accuracy_vs_diversity(report: EvalReport) -> Figure:
    """Scatter of accuracy (NDCG@k, or expected watch ratio under the oracle) against
    diversity (tag ILD@k, else coverage@k), one point per recommender."""
    k = report.k
    y_key = f"exp_watch_ratio@{k}" if report.protocol == "oracle" else f"ndcg@{k}"
    x_key = next(
        (
            c
            for c in (f"ild_tags@{k}", f"coverage@{k}")
            if any(_finite(m.get(c)) for m in report.metrics.values())
        ),
        f"ild_tags@{k}",
    )
    fig = Figure(figsize=(5.0, 4.0), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for name, m in report.metrics.items():
        x, y = m.get(x_key), m.get(y_key)
        if _finite(x) and _finite(y):
            x, y = float(cast(float, x)), float(cast(float, y))
            ax.scatter([x], [y])
            ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize="small")
    ax.set_xlabel(x_key)
    ax.set_ylabel(y_key)
    ax.grid(alpha=0.3)
    ax.set_title(report.title, fontsize="small")
    return fig


def _finite(v: Any) -> bool:
    return isinstance(v, float | int) and math.isfinite(v)


# ---------------------------------------------------------------- atomic writes
def _atomic(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Write through a temporary sibling and a rename: readers see the old file or the new."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_report(report: EvalReport, out_dir: Path) -> dict[str, Path]:
    """Write ``report.json``, ``report.md``, ``metric-vs-k.png`` and
    ``accuracy-vs-diversity.png`` into ``out_dir`` (one directory per protocol), each
    atomically; return their paths keyed ``json``, ``markdown``, ``metric_vs_k``,
    ``accuracy_vs_diversity``."""
    out = Path(out_dir)
    paths = {
        "json": out / "report.json",
        "markdown": out / "report.md",
        "metric_vs_k": out / "metric-vs-k.png",
        "accuracy_vs_diversity": out / "accuracy-vs-diversity.png",
    }
    doc = json.dumps(report.to_json(), indent=2, sort_keys=True, allow_nan=False) + "\n"
    _atomic(paths["json"], lambda fh: fh.write(doc.encode()))
    _atomic(paths["markdown"], lambda fh: fh.write(report.markdown().encode()))
    for key, make in (
        ("metric_vs_k", plot_metric_vs_k),
        ("accuracy_vs_diversity", plot_accuracy_vs_diversity),
    ):
        fig = make(report)

        def save(fh: IO[bytes], fig: Figure = fig) -> None:
            fig.savefig(fh, format="png", dpi=110)

        _atomic(paths[key], save)
    return paths
