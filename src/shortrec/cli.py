"""The ``shortrec`` command: a thin layer over :mod:`shortrec.pipelines`.

Exit codes: 0 success, 2 bad input (the message names what was wrong), 1 anything else.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from shortrec.schema import BadInput

app = typer.Typer(
    name="shortrec",
    help="End-to-end recommendation engine for short-video feeds.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

err = Console(stderr=True)
out = Console()
T = TypeVar("T")


def _run(fn: Callable[[], T]) -> T:
    """Run a pipeline step, mapping bad input to exit 2 and other failures to exit 1."""
    try:
        return fn()
    except BadInput as e:
        err.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]")
        raise typer.Exit(130) from None
    except Exception as e:
        err.print(f"[bold red]failed:[/] {type(e).__name__}: {e}", highlight=False, soft_wrap=True)
        if "--debug" in sys.argv:
            raise
        raise typer.Exit(1) from None


def _print_summary(summary: dict[str, Any]) -> None:
    out.print_json(json.dumps(summary, default=str))


Progress = Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress bars.")]
Workers = Annotated[
    int | None,
    typer.Option(min=1, help="Worker processes (default: min(2, cores)); output does not change."),
]


@app.command()
def generate(
    preset: Annotated[
        str, typer.Option(help="World size: tiny, small, medium or large.")
    ] = "small",
    out_dir: Annotated[Path, typer.Option("--out", help="Dataset directory to write.")] = Path(
        "data/small"
    ),
    seed: Annotated[int, typer.Option(help="Random seed; same seed, identical output.")] = 0,
    report: Annotated[bool, typer.Option(help="Also write the realism report.")] = True,
    workers: Workers = None,
    progress: Progress = True,
) -> None:
    """Generate a synthetic world (videos, users, impression logs, ground truth) with the
    session-aware simulator, validate it, and write it to --out."""
    from shortrec import pipelines

    _print_summary(
        _run(lambda: pipelines.generate(preset, seed, out_dir, report, progress, workers))
    )


@app.command()
def ingest(
    fmt: Annotated[
        str,
        typer.Argument(
            metavar="FORMAT", help=("movielens, kuairec, kuairand, seq-pairs, seq-lines or csv.")
        ),
    ],
    src: Annotated[Path, typer.Argument(help="Source file or directory.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Dataset directory to write.")],
    mapping: Annotated[
        Path | None,
        typer.Option(
            help=("For csv: JSON file mapping schema column names to source column names.")
        ),
    ] = None,
    skip_threshold_s: Annotated[float, typer.Option(help="Fast-swipe threshold, seconds.")] = 2.0,
    progress: Progress = True,
) -> None:
    """Ingest a real public log into the shortrec schema (ids remapped through one vocabulary)."""
    from shortrec import pipelines

    _print_summary(
        _run(lambda: pipelines.ingest(fmt, src, out_dir, mapping, skip_threshold_s, progress))
    )


@app.command()
def etl(
    data_dir: Annotated[Path, typer.Argument(metavar="DIR", help="Dataset directory.")],
    workers: Workers = None,
    progress: Progress = True,
) -> None:
    """Run the leakage-free ETL: dedupe, sessionise, split, statistics, training samples."""
    from shortrec import pipelines

    _print_summary(_run(lambda: pipelines.etl(data_dir, progress, workers=workers)))


train_app = typer.Typer(help="Train models into an artifact bundle.", no_args_is_help=True)
app.add_typer(train_app, name="train")

DataDir = Annotated[Path, typer.Argument(metavar="DIR", help="Dataset directory (after etl).")]
Artifacts = Annotated[Path, typer.Option(help="Artifact bundle directory.")]


@train_app.command("retrieval")
def train_retrieval(
    data_dir: DataDir, artifacts: Artifacts = Path("artifacts"), progress: Progress = True
) -> None:
    """Train the two-tower model, build the FAISS index and fit every candidate source."""
    from shortrec import pipelines

    _print_summary(_run(lambda: pipelines.train_retrieval(data_dir, artifacts, progress)))


@train_app.command("ranker")
def train_ranker(
    data_dir: DataDir, artifacts: Artifacts = Path("artifacts"), progress: Progress = True
) -> None:
    """Train the multi-task Transformer ranker and export it to ONNX."""
    from shortrec import pipelines

    _print_summary(_run(lambda: pipelines.train_ranker(data_dir, artifacts, progress)))


@app.command()
def build(
    data_dir: DataDir, artifacts: Artifacts = Path("artifacts"), progress: Progress = True
) -> None:
    """ETL, then retrieval, then the ranker, in order."""
    from shortrec import pipelines

    _print_summary(_run(lambda: pipelines.build(data_dir, artifacts, progress)))


RedisUrl = Annotated[
    str | None,
    typer.Option(
        help="Redis URL of the online store (default: in-process store).",
        envvar="SHORTREC_REDIS_URL",
    ),
]


@app.command()
def publish(
    data_dir: DataDir,
    artifacts: Artifacts = Path("artifacts"),
    redis_url: RedisUrl = None,
    progress: Progress = True,
) -> None:
    """Load offline outputs (features, trending, tag lists, fresh pool, histories) into the
    online store under a new version, then switch to it atomically."""
    from shortrec import publish as publish_mod

    _print_summary(
        _run(lambda: publish_mod.publish(data_dir, artifacts, redis_url, progress=progress))
    )


@app.command()
def serve(
    artifacts: Artifacts = Path("artifacts"),
    redis_url: RedisUrl = None,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind.")] = 8000,
    workers: Annotated[int | None, typer.Option(min=1, help="Worker processes.")] = None,
) -> None:
    """Serve the feed API (FastAPI): /v1/feed, /v1/events, /healthz, /readyz, /metrics, /demo.
    The admin token comes from SHORTREC_ADMIN_TOKEN."""
    from shortrec.serving.app import serve as serve_app

    _run(lambda: serve_app(artifacts, redis_url, host, port, workers))


abtest_app = typer.Typer(help="Simulated online A/B tests and log analysis.", no_args_is_help=True)
app.add_typer(abtest_app, name="abtest")


@abtest_app.command("simulate")
def abtest_simulate(
    config: Annotated[Path, typer.Argument(help="Scenario TOML: experiments + [simulation].")],
    artifacts: Artifacts = Path("artifacts"),
    out_dir: Annotated[Path, typer.Option("--out", help="Report directory.")] = Path("abtest-out"),
    dataset: Annotated[
        Path | None, typer.Option(help="Dataset directory (default: [simulation] dataset).")
    ] = None,
    redis_url: Annotated[
        str | None,
        typer.Option(help="Use this Redis as the online store.", envvar="SHORTREC_REDIS_URL"),
    ] = None,
    progress: Progress = True,
) -> None:
    """Simulated users scroll through the real serving stack; logs, analysis and HTML report."""
    from shortrec import abtest

    _print_summary(
        _run(lambda: abtest.simulate(config, artifacts, dataset, out_dir, redis_url, progress))
    )


@abtest_app.command("analyze")
def abtest_analyze(
    logs: Annotated[Path, typer.Argument(help="Log directory (exposures/, events/).")],
    experiment: Annotated[str, typer.Option(help="Experiment name to analyse.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Report directory.")] = Path(
        "abtest-report"
    ),
) -> None:
    """Per-arm metrics, significance tests, SRM check and an HTML report from logged traffic."""
    from shortrec import abtest

    _print_summary(_run(lambda: abtest.analyze_logs(logs, experiment, out_dir)))


@abtest_app.command("collect")
def abtest_collect(
    log_dir: Annotated[
        Path,
        typer.Argument(
            help="The service's exposure_log_dir (exposures-*.jsonl, outcomes-*.jsonl)."
        ),
    ],
    artifacts: Artifacts = Path("artifacts"),
    out_dir: Annotated[Path, typer.Option("--out", help="Logs directory to write.")] = Path(
        "abtest-logs"
    ),
    experiments: Annotated[
        Path | None, typer.Option(help="Experiments file in force (copied as experiments.toml).")
    ] = None,
) -> None:
    """Turn the serving exposure and outcome logs into a logs directory for `abtest analyze`."""
    from shortrec import abtest

    _print_summary(_run(lambda: abtest.collect_logs(log_dir, artifacts, out_dir, experiments)))


@app.command()
def validate(
    data_dir: Annotated[Path, typer.Argument(metavar="DIR", help="Dataset directory.")],
) -> None:
    """Check every table of a dataset against its schema and report every violation."""
    from shortrec import pipelines

    _print_summary(_run(lambda: pipelines.validate(data_dir)))


@app.command()
def evaluate(
    data_dir: Annotated[Path, typer.Argument(metavar="DIR", help="Dataset directory (after etl).")],
    artifacts: Annotated[Path | None, typer.Option(help="Artifact bundle (models).")] = None,
    protocol: Annotated[
        str,
        typer.Option(help=("temporal, loo-full, loo-sampled or oracle (synthetic worlds only).")),
    ] = "temporal",
    k: Annotated[int, typer.Option(help="Cut-off for the headline metrics.")] = 10,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the JSON report here.")] = (
        None
    ),
    report_dir: Annotated[
        Path | None, typer.Option(help=("Directory for the full report (JSON, markdown, plots)."))
    ] = None,
    max_users: Annotated[int | None, typer.Option(help="Evaluate a sample of users.")] = None,
    progress: Progress = True,
) -> None:
    """Evaluate baselines (and trained models) under one protocol and print the table."""
    from shortrec import pipelines

    md = _run(
        lambda: pipelines.evaluate(
            data_dir, artifacts, protocol, k, json_out, report_dir, max_users, progress
        )
    )
    out.print(md)


@app.command()
def demo(
    out_dir: Annotated[
        Path, typer.Option("--out", help="Where the demo writes everything.")
    ] = Path("demo-out"),
    preset: Annotated[str, typer.Option(help="World size (tiny for a quick check).")] = "small",
    progress: Progress = True,
) -> None:
    """Run the whole loop end to end on embedded defaults (no server needed)."""
    from shortrec import demo as demo_mod

    _run(lambda: demo_mod.run(out_dir, preset, progress))


def main() -> None:  # pragma: no cover - console entry point
    app()
