"""Generate docs/showcase.md, and the results blocks of the README and docs/design.md, from the
committed benchmark and quality results (``bench/results/*.json``). Never type a number into
those places by hand: rerun this script.

    python scripts/gen_showcase.py           # rewrite the three files (idempotent)
    python scripts/gen_showcase.py --check   # exit 1 when any of them is stale

Every number is written as a citation link, ``[0.49 M](bench/results/generate.json
"medium_events_per_s")``: the link text is the value, the target is the results file and the
link title is the key inside it (a metric name, or ``config.X`` / ``machine.X``).
tests/unit/test_docs.py reads every such link back and checks it against the file, and checks
that the generated parts equal a fresh rendering. A value missing from the results is written
as *not measured*, never guessed. Display styles: ``M`` millions, ``k`` thousands, ``pct`` a
fraction shown in percent (a ``*_pct`` metric is already in percent), ``int``, ``fN`` N
decimals, ``e`` scientific.

The README block goes into ``README.new.md`` while that draft exists, else into ``README.md``.
Targets come from ``bench/report.py`` (``TARGETS``), the same table docs/benchmarks.md shows.
"""

from __future__ import annotations

import importlib
import json
import math
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
SHOWCASE = ROOT / "docs" / "showcase.md"
DESIGN = ROOT / "docs" / "design.md"
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"

# Targets in bench/report.py whose metric was renamed by its benchmark; used only while the
# target's own key is absent from the results file (a no-op once report.py is updated).
KEY_ALIASES: dict[tuple[str, str], str] = {
    ("serving", "feed_rps"): "feed_req_per_s",
    ("instrumentation", "overhead_pct"): "feed_overhead_pct_cpu",
}

NOT_MEASURED = "*not measured*"


def readme_path(root: Path = ROOT) -> Path:
    """The README the headline block belongs in: the draft while it exists, else README.md."""
    draft = root / "README.new.md"
    return draft if draft.is_file() else root / "README.md"


# --------------------------------------------------------------------------- formatting


def fmt(value: float, style: str) -> str:
    """``value`` as shown in the docs under ``style`` (see the module docstring)."""
    if style == "M":
        return f"{value / 1e6:,.2f} M"
    if style == "k":
        return f"{value / 1e3:,.1f} k"
    if style == "pct":
        return f"{value * 100:.1f} %"
    if style == "pctraw":
        return f"{value:.1f} %"
    if style == "spct":  # signed percent of a fraction
        return f"{value * 100:+.1f} %"
    if style == "int":
        return f"{round(value):,}"
    if style == "e":
        return f"{value:.1e}"
    if style.startswith("f") and style[1:].isdigit():
        return f"{value:,.{int(style[1:])}f}"
    if style == "auto":
        return fmt(value, auto_style(value))
    raise ValueError(f"unknown display style {style!r}")


def auto_style(value: float) -> str:
    """A readable style for a value of unknown kind (three significant digits or so)."""
    a = abs(value)
    if a >= 1e5:
        return "M"
    if a >= 100:
        return "f0"
    if a >= 10:
        return "f1"
    if a >= 1 or a == 0:
        return "f2"
    return "f3" if a >= 1e-3 else "e"


def lookup(doc: dict[str, Any], key: str) -> Any:
    """The value of ``key`` in one results document: ``config.a.b`` / ``machine.x`` walk into
    those sections, anything else is a metric name."""
    head, _, rest = key.partition(".")
    if head in {"config", "machine"} and rest:
        node: Any = doc.get(head, {})
        for part in rest.split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node
    return doc.get("metrics", {}).get(key)


def as_number(raw: Any) -> float | None:
    """A finite float, or None (missing, non-numeric or not finite)."""
    if isinstance(raw, bool):
        return float(raw)
    if isinstance(raw, int | float) and math.isfinite(float(raw)):
        return float(raw)
    return None


# --------------------------------------------------------------------------- results


class Results:
    """The loaded results files, and citation links relative to one document (``rel`` is the
    path from that document to the repository root, e.g. ``"../"`` for docs/)."""

    def __init__(self, docs: dict[str, dict[str, Any]], rel: str = "") -> None:
        self.docs = docs
        self.rel = rel

    @classmethod
    def load(cls, directory: Path = RESULTS_DIR) -> Results:
        docs: dict[str, dict[str, Any]] = {}
        for path in sorted(directory.glob("*.json")):
            try:
                doc = json.loads(path.read_text())
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: line {e.lineno}: not valid JSON: {e.msg}") from e
            if not isinstance(doc, dict) or not isinstance(doc.get("metrics"), dict):
                raise ValueError(f"{path}: field 'metrics': missing or not an object")
            docs[path.stem] = doc
        return cls(docs)

    def at(self, rel: str) -> Results:
        return Results(self.docs, rel)

    def has(self, result: str) -> bool:
        return result in self.docs

    def v(self, result: str, key: str) -> float | None:
        doc = self.docs.get(result)
        return None if doc is None else as_number(lookup(doc, key))

    def text(self, result: str, key: str) -> str | None:
        doc = self.docs.get(result)
        raw = None if doc is None else lookup(doc, key)
        return raw if isinstance(raw, str) else None

    def c(self, result: str, key: str, style: str = "auto") -> str:
        """A citation of one value, or *not measured* naming where it would come from."""
        value = self.v(result, key)
        if value is None:
            return f"{NOT_MEASURED} (`{result}.json: {key}`)"
        return f'[{fmt(value, style)}]({self.rel}bench/results/{result}.json "{key}")'

    def gate(self, result: str, key: str) -> str:
        """PASS / FAIL of a ``gate_*`` metric, cited."""
        value = self.v(result, key)
        if value is None:
            return f"{NOT_MEASURED} (`{result}.json: {key}`)"
        word = "PASS" if value >= 1 else "FAIL"
        link = f'[{word}]({self.rel}bench/results/{result}.json "{key}")'
        return link if value >= 1 else f"**{link}**"


