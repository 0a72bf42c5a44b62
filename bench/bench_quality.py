"""Quality gates of issues 5 (retrieval recall) and 6 (the full pipeline), with sweeps.

    python -m bench.bench_quality [--quick] [--max-users N] [--skip-ml]

Worlds: the synthetic ``medium`` world (``--quick``: ``small``), generated and ETL-processed
under ``bench/.work/quality/``, and MovieLens-100K (RecBole atomic files fetched by
``scripts/fetch_movielens.py``, ingested with ``shortrec ingest movielens``, then ETL).

* Issue 5: recall@100 / recall@500 of every retrieval source alone and of the merged set
  (``retrieval_recommenders``, 500 candidates each) under ``temporal``, ``oracle`` and
  ``loo-full``; under ``oracle`` a user's relevant set is their ``ORACLE_RECALL_TOP`` (100)
  best unseen videos of the whole catalogue by expected gain (``EvalConfig.oracle_recall_top``;
  NDCG@100 / NDCG@500 are recorded too). Gates: merged > every source on recall@500; two-tower
  > trending on recall@100.
* Issue 6: the full pipeline (``shortrec``) beside retrieval order alone, the ranker without
  re-ranking, ablations (mean pooling, single task, no diversity loss) and the baselines, under
  ``oracle`` and ``temporal`` (and ``loo-full`` on MovieLens). Sweeps under ``oracle``: the
  diversity-loss weight lambda (ranker order, no re-ranking), the default re-ranker's
  trade-off (calibration's, ``rerank_knob``) and the unpersonalised DPP's theta, each
  plotted as NDCG@10 vs Diversity@10 (``distinct_topics@10``: distinct topics / list length;
  distinct creators are recorded too but the ranker's own order already has ~0.9 of them, so
  they leave no room for the +20 % the gate asks; tag ILD saturates near 1 on these catalogues).

Every gate is a metric ``gate_*`` (1 = passed, 0 = failed); nothing is hidden when one fails.
Writes ``bench/results/quality_<world>.json`` and ``quality_<world>_{lambda,tradeoff,dpp}.png``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from bench.common import RESULTS, peak_rss_mb, work_dir, write_result
from shortrec import pipelines
from shortrec.config import (
    EvalConfig,
    RankerConfig,
    RetrievalConfig,
    TwoTowerConfig,
)
from shortrec.data import etl as etl_mod
from shortrec.data import io
from shortrec.domain import FloatArray, IntArray, Oracle, Recommender, TrainingData
from shortrec.evaluation.baselines import default_baselines
from shortrec.evaluation.report import EvalReport
from shortrec.evaluation.runner import evaluate
from shortrec.fullpipeline import FitCache, FullPipelineConfig, FullPipelineRecommender, variant
from shortrec.retrieval.pipeline import SOURCE_NAMES, retrieval_recommenders

NAME = "quality"
ROOT = Path(__file__).resolve().parents[1]
SOURCES = tuple(s for s in SOURCE_NAMES if s != "merged")
BASELINES = ("random", "most-popular", "trending", "item-knn")
DIVERSITY = "distinct_topics@10"
CREATORS = "distinct_creators@10"

#: Per-size run settings: users evaluated, ranker/two-tower training budgets, sweep points.
SETTINGS: dict[str, dict[str, Any]] = {
    "quick": {
        "world": "small",
        "max_users": 400,
        "two_tower": {"max_epochs": 2, "max_samples_per_epoch": 100_000, "threads": 1},
        "ranker": {"max_epochs": 1, "max_train_lists": 4_000, "threads": 1},
        "lambdas": (0.0, 0.1, 1.0),
        "trade_offs": (0.2, 0.7),
        "dpp_trade_offs": (0.3, 0.7, 0.9),
    },
    "full": {
        "world": "medium",
        "max_users": 1_500,
        "two_tower": {"max_epochs": 3, "max_samples_per_epoch": 300_000, "threads": 1},
        "ranker": {"max_epochs": 2, "max_train_lists": 12_000, "threads": 1},
        "lambdas": (0.0, 0.1, 1.0),
        "trade_offs": (0.2, 0.3, 0.6, 0.8, 1.0),
        "dpp_trade_offs": (0.3, 0.5, 0.7, 0.87, 0.9, 0.99),
    },
}
ML_RANKER = {"max_epochs": 3, "max_train_lists": 20_000, "threads": 1}
#: ``retrieval_blend`` points measured beside the default (full pipeline, shared fits)
BLENDS = (0.0, 0.5, 0.8)
#: Under the oracle a user's relevant set for retrieval recall is their R best unseen videos.
ORACLE_RECALL_TOP = 100


# ---------------------------------------------------------------- data
def _stamp_ok(root: Path) -> bool:
    return (root / io.ETL_DIR / "manifest.json").is_file()


def synthetic_world(preset: str, seed: int = 0) -> Path:
    """Generate ``preset`` and run the ETL under the scratch dir (reused when present)."""
    root = work_dir(NAME) / preset
    if not _stamp_ok(root):
        pipelines.generate(preset, seed, root, report=False, progress=False)
        pipelines.etl(root, progress=False)
    return root


def movielens() -> Path:
    """MovieLens-100K ingested and ETL-processed under the scratch dir (reused when present)."""
    root = work_dir(NAME) / "ml100k"
    if _stamp_ok(root):
        return root
    spec = importlib.util.spec_from_file_location(
        "fetch_movielens", ROOT / "scripts" / "fetch_movielens.py"
    )
    if spec is None or spec.loader is None:
        raise RuntimeError("scripts/fetch_movielens.py not found")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    src = Path(mod.fetch(Path(os.environ.get("SHORTREC_ML100K", str(mod.DEFAULT_DEST)))))
    if root.exists():  # a half-built earlier run: start over
        import shutil

        shutil.rmtree(root)
    # `shortrec ingest movielens SRC --out ROOT`, then `shortrec etl ROOT`
    pipelines.ingest("movielens", src, root, progress=False)
    pipelines.etl(root, progress=False)
    return root


def frames(root: Path) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame, float]:
    ds = io.Dataset.open(root)
    events = etl_mod.read_etl_events(root).collect()
    return events, ds.videos().collect(), ds.users().collect(), ds.skip_threshold_s


class Prefit:
    """Wraps a recommender so the runner fits it once and reuses the fit for the next protocol
    (only for protocols with identical training data: ``temporal`` and ``oracle``)."""

    def __init__(self, inner: Recommender) -> None:
        self.inner = inner
        self.name = inner.name
        self.is_fitted = False

    def fit(self, data: TrainingData) -> Prefit:
        self.inner.fit(data)
        self.is_fitted = True
        return self

    def score(self, user_idx: IntArray) -> FloatArray:
        return self.inner.score(user_idx)


def run_eval(
    root: Path,
    recs: Sequence[Recommender],
    protocol: str,
    max_users: int,
    ks: tuple[int, ...] = (1, 5, 10, 20, 50, 100),
    k: int = 10,
    oracle_recall_top: int | None = None,
) -> EvalReport:
    events, videos, users, skip_s = frames(root)
    oracle: Oracle | None = None
    if protocol == "oracle":
        from shortrec.data.simulator import World

        oracle = World.load(root)
    cfg = EvalConfig(
        protocol=protocol, k=k, ks=ks, max_users=max_users, oracle_recall_top=oracle_recall_top
    )
    return evaluate(
        events,
        videos,
        users,
        list(recs),
        cfg,
        oracle=oracle,
        skip_threshold_s=skip_s,
        progress=False,
    )


def _key(name: str) -> str:
    return name.replace("-", "_").replace(".", "p").replace("@", "_at_")


def _put(
    out: dict[str, float],
    prefix: str,
    rep: EvalReport,
    names: Sequence[str],
    metrics: Sequence[str],
) -> None:
    for n in names:
        for m in metrics:
            v = rep.metrics[n].get(m)
            if v is not None:
                out[f"{prefix}_{_key(n)}_{_key(m)}"] = float(v)


# ---------------------------------------------------------------- issue 5
def retrieval_recall(
    root: Path,
    tag: str,
    protocols: Sequence[str],
    rcfg: RetrievalConfig,
    max_users: int,
    out: dict[str, float],
    gates: dict[str, float],
) -> None:
    recs = retrieval_recommenders(rcfg.model_copy(update={"n_candidates": 500}), seed=0)
    wrapped = [Prefit(r) for r in recs.values()]
    for protocol in protocols:
        t0 = time.perf_counter()
        top = ORACLE_RECALL_TOP if protocol == "oracle" else None
        rep = run_eval(root, wrapped, protocol, max_users, (10, 100, 500), 10, top)
        p = f"{tag}_{_key(protocol)}_retrieval"
        out[f"{p}_eval_s"] = round(time.perf_counter() - t0, 2)
        extra = ("ndcg@100", "ndcg@500") if protocol == "oracle" else ()
        _put(out, p, rep, list(recs), ("recall@100", "recall@500", *extra))
        m = rep.metrics
        gates[f"gate_issue5_{tag}_{_key(protocol)}_merged_beats_every_source_recall_at_500"] = (
            float(all(m["merged"]["recall@500"] > m[s]["recall@500"] for s in SOURCES))
        )
        gates[f"gate_issue5_{tag}_{_key(protocol)}_two_tower_beats_trending_recall_at_100"] = float(
            m["two_tower"]["recall@100"] > m["trending"]["recall@100"]
        )


# ---------------------------------------------------------------- issue 6
def rerank_knob(cfg: FullPipelineConfig) -> str:
    """The ``RerankConfig`` field that trades relevance for diversity in ``cfg``'s re-ranker:
    calibration's trade-off when it is personalised (the default), else the DPP/MMR one."""
    return "calibration_trade_off" if cfg.rerank.personalise == "calibrated" else "trade_off"


