"""Ranker inference benchmark: ONNX Runtime vs PyTorch, same process, same inputs.

Scores one request (a 50-event history, encoded once) against 100 / 500 / 1000 candidates with
the default ranker architecture (random weights: latency does not depend on training), on
``threads`` intra-op threads. Reports p50/p99 of the model call for both backends and their
ratio; the same for the serving form of the model (``ServingRanker``, exported by
``export_content_onnx``: the videos' content embeddings come from a table computed once per
bundle, so the graph skips the per-candidate embedding gathers and tag pooling, and the
weights are folded so each candidate costs a few plain matmuls), with its ratio to the full
model; the end-to-end
``Predictor.score`` latency (feature building + ONNX call of the serving form), and the ONNX
parity of both forms (max abs error against PyTorch).

    python -m bench.bench_ranker [--quick] [--threads 2]
"""

from __future__ import annotations

import argparse
import datetime as dt
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import polars as pl
import torch

from bench.common import peak_rss_mb, work_dir, write_result
from shortrec import schema as S
from shortrec.config import RankerConfig
from shortrec.ranking.batches import VideoStats, VideoTable, event_labels
from shortrec.ranking.export import (
    content_inputs,
    example_inputs,
    export_content_onnx,
    export_onnx,
    onnx_session,
    parity,
    to_torch,
)
from shortrec.ranking.model import CONTENT_INPUT_NAMES, INPUT_NAMES, Ranker, Vocab
from shortrec.ranking.predictor import CONTENT_ONNX_FILE, CandidateSet, History, Predictor

T0 = int(dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp() * 1_000_000)


def _percentiles(fn: Callable[[], Any], reps: int, warmup: int) -> tuple[float, float]:
    for _ in range(warmup):
        fn()
    times = np.empty(reps)
    for i in range(reps):
        t = time.perf_counter()
        fn()
        times[i] = time.perf_counter() - t
    return float(np.percentile(times, 50) * 1e3), float(np.percentile(times, 99) * 1e3)