def cmp_word(a: float | None, b: float | None, more: str, less: str, same: str = "equal to") -> str:
    """``more`` when a > b, ``less`` when a < b (``same`` when equal); "?" when unknown."""
    if a is None or b is None:
        return "(not comparable: a value was not measured)"
    return more if a > b else less if a < b else same


# --------------------------------------------------------------------------- targets


@dataclass(frozen=True)
class TargetRow:
    what: str
    result: str
    key: str
    op: str
    goal: float
    value: float | None

    @property
    def met(self) -> bool | None:
        if self.value is None:
            return None
        ops: dict[str, Callable[[float, float], bool]] = {
            ">=": lambda a, b: a >= b,
            ">": lambda a, b: a > b,
            "<=": lambda a, b: a <= b,
            "<": lambda a, b: a < b,
        }
        return ops[self.op](self.value, self.goal)


def _targets_table() -> dict[tuple[str, str], tuple[str, float, str]]:
    if str(ROOT) not in sys.path:  # bench/ is a package at the repository root
        sys.path.insert(0, str(ROOT))
    report = importlib.import_module("bench.report")
    table: dict[tuple[str, str], tuple[str, float, str]] = report.TARGETS
    return table


def target_rows(r: Results) -> list[TargetRow]:
    rows = []
    for (result, target_key), (op, goal, what) in _targets_table().items():
        key = target_key
        if r.v(result, key) is None and (result, key) in KEY_ALIASES:
            key = KEY_ALIASES[(result, key)]
        rows.append(TargetRow(what, result, key, op, float(goal), r.v(result, key)))
    return rows


def target_for(r: Results, result: str, key: str) -> TargetRow | None:
    for row in target_rows(r):
        if (row.result, row.key) == (result, key):
            return row
    return None


def goal_text(goal: float) -> str:
    """A target as typed in the issues: ``1 M``, ``500``, ``0.95``."""
    if abs(goal) >= 1e5:
        return f"{goal / 1e6:g} M"
    if goal.is_integer():
        return f"{int(goal):,}"
    return f"{goal:g}"


def _goal(row: TargetRow) -> str:
    return f"{row.op} {goal_text(row.goal)}"


def target_phrase(row: TargetRow | None, unit: str) -> str:
    """``target >= 1 M events/s **missed**``, from the target table and the results."""
    if row is None:
        return "no target"
    return f"target {_goal(row)} {unit} {_status(row)}"


def _status(row: TargetRow | None) -> str:
    if row is None:
        return "–"
    return {True: "met", False: "**missed**", None: "not measured"}[row.met]


def targets_block(r: Results) -> list[str]:
    rows = target_rows(r)
    met = sum(row.met is True for row in rows)
    missed = sum(row.met is False for row in rows)
    lines = [
        f"Targets from the issues (`bench/report.py`): {met} met, {missed} missed, "
        f"{len(rows) - met - missed} not measured.",
        "",
        "| target | measured | goal | unit | status |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row.what} | {r.c(row.result, row.key)} | {_goal(row)} | {unit_of(row.key)} "
            f"| {_status(row)} |"
        )
    return lines


def unit_of(key: str) -> str:
    """The unit a metric name's suffix declares (DESIGN.md: flat names with unit suffixes)."""
    suffixes = (
        ("_per_s", "per s"),
        ("_ms", "ms"),
        ("_mb", "MB"),
        ("_pct", "%"),
        ("_s", "s"),
    )
    stem = key
    for part in ("_1000000", "_50000", "_p50", "_p99", "_mean"):
        stem = stem.removesuffix(part)
    for suffix, unit in suffixes:
        if stem.endswith(suffix) or f"{suffix}_" in key:
            return unit
    return "–"


# --------------------------------------------------------------------------- quality

