"""The docs tell the truth: numbers match the results files they cite, generated parts are
fresh, links and anchors resolve, and the architecture picture matches its source."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


def _script(name: str) -> ModuleType:
    """Import scripts/NAME.py (not a package) once; dataclasses need it in sys.modules."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _readmes() -> list[Path]:
    """README.md, and the draft README.new.md while it exists."""
    return [p for p in (ROOT / "README.md", ROOT / "README.new.md") if p.is_file()]


def _checked_docs() -> list[Path]:
    return [*_readmes(), *sorted(DOCS.glob("*.md"))]


# --------------------------------------------------------------------------- citations

# [shown](path/to/bench/results/NAME.json "key") — the generator's citation form.
CITE = re.compile(r'\[([^\]\n]+)\]\(((?:\.\./)*bench/results/[A-Za-z0-9_.-]+\.json) "([^"\n]+)"\)')
NUMBER = re.compile(r"^([+-]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d+))?)(?:e([+-]?\d+))?( M| k| %)?$")


def _lookup(doc: dict[str, Any], key: str) -> Any:
    head, _, rest = key.partition(".")
    node: Any = doc.get(head) if head in {"config", "machine"} and rest else doc["metrics"]
    for part in rest.split(".") if head in {"config", "machine"} and rest else [key]:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def citation_error(shown: str, doc: dict[str, Any], key: str) -> str | None:
    """Why the displayed ``shown`` does not match ``key`` in ``doc`` (None when it does).

    Independent of the generator's formatting code: the number is parsed back and compared
    with the stored value within half a unit of its last displayed digit. Suffixes: `` M``
    millions, `` k`` thousands, `` %`` percent (of a fraction, unless the metric name ends in
    ``_pct``); ``PASS`` / ``FAIL`` stand for 1 / 0.
    """
    raw = _lookup(doc, key)
    if isinstance(raw, bool):
        raw = float(raw)
    if not isinstance(raw, int | float):
        return f"key {key!r} is missing or not a number ({raw!r})"
    value = float(raw)
    if shown in {"PASS", "FAIL"}:
        ok = (value >= 1) == (shown == "PASS")
        return None if ok else f"{key} is {value}, shown {shown}"
    m = NUMBER.match(shown)
    if m is None:
        return f"cannot read a number from {shown!r}"
    mantissa, decimals, exponent, suffix = m.groups()
    shown_value = float(mantissa.replace(",", ""))
    half_unit = 0.5 * 10.0 ** -(len(decimals) if decimals else 0)
    if exponent is not None:
        shown_value *= 10.0 ** int(exponent)
        half_unit *= 10.0 ** int(exponent)
    scale = {" M": 1e-6, " k": 1e-3, None: 1.0}.get(suffix)
    if suffix == " %":
        scale = 1.0 if re.search(r"_pct(_|$)", key) else 100.0
    assert scale is not None
    expected = value * scale
    if abs(shown_value - expected) > half_unit * (1 + 1e-9) + 1e-12:
        return f"{key} is {value} (shown as {expected:g} expected), the doc shows {shown!r}"
    return None


def _citations(path: Path) -> list[tuple[str, Path, str]]:
    text = path.read_text()
    return [
        (shown, (path.parent / target).resolve(), key) for shown, target, key in CITE.findall(text)
    ]


def test_every_cited_number_matches_its_results_file() -> None:
    errors = []
    count = 0
    for path in _checked_docs():
        for shown, target, key in _citations(path):
            count += 1
            if not target.is_file():
                errors.append(f"{path.name}: {target} does not exist")
                continue
            err = citation_error(shown, json.loads(target.read_text()), key)
            if err is not None:
                errors.append(f"{path.relative_to(ROOT)}: {target.name}: {err}")
    assert count > 0
    assert not errors, "stale numbers (run python scripts/gen_showcase.py):\n" + "\n".join(errors)