def pipeline_variants(
    base: FullPipelineConfig,
    lambdas: Sequence[float],
    trade_offs: Sequence[float],
    dpp_trade_offs: Sequence[float] = (),
) -> dict[str, FullPipelineConfig]:
    """Named configs: the default, stage ablations, the lambda sweep, the sweep of the default
    re-ranker's trade-off (``tradeoff_*``, :func:`rerank_knob`) and of the unpersonalised
    DPP's (``dpp_*``)."""
    default_lambda = base.ranker.diversity_lambda
    out = {
        "shortrec": base,
        "retrieval_only": variant(base, stages="retrieval"),
        "ranker_no_rerank": variant(base, stages="ranker"),
        "ablation_mean_pool": variant(base, ranker={"encoder": "mean"}),
        "ablation_single_task": variant(base, ranker={"tasks": ("engage",)}),
        "ablation_no_div_loss": variant(base, ranker={"diversity_lambda": 0.0}),
    }
    for lam in lambdas:
        if lam != default_lambda:
            out[f"lambda_{lam:g}"] = variant(
                base, stages="ranker", ranker={"diversity_lambda": lam}
            )
    knob = rerank_knob(base)
    for th in trade_offs:
        if th != getattr(base.rerank, knob):
            out[f"tradeoff_{th:g}"] = variant(base, rerank_cfg={knob: th})
    for th in dpp_trade_offs:
        out[f"dpp_{th:g}"] = variant(
            base, rerank_cfg={"personalise": "none", "method": "dpp", "trade_off": th}
        )
    out.update(blend_variants(base))
    return out