RECOMMENDERS: tuple[tuple[str, str], ...] = (
    ("shortrec", "**shortrec** (retrieval -> ranker -> re-rank)"),
    ("ranker_no_rerank", "ranker, no re-ranking"),
    ("retrieval_only", "retrieval order only"),
    ("item_knn", "item-kNN"),
    ("most_popular", "most popular"),
    ("trending", "trending"),
    ("random", "random"),
)
BASELINES = ("item_knn", "most_popular", "trending", "random")


def quality_world(r: Results) -> str | None:
    """The synthetic world of the quality results: ``medium`` (full run) if present."""
    for world in ("medium", "small"):
        if r.has(f"quality_{world}"):
            return world
    return None


def best_baseline(r: Results, res: str, prefix: str, metric: str) -> tuple[str, float | None]:
    scored = [(b, r.v(res, f"{prefix}_{b}_{metric}")) for b in BASELINES]
    known = [(b, v) for b, v in scored if v is not None]
    if not known:
        return "none", None
    return max(known, key=lambda bv: bv[1])


def quality_table(
    r: Results, res: str, prefix: str, metrics: Sequence[tuple[str, str, str]]
) -> list[str]:
    header = "| recommender | " + " | ".join(m[1] for m in metrics) + " |"
    lines = [header, "|---|" + "---|" * len(metrics)]
    for name, label in RECOMMENDERS:
        cells = [r.c(res, f"{prefix}_{name}_{key}", style) for key, _, style in metrics]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def gate_lines(r: Results, res: str) -> list[str]:
    keys = sorted(k for k in r.docs[res]["metrics"] if k.startswith("gate_"))
    lines = ["| gate | result |", "|---|---|"]
    for k in keys:
        lines.append(f"| {k.removeprefix('gate_').replace('_', ' ')} | {r.gate(res, k)} |")
    return lines


# --------------------------------------------------------------------------- README block


def headline_rows(r: Results) -> list[tuple[str, str, TargetRow | None]]:
    """(what, measured, target row) for the README's headline table."""
    rows: list[tuple[str, str, TargetRow | None]] = [
        (
            "`make demo`'s whole loop, small world (s)",
            r.c("demo", "seconds", "f0"),
            target_for(r, "demo", "seconds"),
        ),
        (
            "Simulator, medium world (events/s)",
            r.c("generate", "medium_events_per_s", "M"),
            target_for(r, "generate", "medium_events_per_s"),
        ),
        (
            "ETL, medium world (events/s)",
            r.c("etl", "medium_events_per_s", "M"),
            target_for(r, "etl", "medium_events_per_s"),
        ),
        (
            "ANN recall@100 vs exact search, 1M videos",
            r.c("retrieval", "ann_recall_at_100_1000000", "f3"),
            target_for(r, "retrieval", "ann_recall_at_100_1000000"),
        ),
        (
            "All five candidate sources + merge, 1M videos, p99 (ms)",
            r.c("retrieval", "request_p99_ms_1000000", "f1"),
            target_for(r, "retrieval", "request_p99_ms_1000000"),
        ),
        (
            "Rank 500 candidates as served (features + ONNX), p50 / p99 (ms)",
            f"{r.c('ranker', 'e2e_c500_p50_ms', 'f1')} / "
            f"{r.c('ranker', 'e2e_c500_p99_ms', 'f1')}",
            target_for(r, "ranker", "e2e_c500_p99_ms"),
        ),
        (
            "DPP + caps, 200 -> 20, p50 / p99 (ms)",
            f"{r.c('rerank', 'dpp_caps_p50_ms', 'f2')} / {r.c('rerank', 'dpp_caps_p99_ms', 'f1')}",
            target_for(r, "rerank", "dpp_caps_p99_ms"),
        ),
        (
            "Feed over HTTP, closed loop (req/s)",
            r.c("serving", "feed_req_per_s", "f0"),
            target_for(r, "serving", "feed_req_per_s"),
        ),
        (
            "Feed over HTTP under that load, p99 (ms)",
            r.c("serving", "feed_p99_ms", "f0"),
            None,
        ),
        (
            "Feed/event mix paced at 500 feeds/s: feeds/s sustained",
            r.c("serving", "paced_feed_req_per_s", "f0"),
            target_for(r, "serving", "paced_feed_req_per_s"),
        ),
        (
            "Feed/event mix paced at 500 feeds/s: p99 (ms)",
            r.c("serving", "paced_p99_ms", "f0"),
            target_for(r, "serving", "paced_p99_ms"),
        ),
        (
            "Feed pipeline in process, one request at a time, p50 / p99 (ms)",
            f"{r.c('serving', 'stage_total_p50_ms', 'f1')} / "
            f"{r.c('serving', 'stage_total_p99_ms', 'f1')}",
            None,
        ),
        (
            "Metrics overhead on a feed request, CPU time (%)",
            r.c("instrumentation", "feed_overhead_pct_cpu", "pctraw"),
            target_for(r, "instrumentation", "feed_overhead_pct_cpu"),
        ),
    ]
    world = quality_world(r)
    if world is not None:
        res, p = f"quality_{world}", f"{world}_oracle"
        base, _ = best_baseline(r, res, p, "ndcg_at_10")
        rows += [
            (
                f"Oracle NDCG@10, {world} world: shortrec / best baseline "
                f"({base.replace('_', '-')})",
                f"{r.c(res, f'{p}_shortrec_ndcg_at_10', 'f3')} / "
                f"{r.c(res, f'{p}_{base}_ndcg_at_10', 'f3')}",
                None,
            ),
            (
                f"Expected skip rate@10, {world} world: shortrec / the logged feed",
                f"{r.c(res, f'{p}_shortrec_exp_skip_rate_at_10', 'pct')} / "
                f"{r.c(res, f'{world}_oracle_logged_skip_rate', 'pct')}",
                None,
            ),
            (
                "Quality gates passed (issues 5 and 6)",
                f"{r.c(res, 'gates_passed', 'int')} of {r.c(res, 'gates_total', 'int')}",
                None,
            ),
        ]
    rows.append(
        (
            "A/B analysis of a synthetic log (events/s)",
            r.c("abtest", "events_per_s", "M"),
            None,
        )
    )
    return rows


