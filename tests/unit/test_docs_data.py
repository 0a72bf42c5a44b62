"""docs/data.md documents every column of every table, field by field."""

from __future__ import annotations

from pathlib import Path

from shortrec import schema as S

DOC = Path(__file__).resolve().parents[2] / "docs" / "data.md"


def test_every_column_is_documented() -> None:
    text = DOC.read_text()
    for table in S.TABLES.values():
        assert f"`{table.name}`" in text, table.name
        for col in table.columns:
            assert f"| `{col.name}` |" in text, f"{table.name}.{col.name} missing from docs/data.md"


def test_table_reference_is_generated_from_the_schema() -> None:
    import subprocess
    import sys

    script = DOC.parents[1] / "scripts" / "gen_data_doc.py"
    rc = subprocess.call([sys.executable, str(script), "--check"])
    assert rc == 0, "docs/data.md is stale: run `python scripts/gen_data_doc.py`"
