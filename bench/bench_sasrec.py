"""Peer comparison with RecBole's SASRec on our MovieLens-100K leave-one-out split.

    python -m bench.bench_sasrec [--quick] [--epochs N]

Both models see exactly the same data and are scored by the same runner:

1. Our ``loo-full`` task is built from the ETL output (``loo_split``: the last engaged view per
   user is the test item, the one before it validation). Its training rows (train + valid)
   are exported as a RecBole atomic file, ordered per user by ``(ts, event_id)`` with the
   position as the timestamp (so ties in MovieLens' one-second timestamps cannot reorder a
   sequence); the test items are never exported.
2. ``bench/sasrec/run_sasrec.py`` runs in its own venv (``bench/.work/sasrec-venv``,
   ``recbole==1.2.1``; see ``docs/quality.md`` for the install), trains SASRec (2 layers, 2
   heads, d 64, CE loss, early stopping on RecBole's own leave-one-out validation carved from
   the exported rows) and writes each evaluated user's full-catalogue scores given the user's
   training sequence.
3. Our runner evaluates those scores (seen items excluded, full-catalogue ranking) beside the
   full pipeline ``shortrec``, fit by the runner on the same training data, and the baselines.

Reports NDCG@10 and Hit@10 of each, the ratios shortrec / SASRec and both training times.
SASRec's scores are kept in the scratch dir with a digest of their inputs (exported data,
peer script, epochs): a rerun on identical inputs reuses them (``sasrec_scores_reused`` = 1,
the original training time reported) unless ``--retrain``; our side is always trained anew.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from bench.bench_quality import BASELINES, ML_RANKER, SETTINGS, base_config, frames, movielens
from bench.common import WORK, peak_rss_mb, work_dir, write_result
from shortrec import schema as S
from shortrec.config import EvalConfig
from shortrec.domain import FloatArray, IntArray, TrainingData
from shortrec.evaluation.baselines import default_baselines
from shortrec.evaluation.protocols import build_task
from shortrec.evaluation.runner import evaluate
from shortrec.fullpipeline import FullPipelineRecommender, variant

NAME = "quality_sasrec"
VENV_PY = WORK / "sasrec-venv" / "bin" / "python"
SCRIPT = Path(__file__).resolve().parent / "sasrec" / "run_sasrec.py"


class PrecomputedScores:
    """A ``domain.Recommender`` over scores computed elsewhere: ``scores[i, j]`` for user
    ``users[i]`` and item ``items[j]``; other items and users get ``-inf``."""

    def __init__(self, name: str, users: IntArray, items: IntArray, scores: FloatArray) -> None:
        self.name = name
        self._row = {int(u): i for i, u in enumerate(users.tolist())}
        self._items = items
        self._scores = scores
        self._n_items = 0

    @property
    def is_fitted(self) -> bool:
        return self._n_items > 0

    def fit(self, data: TrainingData) -> PrecomputedScores:
        self._n_items = data.n_items
        return self

    def score(self, user_idx: IntArray) -> FloatArray:
        out = np.full((len(user_idx), self._n_items), -np.inf, np.float32)
        ok = self._items < self._n_items
        for r, u in enumerate(np.asarray(user_idx).tolist()):
            i = self._row.get(int(u))
            if i is not None:
                out[r, self._items[ok]] = self._scores[i, ok]
        return out


def export(train: TrainingData, users: IntArray, out: Path) -> None:
    """RecBole atomic file of the training rows + each evaluated user's sequence."""
    (out / "ml").mkdir(parents=True, exist_ok=True)
    ev = train.interactions.sort(S.USER_IDX, S.TS, S.EVENT_ID).select(
        pl.col(S.USER_IDX).cast(pl.String).alias("user_id:token"),
        pl.col(S.VIDEO_IDX).cast(pl.String).alias("item_id:token"),
        pl.int_range(pl.len()).over(S.USER_IDX).cast(pl.Float64).alias("timestamp:float"),
    )
    tmp = out / "ml" / "ml.inter.tmp"
    ev.write_csv(tmp, separator="\t")
    os.replace(tmp, out / "ml" / "ml.inter")
    keep = set(users.tolist())
    seqs = {
        str(u): [str(v) for v in part.get_column("item_id:token").to_list()]
        for (u,), part in ev.with_columns(pl.col("user_id:token").cast(pl.Int64)).group_by(
            "user_id:token", maintain_order=True
        )
        if int(u) in keep
    }
    (out / "sequences.json").write_text(json.dumps(seqs))


def run_key(scratch: Path, epochs: int) -> str:
    """Digest of everything the SASRec scores depend on: the exported data, the peer script
    and its arguments."""
    h = hashlib.sha256()
    for f in (scratch / "ml" / "ml.inter", scratch / "sequences.json", SCRIPT):
        h.update(f.read_bytes())
    h.update(f"epochs={epochs} threads=2 seed=0".encode())
    return h.hexdigest()