def machine_line(r: Results) -> str:
    ref = next((n for n in ("serving", "retrieval", "ranker") if r.has(n)), None)
    if ref is None:
        return "No results files found."
    cpu = r.text(ref, "machine.cpu") or "unknown CPU"
    return (
        f"Measured on {cpu}, {r.c(ref, 'machine.cores', 'int')} cores, shared with other work "
        "(each file records its machine, versions, config and load: "
        f"[benchmarks.md]({'docs/' if r.rel == '' else ''}benchmarks.md))."
    )


def readme_block(r: Results) -> str:
    lines = [
        machine_line(r),
        "",
        "| what | measured | goal | status |",
        "|---|---|---|---|",
    ]
    for what, shown, row in headline_rows(r):
        goal = _goal(row) if row is not None else "–"
        lines.append(f"| {what} | {shown} | {goal} | {_status(row)} |")
    return "\n".join(lines) + "\n"


def design_block(r: Results) -> str:
    lines = targets_block(r)
    world = quality_world(r)
    if world is not None:
        res = f"quality_{world}"
        lines += [
            "",
            f"Quality gates (`{res}.json`): {r.c(res, 'gates_passed', 'int')} of "
            f"{r.c(res, 'gates_total', 'int')} pass; each gate and what its failure means are "
            "in [quality.md](quality.md) and [showcase.md](showcase.md#result).",
        ]
    for name, what in (
        ("quality_medium", "The quality run on the `medium` world"),
        ("quality_sasrec", "The SASRec peer comparison (RecBole)"),
    ):
        if r.has(name):
            lines += ["", f"{what}: results in [{name}.json](../bench/results/{name}.json)."]
        else:
            lines += ["", f"{what}: {NOT_MEASURED} (no `bench/results/{name}.json`)."]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- showcase


