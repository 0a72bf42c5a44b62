"""Offline composition root: the only place that wires data, models and evaluation together.

Every public function here is one CLI command. Components receive their own typed config; files
are read here and handed to the pure cores as frames.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import polars as pl
from rich.console import Console

from shortrec import schema as S
from shortrec.config import (
    EtlConfig,
    EvalConfig,
    IngestConfig,
    RankerConfig,
    RetrievalConfig,
    SimConfig,
)
from shortrec.data import io

console = Console(stderr=True)


class StageError(RuntimeError):
    """A demo stage failed; the message names the stage and what to do."""


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


def build(root: Path, art: Path, progress: bool = True) -> dict[str, Any]:
    """ETL, then retrieval, then the ranker, in order."""
    return {
        "etl": etl(root, progress=progress),
        "retrieval": train_retrieval(root, art, progress=progress),
        "ranker": train_ranker(root, art, progress=progress),
    }


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
    from shortrec.data import etl as etl_mod
    from shortrec.evaluation import baselines, report, runner

    ds = io.Dataset.open(Path(root))
    if protocol not in ("temporal", "loo-full", "loo-sampled", "oracle"):
        raise S.BadInput(
            f"--protocol: unknown protocol {protocol!r}; "
            "expected temporal, loo-full, loo-sampled or oracle"
        )
    etl_dir = Path(root) / io.ETL_DIR
    if not (etl_dir / "manifest.json").is_file():
        raise S.BadInput(f"{root}: no ETL output in {etl_dir}; run `shortrec etl {root}` first")
    etl_manifest = io.read_json(etl_dir / "manifest.json")
    oracle = None
    if protocol == "oracle":
        if not ds.is_synthetic:
            raise S.BadInput(f"{root}: the oracle protocol needs a synthetic world (no truth/)")
        from shortrec.data.simulator import World

        oracle = World.load(Path(root))
    config = EvalConfig(protocol=protocol, k=k, max_users=max_users)
    events = etl_mod.read_etl_events(Path(root)).collect()
    recommenders = baselines.default_baselines(seed=config.seed)
    recommenders += _trained_recommenders(artifacts)
    rep = runner.evaluate(
        events,
        ds.videos().collect(),
        ds.users().collect(),
        recommenders,
        config,
        oracle=oracle,
        skip_threshold_s=ds.skip_threshold_s,
        fingerprint=str(etl_manifest.get("fingerprint", "")),
        progress=progress,
    )
    out_dir = report_dir or Path(root) / "eval" / protocol
    report.write_report(rep, out_dir)
    if json_out is not None:
        io.write_json_atomic(rep.to_json(), json_out)
    return rep.markdown()


def _trained_recommenders(artifacts: Path | None) -> list[Any]:
    """Recommenders backed by the artifact bundle (none yet when ``artifacts`` is None)."""
    if artifacts is None:
        return []
    return []


def demo(out: Path, preset: str = "small", progress: bool = True) -> dict[str, Any]:
    """The whole loop on embedded defaults. Each stage names itself when it fails."""
    out = Path(out)
    data_dir = out / "data"
    results: dict[str, Any] = {}
    t_all = time.perf_counter()

    def stage(name: str, hint: str, fn: Any) -> Any:
        console.rule(f"[bold]{name}")
        t0 = time.perf_counter()
        try:
            value = fn()
        except S.BadInput:
            raise
        except Exception as e:
            raise StageError(f"stage '{name}' failed: {type(e).__name__}: {e}. {hint}") from e
        console.print(f"[green]{name}[/] done in {time.perf_counter() - t0:.1f}s")
        return value

    gen = stage(
        "generate",
        "check disk space and `shortrec generate --help`",
        lambda: generate(preset, 0, data_dir, report=True, progress=progress),
    )
    results["generate"] = {k: gen[k] for k in gen if k != "realism"}
    stage(
        "validate",
        "the generator wrote invalid tables: file a bug with the message",
        lambda: validate(data_dir),
    )
    results["etl"] = stage(
        "etl", "see `shortrec etl --help`", lambda: etl(data_dir, progress=progress)
    )
    for protocol in ("temporal", "oracle"):
        md = stage(
            f"evaluate ({protocol})",
            "see `shortrec evaluate --help`",
            lambda p=protocol: evaluate(
                data_dir, None, p, 10, report_dir=out / "eval" / p, progress=progress
            ),
        )
        console.print(md)
    results["seconds"] = round(time.perf_counter() - t_all, 1)
    summary_path = out / "demo-summary.json"
    io.write_json_atomic(results, summary_path)
    console.rule("[bold]where the results are")
    console.print(f"dataset:          {data_dir}")
    console.print(f"realism report:   {data_dir / 'report' / 'realism.json'} (+ PNG plots)")
    console.print(f"evaluation:       {out / 'eval'}/<protocol>/report.md (+ JSON, PNG plots)")
    console.print(f"summary:          {summary_path}")
    console.print("benchmarks:       docs/benchmarks.md")
    return results
