"""Offline evaluation throughput: full-catalogue ranking of every user of a `medium`-sized world.

Input: a synthetic ETL-shaped log built with numpy (``medium``: 20k users x 50k videos, ~50
views per user, Zipf-like video popularity, 30 % skips; ``--quick``: 2k users x 5k videos).
Each user's (user, video) pairs are
unique and the held-out view is engaged, so leave-one-out evaluates every user.
For each baseline, the runner scores the whole catalogue for every user, excludes seen and
not-yet-uploaded items, takes the top 100 and computes every metric at k in (1, 5, 10, 20, 50,
100). Reported: users evaluated per second (scoring + top-k + metrics), fit time, wall time of
the whole run, CPU seconds (the machine is shared: CPU time is the load-independent figure)
and peak RSS. Target: all users of `medium` in under one minute on 2 cores.

    python -m bench.bench_evaluate [--quick] [--protocol loo-full]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import time

import numpy as np
import polars as pl

from bench.common import peak_rss_mb, write_result
from shortrec import schema as S
from shortrec.config import EvalConfig
from shortrec.domain import Recommender
from shortrec.evaluation.baselines import ItemKNN, MostPopular, RandomRecommender, Trending
from shortrec.evaluation.runner import evaluate

NAME = "evaluate"
SIZES = {
    "medium": {"n_users": 20_000, "n_items": 50_000, "views_per_user": 50},
    "quick": {"n_users": 2_000, "n_items": 5_000, "views_per_user": 50},
}
_DAY_US = 86_400 * 1_000_000


def synthetic_world(
    n_users: int, n_items: int, views_per_user: int, seed: int = 0
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """ETL_EVENTS / VIDEOS / USERS frames of a random log over 30 days (temporal split at days
    24 and 27; leave-last-out split per user)."""
    rng = np.random.default_rng(seed)
    n = n_users * views_per_user
    user = np.repeat(np.arange(n_users, dtype=np.int32), views_per_user)
    # Zipf-like popularity with a per-user-group shift, so co-occurrence carries signal
    rank = np.minimum(rng.zipf(1.3, size=n) - 1, n_items - 1)
    video = ((rank + (user % 50) * (n_items // 50)) % n_items).astype(np.int32)
    t0 = int(dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp() * 1_000_000)
    ts = t0 + rng.integers(0, 30 * _DAY_US, size=n)
    skipped = rng.random(n) < 0.3
    ratio = np.where(skipped, rng.random(n) * 0.1, rng.random(n) * 1.5).astype(np.float32)
    day = (ts - t0) / _DAY_US
    split = np.where(day < 24, S.TRAIN, np.where(day < 27, S.VALID, S.TEST))
    ev = pl.DataFrame(
        {
            S.EVENT_ID: np.arange(n, dtype=np.int64),
            S.USER_IDX: user,
            S.VIDEO_IDX: video,
            S.TS: ts,
            S.WATCH_RATIO: ratio,
            S.WATCH_TIME_S: ratio * 15.0,
            S.SKIPPED: skipped,
            S.SESSION_ID: (user.astype(np.int64) * 100 + (day // 1).astype(np.int64)),
            S.SPLIT: split,
        }
    ).with_columns(pl.col(S.TS).cast(pl.Datetime("us", "UTC")))
    # one view per (user, video), so every user's held-out item is new to them
    ev = ev.unique([S.USER_IDX, S.VIDEO_IDX], keep="first", maintain_order=True)
    order = pl.col(S.TS).rank("ordinal", descending=True).over(S.USER_IDX)
    ev = ev.with_columns(
        pl.when(order == 1)
        .then(pl.lit(S.TEST))
        .when(order == 2)
        .then(pl.lit(S.VALID))
        .otherwise(pl.lit(S.TRAIN))
        .alias(S.LOO_SPLIT)
    )
    # the held-out view is engaged, so every user is evaluated under leave-one-out
    ev = ev.with_columns(pl.col(S.SKIPPED) & (pl.col(S.LOO_SPLIT) != S.TEST))
    ev = S.conform(ev, S.ETL_EVENTS)
    n_tags = 400
    tags = rng.integers(0, n_tags, size=(n_items, 3)).tolist()
    videos = S.conform(
        pl.DataFrame(
            {
                S.VIDEO_IDX: np.arange(n_items, dtype=np.int32),
                S.CREATOR_IDX: (np.arange(n_items) % max(1, n_items // 10)).astype(np.int32),
                S.TAGS: tags,
                S.UPLOAD_TS: t0 - _DAY_US + rng.integers(0, 20 * _DAY_US, size=n_items),
            }
        ).with_columns(pl.col(S.UPLOAD_TS).cast(pl.Datetime("us", "UTC"))),
        S.VIDEOS,
    )
    users = S.conform(pl.DataFrame({S.USER_IDX: np.arange(n_users, dtype=np.int32)}), S.USERS)
    return ev, videos, users


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="2k users x 5k videos")
    ap.add_argument("--protocol", default="loo-full", choices=["loo-full", "temporal"])
    args = ap.parse_args(argv)
    size = "quick" if args.quick else "medium"
    dims = SIZES[size]
    t0 = time.perf_counter()
    events, videos, users = synthetic_world(**dims)
    build_s = time.perf_counter() - t0
    config = EvalConfig(protocol=args.protocol, k=10, user_batch=1024)
    recs: list[Recommender] = [MostPopular(), Trending(), ItemKNN(), RandomRecommender(seed=0)]
    t1 = time.perf_counter()
    report = evaluate(events, videos, users, recs, config, progress=True, fingerprint=size)
    wall_s = time.perf_counter() - t1
    metrics: dict[str, float] = {
        "eval_users": float(report.data["eval_users"]),
        "wall_s": round(wall_s, 3),
        "build_input_s": round(build_s, 3),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        # the machine is shared: wall times are only comparable at a similar load
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "cpu_s": round(time.process_time(), 3),
    }
    for rec in recs:
        t = report.timing[rec.name]
        key = rec.name.replace("-", "_")
        metrics[f"{key}_users_per_s"] = float(t["users_per_s"])
        metrics[f"{key}_eval_s"] = float(t["eval_s"])
        metrics[f"{key}_eval_cpu_s"] = float(t["eval_cpu_s"])
        metrics[f"{key}_users_per_cpu_s"] = round(report.data["eval_users"] / t["eval_cpu_s"], 1)
        metrics[f"{key}_fit_s"] = float(t["fit_s"])
        metrics[f"{key}_ndcg_at_10"] = float(report.metrics[rec.name]["ndcg@10"])
    config_doc = {
        "size": size,
        **dims,
        "events": events.height,
        "protocol": args.protocol,
        "ks": list(report.ks),
        "user_batch": config.user_batch,
    }
    path = write_result(NAME, config_doc, metrics)
    for k, v in metrics.items():
        print(f"{k:>32}: {v}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