def showcase(r0: Results) -> str:
    r = r0.at("../")
    world = quality_world(r)
    q = f"quality_{world}" if world else "quality_small"
    o, t, ml = f"{world}_oracle", f"{world}_temporal", "ml100k_loo_full"
    gen_t = target_for(r, "generate", "medium_events_per_s")
    etl_t = target_for(r, "etl", "medium_events_per_s")
    rank_t = target_for(r, "ranker", "e2e_c500_p99_ms")
    serve_t = target_for(r, "serving", "feed_req_per_s")
    paced_t = target_for(r, "serving", "paced_p99_ms")
    base, _ = best_baseline(r, q, o, "ndcg_at_10")
    tbase, _ = best_baseline(r, q, t, "ndcg_at_10")
    sr = r.v(q, f"{o}_shortrec_ndcg_at_10")
    tsr = r.v(q, f"{t}_shortrec_ndcg_at_10")
    L: list[str] = []
    add = L.append
    add("# shortrec in STAR form")
    add("")
    add(
        "Generated by `python scripts/gen_showcase.py` from `bench/results/*.json`; do not edit "
        "by hand. Every number links to the results file it comes from, with the key inside it "
        "as the link title; `tests/unit/test_docs.py` checks each one."
    )
    add("")
    add("## Situation")
    add("")
    add(
        "A short-video feed (Shorts, TikTok, Reels) shows one video at a time, full screen. The "
        "user answers every impression within seconds: a fast swipe, a partial view, a "
        "completion, a replay, sometimes a like. The feed must learn from that implicit signal, "
        "react to it within the session (the next page, not tomorrow's model), avoid serving "
        "one creator or topic until the user is bored, and do it in tens of milliseconds. Logs "
        "are biased by the policy that produced them, so offline accuracy on logs can mislead."
    )
    add("")
    add("## Task")
    add("")
    add(
        "Build the whole engine as one open-source repository: data (a session-aware simulator "
        "whose ground truth is known, plus ingestion of public logs), a leakage-free ETL, "
        "candidate retrieval, a multi-task ranker, diversification, an online store, an HTTP "
        "service that takes events back in real time, A/B testing and monitoring, with every "
        "claim backed by a benchmark in the repository, on a "
        f"{r.c('serving', 'machine.cores', 'int')}-core machine "
        "shared with other work. Targets were set per component (below); where one is missed, "
        "the docs say so."
    )
    add("")
    add("## Action")
    add("")
    add(
        "* **Simulator** ([simulator.md](simulator.md)): users with drifting topic interests, "
        "fatigue and boredom scroll a feed served by a biased logging policy; the latent world is "
        "kept, so an oracle gives any user's expected response to any video. Lockstep numpy "
        "lanes on worker processes: "
        f"{r.c('generate', 'medium_events_per_s', 'M')} events/s on the medium world "
        f"({r.c('generate', 'medium_events', 'M')} events; "
        f"{r.c('generate', 'medium_events_per_cpu_s', 'M')} events per CPU-second); "
        f"{target_phrase(gen_t, 'events/s')}."
    )
    add(
        "* **Ingestion** ([ingestion.md](ingestion.md)): MovieLens, KuaiRec, KuaiRand, "
        "sequence files and mapped CSV into one schema, errors naming file, line and field: "
        f"{r.c('ingest', 'kuairand_rows', 'M')} KuaiRand-layout rows at "
        f"{r.c('ingest', 'kuairand_rows_per_s', 'k')} rows/s."
    )
    add(
        "* **ETL** ([etl.md](etl.md)): dedupe, sessions, temporal and leave-last-out splits, "
        "smoothed statistics and point-in-time training samples, as pure functions over user "
        "buckets (the unit a distributed runner would map): "
        f"{r.c('etl', 'medium_events_per_s', 'M')} events/s on medium "
        f"({r.c('etl', 'medium_events_per_cpu_s', 'M')} per CPU-second); "
        f"{target_phrase(etl_t, 'events/s')}."
    )
    add(
        "* **Retrieval** ([retrieval.md](retrieval.md)): a two-tower model (sampled softmax with "
        "log-Q correction) searched in FAISS, plus co-visitation, trending, tag, fresh and "
        "explore sources, merged by weighted reciprocal-rank fusion over deep lists (quotas "
        "reserve slots for new uploads). IVF recall@100 against exact search at 1M "
        f"videos: {r.c('retrieval', 'ann_recall_at_100_1000000', 'f3')}, search p99 "
        f"{r.c('retrieval', 'index_search_p99_ms_1000000', 'f2')} ms; all sources and the merge "
        f"for one request p99 {r.c('retrieval', 'request_p99_ms_1000000', 'f1')} ms at 1M and "
        f"{r.c('retrieval', 'request_p99_ms_50000', 'f1')} ms at 50k videos."
    )
    add(
        "* **Ranker** ([ranking.md](ranking.md)): a Transformer over the user's last events with "
        "target attention from each candidate; heads for engage, complete, like and diversity; "
        "a differentiable list-diversity loss; exported to ONNX (max parity error "
        f"{r.c('ranker', 'onnx_max_abs_error', 'e')}). 500 candidates as served (features "
        f"and the folded serving graph on ONNX Runtime): p50 "
        f"{r.c('ranker', 'e2e_c500_p50_ms', 'f1')} ms, p99 "
        f"{r.c('ranker', 'e2e_c500_p99_ms', 'f1')} ms; the full graph's ONNX call alone p99 "
        f"{r.c('ranker', 'onnx_c500_p99_ms', 'f1')} ms "
        f"(PyTorch is {r.c('ranker', 'torch_over_onnx_c500_p50_ratio', 'f1')}x slower at p50); "
        f"{target_phrase(rank_t, 'ms at p99')}."
    )
    add(
        "* **Re-ranking** ([ranking.md](ranking.md#re-ranking-rerankdiversifypy)): by default "
        "calibrated re-ranking to each user's topic mix (Steck 2018), each page ordered by "
        "relevance plus the user's topic affinity; greedy DPP or MMR otherwise; per-creator and "
        "per-topic caps that count the session's recent videos. DPP with caps, "
        f"200 -> 20 in {r.c('rerank', 'dpp_caps_p50_ms', 'f2')} ms p50, "
        f"{r.c('rerank', 'dpp_caps_p99_ms', 'f1')} ms p99."
    )
    add(
        "* **Online store** ([store.md](store.md)): Redis with versioned keys, hash tags for "
        "Cluster, atomic publish, idempotent event application; an in-process twin passes the "
        "same contract tests. One request's user context in one round trip: p50 "
        f"{r.c('store', 'request_context_p50_ms', 'f2')} ms, p99 "
        f"{r.c('store', 'request_context_p99_ms', 'f1')} ms; events applied at "
        f"{r.c('store', 'apply_events_per_s', 'int')} events/s."
    )
    add(
        "* **Serving** ([api.md](api.md)): FastAPI over an HTTP-free service; stage deadlines "
        "with declared fallbacks; degraded mode on an in-process snapshot when Redis is down; "
        "events acknowledged only once durably queued, then applied so the next page sees them. "
        f"With {r.c('serving', 'config.workers', 'int')} workers and "
        f"{r.c('serving', 'config.connections', 'int')} connections: "
        f"{r.c('serving', 'feed_req_per_s', 'f0')} feed req/s at p99 "
        f"{r.c('serving', 'feed_p99_ms', 'f0')} ms (load average "
        f"{r.c('serving', 'load_avg_1m_before', 'f1')} -> "
        f"{r.c('serving', 'load_avg_1m_after', 'f1')} during the run; closed loop); the "
        f"feed/event mix offered at 500 feeds/s sustained "
        f"{r.c('serving', 'paced_feed_req_per_s', 'f0')} feeds/s at p99 "
        f"{r.c('serving', 'paced_p99_ms', 'f0')} ms; one request at a time "
        f"the pipeline takes {r.c('serving', 'stage_total_p50_ms', 'f1')} ms p50, of which "
        f"ranking {r.c('serving', 'stage_ranking_p50_ms', 'f1')} ms; closed-loop "
        f"{target_phrase(serve_t, 'req/s')}, paced p99 {target_phrase(paced_t, 'ms')}."
    )
    add(
        "* **Experiments** ([experiments.md](experiments.md)): salted-hash assignment with "
        "layers and holdouts; Welch, delta-method, CUPED, SRM, Benjamini-Hochberg, mSPRT and a "
        f"Poisson bootstrap. A {r.c('abtest', 'events', 'M')}-event synthetic log is analysed at "
        f"{r.c('abtest', 'events_per_s', 'M')} events/s; its planted skip-rate effect "
        f"(a measured lift of {r.c('abtest', 'skip_rate_lift', 'spct')}) is found with p = "
        f"{r.c('abtest', 'skip_rate_p', 'e')}. Simulated users through the real service: the "
        f"A/A false-positive rate over {r.c('abtest_sim', 'config.validation_salts', 'int')} "
        f"re-randomisations is at most {r.c('abtest_sim', 'aa_fpr_max', 'pct')} per metric."
    )
    add(
        "* **Observability** ([observability.md](observability.md), [runbook.md](runbook.md)): "
        "Prometheus metrics, alert rules with unit tests, generated Grafana dashboards, drift "
        "(PSI, KS) against the training reference, shared across API workers (prometheus_client "
        "multiprocess mode). Overhead on a feed request: "
        f"{r.c('instrumentation', 'feed_overhead_pct_cpu', 'pctraw')} of its CPU time "
        f"({r.c('instrumentation', 'feed_overhead_cpu_us', 'f0')} µs; events "
        f"{r.c('instrumentation', 'events_overhead_pct_cpu', 'pctraw')})."
    )
    add("")
    add("## Result")
    add("")
    add("### Against the targets")
    add("")
    L.extend(targets_block(r))
    add("")
    add(f"### Recommendation quality ({world or 'no'} world)")
    add("")
    if world is None:
        add(
            f"{NOT_MEASURED}: no `bench/results/quality_*.json` yet "
            "(`python -m bench.bench_quality`)."
        )
    else:
        add(
            "Under the **oracle** protocol the simulator's ground truth scores every list "
            "(expected watch ratio and skip probability of each video for that user at that "
            "time, unbiased by the logging policy). The full pipeline's NDCG@10 is "
            f"{r.c(q, f'{o}_shortrec_ndcg_at_10', 'f3')}, "
            f"{cmp_word(sr, r.v(q, f'{o}_{base}_ndcg_at_10'), 'above', 'below')} the best "
            f"baseline ({base.replace('_', '-')}, {r.c(q, f'{o}_{base}_ndcg_at_10', 'f3')}); "
            "its expected skip rate over the top 10 is "
            f"{r.c(q, f'{o}_shortrec_exp_skip_rate_at_10', 'pct')} against "
            f"{r.c(q, f'{o}_logged_skip_rate', 'pct')} in the logged feed; re-ranking moves "
            "distinct creators per page from "
            f"{r.c(q, f'{o}_ranker_no_rerank_distinct_creators_at_10', 'pct')} to "
            f"{r.c(q, f'{o}_shortrec_distinct_creators_at_10', 'pct')}."
        )
        add("")
        L.extend(
            quality_table(
                r,
                q,
                o,
                (
                    ("ndcg_at_10", "NDCG@10", "f3"),
                    ("exp_watch_ratio_at_10", "exp. watch ratio@10", "f3"),
                    ("exp_skip_rate_at_10", "exp. skip rate@10", "pct"),
                    ("distinct_creators_at_10", "distinct creators@10", "pct"),
                ),
            )
        )
        add("")
        add(
            "Under the **temporal** protocol (relevance = what the logging policy showed in the "
            "test window and the user engaged with) the full pipeline's NDCG@10 is "
            f"{r.c(q, f'{t}_shortrec_ndcg_at_10', 'f3')}, "
            f"{cmp_word(tsr, r.v(q, f'{t}_{tbase}_ndcg_at_10'), 'above', 'below')} "
            f"the best baseline ({tbase.replace('_', '-')}, "
            f"{r.c(q, f'{t}_{tbase}_ndcg_at_10', 'f3')}). Logged relevance rewards predicting "
            "what the policy will expose (popularity now), which is not what the ranker learns; "
            "[quality.md](quality.md) discusses it."
        )
        add("")
        L.extend(
            quality_table(
                r,
                q,
                t,
                (
                    ("ndcg_at_10", "NDCG@10", "f3"),
                    ("hit_at_10", "hit@10", "f3"),
                    ("recall_at_100", "recall@100", "f3"),
                    ("gauc", "GAUC", "f3"),
                ),
            )
        )
        add("")
        add(
            "On real data (MovieLens-100K, leave-last-out, full catalogue) the full pipeline "
            f"reaches NDCG@10 {r.c(q, f'{ml}_shortrec_ndcg_at_10', 'f4')} against item-kNN "
            f"{r.c(q, f'{ml}_item_knn_ndcg_at_10', 'f4')} and most-popular "
            f"{r.c(q, f'{ml}_most_popular_ndcg_at_10', 'f4')}."
        )
        add("")
        add(
            f"Gates: {r.c(q, 'gates_passed', 'int')} of {r.c(q, 'gates_total', 'int')} pass. "
            "Failures are kept, not tuned away; [quality.md](quality.md) says what each means."
        )
        add("")
        L.extend(gate_lines(r, q))
    add("")
    add("### Where the numbers come from")
    add("")
    add("| file | date | machine | load average (1 min) |")
    add("|---|---|---|---|")
    for name in sorted(r.docs):
        doc = r.docs[name]
        cpu = r.text(name, "machine.cpu") or "?"
        loads = [k for k in sorted(doc["metrics"]) if "load_avg" in k]
        load = ", ".join(r.c(name, k, "f1") for k in loads[:2]) or "not recorded"
        add(
            f"| [{name}.json](../bench/results/{name}.json) | {doc.get('date', '?')} | {cpu}, "
            f"{r.c(name, 'machine.cores', 'int')} cores | {load} |"
        )
    add("")
    L.extend(DEMO.rstrip("\n").split("\n"))
    add("")
    L.extend(recording_script(r))
    return "\n".join(L).rstrip("\n") + "\n"


