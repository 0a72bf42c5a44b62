"""Import rules of DESIGN.md section 3, checked on the source tree (no import-time work)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "shortrec"
BOTTOM = {"config", "domain", "schema", "artifacts"}
MIDDLE = {
    "data",
    "retrieval",
    "ranking",
    "rerank",
    "evaluation",
    "experiments",
    "store",
    "monitoring",
}
TRAINING = {"data", "evaluation"}
THIRD_PARTY_HOME = {
    "faiss": {"retrieval/index.py"},
    "redis": {"store/redis.py"},
    "fastapi": {"serving"},
    "prometheus_client": {"serving/metrics.py"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return names


def _package_of(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0].removesuffix(".py")


def _internal(names: set[str]) -> set[str]:
    return {n.split(".")[1] for n in names if n.startswith("shortrec.") and n.count(".") >= 1}


def test_bottom_layer_imports_nothing_above_it() -> None:
    for mod in BOTTOM:
        used = _internal(_imports(SRC / f"{mod}.py")) - {"schema", "config"}
        assert not used, f"{mod}.py imports {used}"


def test_middle_packages_import_only_the_bottom_layer() -> None:
    for path in SRC.rglob("*.py"):
        pkg = _package_of(path)
        if pkg not in MIDDLE:
            continue
        bad = _internal(_imports(path)) - BOTTOM - {pkg}
        assert not bad, f"{path.relative_to(SRC)} imports {bad}"


def test_serving_never_imports_training_code() -> None:
    for path in (SRC / "serving").rglob("*.py"):
        bad = _internal(_imports(path)) & (TRAINING | {"pipelines"})
        assert not bad, f"{path.relative_to(SRC)} imports {bad}"


def test_third_party_systems_have_one_home() -> None:
    for path in SRC.rglob("*.py"):
        rel = str(path.relative_to(SRC))
        for lib, homes in THIRD_PARTY_HOME.items():
            if any(n == lib or n.startswith(f"{lib}.") for n in _imports(path)):
                assert any(rel == h or rel.startswith(f"{h}/") for h in homes), (
                    f"{rel} imports {lib}; only {sorted(homes)} may"
                )
