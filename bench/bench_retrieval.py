"""Retrieval benchmark: ANN vs exact search, all-sources request latency, training speed.

For each catalogue size (50k; 1M unless ``--quick``):

* ``ann_recall_at_100_N``: recall@100 of the index :class:`VectorIndex` picks for N vectors
  (exact below ``exact_max``, IVF by default above) against brute force, on 64-d clustered unit
  vectors; ``ivf_*``/``hnsw_*``: each ANN kind forced where exact is chosen (50k);
  ``index_search_p50_ms_N``/``p99``, ``exact_search_p50_ms_N``: one query at a time.
* ``request_p50_ms_N``/``request_p99_ms_N``: one merged request through every source (two-tower
  user vector from a 50-item history + index search, covisit, tags, trending, fresh, explore,
  merge of 500 with 200 seen videos), on a synthetic world of N videos whose two-tower weights
  are random (latency does not depend on the weights' values).
* ``train_samples_per_s`` (default config's threads) and ``..._threads1``/``..._threads2``:
  two-tower training throughput (batch 1024) on a synthetic 50k-video world.
* ``load_avg_1m_start``/``_end``: the machine's load; the 2 cores are shared, and timings taken
  under a load above 2 are slower than on an idle machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import time
from typing import Any

import numpy as np
import polars as pl
import torch

from bench.common import peak_rss_mb, write_result
from shortrec import schema as S
from shortrec.config import IndexConfig, RetrievalConfig, TwoTowerConfig
from shortrec.retrieval.features import positive_expr
from shortrec.retrieval.index import VectorIndex, exact_search, recall_vs_exact
from shortrec.retrieval.pipeline import fit_sources, temporal_holdout
from shortrec.retrieval.two_tower import TrainedTwoTower, TwoTower, Vocab, train_two_tower
from shortrec.retrieval.types import RetrievalRequest

NAME = "retrieval"
DIM = 64
T0 = int(dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp() * 1_000_000)
DAY = 86_400 * 1_000_000


def clustered(n: int, rng: np.random.Generator, n_clusters: int = 1000) -> np.ndarray:
    """(n, DIM) unit vectors around ``n_clusters`` random centres (noise 0.3 per dim)."""
    centres = rng.standard_normal((n_clusters, DIM)).astype(np.float32)
    out = np.empty((n, DIM), dtype=np.float32)
    for s in range(0, n, 200_000):  # bounded temporaries
        e = min(n, s + 200_000)
        x = centres[rng.integers(0, n_clusters, e - s)]
        x += 0.3 * rng.standard_normal((e - s, DIM)).astype(np.float32)
        out[s:e] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def _ms(samples: list[float]) -> tuple[float, float]:
    a = np.asarray(samples) * 1000.0
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


def bench_index(n: int, rng: np.random.Generator, n_queries: int) -> dict[str, float]:
    x = clustered(n, rng)
    q = x[rng.integers(0, n, n_queries)] + 0.1 * rng.standard_normal((n_queries, DIM)).astype(
        np.float32
    )
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    out: dict[str, float] = {}
    # the chosen index; below exact_max also both ANN kinds forced, for comparison (at 1M an
    # HNSW build takes minutes on 2 cores, so only the chosen index is built there)
    variants = {"index": IndexConfig()}
    if n <= IndexConfig().exact_max:
        variants["ivf"] = IndexConfig(exact_max=1, ann="ivf")
        variants["hnsw"] = IndexConfig(exact_max=1, ann="hnsw")
    for label, cfg in variants.items():
        t0 = time.perf_counter()
        idx = VectorIndex.build(x, cfg)
        out[f"{label}_build_s_{n}"] = time.perf_counter() - t0
        out[f"{'ann' if label == 'index' else label}_recall_at_100_{n}"] = recall_vs_exact(
            idx, x, q, 100
        )
        lat = []
        for i in range(n_queries):
            t0 = time.perf_counter()
            idx.search(q[i : i + 1], 100)
            lat.append(time.perf_counter() - t0)
        out[f"{label}_search_p50_ms_{n}"], out[f"{label}_search_p99_ms_{n}"] = _ms(lat)
        if label == "index":
            out[f"index_is_{idx.kind}_{n}"] = 1.0
    lat = []
    for i in range(min(n_queries, 50)):
        t0 = time.perf_counter()
        exact_search(x, q[i : i + 1], 100)
        lat.append(time.perf_counter() - t0)
    out[f"exact_search_p50_ms_{n}"] = _ms(lat)[0]
    return out


def synthetic_world(
    n_videos: int, n_users: int, n_events: int, rng: np.random.Generator, n_topics: int = 50
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Videos with topic = category, 3 tags (2 of the topic), Zipf popularity; users who watch
    their topic fully and skip most other videos, over 14 days; 2% of videos uploaded in the
    last day and never shown."""
    v = np.arange(n_videos)
    topic = v % n_topics
    tag_extra = rng.integers(0, 4 * n_topics, n_videos)
    upload = T0 + rng.integers(0, 13 * DAY, n_videos)
    n_new = max(1, n_videos // 50)
    upload[-n_new:] = T0 + 13 * DAY + rng.integers(0, DAY, n_new)
    videos = S.conform(
        pl.DataFrame(
            {
                S.VIDEO_IDX: v,
                S.CREATOR_IDX: v % max(1, n_videos // 20),
                S.CATEGORY: topic,
                S.TAGS: pl.Series(np.stack([2 * topic, 2 * topic + 1, tag_extra], 1).tolist()),
                S.DURATION_S: rng.uniform(5, 120, n_videos),
                S.UPLOAD_TS: pl.Series(upload).cast(pl.Datetime("us", "UTC")),
            }
        ),
        S.VIDEOS,
    )
    users = S.conform(
        pl.DataFrame(
            {
                S.USER_IDX: np.arange(n_users),
                S.REGION: rng.choice(S.REGIONS, n_users),
                S.AGE_BUCKET: rng.choice(S.AGE_BUCKETS, n_users),
                S.DEVICE: rng.choice(S.DEVICES, n_users),
            }
        ),
        S.USERS,
    )
    shown = n_videos - n_new
    u = rng.integers(0, n_users, n_events)
    own = rng.random(n_events) < 0.7
    rank = np.minimum(rng.zipf(1.3, n_events) - 1, shown // n_topics - 1)
    vid = np.where(own, rank * n_topics + u % n_topics, rng.integers(0, shown, n_events))
    match = vid % n_topics == u % n_topics
    events = S.conform(
        pl.DataFrame(
            {
                S.EVENT_ID: np.arange(n_events),
                S.USER_IDX: u,
                S.VIDEO_IDX: vid,
                S.TS: pl.Series(T0 + rng.integers(0, 13 * DAY, n_events)).cast(
                    pl.Datetime("us", "UTC")
                ),
                S.WATCH_RATIO: np.where(
                    match, rng.uniform(0.6, 1.5, n_events), rng.uniform(0, 0.2, n_events)
                ),
                S.SKIPPED: ~match & (rng.random(n_events) < 0.8),
                S.LIKED: match & (rng.random(n_events) < 0.1),
            }
        ),
        S.EVENTS,
    )
    return videos, users, events


def bench_requests(n: int, rng: np.random.Generator, n_requests: int) -> dict[str, float]:
    n_users = max(1_000, n // 5)
    videos, users, events = synthetic_world(n, n_users, min(20 * n, 4_000_000), rng)
    cfg = RetrievalConfig()
    now = T0 + 14 * DAY
    vocab = Vocab.from_tables(videos, users)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = TwoTower(vocab, cfg.two_tower).eval()
    torch.set_num_threads(cfg.two_tower.threads)
    tt = TrainedTwoTower(net, vocab, cfg.two_tower, clustered(n, rng), {})
    t0 = time.perf_counter()
    model = fit_sources(events, videos, users, now, cfg, tt)
    fit_s = time.perf_counter() - t0
    lat, sizes = [], []
    for i in range(n_requests + 20):
        req = RetrievalRequest(
            user_idx=i,
            now_us=now,
            history=rng.integers(0, n, 50).astype(np.int32),
            watch_ratio=rng.uniform(0, 1.5, 50).astype(np.float32),
            skipped=rng.random(50) < 0.2,
            tag_idx=rng.integers(0, 100, 10).astype(np.int32),
            tag_weight=rng.dirichlet(np.ones(10)).astype(np.float32),
            seen=rng.integers(0, n, 200).astype(np.int32),
            region=str(rng.choice(S.REGIONS)),
        )
        t0 = time.perf_counter()
        m = model.retrieve(req)
        if i >= 20:  # warm-up
            lat.append(time.perf_counter() - t0)
            sizes.append(len(m))
    p50, p99 = _ms(lat)
    assert model.vector is not None
    return {
        f"request_p50_ms_{n}": p50,
        f"request_p99_ms_{n}": p99,
        f"request_candidates_{n}": float(np.mean(sizes)),
        f"fit_sources_s_{n}": fit_s,
        f"request_index_is_{model.vector.index.kind}_{n}": 1.0,
    }


def bench_training(rng: np.random.Generator, quick: bool) -> dict[str, float]:
    """One epoch on a fixed sample budget with 1 and with 2 torch threads (same process, one
    after the other): on a shared 2-core machine 1 thread can be faster."""
    videos, users, events = synthetic_world(50_000, 10_000, 400_000, rng)
    train, valid = temporal_holdout(events, 0.1)
    out: dict[str, float] = {}
    for threads in (1, 2):
        cfg = TwoTowerConfig(
            max_epochs=1,
            max_samples_per_epoch=20_000 if quick else 100_000,
            max_valid_users=500,
            threads=threads,
        )
        tt = train_two_tower(
            train, valid, videos, users, cfg, positive_expr(RetrievalConfig().engagement), seed=0
        )
        out[f"train_samples_per_s_threads{threads}"] = tt.metrics["samples_per_s"]
    out["train_samples_per_s"] = out[
        f"train_samples_per_s_threads{RetrievalConfig().two_tower.threads}"
    ]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="50k catalogue only")
    args = ap.parse_args(argv)
    sizes = [50_000] if args.quick else [50_000, 1_000_000]
    rng = np.random.default_rng(0)
    metrics: dict[str, Any] = {"load_avg_1m_start": os.getloadavg()[0]}
    for n in sizes:
        metrics |= bench_index(n, rng, n_queries=200)
        print(f"index {n}: done", flush=True)
        metrics |= bench_requests(n, rng, n_requests=300 if args.quick else 500)
        print(f"requests {n}: done", flush=True)
    metrics |= bench_training(rng, args.quick)
    metrics["peak_rss_mb"] = peak_rss_mb()
    metrics["load_avg_1m_end"] = os.getloadavg()[0]
    cfg = RetrievalConfig()
    path = write_result(
        NAME,
        {
            "quick": args.quick,
            "sizes": sizes,
            "dim": DIM,
            "index": cfg.index.model_dump(),
            "merge_total": cfg.merge.total,
            "threads": cfg.two_tower.threads,
        },
        metrics,
    )
    for k, v in sorted(metrics.items()):
        print(f"{k:40s} {v:.4g}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