DEMO = """## Demo walkthrough

Each step is a command that exists today.

1. **The whole loop**: `make demo` creates `.venv` and runs `shortrec demo --out demo-out`:
   generate the `small` world, validate, ETL, train retrieval (two-tower + FAISS + sources) and
   the ranker (ONNX export), build the drift reference, evaluate against the baselines under the
   oracle and temporal protocols, publish to the online store, start the API and call it over
   HTTP, and run a simulated A/B test (ranker against retrieval order) through the serving
   stack. It ends by printing where everything is: `demo-out/data/` (with the realism report),
   `demo-out/artifacts/`, `demo-out/eval/<protocol>/report.md`,
   `demo-out/abtest/reports/<experiment>/index.html` and `demo-out/demo-summary.json`.
2. **The feed page**: `shortrec serve --artifacts demo-out/artifacts`, then open
   `http://127.0.0.1:8000/demo`. One card at a time, Watch / Skip / Like, and a "why this
   video" line; each button posts a real event and the next card comes from a fresh feed
   request. Skip three videos of one topic and it fades from the next page
   ([demo.md](demo.md)).
3. **The API**: `curl 'http://127.0.0.1:8000/v1/feed?user_id=u7&session_id=1&n=5'` returns
   items with their ranker heads, the retrieval sources that proposed them and a reason;
   `POST /v1/events` with fast skips (`watch_time_s` 0.5) of those videos, then ask again: the
   skipped videos never come back. Post the same batch twice: the second answer counts
   `duplicates` and changes nothing. `http://127.0.0.1:8000/docs` is the OpenAPI page.
4. **With Redis**: `shortrec publish demo-out/data --artifacts demo-out/artifacts --redis-url
   redis://127.0.0.1:6379/0`, then `shortrec serve ... --redis-url redis://127.0.0.1:6379/0`:
   known users arrive with their published histories instead of a cold start.
5. **Metrics and dashboards**: `curl http://127.0.0.1:8000/metrics | grep shortrec_stage`
   shows per-stage latency histograms; `docker compose -f deploy/docker-compose.yml up --build`
   runs Redis, the service, Prometheus (alerts at `:9090/alerts`) and Grafana (`:3000`, three
   dashboards) on a bundle in `artifacts/`.
6. **More experiments**: `shortrec generate --preset tiny --out data/tiny`, `shortrec build
   data/tiny --artifacts artifacts`, then `shortrec abtest simulate
   examples/experiments/scenarios/diversity.toml --artifacts artifacts --out out/diversity`
   (or `aa.toml`, `ranker_vs_retrieval.toml`, `model_version.toml`).
"""


