"""Simulated online A/B throughput: sessions per second through the in-process serving stack.

Builds a world and its bundle once under ``bench.common.work_dir("abtest_sim")`` (reused
while preset and seed match), then runs the built-in A/A scenario
(``examples/experiments/scenarios/aa.toml``) with ``shortrec.abtest.simulate``: world users
scroll through ``FeedService`` pages and post their events back; the logs are analysed and
the A/A validation (400 re-randomisations) runs. Reports the simulation loop alone
(``sessions_per_s``, ``pages_per_s``, ``impressions_per_s``) and the whole call
(``total_s``: store publish, simulation, analysis, reports, validation).

``--quick``: the tiny world, 200 users x 1 day; default: the small world, 2 000 users x 1 day.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from bench.common import peak_rss_mb, work_dir, write_result
from shortrec import abtest, pipelines
from shortrec.config import RankerConfig, RetrievalConfig, TwoTowerConfig

NAME = "abtest_sim"
SCENARIO = Path(__file__).resolve().parents[1] / "examples/experiments/scenarios/aa.toml"


def _build(preset: str, seed: int) -> tuple[Path, Path]:
    """The dataset and bundle of ``preset`` (built once; small training settings)."""
    base = work_dir(NAME) / f"{preset}-{seed}"
    root, art = base / "world", base / "art"
    stamp = base / "stamp.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == {"preset": preset, "seed": seed}:
        return root, art
    pipelines.generate(preset, seed, root, report=False, progress=False)
    pipelines.etl(root, progress=False)
    pipelines.train_retrieval(
        root,
        art,
        False,
        RetrievalConfig(two_tower=TwoTowerConfig(max_epochs=2, dim=32, hidden=64, threads=2)),
    )
    pipelines.train_ranker(
        root,
        art,
        False,
        RankerConfig(max_epochs=1, d_model=32, head_hidden=32, max_train_lists=2_000, threads=2),
    )
    stamp.write_text(json.dumps({"preset": preset, "seed": seed}))
    return root, art


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny world, 200 users x 1 day")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    preset, n_users, days = ("tiny", 200, 1.0) if args.quick else ("small", 2_000, 1.0)
    root, art = _build(preset, args.seed)
    scratch = work_dir(NAME) / "run"
    scratch.mkdir(parents=True, exist_ok=True)
    text = SCENARIO.read_text()
    head = text[: text.index("[simulation]")]
    cfg = scratch / "aa.toml"
    cfg.write_text(
        head
        + f'[simulation]\ndataset = "{root}"\nn_users = {n_users}\ndays = {days}\n'
        + f"sessions_per_day = 1.0\nseed = {args.seed}\npage_size = 8\n"
    )
    t0 = time.perf_counter()
    summary = abtest.simulate(cfg, art, None, scratch / "out", None, False)
    total = time.perf_counter() - t0
    sim = summary["simulation"]
    val = summary["experiments"]["aa"]["validation"]
    metrics = {
        "sessions": sim["sessions"],
        "pages": sim["pages"],
        "impressions": sim["impressions"],
        "simulate_s": round(sim["seconds"], 3),
        "sessions_per_s": round(sim["sessions"] / sim["seconds"], 2),
        "pages_per_s": round(sim["pages"] / sim["seconds"], 2),
        "impressions_per_s": round(sim["impressions"] / sim["seconds"], 2),
        "total_s": round(total, 3),
        "aa_significant_count": len(summary["experiments"]["aa"]["significant"]),
        "aa_fpr_max": max(m["false_positive_rate"] for m in val["metrics"]),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    config = {
        "preset": preset,
        "n_users": n_users,
        "days": days,
        "sessions_per_day": 1.0,
        "page_size": 8,
        "mode": "inprocess",
        "seed": args.seed,
        "validation_salts": val["n_salts"],
    }
    print(json.dumps(metrics, indent=2))
    print(write_result(NAME, config, metrics))


if __name__ == "__main__":
    main()
