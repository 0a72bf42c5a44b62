"""Offline composition root: the only place that wires data, models and evaluation together.

Every public function here is one CLI command. Components receive their own typed config; files
are read here and handed to the pure cores as frames.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
from rich.console import Console

from shortrec import schema as S
from shortrec.config import (
    DriftReferenceConfig,
    EtlConfig,
    EvalConfig,
    IngestConfig,
    RankerConfig,
    RetrievalConfig,
    SimConfig,
)
from shortrec.data import io

console = Console(stderr=True)


def generate(
    preset: str,
    seed: int,
    out: Path,
    report: bool = True,
    progress: bool = True,
    workers: int | None = None,
) -> dict[str, Any]:
    """Generate a synthetic world into ``out`` (and its realism report under ``out/report``)."""
    if preset not in ("tiny", "small", "medium", "large"):
        raise S.BadInput(
            f"--preset: unknown preset {preset!r}; expected tiny, small, medium, large"
        )
    from shortrec.data import simulator

    config = SimConfig.preset_config(preset, seed=seed)  # type: ignore[arg-type]
    if workers is not None:
        config = config.model_copy(update={"workers": workers})
    summary = simulator.generate(config, Path(out), progress=progress)
    if report:
        from shortrec.data import realism

        summary["realism"] = realism.realism_report(Path(out), Path(out) / "report")
    return summary


def ingest(
    fmt: str,
    src: Path,
    out: Path,
    mapping_file: Path | None = None,
    skip_threshold_s: float = S.DEFAULT_SKIP_THRESHOLD_S,
    progress: bool = True,
) -> dict[str, Any]:
    """Ingest a public log of format ``fmt`` from ``src`` into the dataset directory ``out``."""
    from shortrec.data import ingest as ingest_mod

    mapping: dict[str, str] | None = None
    if mapping_file is not None:
        raw = io.read_json(mapping_file)
        if not isinstance(raw, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in raw.items()
        ):
            raise S.BadInput(f"{mapping_file}: expected a JSON object of column name -> name")
        mapping = raw
    config = IngestConfig(skip_threshold_s=skip_threshold_s)
    return ingest_mod.ingest(fmt, Path(src), Path(out), config, mapping, progress=progress)


def etl(
    root: Path,
    progress: bool = True,
    config: EtlConfig | None = None,
    workers: int | None = None,
) -> dict[str, Any]:
    """Run the ETL on a dataset directory, writing ``root/etl``."""
    io.Dataset.open(Path(root))  # fail fast, naming what is missing
    from shortrec.data import etl as etl_mod

    config = config or EtlConfig()
    if workers is not None:
        config = config.model_copy(update={"workers": workers})
    return etl_mod.run_etl(Path(root), config, progress=progress)


def _etl_inputs(root: Path) -> tuple[io.Dataset, pl.DataFrame, str]:
    """The dataset, its ETL events and the ETL data fingerprint (fails if the ETL has not run)."""
    from shortrec.data import etl as etl_mod

    ds = io.Dataset.open(Path(root))
    etl_dir = Path(root) / io.ETL_DIR
    if not (etl_dir / "manifest.json").is_file():
        raise S.BadInput(f"{root}: no ETL output in {etl_dir}; run `shortrec etl {root}` first")
    fingerprint = str(io.read_json(etl_dir / "manifest.json").get("fingerprint", ""))
    return ds, etl_mod.read_etl_events(Path(root)).collect(), fingerprint


def train_retrieval(
    root: Path, art: Path, progress: bool = True, config: RetrievalConfig | None = None
) -> dict[str, Any]:
    """Train the two-tower model, fit every candidate source and write the bundle component."""
    from shortrec.retrieval import pipeline as retrieval

    ds, events, fingerprint = _etl_inputs(root)
    return retrieval.train_retrieval(
        events,
        ds.videos().collect(),
        ds.users().collect(),
        config or RetrievalConfig(),
        Path(art),
        fingerprint,
        progress=progress,
        seed=0,
    )


def train_ranker(
    root: Path, art: Path, progress: bool = True, config: RankerConfig | None = None
) -> dict[str, Any]:
    """Train the multi-task ranker, export it to ONNX and write the bundle component."""
    from shortrec.ranking import train

    ds, events, fingerprint = _etl_inputs(root)
    return train.train_ranker(
        events,
        ds.videos().collect(),
        config or RankerConfig(),
        Path(art),
        fingerprint,
        seed=0,
        progress=progress,
        users=ds.users().collect(),
    )


def build_drift_reference(
    root: Path, art: Path, config: DriftReferenceConfig | None = None
) -> dict[str, Any]:
    """Write the bundle's ``drift`` component: training-time samples of what the service
    monitors (final and engage scores of the top of each page, video age, history length,
    the served videos' smoothed engage rate).

    Pages are produced the way the service produces them, without its session adjustments: a
    sample of users with history at the training cut-off, the retrieval model's merged
    candidates (the user's training videos excluded), scored by the ranker, top ``page`` kept.
    """
    import numpy as np

    from shortrec import artifacts
    from shortrec.monitoring import drift
    from shortrec.ranking.batches import END_OF_TIME
    from shortrec.ranking.predictor import CandidateSet, History, Predictor
    from shortrec.retrieval.model import RetrievalModel
    from shortrec.retrieval.types import RetrievalRequest

    cfg = config or DriftReferenceConfig()
    ds, events, fingerprint = _etl_inputs(root)
    train = events.filter(pl.col(S.SPLIT).is_in([S.TRAIN, S.VALID])).sort(
        S.USER_IDX, S.TS, S.EVENT_ID
    )
    if train.height == 0:
        raise S.BadInput(f"{root}: no train/valid events to build a drift reference from")
    now_us = int(train.get_column(S.TS).dt.epoch("us").max())  # type: ignore[arg-type]
    model = RetrievalModel.load(Path(art))
    predictor = Predictor.load(Path(art))
    length = predictor.config.history_len
    upload = ds.videos().select(S.VIDEO_IDX, S.UPLOAD_TS).collect()
    upload_us = np.full(int(upload.get_column(S.VIDEO_IDX).max()) + 1, -1, np.int64)  # type: ignore[arg-type]
    up = upload.get_column(S.UPLOAD_TS).dt.epoch("us").fill_null(-1).to_numpy()
    upload_us[upload.get_column(S.VIDEO_IDX).to_numpy()] = up
    users = train.get_column(S.USER_IDX).unique().sort().to_numpy()
    rng = np.random.default_rng(cfg.seed)
    sample = np.sort(rng.choice(users, min(cfg.n_users, users.shape[0]), replace=False))
    per_user = train.filter(pl.col(S.USER_IDX).is_in(sample.tolist())).partition_by(
        S.USER_IDX, as_dict=True
    )
    values: dict[str, list[np.ndarray]] = {f: [] for f in drift.DRIFT_FEATURES}
    for (uid,), rows in sorted(per_user.items()):
        seen = rows.get_column(S.VIDEO_IDX).to_numpy().astype(np.int32)
        last = rows.tail(length)
        vid = last.get_column(S.VIDEO_IDX).to_numpy().astype(np.int32)
        wr = last.get_column(S.WATCH_RATIO).fill_null(float("nan")).to_numpy().astype(np.float32)
        sk = last.get_column(S.SKIPPED).fill_null(False).to_numpy()
        req = RetrievalRequest(
            user_idx=int(uid), now_us=now_us, history=vid, watch_ratio=wr, skipped=sk, seen=seen
        )
        cands = model.retrieve(req)
        if len(cands) == 0:
            continue
        hist = History(
            video_idx=vid.astype(np.int64),
            ts_us=last.get_column(S.TS).dt.epoch("us").to_numpy(),
            watch_ratio=np.nan_to_num(wr),
            skipped=sk.astype(bool),
            liked=np.zeros(vid.shape[0], bool),  # the service's live history carries no likes
            request_us=now_us,
        )
        scores = predictor.score(hist, CandidateSet(video_idx=cands.video_idx.astype(np.int64)))
        order = np.argsort(-scores.final, kind="stable")[: cfg.page]
        served = cands.video_idx[order].astype(np.int64)
        values[drift.SCORE_FINAL].append(scores.final[order])
        if "engage" in scores.heads:
            values[drift.SCORE_ENGAGE].append(scores.heads["engage"][order])
        ages = upload_us[served]
        values[drift.VIDEO_AGE_HOURS].append((now_us - ages[ages >= 0]) / 3.6e9)
        values[drift.HISTORY_LEN].append(np.array([min(vid.shape[0], length)], np.float64))
        stats = predictor.stats.features(served[None, :], np.array([END_OF_TIME]))[0]
        values[drift.CANDIDATE_ENGAGE_RATE].append(stats[:, 0])
    samples = {k: np.concatenate(v) for k, v in values.items() if v}
    with artifacts.write_component(Path(art), drift.REFERENCE_COMPONENT, cfg, fingerprint) as (
        d,
        info,
    ):
        drift.save_reference(d, samples)
        info["metrics"] = {f"{k}_n": int(v.shape[0]) for k, v in samples.items()}
    return {k: int(v.shape[0]) for k, v in samples.items()}


def build(root: Path, art: Path, progress: bool = True) -> dict[str, Any]:
    """ETL, then retrieval, then the ranker, then the drift reference, in order."""
    return {
        "etl": etl(root, progress=progress),
        "retrieval": train_retrieval(root, art, progress=progress),
        "ranker": train_ranker(root, art, progress=progress),
        "drift_reference": build_drift_reference(root, art),
        "names": str(write_names(root, art)),
    }


def write_names(root: Path, art: Path) -> Path:
    """Human names (titles, tags, creators, sample users) for the feed page, into the bundle."""
    from shortrec.serving import names

    return names.write_names(Path(root), Path(art))


def validate(root: Path) -> dict[str, Any]:
    """Full schema validation of a dataset directory; raises SchemaError listing violations."""
    ds = io.Dataset.open(Path(root))
    problems = ds.validate()
    if problems:
        raise S.SchemaError(str(root), problems)
    return {"dataset": str(root), "valid": True, "manifest": ds.manifest.get("counts", {})}


def evaluate(
    root: Path,
    artifacts: Path | None,
    protocol: str,
    k: int,
    json_out: Path | None = None,
    report_dir: Path | None = None,
    max_users: int | None = None,
    progress: bool = True,
) -> str:
    """Evaluate the baselines (and, with ``artifacts``, the trained models) on one protocol.

    Returns the markdown table; writes the JSON report to ``json_out`` and the full report
    (JSON, markdown, PNG plots) to ``report_dir`` (default ``root/eval/<protocol>``).
    """
    from shortrec.evaluation import baselines, report, runner

    if protocol not in ("temporal", "loo-full", "loo-sampled", "oracle"):
        raise S.BadInput(
            f"--protocol: unknown protocol {protocol!r}; "
            "expected temporal, loo-full, loo-sampled or oracle"
        )
    ds, events, fingerprint = _etl_inputs(Path(root))
    oracle = None
    if protocol == "oracle":
        if not ds.is_synthetic:
            raise S.BadInput(f"{root}: the oracle protocol needs a synthetic world (no truth/)")
        from shortrec.data.simulator import World

        oracle = World.load(Path(root))
    config = EvalConfig(protocol=protocol, k=k, max_users=max_users)
    recommenders = baselines.default_baselines(seed=config.seed)
    recommenders.append(_full_pipeline(artifacts, progress))
    rep = runner.evaluate(
        events,
        ds.videos().collect(),
        ds.users().collect(),
        recommenders,
        config,
        oracle=oracle,
        skip_threshold_s=ds.skip_threshold_s,
        fingerprint=fingerprint,
        progress=progress,
    )
    out_dir = report_dir or Path(root) / "eval" / protocol
    report.write_report(rep, out_dir)
    if json_out is not None:
        io.write_json_atomic(rep.to_json(), json_out)
    return rep.markdown()


def _full_pipeline(artifacts: Path | None, progress: bool) -> Any:
    """The full pipeline ("shortrec") as one recommender, trained on the protocol's own
    training data; a bundle, when given, supplies the retrieval and ranker configs."""
    from shortrec.artifacts import read_manifest
    from shortrec.fullpipeline import FullPipelineConfig, FullPipelineRecommender

    fp = FullPipelineConfig()
    if artifacts is not None:
        comps = read_manifest(Path(artifacts)).get("components", {})
        update: dict[str, Any] = {}
        if "retrieval" in comps:
            update["retrieval"] = RetrievalConfig.model_validate(comps["retrieval"]["config"])
        if "ranker" in comps:
            update["ranker"] = RankerConfig.model_validate(comps["ranker"]["config"])
        fp = fp.model_copy(update=update)
    return FullPipelineRecommender(fp, seed=0, progress=progress)
