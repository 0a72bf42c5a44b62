"""Run the benchmarks: every ``bench/bench_*.py`` module's ``main(quick: bool)``.

``python -m bench.run [--quick] [NAME ...]`` — each benchmark runs in its own process, one after
the other (the machine has 2 cores: never run two at once), and writes bench/results/*.json.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def discover() -> list[str]:
    return sorted(p.stem for p in HERE.glob("bench_*.py"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="only the small configurations")
    ap.add_argument("names", nargs="*", help="benchmarks to run (default: all)")
    args = ap.parse_args()
    names = args.names or discover()
    failed = []
    for name in names:
        mod = name if name.startswith("bench_") else f"bench_{name}"
        cmd = [sys.executable, "-m", f"bench.{mod}"] + (["--quick"] if args.quick else [])
        print(f"==> {' '.join(cmd)}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call(cmd, cwd=HERE.parent)
        print(f"<== {mod}: rc={rc} in {time.perf_counter() - t0:.1f}s", flush=True)
        if rc:
            failed.append(mod)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
