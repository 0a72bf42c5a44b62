"""Same-machine A/B of the serving stack: this checkout against an earlier revision.

    python -m bench.bench_serving_ab [--baseline REV] [--rounds 3] [--duration 10] [--quick]

Machines differ by more than code changes do (the trivial endpoint alone ran at 12k req/s on
one VM and 5k on another), so a code change is measured against the revision before it on
the same machine, in the same hour: ``git archive REV src`` is unpacked under
``bench/.work/serving_ab/REV`` and both versions serve the same bundle (``bench_serving``'s
cached ``tiny`` world, 2 workers, each version's own default ``ServingConfig``) from the same
private redis-server, started one after the other, alternating, ``--rounds`` times. Each run
drives personalised ``GET /v1/feed`` with wrk (32 connections, ``--duration`` s) and records
feed requests/s, p99 and the CPU the workers spent per request. Writes
``bench/results/serving_ab.json``: the medians per version and their ratios (this / base).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from bench.bench_serving import _WRK_FEED, _bundle, _redis, _tree_cpu_s, _wrk, serve_process
from bench.common import work_dir, write_result

ROOT = Path(__file__).resolve().parents[1]


def _checkout(rev: str) -> tuple[Path, str]:
    """``src/`` of ``rev`` unpacked under the scratch dir (once per commit) and its commit."""
    commit = subprocess.run(
        ["git", "rev-parse", "--verify", f"{rev}^{{commit}}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if commit.returncode != 0:
        raise SystemExit(f"--baseline {rev}: not a commit of this repository")
    sha = commit.stdout.strip()
    dest = work_dir("serving_ab") / sha[:12]
    if not (dest / "src" / "shortrec").is_dir():
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        archive = subprocess.run(
            ["git", "archive", sha, "src"], cwd=ROOT, capture_output=True, check=True
        )
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return dest / "src", sha


def _config_json(src: Path) -> str:
    """That version's own default serving config for 2 workers, as ``serve`` reads it."""
    code = (
        "from shortrec.config import ServingConfig; "
        "print(ServingConfig(workers=2).model_dump_json())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(src)},
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip().splitlines()[-1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--baseline", default="HEAD~1", help="git revision to compare against (default HEAD~1)"
    )
    ap.add_argument("--rounds", type=int, default=None, help="alternations (default 3)")
    ap.add_argument("--duration", type=int, default=None, help="seconds per wrk run (10)")
    ap.add_argument("--quick", action="store_true", help="1 round of 5 s runs")
    args = ap.parse_args(argv)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.duration = args.duration or (5 if args.quick else 10)
    if shutil.which("wrk") is None:
        print("wrk not found: apt-get install -y wrk", file=sys.stderr)
        return 1
    base_src, base_sha = _checkout(args.baseline)
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    versions = {"base": base_src, "this": ROOT / "src"}
    configs = {k: _config_json(v) for k, v in versions.items()}
    root, art = _bundle("tiny")
    import polars as pl

    from shortrec.publish import publish

    runs: dict[str, list[dict[str, float]]] = {k: [] for k in versions}
    load_before = os.getloadavg()[0]
    with _redis() as redis_url:
        pub = publish(root, art, redis_url, progress=False)
        fmt = {
            "seed": 1,
            "n_users": int(pub["users"]),
            "n_videos": pl.read_parquet(root / "videos.parquet").height,
            "event_share": 0.2,
        }
        for r in range(args.rounds):
            for name, src in versions.items():
                with serve_process(art, redis_url, 2, configs[name], src) as (url, pid):
                    cpu0 = _tree_cpu_s(pid)
                    w = _wrk(url, "/v1/feed", _WRK_FEED % fmt, args.duration, 32)
                    cpu = (_tree_cpu_s(pid) - cpu0) / max(w["requests"], 1) * 1e3
                runs[name].append({"rps": w["rps"], "cpu_ms": cpu, "p99_ms": w["p99_ms"]})
                print(f"round {r + 1} {name}: {w['rps']:.0f} req/s, {cpu:.2f} CPU-ms/req")
    metrics: dict[str, float] = {}
    for name, rs in runs.items():
        for key, unit in (("rps", "feed_req_per_s"), ("cpu_ms", "worker_cpu_ms_per_req")):
            metrics[f"{name}_{unit}_median"] = round(float(np.median([x[key] for x in rs])), 3)
        metrics[f"{name}_p99_ms_median"] = round(float(np.median([x["p99_ms"] for x in rs])), 2)
    metrics["this_over_base_feed_req_per_s"] = round(
        metrics["this_feed_req_per_s_median"] / metrics["base_feed_req_per_s_median"], 3
    )
    metrics["this_over_base_worker_cpu_ms_per_req"] = round(
        metrics["this_worker_cpu_ms_per_req_median"] / metrics["base_worker_cpu_ms_per_req_median"],
        3,
    )
    metrics["load_avg_1m_before"] = round(load_before, 2)
    config = {
        "baseline_rev": args.baseline,
        "baseline_commit": base_sha,
        "this_commit": head,
        "rounds": args.rounds,
        "duration_s": args.duration,
        "connections": 32,
        "workers": 2,
        "preset": "tiny",
        "runs": runs,
    }
    path = write_result("serving_ab", config, metrics)
    print(json.dumps(metrics, indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