def recording_script(r: Results) -> list[str]:
    """The screen-recording script; what is said about results is computed from them."""
    world = quality_world(r)
    if world is None:
        quality_say = "Quality results are not measured yet, and the page says so."
    else:
        q, o, t = f"quality_{world}", f"{world}_oracle", f"{world}_temporal"
        ob, _ = best_baseline(r, q, o, "ndcg_at_10")
        tb, _ = best_baseline(r, q, t, "ndcg_at_10")
        oc = cmp_word(
            r.v(q, f"{o}_shortrec_ndcg_at_10"), r.v(q, f"{o}_{ob}_ndcg_at_10"), "beats", "trails"
        )
        tc = cmp_word(
            r.v(q, f"{t}_shortrec_ndcg_at_10"), r.v(q, f"{t}_{tb}_ndcg_at_10"), "beats", "trails"
        )
        quality_say = (
            f"Scored by the simulator's ground truth, the full pipeline {oc} the best baseline; "
            f"on logged relevance it {tc} it, and the docs explain why: logged relevance rewards "
            "guessing what the old policy would show."
        )
    missed = [row.what for row in target_rows(r) if row.met is False]
    targets_say = (
        f"Every number here is generated from the benchmark files, including the {len(missed)} "
        f"targets we miss, such as '{missed[0]}'."
        if missed
        else "Every number here is generated from the benchmark files."
    )
    rows = [
        (
            "The README's architecture picture",
            "shortrec is a whole short-video recommender in one repository: offline training "
            "at the top left, the online service in the middle, monitoring and experiments on "
            "the right.",
        ),
        (
            "`make demo` output: the stage banners, then the printed result paths",
            "One command builds the environment, simulates a world of users who swipe, watch "
            "and get bored, trains the models, evaluates them, serves them over HTTP and runs an "
            "A/B test. The world keeps its ground truth, so any list can be scored against what "
            "users would really do.",
        ),
        (
            "`demo-out/eval/oracle/report.md` and its plot, then this page's quality tables",
            quality_say,
        ),
        (
            "`shortrec serve --artifacts demo-out/artifacts`, then the `/demo` page; Watch and "
            "Like a few cards, read a 'why this video' line",
            "Each card says why it is there: which sources proposed it and what the ranker "
            "predicts for engagement, completion and likes.",
        ),
        (
            "Skip three videos of one topic on `/demo`",
            "Every button is a real event. It is queued durably and applied at once, so the "
            "very next page already shows less of what I just skipped.",
        ),
        (
            "`curl` the same `POST /v1/events` batch twice",
            "Events are idempotent: a client retry is counted as a duplicate and changes nothing.",
        ),
        (
            "`/metrics`, then the Grafana service dashboard",
            "Every stage is timed; every alert has unit tests and a runbook entry.",
        ),
        (
            "`demo-out/abtest/reports/ranker-vs-retrieval/index.html`",
            "Experiments run through the same service with simulated users; the report checks "
            "the sample ratio, corrects for multiple tests and shows intervals.",
        ),
        ("This page's targets table", targets_say),
    ]
    lines = [
        "## Screen-recording script",
        "",
        "About six minutes. Terminal on the left, browser on the right, large font. Run "
        "`make demo` beforehand and show its output from the terminal history.",
        "",
        "| # | show | say |",
        "|---|---|---|",
    ]
    lines += [f'| {i} | {show} | "{say}" |' for i, (show, say) in enumerate(rows, 1)]
    return lines


