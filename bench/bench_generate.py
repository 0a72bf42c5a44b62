"""Benchmark: synthetic data generation throughput and peak memory.

``python -m bench.bench_generate [--quick] [--large]``: generates the ``small`` and ``medium``
presets (``--quick``: small only; ``--large`` adds ``large``, minutes) into
``bench/.work/generate``, each in a fresh subprocess so that peak RSS is per preset, and writes
``bench/results/generate.json`` with flat metrics ``{preset}_events_per_s``,
``{preset}_seconds``, ``{preset}_events``, ``{preset}_workers`` (simulating processes: the
parent and its helpers), ``{preset}_peak_rss_mb`` (the parent, which simulates chunks too),
``{preset}_worker_peak_rss_mb`` (the largest helper process), ``{preset}_peak_rss_total_mb``
(sampled sum over the parent and its helpers: the figure for the memory target), and
``{preset}_events_per_cpu_s`` (events per CPU second of all threads and helper processes,
which other processes on a shared machine distort less than wall time;
``{preset}_load_avg_1m`` records how busy the machine was).
A tiny warm-up run in the same subprocess keeps import and first-call costs out of the timing.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.common import TreeRss, cpu_seconds, peak_rss_mb, work_dir, write_result

NAME = "generate"


def run_one(preset: str, out: Path) -> dict[str, Any]:
    """Generate ``preset`` into ``out`` in this process; return its measured figures."""
    from shortrec.config import SimConfig
    from shortrec.data.simulator import generate

    generate(SimConfig.preset_config("tiny"), out.parent / "warmup", progress=False)
    load = os.getloadavg()[0]
    cpu0 = cpu_seconds()
    with TreeRss() as tree:
        summary = generate(SimConfig.preset_config(preset), out, progress=False)  # type: ignore[arg-type]
    cpu = cpu_seconds() - cpu0
    events = summary["counts"]["events"]
    return {
        "events": events,
        "seconds": summary["seconds"],
        "events_per_s": summary["events_per_s"],
        "workers": summary["workers"],
        # CPU seconds of all threads and worker processes: robust to other processes sharing
        # the cores
        "cpu_seconds": cpu,
        "events_per_cpu_s": events / max(cpu, 1e-9),
        "load_avg_1m": load,
        # this process alone, the largest helper, and the sampled sum over all of them
        "peak_rss_mb": peak_rss_mb(),
        "worker_peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
        "peak_rss_total_mb": max(tree.peak_mb, peak_rss_mb()),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="small preset only")
    ap.add_argument("--large", action="store_true", help="also the large preset (minutes)")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one preset, print JSON
    args = ap.parse_args(argv)
    wd = work_dir(NAME)
    if args.one:
        print(json.dumps(run_one(args.one, wd / args.one)))
        return 0
    presets = ["small"] if args.quick else ["small", "medium"]
    if args.large and not args.quick:
        presets.append("large")
    metrics: dict[str, Any] = {}
    for preset in presets:
        proc = subprocess.run(
            [sys.executable, "-m", "bench.bench_generate", "--one", preset],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        for k, v in res.items():
            metrics[f"{preset}_{k}"] = v
        print(f"{preset}: {res}", flush=True)
        shutil.rmtree(wd / preset, ignore_errors=True)
    shutil.rmtree(wd / "warmup", ignore_errors=True)
    path = write_result(NAME, {"presets": presets, "quick": args.quick}, metrics)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
