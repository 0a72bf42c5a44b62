"""The command line: help on every sub-command, exit code 2 with a message on bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from shortrec.cli import app

runner = CliRunner()
COMMANDS = [
    "generate",
    "ingest",
    "etl",
    "validate",
    "evaluate",
    "demo",
    "build",
    "publish",
    "serve",
    "train retrieval",
    "train ranker",
    "abtest simulate",
    "abtest analyze",
    "abtest collect",
]


@pytest.mark.parametrize("cmd", COMMANDS)
def test_every_command_has_help(cmd: str) -> None:
    res = runner.invoke(app, [*cmd.split(), "--help"])
    assert res.exit_code == 0, res.output
    assert "Usage" in res.output


def test_unknown_preset_exits_2_naming_the_option(tmp_path: Path) -> None:
    res = runner.invoke(app, ["generate", "--preset", "huge", "--out", str(tmp_path / "x")])
    assert res.exit_code == 2
    assert "unknown preset 'huge'" in res.output


def test_missing_dataset_exits_2(tmp_path: Path) -> None:
    res = runner.invoke(app, ["etl", str(tmp_path / "missing")])
    assert res.exit_code == 2
    assert "dataset directory not found" in res.output


def test_not_a_dataset_exits_2(tmp_path: Path) -> None:
    res = runner.invoke(app, ["validate", str(tmp_path)])
    assert res.exit_code == 2
    assert "missing manifest.json" in res.output