# --------------------------------------------------------------------------- files


def with_block(text: str, block: str, where: Path) -> str:
    """``text`` with the part between the results markers replaced by ``block``."""
    if text.count(BEGIN) != 1 or text.count(END) != 1:
        raise ValueError(f"{where}: needs exactly one {BEGIN} and one {END}")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{block}{END}{tail}"


def rendered(r: Results, root: Path = ROOT) -> dict[Path, str]:
    """Every generated file's full new text, by path."""
    readme = readme_path(root)
    design = root / "docs" / "design.md"
    return {
        root / "docs" / "showcase.md": showcase(r),
        readme: with_block(readme.read_text(), readme_block(r.at("")), readme),
        design: with_block(design.read_text(), design_block(r.at("../")), design),
    }


def _write_atomic(path: Path, text: str) -> None:
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as fh:
        fh.write(text)
    Path(fh.name).chmod(0o644)  # a committed doc (NamedTemporaryFile creates it 0600)
    Path(fh.name).replace(path)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out = rendered(Results.load(RESULTS_DIR))
    stale = [p for p, text in out.items() if not p.is_file() or p.read_text() != text]
    if "--check" in args:
        for p in stale:
            print(
                f"stale: {p.relative_to(ROOT)}; run `python scripts/gen_showcase.py`",
                file=sys.stderr,
            )
        return 1 if stale else 0
    for p in stale:
        _write_atomic(p, out[p])
        print(f"wrote {p.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
