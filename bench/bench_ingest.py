"""Ingestion throughput: real MovieLens-100K and a generated KuaiRand-layout CSV.

    python -m bench.bench_ingest [--quick]

Cases (each ingested in a fresh child process, so its peak RSS is its own):

- ``ml100k``: MovieLens-100K RecBole atomic files fetched from the ``recbole==1.2.1`` wheel
  (``scripts/fetch_movielens.py``); skipped with a note in the JSON when PyPI is unreachable.
- ``kuairand``: a generated CSV in the KuaiRand ``log_*.csv`` layout (19 columns), 10M rows
  (``--quick``: 1M), seeded; generated once under ``bench/.work/ingest/`` and reused.

Metrics: ``{case}_rows``, ``{case}_seconds``, ``{case}_rows_per_s`` (source rows / wall seconds
of ``ingest()``: read, parse, check, remap, sort, write) and ``{case}_peak_rss_mb``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from bench.common import peak_rss_mb, work_dir, write_result

NAME = "ingest"
ROOT = Path(__file__).resolve().parents[1]
SEED = 20240408
CHUNK = 1_000_000

KUAIRAND_COLUMNS = (
    "user_id",
    "video_id",
    "date",
    "hourmin",
    "time_ms",
    "is_click",
    "is_like",
    "is_follow",
    "is_comment",
    "is_forward",
    "is_hate",
    "long_view",
    "play_time_ms",
    "duration_ms",
    "profile_stay_time",
    "comment_stay_time",
    "is_profile_enter",
    "is_rand",
    "tab",
)


def make_kuairand_csv(path: Path, n_rows: int, seed: int = SEED) -> Path:
    """Write ``n_rows`` of KuaiRand-layout log rows to ``path`` (chunked; bounded memory)."""
    ok = path.with_suffix(".ok")
    if path.is_file() and ok.is_file() and ok.read_text().strip() == str(n_rows):
        return path
    rng = np.random.default_rng(seed)
    n_users, n_videos = 27_000, 2_000_000
    start_ms = 1_649_376_000_000  # 2022-04-08 00:00 UTC
    span_ms = 14 * 86_400_000
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as fh:
        fh.write((",".join(KUAIRAND_COLUMNS) + "\n").encode())
        done = 0
        while done < n_rows:
            n = min(CHUNK, n_rows - done)
            t = start_ms + rng.integers(0, span_ms, n)
            dur = np.round(rng.lognormal(np.log(20_000), 0.6, n)).astype(np.int64)
            play = np.round(dur * rng.lognormal(-0.5, 0.9, n)).astype(np.int64)
            day = (t - start_ms) // 86_400_000
            df = pl.DataFrame(
                {
                    "user_id": rng.integers(0, n_users, n),
                    "video_id": rng.zipf(1.3, n) % n_videos,
                    "date": 20220408 + day,
                    "hourmin": (t // 60_000 % 1440 // 60) * 100,
                    "time_ms": t,
                    "is_click": rng.random(n) < 0.4,
                    "is_like": rng.random(n) < 0.02,
                    "is_follow": rng.random(n) < 0.003,
                    "is_comment": rng.random(n) < 0.002,
                    "is_forward": rng.random(n) < 0.002,
                    "is_hate": rng.random(n) < 0.001,
                    "long_view": play >= np.minimum(dur, 18_000),
                    "play_time_ms": play,
                    "duration_ms": dur,
                    "profile_stay_time": np.zeros(n, np.int64),
                    "comment_stay_time": np.zeros(n, np.int64),
                    "is_profile_enter": rng.random(n) < 0.01,
                    "is_rand": rng.random(n) < 0.004,
                    "tab": rng.integers(0, 15, n),
                }
            ).with_columns(pl.col(pl.Boolean).cast(pl.Int8))
            df.write_csv(fh, include_header=False)
            done += n
    tmp.replace(path)
    path.with_suffix(".ok").write_text(str(n_rows))
    return path


def _child(fmt: str, src: str, out: str) -> int:
    """Run one ingestion and print its summary with this process's peak RSS (JSON)."""
    from shortrec.config import IngestConfig
    from shortrec.data.ingest import ingest

    summary = ingest(fmt, Path(src), Path(out), IngestConfig(), progress=False)
    summary["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(summary))
    return 0


def run_case(fmt: str, src: Path, out: Path) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.bench_ingest", "--child", fmt, str(src), str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"ingest {fmt} failed:\n{proc.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    shutil.rmtree(out, ignore_errors=True)
    return result


def _fetch_ml100k() -> tuple[Path | None, str]:
    spec = importlib.util.spec_from_file_location(
        "fetch_movielens", ROOT / "scripts" / "fetch_movielens.py"
    )
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    try:
        return Path(mod.fetch(mod.DEFAULT_DEST, timeout_s=120.0)), ""
    except mod.FetchError as e:
        return None, f"skipped: cannot fetch MovieLens-100K from PyPI: {e}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1M generated rows instead of 10M")
    ap.add_argument("--child", nargs=3, metavar=("FMT", "SRC", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return _child(*args.child)
    n_rows = 1_000_000 if args.quick else 10_000_000
    wd = work_dir(NAME)
    metrics: dict[str, Any] = {}
    config: dict[str, Any] = {
        "quick": args.quick,
        "kuairand_rows": n_rows,
        "seed": SEED,
        "ml100k_source": "recbole==1.2.1 wheel, dataset_example/ml-100k",
    }
    ml, note = _fetch_ml100k()
    if ml is None:
        config["ml100k_note"] = note
        print(note, file=sys.stderr)
    else:
        r = run_case("movielens", ml, wd / "out-ml100k")
        rows = r["counts"]["events"] + sum(r["dropped"].values())
        metrics.update(
            ml100k_rows=rows,
            ml100k_seconds=round(r["seconds"], 3),
            ml100k_rows_per_s=round(r["rows_per_s"]),
            ml100k_peak_rss_mb=round(r["peak_rss_mb"], 1),
        )
    csv = make_kuairand_csv(wd / f"log_standard_bench_{n_rows}.csv", n_rows)
    config["kuairand_csv_mb"] = round(csv.stat().st_size / 2**20, 1)
    r = run_case("kuairand", csv, wd / "out-kuairand")
    metrics.update(
        kuairand_rows=n_rows,
        kuairand_seconds=round(r["seconds"], 3),
        kuairand_rows_per_s=round(r["rows_per_s"]),
        kuairand_peak_rss_mb=round(r["peak_rss_mb"], 1),
    )
    path = write_result(NAME, config, metrics)
    print(json.dumps(metrics, indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
