"""Re-ranking cost: MMR and greedy DPP choosing 20 of 200 candidates, with and without caps.

Candidates get random relevance, 4 tags among 400 (some slots empty), a creator among 40 and a
topic among 12; the session look-back holds 20 served items. Each timed call builds the
similarity the config asks for (the default ``"content"``: tags, topic and creator mixed) and
re-ranks, as a feed request does.

    python -m bench.bench_rerank [--quick]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from bench.common import peak_rss_mb, write_result
from shortrec.config import RerankConfig
from shortrec.rerank import rerank, rerank_similarity, tag_jaccard

#: the capped runs' per-page caps (creator, topic)
CAPS = (2, 4)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = ap.parse_args(argv)
    reps = 200 if args.quick else 2000
    n, k = 200, 20
    rng = np.random.default_rng(0)
    metrics: dict[str, Any] = {}
    pools = []
    for _ in range(8):  # a few different candidate sets, cycled through
        pools.append(
            (
                rng.random(n),
                rng.integers(-1, 400, (n, 4)),
                rng.integers(0, 40, n),
                rng.integers(0, 12, n),
            )
        )
    served_c, served_t = rng.integers(0, 40, 20).tolist(), rng.integers(0, 12, 20).tolist()
    # load (or compile) the numba kernels once, outside the timings: a process does it once
    warm = RerankConfig(k=k, max_per_creator=CAPS[0], max_per_topic=CAPS[1])
    for method in ("mmr", "dpp"):
        rel, tags, cr, tp = pools[0]
        cfg = warm.model_copy(update={"method": method})
        rerank(rel, rerank_similarity(cfg, tags, cr, tp), cfg, cr, tp, served_c, served_t)
    tag_jaccard(pools[0][1])
    t = time.perf_counter()
    for _ in range(reps // 10):
        tag_jaccard(rng.integers(-1, 400, (n, 4)))
    metrics["tag_jaccard_200_ms"] = round((time.perf_counter() - t) / (reps // 10) * 1e3, 4)
    default = RerankConfig()
    t = time.perf_counter()
    for i in range(reps // 10):
        _, tags, cr, tp = pools[i % len(pools)]
        rerank_similarity(default, tags, cr, tp)
    metrics["content_similarity_200_ms"] = round((time.perf_counter() - t) / (reps // 10) * 1e3, 4)
    for method in ("mmr", "dpp"):
        for capped in (False, True):
            cfg = default.model_copy(
                update={
                    "method": method,
                    "k": k,
                    # both caps, whatever the defaults: their bookkeeping is the cost
                    "max_per_creator": CAPS[0] if capped else None,
                    "max_per_topic": CAPS[1] if capped else None,
                }
            )
            times = np.empty(reps)
            for i in range(reps):
                rel, tags, cr, tp = pools[i % len(pools)]
                t = time.perf_counter()
                sim = rerank_similarity(cfg, tags, cr, tp)
                rerank(
                    rel,
                    sim,
                    cfg,
                    cr if capped else None,
                    tp if capped else None,
                    served_c,
                    served_t,
                )
                times[i] = time.perf_counter() - t
            name = f"{method}{'_caps' if capped else ''}"
            metrics[f"{name}_p50_ms"] = round(float(np.percentile(times, 50) * 1e3), 4)
            metrics[f"{name}_p99_ms"] = round(float(np.percentile(times, 99) * 1e3), 4)
            print(f"{name}: p50 {metrics[f'{name}_p50_ms']} ms p99 {metrics[f'{name}_p99_ms']} ms")
    metrics["target_p50_ms"] = 2.0
    metrics["peak_rss_mb"] = round(peak_rss_mb(), 1)
    config = {
        "quick": args.quick,
        "n": n,
        "k": k,
        "reps": reps,
        "similarity": default.similarity,
        "similarity_weights": default.similarity_weights,
        "trade_off": default.trade_off,
        "page_order": default.page_order,
        "caps_creator_topic": list(CAPS),
    }
    path = write_result("rerank", config, metrics)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
