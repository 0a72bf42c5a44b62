"""Regenerate the table reference in docs/data.md from shortrec.schema (between markers)."""

from __future__ import annotations

import sys
from pathlib import Path

from shortrec import schema as S

DOC = Path(__file__).resolve().parent.parent / "docs" / "data.md"
BEGIN, END = "<!-- tables:begin -->", "<!-- tables:end -->"


def render() -> str:
    out: list[str] = []
    for t in S.TABLES.values():
        base = S.EVENTS if t is S.ETL_EVENTS else None
        out += [f"### `{t.name}`", "", f"{t.doc} Unique key: `{', '.join(t.unique) or '-'}`.", ""]
        out += ["| column | type | nullable | check | meaning |", "|---|---|---|---|---|"]
        for c in t.columns:
            if base is not None and c in base.columns:
                continue
            null = "yes" if c.nullable else "no"
            out.append(f"| `{c.name}` | {c.dtype} | {null} | {c.check_text} | {c.doc} |")
        if base is not None:
            out += ["", "(plus every column of `events`)"]
        out.append("")
    return "\n".join(out)


def main() -> int:
    text = DOC.read_text()
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    new = f"{head}{BEGIN}\n{render()}{END}{tail}"
    if "--check" in sys.argv:
        return 0 if new == text else 1
    DOC.write_text(new)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