def test_readme_and_showcase_carry_cited_numbers() -> None:
    gen = _script("gen_showcase")
    readme = gen.readme_path(ROOT)
    text = readme.read_text()
    assert text.count(gen.BEGIN) == 1 and text.count(gen.END) == 1, readme
    block = text.split(gen.BEGIN, 1)[1].split(gen.END, 1)[0]
    assert len(CITE.findall(block)) >= 10, "the README's headline block cites too few numbers"
    assert len(CITE.findall((DOCS / "showcase.md").read_text())) >= 50


@pytest.mark.parametrize(
    ("shown", "key", "ok"),
    [
        ("0.49 M", "events_per_s", True),
        ("0.50 M", "events_per_s", False),
        ("494,255", "events_per_s", True),
        ("494,300", "events_per_s", False),
        ("34.7 %", "skip_rate", True),
        ("4.5 %", "overhead_pct", True),
        ("0.0 %", "overhead_pct", False),
        ("2.4e-07", "err", True),
        ("3.4e-07", "err", False),
        ("PASS", "gate_a", True),
        ("FAIL", "gate_a", False),
        ("2", "machine.cores", True),
        ("3", "machine.cores", False),
        ("7", "missing_key", False),
        ("about 7", "skip_rate", False),
    ],
)
def test_citation_check_catches_wrong_numbers(shown: str, key: str, ok: bool) -> None:
    doc = {
        "machine": {"cores": 2},
        "metrics": {
            "events_per_s": 494254.55,
            "skip_rate": 0.34686,
            "overhead_pct": 4.454,
            "err": 2.384e-07,
            "gate_a": 1.0,
        },
    }
    assert (citation_error(shown, doc, key) is None) is ok


# --------------------------------------------------------------------------- generator


def test_generated_docs_are_fresh() -> None:
    gen = _script("gen_showcase")
    stale = [
        str(p.relative_to(ROOT))
        for p, text in gen.rendered(gen.Results.load(gen.RESULTS_DIR), ROOT).items()
        if p.read_text() != text
    ]
    assert not stale, f"stale generated docs {stale}: run `python scripts/gen_showcase.py`"


def _results(tmp_path: Path, metrics: dict[str, dict[str, Any]]) -> Path:
    for name, m in metrics.items():
        doc = {
            "name": name,
            "date": "2026-01-01T00:00:00+00:00",
            "config": {"workers": 2},
            "machine": {"cpu": "test cpu", "cores": 2},
            "versions": {},
            "metrics": m,
        }
        (tmp_path / f"{name}.json").write_text(json.dumps(doc))
    return tmp_path


def test_generator_renders_missing_values_as_not_measured(tmp_path: Path) -> None:
    gen = _script("gen_showcase")
    d = _results(
        tmp_path,
        {"generate": {"medium_events_per_s": 2_000_000.0}, "serving": {"feed_req_per_s": 100.0}},
    )
    r = gen.Results.load(d)
    block = gen.readme_block(r)
    assert '[2.00 M](bench/results/generate.json "medium_events_per_s")' in block
    # a target met and one missed are judged from the values, not typed in
    row = gen.target_for(r, "generate", "medium_events_per_s")
    assert row is not None and row.met is True
    assert gen.target_for(r, "serving", "feed_req_per_s").met is False
    assert "*not measured* (`etl.json: medium_events_per_s`)" in block
    page = gen.showcase(r)
    assert page == gen.showcase(r)  # idempotent
    for shown, _target, key in CITE.findall(page):
        doc = json.loads((d / f"{_target.split('/')[-1]}").read_text())
        assert citation_error(shown, doc, key) is None


def test_generator_rejects_a_broken_results_file(tmp_path: Path) -> None:
    gen = _script("gen_showcase")
    (tmp_path / "etl.json").write_text('{"metrics": {\n  "a": 1,,\n}}')
    with pytest.raises(ValueError, match=r"etl\.json: line 2"):
        gen.Results.load(tmp_path)
    (tmp_path / "etl.json").write_text('{"name": "etl"}')
    with pytest.raises(ValueError, match=r"etl\.json: field 'metrics'"):
        gen.Results.load(tmp_path)