def cached_peer(scratch: Path, key: str) -> dict[str, Any] | None:
    """The report of an earlier SASRec run on identical inputs (``run_key``), or None."""
    meta = scratch / "peer.json"
    if not (meta.is_file() and (scratch / "scores.npz").is_file()):
        return None
    peer: dict[str, Any] = json.loads(meta.read_text())
    return peer if peer.get("run_key") == key else None


def train_peer(scratch: Path, epochs: int) -> dict[str, Any]:
    """Train and score SASRec in its own venv; its JSON report plus the process wall time."""
    env = {**os.environ, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}
    t0 = time.perf_counter()
    proc = subprocess.run(
        [
            str(VENV_PY),
            str(SCRIPT),
            "--data",
            str(scratch),
            "--out",
            str(scratch / "scores.npz"),
            "--epochs",
            str(epochs),
            "--threads",
            "2",
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"SASRec run failed (rc={proc.returncode}):\n{proc.stderr[-4000:]}")
    peer: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    peer["process_wall_s"] = round(wall, 2)
    return peer


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer SASRec epochs")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument(
        "--retrain",
        action="store_true",
        help="train SASRec again even when scores of a run on identical inputs exist",
    )
    ap.add_argument(
        "--peer-only", action="store_true", help="train and cache SASRec's scores, then stop"
    )
    args = ap.parse_args(argv)
    epochs = args.epochs or (5 if args.quick else 30)
    if not VENV_PY.is_file():
        raise SystemExit(
            f"{VENV_PY} missing: create the RecBole venv first (docs/quality.md, 'SASRec peer')"
        )
    root = movielens()
    events, videos, users, skip_s = frames(root)
    config = EvalConfig(protocol="loo-full", k=10)
    task = build_task(events, videos, users, config, skip_s, False)
    scratch = work_dir("sasrec") / "run"
    export(task.train, task.users, scratch)
    key = run_key(scratch, epochs)
    peer = cached_peer(scratch, key) if not args.retrain else None
    if peer is None:
        peer = train_peer(scratch, epochs)
        peer["run_key"] = key
        tmp = scratch / "peer.json.tmp"
        tmp.write_text(json.dumps(peer))
        os.replace(tmp, scratch / "peer.json")
        peer["reused"] = False
    else:
        peer["reused"] = True
    if args.peer_only:
        print(json.dumps(peer))
        return 0
    z = np.load(scratch / "scores.npz")
    sasrec = PrecomputedScores("sasrec", z["users"], z["items"], z["scores"])
    cfg = base_config(SETTINGS["full"])
    ours = FullPipelineRecommender(
        variant(cfg, ranker={**cfg.ranker.model_dump(), **ML_RANKER}), seed=0, name="shortrec"
    )
    rep = evaluate(
        events,
        videos,
        users,
        [ours, sasrec, *default_baselines(seed=0)],
        config,
        skip_threshold_s=skip_s,
        progress=False,
    )
    m = rep.metrics
    metrics: dict[str, float] = {}
    for n in ("shortrec", "sasrec", *BASELINES):
        key = n.replace("-", "_")
        metrics[f"{key}_ndcg_at_10"] = float(m[n]["ndcg@10"])
        metrics[f"{key}_hit_at_10"] = float(m[n]["hit@10"])
    metrics["ratio_shortrec_over_sasrec_ndcg_at_10"] = (
        m["shortrec"]["ndcg@10"] / m["sasrec"]["ndcg@10"]
    )
    metrics["ratio_shortrec_over_sasrec_hit_at_10"] = (
        m["shortrec"]["hit@10"] / m["sasrec"]["hit@10"]
    )
    metrics["shortrec_fit_s"] = float(rep.timing["shortrec"]["fit_s"])
    metrics["sasrec_train_s"] = float(peer["train_s"])
    metrics["sasrec_process_wall_s"] = float(peer["process_wall_s"])
    metrics["sasrec_scores_reused"] = float(peer["reused"])
    metrics["eval_users"] = float(rep.data["eval_users"])
    metrics["peak_rss_mb"] = round(peak_rss_mb(include_children=True), 1)
    metrics["load_avg_1m"] = round(os.getloadavg()[0], 2)
    doc = {
        "dataset": "MovieLens-100K (recbole==1.2.1 wheel), loo-full, seen items excluded",
        "sasrec": {
            "epochs_max": epochs,
            "recbole": "1.2.1",
            "report": peer,
            "model": "SASRec n_layers=2 n_heads=2 hidden=64 inner=256 dropout=0.2 "
            "CE loss, lr 1e-3, batch 256, max_len 50, stopping_step 3",
        },
        "shortrec": ours.config.model_dump(mode="json"),
        "shortrec_ranker_fit": {k: v for k, v in ours.ranker_metrics.items() if k != "history"},
    }
    path = write_result(NAME, doc, metrics)
    for k, v in metrics.items():
        print(f"{k:>44}: {v}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