def _world(
    n_videos: int, n_events: int, cfg: RankerConfig, rng: np.random.Generator
) -> tuple[VideoTable, VideoStats]:
    videos = pl.DataFrame(
        {
            S.VIDEO_IDX: np.arange(n_videos, dtype=np.int32),
            S.CREATOR_IDX: rng.integers(0, n_videos // 10, n_videos).astype(np.int32),
            S.CATEGORY: rng.integers(0, 24, n_videos).astype(np.int16),
            S.TAGS: pl.Series(
                [rng.integers(0, 400, rng.integers(1, 5)).tolist() for _ in range(n_videos)],
                dtype=pl.List(pl.Int32),
            ),
            S.DURATION_S: rng.uniform(3, 120, n_videos).astype(np.float32),
            S.UPLOAD_TS: pl.Series(T0 - rng.integers(0, 10**12, n_videos)).cast(S.UTC_TS),
            S.TITLE: pl.Series([None] * n_videos, dtype=pl.String),
        }
    )
    events = pl.DataFrame(
        {
            S.EVENT_ID: np.arange(n_events),
            S.VIDEO_IDX: rng.integers(0, n_videos, n_events).astype(np.int32),
            S.TS: pl.Series(T0 + np.sort(rng.integers(0, 10**12, n_events))).cast(S.UTC_TS),
            S.SKIPPED: rng.random(n_events) < 0.4,
            S.WATCH_RATIO: rng.random(n_events).astype(np.float32) * 1.5,
            S.LIKED: rng.random(n_events) < 0.05,
        }
    )
    labels, mask = event_labels(events, cfg)
    return VideoTable.from_frame(videos, cfg), VideoStats.build(events, labels, mask, 20.0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    reps, warmup = (100, 20) if args.quick else (1000, 100)
    n_videos = 50_000
    cfg = RankerConfig(threads=args.threads)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    vt, stats = _world(n_videos, 200_000, cfg, rng)
    vocab = Vocab(
        vt.n_video_buckets,
        vt.n_creator_buckets,
        vt.n_tags,
        vt.n_duration_buckets,
        (len(S.REGIONS), len(S.AGE_BUCKETS), len(S.DEVICES)),
    )
    model = Ranker(cfg, vocab).eval()
    path = work_dir("ranker") / "model.onnx"
    t = time.perf_counter()
    export_onnx(model, cfg, path)
    export_s = time.perf_counter() - t
    shapes = ((1, 50, 100), (1, 50, 500), (1, 50, 1000), (8, 50, 64))
    err = parity(model, cfg, path, shapes=shapes)
    full = onnx_session(path, cfg.threads)
    # the serving form (content embeddings from a per-bundle table; Predictor loads it)
    export_content_onnx(model, cfg, path.with_name(CONTENT_ONNX_FILE))
    err_content = parity(model, cfg, path.with_name(CONTENT_ONNX_FILE), shapes=shapes, content=True)
    pred = Predictor(cfg, model, vt, stats, path)
    assert pred.content_table is not None
    metrics: dict[str, Any] = {
        "onnx_max_abs_error": err,
        "onnx_content_max_abs_error": err_content,
        "export_s": round(export_s, 2),
    }
    hist_len = 50
    hist = History(
        video_idx=rng.integers(0, n_videos, hist_len),
        ts_us=T0 + np.arange(hist_len) * 10**7,
        watch_ratio=rng.random(hist_len).astype(np.float32),
        skipped=rng.random(hist_len) < 0.3,
        liked=rng.random(hist_len) < 0.05,
        request_us=T0 + 10**9,
        position=7,
        session_start_us=T0,
    )
    for c in (100, 500, 1000):
        x = example_inputs(model, cfg, 1, hist_len, c, rng)
        x["hist_mask"][:] = True
        feed = {k: x[k] for k in INPUT_NAMES}
        tensors = to_torch(x)
        onnx50, onnx99 = _percentiles(lambda f=feed: full.run(None, f), reps, warmup)  # type: ignore[attr-defined]
        cx = content_inputs(model, x)
        cfeed = {k: cx[k] for k in CONTENT_INPUT_NAMES}
        cont50, cont99 = _percentiles(lambda f=cfeed: pred.session.run(None, f), reps, warmup)

        def torch_call(ts: tuple[torch.Tensor, ...] = tensors) -> None:
            with torch.inference_mode():
                model(*ts)

        torch50, torch99 = _percentiles(torch_call, max(reps // 2, 20), warmup // 2)
        cands = CandidateSet(
            video_idx=rng.integers(0, n_videos, c),
            sources=rng.random((c, len(cfg.source_names))) < 0.3,
        )
        e2e50, e2e99 = _percentiles(lambda cs=cands: pred.score(hist, cs), reps, warmup)
        metrics.update(
            {
                f"onnx_c{c}_p50_ms": round(onnx50, 4),
                f"onnx_c{c}_p99_ms": round(onnx99, 4),
                f"onnx_content_c{c}_p50_ms": round(cont50, 4),
                f"onnx_content_c{c}_p99_ms": round(cont99, 4),
                f"content_over_full_c{c}_p50_ratio": round(cont50 / onnx50, 3),
                f"torch_c{c}_p50_ms": round(torch50, 4),
                f"torch_c{c}_p99_ms": round(torch99, 4),
                f"torch_over_onnx_c{c}_p50_ratio": round(torch50 / onnx50, 3),
                f"e2e_c{c}_p50_ms": round(e2e50, 4),
                f"e2e_c{c}_p99_ms": round(e2e99, 4),
            }
        )
        print(
            f"C={c}: onnx p50 {onnx50:.3f} p99 {onnx99:.3f} ms | content form p50 {cont50:.3f} "
            f"p99 {cont99:.3f} ms | torch p50 {torch50:.3f} "
            f"p99 {torch99:.3f} ms | predictor.score p50 {e2e50:.3f} p99 {e2e99:.3f} ms",
            flush=True,
        )
    metrics["peak_rss_mb"] = round(peak_rss_mb(), 1)
    metrics["target_c500_p99_ms"] = 3.0
    metrics["meets_target"] = bool(metrics["onnx_c500_p99_ms"] <= 3.0)
    config = {
        "quick": args.quick,
        "threads": args.threads,
        "reps": reps,
        "history_len": hist_len,
        "n_videos": n_videos,
        "model": cfg.model_dump(
            include={
                "d_model",
                "n_heads",
                "n_layers",
                "ff_mult",
                "head_hidden",
                "max_tags",
                "encoder",
            }
        ),
    }
    path_out = write_result("ranker", config, metrics)
    print(f"onnx parity max abs error {err:.2e}; wrote {path_out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