def test_block_replacement_needs_exactly_one_marker_pair(tmp_path: Path) -> None:
    gen = _script("gen_showcase")
    text = f"a\n{gen.BEGIN}\nold\n{gen.END}\nb\n"
    assert gen.with_block(text, "new\n", tmp_path) == f"a\n{gen.BEGIN}\nnew\n{gen.END}\nb\n"
    with pytest.raises(ValueError, match="exactly one"):
        gen.with_block("no markers", "x", tmp_path)


# --------------------------------------------------------------------------- links

FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1", re.DOTALL)
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$", re.MULTILINE)


def _strip_code(text: str) -> str:
    return CODE_SPAN.sub("", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lower case, punctuation except ``-`` and
    ``_`` removed, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links -> their text
    text = text.replace("`", "").lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for _, title in HEADING.findall(FENCE.sub("", markdown)):
        base = slug(title)
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def link_errors(path: Path, root: Path = ROOT) -> list[str]:
    """Relative links of ``path`` whose file or ``#anchor`` does not resolve."""
    errors = []
    text = path.read_text()
    for target in LINK.findall(_strip_code(text)):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path.resolve()
        if not dest.is_relative_to(root.resolve()):
            errors.append(f"{path.name}: {target}: outside the repository")
            continue
        if not dest.exists():
            errors.append(f"{path.name}: {target}: no such file")
            continue
        if anchor and dest.suffix == ".md" and anchor not in anchors(dest.read_text()):
            errors.append(f"{path.name}: {target}: no heading with anchor #{anchor}")
    return errors


def test_links_and_anchors_resolve() -> None:
    errors = [e for p in _checked_docs() for e in link_errors(p)]
    assert not errors, "broken links:\n" + "\n".join(errors)


def test_link_check_catches_broken_links(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other\n\n## Re-ranking (`rerank/diversify.py`)\n")
    doc = tmp_path / "doc.md"
    doc.write_text(
        "# Title\n\n## Two words\n\n"
        "[ok](other.md#re-ranking-rerankdiversifypy) [ok](#two-words) [ok](https://x.org/a)\n"
        "[bad](missing.md) [bad](other.md#nope) [bad](#three-words)\n"
        "`[not a link](missing2.md)`\n\n```\n[not a link](missing3.md)\n```\n"
    )
    errors = link_errors(doc, tmp_path)
    assert len(errors) == 3, errors
    assert any("missing.md" in e for e in errors)
    assert any("#nope" in e for e in errors)
    assert any("#three-words" in e for e in errors)


def test_slug_and_duplicate_anchors() -> None:
    assert slug("ETL (`shortrec etl DIR`)") == "etl-shortrec-etl-dir"
    assert slug("4. Offline flow") == "4-offline-flow"
    assert anchors("# A\n## A\n```\n# B\n```\n") == {"a", "a-1"}


# --------------------------------------------------------------------------- diagram


def test_architecture_diagram_matches_its_source() -> None:
    rd = _script("render_diagram")
    doc = (DOCS / "architecture.md").read_text()
    assert rd.with_block(doc, rd.mermaid()) == doc, "run `python scripts/render_diagram.py`"
    svg = rd.SVG.read_text()
    assert rd.svg_missing_labels(svg) == []
    assert rd.SVG.stat().st_size < 100_000  # keep the committed picture small
    assert "img/architecture.svg" in doc
    gen = _script("gen_showcase")
    assert "docs/img/architecture.svg" in gen.readme_path(ROOT).read_text()


def test_diagram_check_notices_a_stale_picture() -> None:
    rd = _script("render_diagram")
    svg = rd.SVG.read_text()
    first = rd.labels()[0]
    assert rd.svg_missing_labels(svg.replace(f">{first}<", ">renamed<")) == [first]


def test_diagram_edges_name_known_nodes() -> None:
    rd = _script("render_diagram")
    ids = set(rd.nodes())
    assert all(e.src in ids and e.dst in ids for e in rd.EDGES)
    assert len(ids) == sum(len(c.nodes) for c in rd.CLUSTERS)  # ids are unique