def blend_variants(base: FullPipelineConfig) -> dict[str, FullPipelineConfig]:
    """The full pipeline at each ``BLENDS`` weight of the retrieval order (not the default)."""
    return {
        f"blend_{b:g}": variant(base, retrieval_blend=b)
        for b in BLENDS
        if b != base.retrieval_blend
    }


Sweep = list[tuple[float, float, float]]


def sweep_points(
    rep: EvalReport, base: FullPipelineConfig, names: dict[str, FullPipelineConfig]
) -> tuple[Sweep, Sweep, Sweep]:
    """(parameter, NDCG@10, Diversity@10) of the lambda sweep (ranker order), of the default
    re-ranker's trade-off sweep and of the DPP's (full pipeline), ascending in the
    parameter."""
    lam: Sweep = []
    tra: Sweep = []
    dpp: Sweep = []
    knob = rerank_knob(base)
    for n, cfg in names.items():
        nd, dv = rep.metrics[n]["ndcg@10"], rep.metrics[n][DIVERSITY]
        if n == "ranker_no_rerank" or n.startswith("lambda_"):
            lam.append((cfg.ranker.diversity_lambda, nd, dv))
        if n == "shortrec" or n.startswith("tradeoff_"):
            tra.append((getattr(cfg.rerank, knob), nd, dv))
        if n.startswith("dpp_"):
            dpp.append((cfg.rerank.trade_off, nd, dv))
    return sorted(lam), sorted(tra), sorted(dpp)


