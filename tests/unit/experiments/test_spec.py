"""Experiment declarations: TOML loading, validation messages, reloading."""

from __future__ import annotations

from pathlib import Path

import pytest

from shortrec import schema as S
from shortrec.experiments.spec import (
    ExperimentSource,
    ExperimentSpecError,
    load_experiments,
    parse_experiments,
)

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "experiments"

GOOD = """
[holdout]
fraction = 0.05

[[experiments]]
name = "ranker-v2"
layer = "ranking"
buckets = [0, 5000]
[[experiments.arms]]
name = "control"
[[experiments.arms]]
name = "treatment"
overrides = { model_version = "v2" }
"""


def test_parse_good_file() -> None:
    s = parse_experiments(GOOD, "good.toml")
    e = s.experiment("ranker-v2")
    assert e.layer == "ranking" and e.buckets == (0, 5000) and e.control_arm == "control"
    assert e.arms[1].overrides.model_version == "v2"
    assert len(s.version) == 16


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.toml")), ids=lambda p: p.name)
def test_example_files_load(path: Path) -> None:
    s = load_experiments(path)
    assert s.experiments
    assert isinstance(s.assign("some-user"), dict)


def test_unknown_key_rejected_with_file_line_and_field() -> None:
    bad = GOOD.replace('name = "treatment"', 'name = "treatment"\nwieght = 2')
    with pytest.raises(ExperimentSpecError) as info:
        parse_experiments(bad, "exp.toml")
    msg = str(info.value)
    assert isinstance(info.value, S.BadInput)
    assert "exp.toml" in msg and "experiments.0.arms.1.wieght" in msg and "line 11" in msg


def test_invalid_toml() -> None:
    with pytest.raises(ExperimentSpecError, match=r"x.toml: invalid TOML.*line"):
        parse_experiments("[[experiments]\nname=", "x.toml")


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        ("buckets = [0, 5000]", "buckets = [0, 20000]"),
        ('name = "control"', 'name = "treatment"'),
    ],
)
def test_invalid_declarations(edit: str, fragment: str) -> None:
    with pytest.raises(ExperimentSpecError):
        parse_experiments(GOOD.replace(edit, fragment), "x.toml")


def test_overlapping_buckets_and_shared_knobs_rejected() -> None:
    second = GOOD.split("[[experiments]]", 1)[1].replace("ranker-v2", "other")
    with pytest.raises(ExperimentSpecError, match="overlapping buckets"):
        parse_experiments(GOOD + "[[experiments]]" + second, "x.toml")
    other_layer = second.replace('layer = "ranking"', 'layer = "div"')
    with pytest.raises(ExperimentSpecError, match="model_version"):
        parse_experiments(GOOD + "[[experiments]]" + other_layer, "x.toml")
    fine = second.replace("buckets = [0, 5000]", "buckets = [5000, 10000]")
    assert len(parse_experiments(GOOD + "[[experiments]]" + fine).experiments) == 2


def test_bad_source_quotas_rejected() -> None:
    bad = GOOD.replace('{ model_version = "v2" }', "{ source_quotas = { nope = 0.5 } }")
    with pytest.raises(ExperimentSpecError, match="nope"):
        parse_experiments(bad, "x.toml")


def test_missing_file() -> None:
    with pytest.raises(ExperimentSpecError, match="cannot read"):
        load_experiments(Path("/nonexistent/exp.toml"))


def test_reload_keeps_last_good_version(tmp_path: Path) -> None:
    path = tmp_path / "exp.toml"
    path.write_text(GOOD)
    src = ExperimentSource(path)
    v1 = src.current.version
    assert src.reload().changed is False
    path.write_text(GOOD.replace("buckets = [0, 5000]", "buckets = [0, 10000]"))
    st = src.reload()
    assert st.changed and st.error is None and src.current.version != v1
    v2 = src.current.version
    path.write_text(GOOD.replace("[[experiments.arms]]", "[[experiments.arm]]", 1))
    st = src.reload()
    assert not st.changed and st.error is not None and src.current.version == v2
