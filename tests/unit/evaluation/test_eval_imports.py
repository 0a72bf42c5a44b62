"""evaluation/ imports only the bottom layer (config, domain, schema) and itself."""

from __future__ import annotations

import ast
from pathlib import Path

import shortrec.evaluation

ALLOWED = {"shortrec", "shortrec.config", "shortrec.domain", "shortrec.schema"}


def _imports(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            if node.module == "shortrec":
                out |= {f"shortrec.{a.name}" for a in node.names}
    return out


def test_evaluation_imports_only_the_bottom_layer() -> None:
    root = Path(shortrec.evaluation.__file__).parent
    files = sorted(root.glob("*.py"))
    assert len(files) >= 5
    for f in files:
        bad = {
            m
            for m in _imports(f)
            if m.startswith("shortrec")
            and m not in ALLOWED
            and not m.startswith("shortrec.evaluation")
        }
        assert not bad, f"{f.name} imports {sorted(bad)}"
