"""Render the architecture diagram from one definition: Mermaid into docs/architecture.md
(between markers) and Graphviz DOT into docs/img/architecture.svg.

The graph is defined once below (``CLUSTERS``, ``EDGES``); both renderings are produced from
it, so the Mermaid source in the docs and the committed picture cannot drift apart
(tests/unit/test_docs.py checks the Mermaid block and that every label is in the SVG).

    python scripts/render_diagram.py           # rewrite the Mermaid block and the SVG
    python scripts/render_diagram.py --check   # exit 1 if either is stale (needs no graphviz
                                               # for the Mermaid part; the SVG check compares
                                               # labels, since dot's output varies by version)

Rendering the SVG needs Graphviz's ``dot`` (Debian: ``apt-get install -y graphviz``).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "architecture.md"
SVG = ROOT / "docs" / "img" / "architecture.svg"
BEGIN, END = "<!-- mermaid:begin -->", "<!-- mermaid:end -->"


@dataclass(frozen=True)
class Node:
    """One box; ``lines`` are its label lines (the first is the title)."""

    id: str
    lines: tuple[str, ...]
    shape: str = "box"  # box | store (cylinder) | actor (rounded)


@dataclass(frozen=True)
class Cluster:
    id: str
    title: str
    nodes: tuple[Node, ...]


@dataclass(frozen=True)
class Edge:
    src: str
    dst: str
    label: str = ""
    dashed: bool = False


CLUSTERS: tuple[Cluster, ...] = (
    Cluster(
        "offline",
        "Offline (batch): pipelines.py, the shortrec CLI",
        (
            Node("sim", ("Simulator", "shortrec generate", "truth/ = oracle")),
            Node("logs", ("Public logs", "shortrec ingest", "MovieLens, KuaiRec, KuaiRand, csv")),
            Node("dataset", ("Dataset", "Parquet + vocab + manifest", "schema-checked"), "store"),
            Node("etl", ("ETL", "splits, sessions, stats,", "point-in-time samples")),
            Node(
                "retr",
                ("Retrieval training", "two-tower + FAISS index,", "trending/tags/fresh/explore"),
            ),
            Node("rank", ("Ranker training", "multi-task Transformer", "-> ONNX")),
            Node("bundle", ("Artifact bundle", "versioned manifest"), "store"),
            Node("eval", ("Offline evaluation", "4 protocols, baselines")),
            Node("publish", ("shortrec publish", "new version, atomic switch")),
        ),
    ),
    Cluster(
        "online",
        "Online (per request): serving/app.py",
        (
            Node("client", ("Client app",), "actor"),
            Node(
                "api",
                (
                    "FastAPI service (stateless replicas)",
                    "assignment -> sources -> merge -> rank",
                    "-> session adjust -> diversify",
                ),
            ),
            Node(
                "redis",
                ("Online store", "Redis (or in-process)", "live user state, events"),
                "store",
            ),
        ),
    ),
    Cluster(
        "ops",
        "Operate and measure",
        (
            Node("prom", ("Prometheus", "alert rules")),
            Node("graf", ("Grafana", "3 dashboards")),
            Node("abtest", ("A/B tests", "simulate + analyze")),
        ),
    ),
)

EDGES: tuple[Edge, ...] = (
    Edge("sim", "dataset"),
    Edge("logs", "dataset"),
    Edge("dataset", "etl"),
    Edge("etl", "retr"),
    Edge("etl", "rank"),
    Edge("retr", "bundle"),
    Edge("rank", "bundle"),
    Edge("etl", "eval"),
    Edge("bundle", "eval", "configs"),
    Edge("etl", "publish", "histories, stats"),
    Edge("bundle", "publish", "lists"),
    Edge("publish", "redis"),
    Edge("bundle", "api", "load / reload"),
    Edge("client", "api", "GET /v1/feed, POST /v1/events"),
    Edge("api", "redis", "1 round trip / request"),
    Edge("prom", "api", "scrape /metrics", dashed=True),
    Edge("graf", "prom", "queries", dashed=True),
    Edge("abtest", "api", "simulated users", dashed=True),
)


def nodes() -> dict[str, Node]:
    return {n.id: n for c in CLUSTERS for n in c.nodes}


def labels() -> list[str]:
    """Every text line the picture must show (node lines, cluster titles, edge labels)."""
    out = [line for n in nodes().values() for line in n.lines]
    out += [c.title for c in CLUSTERS]
    out += [e.label for e in EDGES if e.label]
    return out


def _check_graph() -> None:
    known = nodes()
    for e in EDGES:
        for end in (e.src, e.dst):
            if end not in known:
                raise ValueError(f"edge {e.src} -> {e.dst}: unknown node {end!r}")


def mermaid() -> str:
    """The Mermaid flowchart (fenced), as it appears in docs/architecture.md."""
    _check_graph()
    shapes = {"box": ('["', '"]'), "store": ('[("', '")]'), "actor": ('(["', '"])')}
    out = ["```mermaid", "flowchart TB"]
    for c in CLUSTERS:
        out.append(f'  subgraph {c.id}["{c.title}"]')
        for n in c.nodes:
            left, right = shapes[n.shape]
            # Mermaid needs #quot; for quotes and <br/> for line breaks inside a label.
            text = "<br/>".join(line.replace('"', "#quot;") for line in n.lines)
            out.append(f"    {n.id}{left}{text}{right}")
        out.append("  end")
    for e in EDGES:
        arrow = "-.->" if e.dashed else "-->"
        label = f'|"{e.label}"|' if e.label else ""
        out.append(f"  {e.src} {arrow}{label} {e.dst}")
    out.append("```")
    return "\n".join(out) + "\n"


def dot() -> str:
    """The same graph as Graphviz DOT."""
    _check_graph()

    def q(text: str) -> str:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

    shapes = {
        "box": 'shape=box, style="rounded,filled", fillcolor="#eef3fb"',
        "store": 'shape=cylinder, style=filled, fillcolor="#fdf3e1"',
        "actor": 'shape=box, style="rounded,filled,bold", fillcolor="#e8f6ec"',
    }
    out = [
        "digraph shortrec {",
        "  graph [rankdir=TB, fontname=Helvetica, fontsize=12, nodesep=0.3, ranksep=0.45,"
        " compound=true];",
        '  node [fontname=Helvetica, fontsize=10, margin="0.12,0.06"];',
        '  edge [fontname=Helvetica, fontsize=9, color="#555555"];',
    ]
    for c in CLUSTERS:
        out.append(f"  subgraph cluster_{c.id} {{")
        out.append(f'    label={q(c.title)}; style=rounded; color="#9aa5b1";')
        for n in c.nodes:
            out.append(f"    {n.id} [label={q(chr(10).join(n.lines))}, {shapes[n.shape]}];")
        out.append("  }")
    for e in EDGES:
        attrs = []
        if e.label:
            attrs.append(f"label={q(e.label)}")
        if e.dashed:
            attrs.append("style=dashed")
        suffix = f" [{', '.join(attrs)}]" if attrs else ""
        out.append(f"  {e.src} -> {e.dst}{suffix};")
    out.append("}")
    return "\n".join(out) + "\n"


def render_svg(dot_source: str) -> str:
    """Run Graphviz on ``dot_source`` and return the SVG text (comments stripped)."""
    exe = shutil.which("dot")
    if exe is None:
        raise RuntimeError("Graphviz 'dot' not found: apt-get install -y graphviz")
    res = subprocess.run(
        [exe, "-Tsvg"], input=dot_source, capture_output=True, text=True, check=False
    )
    if res.returncode != 0:
        raise RuntimeError(f"dot failed ({res.returncode}): {res.stderr.strip()}")
    # Drop the generator comment (it carries dot's version) so reruns do not churn the file.
    return re.sub(r"<!-- Generated by .*?-->\n", "", res.stdout, flags=re.DOTALL)


def svg_texts(svg_text: str) -> set[str]:
    """The text lines an SVG shows (its ``<text>`` elements, entities decoded)."""
    root = ElementTree.fromstring(svg_text)  # our own committed file, not untrusted input
    return {"".join(el.itertext()) for el in root.iter("{http://www.w3.org/2000/svg}text")}


def svg_missing_labels(svg_text: str) -> list[str]:
    """Labels of the graph definition that the SVG does not show (empty when in sync)."""
    shown = svg_texts(svg_text)
    return [lab for lab in labels() if lab not in shown]


def with_block(text: str, block: str) -> str:
    """``text`` with the part between the Mermaid markers replaced by ``block``."""
    if BEGIN not in text or END not in text:
        raise ValueError(f"{DOC}: markers {BEGIN} / {END} not found")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{block}{END}{tail}"


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as fh:
        fh.write(text)
    Path(fh.name).chmod(0o644)  # a committed doc, readable by all (mkstemp makes it 0600)
    Path(fh.name).replace(path)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    doc_text = DOC.read_text()
    new_doc = with_block(doc_text, mermaid())
    if "--check" in args:
        stale = []
        if new_doc != doc_text:
            stale.append(f"{DOC.relative_to(ROOT)} (Mermaid block)")
        if not SVG.is_file() or svg_missing_labels(SVG.read_text()):
            stale.append(f"{SVG.relative_to(ROOT)}")
        for s in stale:
            print(f"stale: {s}; run `python scripts/render_diagram.py`", file=sys.stderr)
        return 1 if stale else 0
    _write_atomic(DOC, new_doc)
    _write_atomic(SVG, render_svg(dot()))
    print(f"wrote {DOC.relative_to(ROOT)} and {SVG.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
