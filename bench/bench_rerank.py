"""Re-ranking cost: MMR and greedy DPP choosing 20 of 200 candidates, with and without caps.

Candidates get random relevance, 32-dimensional content embeddings (cosine similarity), a
creator among 40 and a topic among 12; the session look-back holds 20 served items.

    python -m bench.bench_rerank [--quick]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from bench.common import peak_rss_mb, write_result
from shortrec.config import RerankConfig
from shortrec.rerank import cosine_similarity, rerank, tag_jaccard


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = ap.parse_args(argv)
    reps = 200 if args.quick else 2000
    n, k = 200, 20
    rng = np.random.default_rng(0)
    metrics: dict[str, Any] = {}
    sims = []
    for _ in range(8):  # a few different candidate sets, cycled through
        rel = rng.random(n)
        sims.append(
            (
                rel,
                cosine_similarity(rng.normal(size=(n, 32))),
                rng.integers(0, 40, n),
                rng.integers(0, 12, n),
            )
        )
    served_c, served_t = rng.integers(0, 40, 20).tolist(), rng.integers(0, 12, 20).tolist()
    t = time.perf_counter()
    for _ in range(reps // 10):
        tag_jaccard(rng.integers(-1, 400, (n, 4)))
    metrics["tag_jaccard_200_ms"] = round((time.perf_counter() - t) / (reps // 10) * 1e3, 4)
    for method in ("mmr", "dpp"):
        for capped in (False, True):
            cfg = RerankConfig(
                method=method,
                k=k,
                trade_off=0.7,
                max_per_creator=2 if capped else None,
                max_per_topic=4 if capped else None,
            )
            times = np.empty(reps)
            for i in range(reps):
                rel, sim, cr, tp = sims[i % len(sims)]
                t = time.perf_counter()
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
    path = write_result("rerank", {"quick": args.quick, "n": n, "k": k, "reps": reps}, metrics)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