def plot_sweep(
    points: list[tuple[float, float, float]], label: str, title: str, default: float, path: Path
) -> None:
    fig = Figure(figsize=(5.5, 4.0))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot([p[2] for p in points], [p[1] for p in points], "o-")
    for x, nd, dv in points:
        ax.annotate(
            f"{label}={x:g}" + (" (default)" if x == default else ""),
            (dv, nd),
            fontsize=7,
            xytext=(4, 4),
            textcoords="offset points",
        )
    ax.set_xlabel(f"Diversity@10 ({DIVERSITY})")
    ax.set_ylabel("NDCG@10 (oracle)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)


def synthetic_quality(
    root: Path,
    tag: str,
    s: dict[str, Any],
    base: FullPipelineConfig,
    out: dict[str, float],
    gates: dict[str, float],
    info: dict[str, Any],
) -> None:
    names = pipeline_variants(base, s["lambdas"], s["trade_offs"], s["dpp_trade_offs"])
    cache = FitCache()
    recs = {n: FullPipelineRecommender(c, seed=0, name=n, cache=cache) for n, c in names.items()}
    baselines = default_baselines(seed=0)
    metrics = (
        "ndcg@10",
        DIVERSITY,
        CREATORS,
        "ild_tags@10",
        "exp_skip_rate@10",
        "exp_watch_ratio@10",
    )
    t0 = time.perf_counter()
    # oracle first: every variant; their fits carry over to temporal (same training data)
    rep = run_eval(root, [*recs.values(), *baselines], "oracle", s["max_users"])
    out[f"{tag}_oracle_eval_s"] = round(time.perf_counter() - t0, 2)
    _put(out, f"{tag}_oracle", rep, [*names, *BASELINES], metrics)
    out[f"{tag}_oracle_logged_skip_rate"] = float(rep.logged["skip_rate"])
    info["fit"] = {
        n: {k: v for k, v in r.ranker_metrics.items() if k != "history"} for n, r in recs.items()
    }
    info["retrieval_fit_s"] = {n: r.retrieval_fit_s for n, r in recs.items()}
    m = rep.metrics
    nd = {n: m[n]["ndcg@10"] for n in m}
    gates[f"gate_issue6_{tag}_oracle_beats_retrieval_and_baselines_ndcg_at_10"] = float(
        all(nd["shortrec"] > nd[b] for b in ("retrieval_only", *BASELINES))
    )
    gates[f"gate_issue6_{tag}_oracle_skip_rate_below_logged"] = float(
        m["shortrec"]["exp_skip_rate@10"] < rep.logged["skip_rate"]
    )
    lam, tra, dpp = sweep_points(rep, base, names)
    info["sweep_lambda"] = lam
    info["sweep_tradeoff"] = tra
    info["sweep_dpp"] = dpp
    plot_sweep(
        lam,
        "lambda",
        f"{tag}: diversity-loss weight (ranker order, no re-rank)",
        base.ranker.diversity_lambda,
        RESULTS / f"quality_{tag}_lambda.png",
    )
    knob = rerank_knob(base)
    plot_sweep(
        tra,
        "t",
        f"{tag}: re-ranker trade-off {knob} (full pipeline)",
        getattr(base.rerank, knob),
        RESULTS / f"quality_{tag}_tradeoff.png",
    )
    plot_sweep(
        dpp,
        "theta",
        f"{tag}: DPP trade-off, unpersonalised (full pipeline)",
        base.rerank.trade_off,
        RESULTS / f"quality_{tag}_dpp.png",
    )
    # the default vs pure relevance (no diversity loss, no re-ranking) ...
    ref = "ranker_no_rerank" if base.ranker.diversity_lambda == 0 else "lambda_0"
    d_div = m["shortrec"][DIVERSITY] / m[ref][DIVERSITY] - 1.0
    d_nd = nd["shortrec"] / nd[ref] - 1.0
    out[f"{tag}_oracle_default_vs_pure_relevance_diversity_gain"] = d_div
    out[f"{tag}_oracle_default_vs_pure_relevance_ndcg_change"] = d_nd
    gates[f"gate_issue6_{tag}_default_diversity_up_20pct_for_ndcg_down_at_most_3pct"] = float(
        d_div >= 0.20 and d_nd >= -0.03
    )
    # ... and each sweep moves along a trade-off: some point more diverse, some more accurate
    for label, pts in (("lambda", lam), ("tradeoff", tra), ("dpp", dpp)):
        divs, nds = [p[2] for p in pts], [p[1] for p in pts]
        gates[f"gate_issue6_{tag}_{label}_sweep_moves_diversity"] = float(
            max(divs) - min(divs) > 0.01 * max(divs)
        )
        out[f"{tag}_{label}_sweep_ndcg_range"] = max(nds) - min(nds)
        out[f"{tag}_{label}_sweep_diversity_range"] = max(divs) - min(divs)
    # temporal: the headline pipeline and its stage ablations
    subset = [
        "shortrec",
        "retrieval_only",
        "ranker_no_rerank",
        "ablation_mean_pool",
        "ablation_single_task",
        "ablation_no_div_loss",
        *blend_variants(base),
    ]
    t0 = time.perf_counter()
    rep = run_eval(root, [*(recs[n] for n in subset), *baselines], "temporal", s["max_users"])
    out[f"{tag}_temporal_eval_s"] = round(time.perf_counter() - t0, 2)
    _put(
        out,
        f"{tag}_temporal",
        rep,
        [*subset, *BASELINES],
        ("ndcg@10", "hit@10", "recall@100", DIVERSITY, CREATORS, "gauc"),
    )
    nd = {n: rep.metrics[n]["ndcg@10"] for n in rep.metrics}
    gates[f"gate_issue6_{tag}_temporal_beats_retrieval_and_baselines_ndcg_at_10"] = float(
        all(nd["shortrec"] > nd[b] for b in ("retrieval_only", *BASELINES))
    )
    out[f"{tag}_temporal_logged_skip_rate"] = float(rep.logged["skip_rate"])


def movielens_quality(
    root: Path,
    base: FullPipelineConfig,
    max_users: int | None,
    out: dict[str, float],
    gates: dict[str, float],
    info: dict[str, Any],
) -> None:
    cfg = variant(base, ranker={**base.ranker.model_dump(), **ML_RANKER})
    cache = FitCache()
    recs = [
        FullPipelineRecommender(cfg, 0, "shortrec", cache),
        FullPipelineRecommender(variant(cfg, stages="ranker"), 0, "ranker_no_rerank", cache),
        FullPipelineRecommender(variant(cfg, stages="retrieval"), 0, "retrieval_only", cache),
        *(FullPipelineRecommender(c, 0, n, cache) for n, c in blend_variants(cfg).items()),
    ]
    t0 = time.perf_counter()
    rep = run_eval(root, [*recs, *default_baselines(seed=0)], "loo-full", max_users or 10**9)
    out["ml100k_loo_full_eval_s"] = round(time.perf_counter() - t0, 2)
    names = [r.name for r in recs]
    _put(
        out,
        "ml100k_loo_full",
        rep,
        [*names, *BASELINES],
        ("ndcg@10", "hit@10", DIVERSITY, CREATORS),
    )
    info["ml100k_fit"] = {k: v for k, v in recs[0].ranker_metrics.items() if k != "history"}
    m = rep.metrics
    for b in ("item-knn", "most-popular"):
        gates[f"gate_issue6_ml100k_shortrec_beats_{_key(b)}_ndcg_at_10"] = float(
            m["shortrec"]["ndcg@10"] > m[b]["ndcg@10"]
        )


def base_config(s: dict[str, Any]) -> FullPipelineConfig:
    return FullPipelineConfig(
        retrieval=RetrievalConfig(two_tower=TwoTowerConfig(**s["two_tower"])),
        ranker=RankerConfig(**s["ranker"]),
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="the small world, fewer users")
    ap.add_argument("--max-users", type=int, default=None, help="users evaluated per protocol")
    ap.add_argument("--skip-ml", action="store_true", help="skip MovieLens-100K")
    args = ap.parse_args(argv)
    s = dict(SETTINGS["quick" if args.quick else "full"])
    if args.max_users:
        s["max_users"] = args.max_users
    tag = s["world"]
    base = base_config(s)
    out: dict[str, float] = {}
    gates: dict[str, float] = {}
    info: dict[str, Any] = {}
    t_all = time.perf_counter()
    load0 = os.getloadavg()[0]
    root = synthetic_world(tag)
    retrieval_recall(root, tag, ("temporal", "oracle"), base.retrieval, s["max_users"], out, gates)
    synthetic_quality(root, tag, s, base, out, gates, info)
    if not args.skip_ml:
        ml = movielens()
        retrieval_recall(ml, "ml100k", ("loo-full",), base.retrieval, 10**9, out, gates)
        movielens_quality(ml, base, None, out, gates, info)
    out.update(gates)
    out["gates_passed"] = float(sum(gates.values()))
    out["gates_total"] = float(len(gates))
    out["wall_s"] = round(time.perf_counter() - t_all, 1)
    out["peak_rss_mb"] = round(peak_rss_mb(), 1)
    out["load_avg_1m_start"] = round(load0, 2)
    out["load_avg_1m_end"] = round(os.getloadavg()[0], 2)
    config = {
        "world": tag,
        "quick": args.quick,
        "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in s.items()},
        "pipeline": base.model_dump(mode="json"),
        "ml100k_ranker": ML_RANKER,
        "diversity_metric": DIVERSITY,
        "details": info,
    }
    path = write_result(f"{NAME}_{tag}", config, out)
    for k in sorted(gates):
        print(f"{'PASS' if gates[k] else 'FAIL'}  {k}")
    print(f"wrote {path} in {out['wall_s']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
