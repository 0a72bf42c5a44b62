"""ETL throughput and peak memory: ``python -m bench.bench_etl [--quick] [--sizes ...]``.

For each size a simulated world (``shortrec.data.simulator.generate``, cached under
``bench/.work/etl/``) is generated in one child process and the ETL runs in a fresh child
process, so ``peak_rss_mb`` is the ETL's own peak resident memory. Metrics per size:
``{size}_events``, ``{size}_events_per_s`` (input events / ETL wall seconds), ``{size}_seconds``,
``{size}_peak_rss_mb`` (the parent), ``{size}_worker_peak_rss_mb`` (the largest worker),
``{size}_peak_rss_total_mb`` (sampled sum over the parent and its workers: the figure for the
memory target), ``{size}_buckets``, ``{size}_workers``, ``{size}_cpu_s`` (CPU seconds of all
threads and worker processes),
``{size}_events_per_cpu_s`` and ``{size}_load_avg_1m`` (the machine's 1-minute load average
when the run started: the cores are shared, so wall-clock figures depend on it).
Targets (issue 3): >= 1M events/s on 2 cores and peak RSS under 4 GiB on ``large`` (~100M
events).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.common import TreeRss, cpu_seconds, peak_rss_mb, work_dir, write_result

NAME = "etl"
QUICK_SIZES = ("small",)
FULL_SIZES = ("medium", "large")


def _generate(size: str, root: Path) -> None:
    from shortrec.config import SimConfig
    from shortrec.data import simulator

    if (root / "manifest.json").is_file() and list((root / "events").glob("*.parquet")):
        return  # cached world (the simulator is deterministic for a preset and seed)
    simulator.generate(SimConfig.preset_config(size, seed=0), root, progress=False)  # type: ignore[arg-type]


def _etl(root: Path, n_buckets: int | None) -> dict[str, Any]:
    from shortrec.config import EtlConfig
    from shortrec.data.etl import run_etl

    c0 = cpu_seconds()
    with TreeRss() as tree:
        summary = run_etl(root, EtlConfig(n_buckets=n_buckets), progress=False)
    cpu = cpu_seconds() - c0
    return {
        **summary,
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "worker_peak_rss_mb": round(
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1
        ),
        "peak_rss_total_mb": round(max(tree.peak_mb, peak_rss_mb()), 1),
        "cpu_s": round(cpu, 3),
    }


def _child(*args: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.bench_etl", *args],
        check=True,
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="only a small world")
    ap.add_argument("--sizes", nargs="*", help="simulator presets to run (default: by --quick)")
    ap.add_argument("--buckets", type=int, default=None, help="user buckets (default: auto)")
    ap.add_argument("--child-generate", help=argparse.SUPPRESS)
    ap.add_argument("--child-etl", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_generate:
        _generate(args.child_generate, work_dir(NAME) / args.child_generate)
        print(json.dumps({"ok": True}))
        return 0
    if args.child_etl:
        print(json.dumps(_etl(Path(args.child_etl), args.buckets)))
        return 0
    sizes = args.sizes or (QUICK_SIZES if args.quick else FULL_SIZES)
    metrics: dict[str, Any] = {}
    for size in sizes:
        _child("--child-generate", size)
        root = work_dir(NAME) / size
        extra = [] if args.buckets is None else ["--buckets", str(args.buckets)]
        load = os.getloadavg()[0]
        r = _child("--child-etl", str(root), *extra)
        metrics[f"{size}_events"] = r["events_in"]
        metrics[f"{size}_events_per_s"] = r["events_per_s"]
        metrics[f"{size}_seconds"] = r["seconds"]
        metrics[f"{size}_peak_rss_mb"] = r["peak_rss_mb"]
        metrics[f"{size}_worker_peak_rss_mb"] = r["worker_peak_rss_mb"]
        metrics[f"{size}_peak_rss_total_mb"] = r["peak_rss_total_mb"]
        metrics[f"{size}_buckets"] = r["n_buckets"]
        metrics[f"{size}_workers"] = r["workers"]
        metrics[f"{size}_cpu_s"] = r["cpu_s"]
        metrics[f"{size}_events_per_cpu_s"] = round(r["events_in"] / max(r["cpu_s"], 1e-9), 1)
        metrics[f"{size}_load_avg_1m"] = round(load, 2)
        print(f"{size}: {r['events_in']:,} events in {r['seconds']:.1f}s = "
              f"{r['events_per_s']:,.0f} events/s ({r['cpu_s']:.1f} CPU s), peak RSS "
              f"{r['peak_rss_total_mb']:.0f} MB (all processes), {r['n_buckets']} bucket(s), "
              f"{r['workers']} worker(s), load {load:.1f}",
              flush=True)  # fmt: skip
    config = {"sizes": list(sizes), "buckets": args.buckets or "auto", "quick": args.quick}
    path = write_result(NAME, config, metrics)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
