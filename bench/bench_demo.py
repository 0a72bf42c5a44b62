"""How long ``make demo``'s job takes on this machine: ``shortrec demo`` end to end.

    python -m bench.bench_demo [--quick] [--preset small]

Runs the real command-line entry point (``shortrec demo --out DIR``, the job ``make demo``
runs after installing; embedded defaults, in-process store) in a child process on a fresh
output directory under ``bench/.work/demo``, and records its wall-clock time, the CPU seconds
of the whole process tree, the peak resident memory of the tree (sampled), and the seconds of
every stage from the demo's own ``demo-summary.json``. Target (issue: the whole loop on 2 cores):
under 10 minutes for the ``small`` preset. ``--quick`` runs the ``tiny`` preset instead (a
smoke run; its result is written to ``demo_tiny.json`` and has no target).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench.common import TreeRss, work_dir, write_result

TARGET_S = 600.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="the tiny preset (smoke run)")
    ap.add_argument("--preset", default=None, help="world preset (default: small)")
    args = ap.parse_args(argv)
    preset = args.preset or ("tiny" if args.quick else "small")
    out = work_dir("demo") / f"out-{preset}"
    shutil.rmtree(out, ignore_errors=True)
    exe = Path(sys.executable).with_name("shortrec")
    cmd = [str(exe), "demo", "--out", str(out)]
    if preset != "small":
        cmd += ["--preset", preset]
    env = {k: v for k, v in os.environ.items() if k != "SHORTREC_REDIS_URL"}  # embedded store
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with TreeRss(period_s=0.2) as rss:
        rc = subprocess.call(cmd, env=env)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # the demo and every process it waited for (its workers), user + system
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    wall = time.perf_counter() - t0
    if rc != 0:
        print(f"shortrec demo failed with exit code {rc}", file=sys.stderr)
        return 1
    summary = json.loads((out / "demo-summary.json").read_text())
    metrics: dict[str, float | bool] = {
        "seconds": round(wall, 1),
        "seconds_in_demo": float(summary["seconds"]),
        "cpu_seconds": round(cpu, 1),
        "peak_rss_mb": round(rss.peak_mb, 1),
        "load_avg_1m_before": round(load_before, 2),
    }
    for stage, sec in summary.get("stage_seconds", {}).items():
        words = re.findall(r"[a-z0-9]+", stage.lower())[:3]  # "A/B test (...)" -> a_b_test
        metrics[f"stage_{'_'.join(words)}_s"] = float(sec)
    if preset == "small":
        metrics["under_target"] = wall < TARGET_S
    config = {
        "preset": preset,
        "command": "shortrec demo --out DIR" + ("" if preset == "small" else f" --preset {preset}"),
        "store": "in-process",
        "target_s": TARGET_S if preset == "small" else None,
        "cores": os.cpu_count(),
    }
    name = "demo" if preset == "small" else f"demo_{preset}"
    path = write_result(name, config, metrics)
    print(json.dumps(metrics, indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
