"""A/B log analysis throughput: events analysed per second on a synthetic Parquet log.

Generates an exposure + event log with a planted effect (``experiments/synthetic.py``) under
``bench.common.work_dir("abtest")`` once (reused while the size matches), then times
``analyze`` reading it lazily from Parquet, and ``ExperimentSet.assign_many`` on 1M ids.
``--quick``: ~1M events; default ~10M.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import polars as pl

from bench.common import peak_rss_mb, work_dir, write_result
from shortrec.config import AnalysisConfig, ArmConfig, ExperimentConfig, ExperimentsConfig
from shortrec.experiments.analysis import analyze
from shortrec.experiments.assignment import ExperimentSet
from shortrec.experiments.synthetic import ArmEffect, synthetic_logs

NAME = "abtest"
EVENTS_PER_USER = 36.0  # sessions_per_user * mean_session_len below


def _generate(n_users: int, seed: int) -> tuple[int, int]:
    root = work_dir(NAME)
    stamp = root / "stamp.json"
    want = {"n_users": n_users, "seed": seed}
    if stamp.exists() and json.loads(stamp.read_text()).get("want") == want:
        meta = json.loads(stamp.read_text())
        return int(meta["events"]), int(meta["exposures"])
    rng = np.random.default_rng(seed)
    arms = [ArmEffect("control"), ArmEffect("treatment", skip_logit=-0.03, watch_mult=1.01)]
    n_ev = n_x = 0
    chunk = 100_000
    for part, lo in enumerate(range(0, n_users, chunk)):
        x, e = synthetic_logs(
            "exp", arms, min(chunk, n_users - lo), rng, sessions_per_user=3.0, mean_session_len=12.0
        )
        # distinct users, requests and sessions per chunk
        off = pl.lit(lo, dtype=pl.Int64)
        x = x.with_columns(
            (pl.col("user_idx").cast(pl.Int64) + off).cast(pl.Int32),
            pl.col("request_id") + off * 10_000,
            pl.col("session_id") + off * 10,
        )
        e = e.with_columns(
            (pl.col("user_idx").cast(pl.Int64) + off).cast(pl.Int32),
            pl.col("request_id") + off * 10_000,
            pl.col("session_id") + off * 10,
            pl.col("event_id") + n_ev,
        )
        (root / "exposures").mkdir(exist_ok=True)
        (root / "events").mkdir(exist_ok=True)
        x.write_parquet(root / "exposures" / f"part-{part:04d}.parquet")
        e.write_parquet(root / "events" / f"part-{part:04d}.parquet")
        n_ev += e.height
        n_x += x.height
    stamp.write_text(json.dumps({"want": want, "events": n_ev, "exposures": n_x}))
    return n_ev, n_x


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="~1M events instead of ~10M")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bootstrap", type=int, default=200)
    args = ap.parse_args(argv)
    target = 1_000_000 if args.quick else 10_000_000
    n_users = int(target / EVENTS_PER_USER)
    t0 = time.perf_counter()
    n_events, n_exposures = _generate(n_users, args.seed)
    gen_s = time.perf_counter() - t0
    root = work_dir(NAME)
    cfg = AnalysisConfig(n_bootstrap=args.bootstrap, seed=args.seed)
    decl = ExperimentConfig(
        name="exp", arms=(ArmConfig(name="control"), ArmConfig(name="treatment"))
    )
    t0 = time.perf_counter()
    res = analyze(
        pl.scan_parquet(root / "exposures" / "*.parquet"),
        pl.scan_parquet(root / "events" / "*.parquet"),
        decl,
        cfg,
    )
    analyze_s = time.perf_counter() - t0
    sets = ExperimentSet(ExperimentsConfig(experiments=(decl,)))
    ids = [f"user-{i}" for i in range(1_000_000)]
    t0 = time.perf_counter()
    sets.assign_many(ids)
    assign_s = time.perf_counter() - t0
    skip = res.comparison("skip_rate", "treatment")
    metrics = {
        "events": n_events,
        "exposures": n_exposures,
        "users": sum(res.users.values()),
        "analyze_s": round(analyze_s, 3),
        "events_per_s": round(n_events / analyze_s, 1),
        "generate_s": round(gen_s, 3),
        "assign_1m_ids_s": round(assign_s, 3),
        "skip_rate_lift": round(skip.lift, 5),
        "skip_rate_p": skip.p_value,
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    config = {
        "quick": args.quick,
        "seed": args.seed,
        "n_bootstrap": args.bootstrap,
        "users": n_users,
        "planted": "skip_logit=-0.03, watch_mult=1.01",
    }
    path = write_result(NAME, config, metrics)
    print(json.dumps(metrics, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
