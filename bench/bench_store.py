"""Online store benchmark against the real Redis server (127.0.0.1:6379, db 14).

Measures, on a synthetic published snapshot: request-context read latency (one pipelined round
trip) p50/p99, batched video-feature read latency, event apply throughput (batches through
``apply_events``), publish throughput, and memory per user and per video from Redis
``MEMORY USAGE``. Only this benchmark's key prefix is touched (deleted before and after).

    python -m bench.bench_store [--quick] [--url redis://127.0.0.1:6379] [--db 14]
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import numpy as np
import polars as pl

from bench.common import peak_rss_mb, write_result
from shortrec import schema as S
from shortrec.config import StoreConfig
from shortrec.store import ScoredRows, Snapshot, StoreEvent, publish
from shortrec.store.redis import RedisStore

US = 1_000_000
T0 = 1_700_000_000 * US


def _snapshot(
    n_users: int, n_videos: int, hist_len: int, n_tags: int, rng: np.random.Generator
) -> Snapshot:
    tags = [
        rng.choice(n_tags, size=int(rng.integers(1, 5)), replace=False).tolist()
        for _ in range(n_videos)
    ]
    videos = pl.DataFrame(
        {
            S.VIDEO_IDX: pl.Series(np.arange(n_videos), dtype=pl.Int32),
            S.CREATOR_IDX: pl.Series(
                rng.integers(0, max(n_videos // 20, 1), n_videos), dtype=pl.Int32
            ),
            S.CATEGORY: pl.Series(rng.integers(0, 30, n_videos), dtype=pl.Int16),
            S.TAGS: pl.Series(tags, dtype=pl.List(pl.Int32)),
            S.DURATION_S: pl.Series(rng.uniform(5, 120, n_videos), dtype=pl.Float32),
            S.UPLOAD_TS: pl.Series(
                T0 - rng.integers(0, 30 * 86_400 * US, n_videos), dtype=pl.Int64
            ).cast(S.UTC_TS),
        }
    )
    stats = pl.DataFrame(
        {
            S.VIDEO_IDX: pl.Series(np.arange(n_videos), dtype=pl.Int32),
            S.IMPRESSIONS: pl.Series(rng.integers(0, 10_000, n_videos), dtype=pl.Int64),
            **{
                c: pl.Series(rng.uniform(0, 1, n_videos), dtype=pl.Float32)
                for c in (S.ENGAGE_RATE, S.WATCH_RATIO_MEAN, S.SKIP_RATE, S.LIKE_RATE)
            },
        }
    )
    hist = rng.integers(0, n_videos, (n_users, hist_len))
    hts = T0 - np.sort(rng.integers(0, 7 * 86_400 * US, (n_users, hist_len)), axis=1)[:, ::-1]
    histories = pl.DataFrame(
        {
            S.USER_IDX: pl.Series(np.arange(n_users), dtype=pl.Int32),
            S.HIST_VIDEO_IDX: pl.Series(hist.tolist(), dtype=pl.List(pl.Int32)),
            S.HIST_TS: pl.Series(np.sort(hts, axis=1).tolist(), dtype=pl.List(pl.Int64)).cast(
                pl.List(S.UTC_TS)
            ),
            S.WATCH_RATIO: pl.Series(
                rng.uniform(0, 1.5, (n_users, hist_len)).tolist(), dtype=pl.List(pl.Float32)
            ),
            S.SKIPPED: pl.Series(
                (rng.uniform(size=(n_users, hist_len)) < 0.3).tolist(), dtype=pl.List(pl.Boolean)
            ),
        }
    )
    k = 10
    affinities = pl.DataFrame(
        {
            S.USER_IDX: pl.Series(np.repeat(np.arange(n_users), k), dtype=pl.Int32),
            S.TAG_IDX: pl.Series(
                np.concatenate([rng.choice(n_tags, k, replace=False) for _ in range(n_users)]),
                dtype=pl.Int32,
            ),
            S.AFFINITY: pl.Series(rng.uniform(0, 3, n_users * k), dtype=pl.Float32),
        }
    )
    top = min(2_000, n_videos)
    trend_v = rng.choice(n_videos, top, replace=False)
    tag_rows = [(t, v) for v, ts in enumerate(tags) for t in ts]
    tag_g = np.array([t for t, _ in tag_rows])
    return Snapshot(
        as_of_us=T0,
        videos=videos,
        video_stats=stats,
        trending=ScoredRows(np.array(["*"] * top), trend_v, rng.uniform(0, 100, top)),
        tag_top=ScoredRows(
            tag_g, np.array([v for _, v in tag_rows]), rng.uniform(0, 1, len(tag_rows))
        ),
        fresh=np.arange(n_videos)[-min(500, n_videos) :],
        user_vocab=pl.DataFrame(
            {
                S.IDX: pl.Series(np.arange(n_users), dtype=pl.Int32),
                S.ID: [f"user-{i}" for i in range(n_users)],
            }
        ),
        histories=histories,
        affinities=affinities,
    )


def _events(n: int, n_users: int, n_videos: int, rng: np.random.Generator) -> list[StoreEvent]:
    users = rng.integers(0, n_users, n)
    vids = rng.integers(0, n_videos, n)
    skipped = rng.uniform(size=n) < 0.3
    wr = rng.uniform(0, 1.5, n)
    return [
        StoreEvent(
            event_id=i,
            user_id=f"user-{users[i]}",
            session_id=int(users[i]),
            video_idx=int(vids[i]),
            ts_us=T0 + (i + 1) * 1000,
            watch_ratio=float(wr[i]),
            skipped=bool(skipped[i]),
            liked=bool(rng.uniform() < 0.05),
            engagement=0.0 if skipped[i] else float(wr[i]),
        )
        for i in range(n)
    ]


def _pct(x: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(x) * 1e3, q))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--url", default="redis://127.0.0.1:6379")
    ap.add_argument("--db", type=int, default=14)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    conf: dict[str, Any] = (
        {"users": 2_000, "videos": 5_000, "reads": 2_000, "events": 20_000}
        if args.quick
        else {"users": 20_000, "videos": 50_000, "reads": 10_000, "events": 100_000}
    )
    conf.update(history_len=50, tags=500, event_batch=100, features_batch=500, seed=args.seed)
    rng = np.random.default_rng(args.seed)
    # generous timeouts: on a shared machine a stalled server must not abort the run (serving
    # keeps the short defaults, which decide when to degrade to the in-process store)
    cfg = StoreConfig(
        url=args.url,
        db=args.db,
        key_prefix="shortrec-bench",
        socket_timeout_s=10.0,
        connect_timeout_s=5.0,
    )
    store = RedisStore(cfg)
    if not store.ping():
        print(f"bench_store: no Redis server at {args.url}", file=sys.stderr)
        return 1
    store.flush_prefix()
    try:
        snap = _snapshot(conf["users"], conf["videos"], conf["history_len"], conf["tags"], rng)
        t = time.perf_counter()
        publish(store, snap, cfg)
        publish_s = time.perf_counter() - t

        # event apply throughput (3 round trips per batch of event_batch events)
        events = _events(conf["events"], conf["users"], conf["videos"], rng)
        b = conf["event_batch"]
        t = time.perf_counter()
        applied = sum(store.apply_events(events[i : i + b]) for i in range(0, len(events), b))
        apply_s = time.perf_counter() - t
        assert applied == len(events)

        # request context reads (after the events, so live state is non-trivial)
        now = T0 + (len(events) + 10) * 1000
        users = rng.integers(0, conf["users"], conf["reads"])
        lat: list[float] = []
        for u in users.tolist():
            t = time.perf_counter()
            store.read_request_context(f"user-{u}", u, now)
            lat.append(time.perf_counter() - t)
        flat: list[float] = []
        for _ in range(max(conf["reads"] // 10, 50)):
            vids = rng.integers(0, conf["videos"], conf["features_batch"])
            t = time.perf_counter()
            store.video_features(vids)
            flat.append(time.perf_counter() - t)

        # memory per user (published + live) and per video, from MEMORY USAGE
        k, v = store.keys, store.current_version()[0]
        sample = [f"user-{u}" for u in rng.choice(conf["users"], 200, replace=False)]
        live_keys = [[k.history(u), k.seen(u), k.session(u), k.dedup(u)] for u in sample]
        active = [ks for ks in live_keys if store.memory_usage(ks[:1])]
        live_b = [store.memory_usage(ks) for ks in active]
        base_b = [store.memory_usage([k.user_base(v, u)]) for u in sample]
        vid_sample = rng.choice(conf["videos"], 200, replace=False).tolist()
        video_b = [store.memory_usage([k.video(v, x)]) for x in vid_sample]
        events_per_user = len(events) / conf["users"]
    finally:
        store.flush_prefix()
        store.close()
    metrics = {
        "request_context_p50_ms": _pct(lat, 50),
        "request_context_p99_ms": _pct(lat, 99),
        "video_features_500_p50_ms": _pct(flat, 50),
        "video_features_500_p99_ms": _pct(flat, 99),
        "apply_events_per_s": len(events) / apply_s,
        "publish_s": publish_s,
        "publish_users_per_s": conf["users"] / publish_s,
        "user_published_bytes": float(np.mean(base_b)),
        "user_live_bytes": float(np.mean(live_b)),
        "user_live_events_mean": events_per_user,
        "video_bytes": float(np.mean(video_b)),
        "peak_rss_mb": peak_rss_mb(),
    }
    path = write_result("store", conf, metrics)
    for name, value in metrics.items():
        print(f"{name:28s} {value:12.3f}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
