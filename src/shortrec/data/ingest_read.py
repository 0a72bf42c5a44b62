"""Low-level readers for ingestion: source files into typed Polars frames, every problem located.

A source file is read lazily as *text* columns (CSV: one per header field; delimited text: one per
position) plus the record index, then each field is parsed by an explicit :class:`Field` rule.
Parse problems never pass silently: :func:`collect_fields` raises :class:`IngestError` naming the
file, the line (1-based, physical, counting the header) and the field, with the offending value.

Polars does the heavy lifting (multi-threaded CSV parsing, vectorised casts); the slow, exact
diagnostics in Python run only after something has already gone wrong.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import polars as pl

from shortrec import schema as S

#: Internal helper columns (never written): record index within its file and the file's rank.
LINE = "__line"
FILE = "__file"
_BAD = "__bad"
_FIELDS = "__fields"
_RAW = "__raw"
_SUSPECT = "__suspect"
_EXTRA = "__extra_field"

#: Internal columns of the raw interaction/catalogue frames the format readers hand over.
RAW_USER = "__user_id"
RAW_VIDEO = "__video_id"
RAW_CREATOR = "__creator_id"
RAW_CATEGORY = "__category"
RAW_TAGS = "__tags"
RAW_DURATION = "__duration_s"

#: Code in the ``__bad`` column for a record with the wrong number of fields.
_BAD_COUNT = 255

Kind = Literal["id", "float", "int", "bool", "text", "datetime"]

_TRUE = ("1", "1.0", "true", "t", "yes", "y")
_FALSE = ("0", "0.0", "false", "f", "no", "n")
#: Flag spellings accepted (lower, Title and UPPER case of each).
_FLAGS = {
    v: b
    for words, b in ((_TRUE, True), (_FALSE, False))
    for w in words
    for v in (w, w.title(), w.upper())
}


class IngestError(S.BadInput):
    """A source file cannot be ingested; the message names the file, line and field if known."""


@dataclass(frozen=True)
class Table:
    """One source file opened lazily.

    ``lf`` holds one column per source field (text for CSV and delimited text; the stored types
    for Parquet) plus :data:`LINE` (0-based record index, Int64). ``first_line`` is the physical
    line number of record 0 (2 after a header line); ``unit`` is "line" or "row" (Parquet).
    ``expected_fields`` is the field count every record must have; ``count_bad`` is True on
    records with another count and ``blank`` on blank lines (skipped); None: not applicable.
    ``csv_sep`` is set for quoted CSV (the exact diagnostics re-read it with :mod:`csv`);
    ``suspect`` marks CSV records whose field count must be re-checked on the raw line.
    """

    path: Path
    lf: pl.LazyFrame
    columns: tuple[str, ...]
    first_line: int = 1
    unit: str = "line"
    expected_fields: int | None = None
    count_bad: pl.Expr | None = None
    blank: pl.Expr | None = None
    csv_sep: str | None = None
    suspect: pl.Expr | None = None

    def where(self, index: int) -> str:
        """Human location of record ``index``: ``"FILE: line N"``."""
        return f"{self.path}: {self.unit} {index + self.first_line}"

    def require(self, names: Sequence[str], what: str = "column") -> None:
        """Raise :class:`IngestError` unless every name in ``names`` is a column."""
        missing = [n for n in names if n not in self.columns]
        if missing:
            raise IngestError(
                f"{self.path}: missing required {what}(s) {', '.join(map(repr, missing))}; "
                f"found {', '.join(map(repr, self.columns)) or 'none'}"
            )


@dataclass(frozen=True)
class Field:
    """How to parse one source field into one output column.

    ``kind``: ``id`` (stripped text, never empty), ``float`` (finite number; "nan" reads as
    missing), ``int`` (integral number, Int64), ``bool`` (0/1/true/false/yes/no), ``text``
    (kept as is, empty reads as missing), ``datetime`` (ISO-8601 text; naive values are UTC).
    A ``required`` field may not be missing. ``lo``/``hi`` bound numbers (inclusive).
    """

    source: str
    out: str
    kind: Kind
    required: bool = False
    lo: float | None = None
    hi: float | None = None


def _empty_file(path: Path) -> IngestError:
    return IngestError(f"{path}: empty file (no header and no records)")


def open_csv(path: Path, separator: str = ",") -> Table:
    """Open a CSV file with a header row; every field is read as text."""
    path = Path(path)
    if not path.is_file():
        raise IngestError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise _empty_file(path)
    lf = pl.scan_csv(
        path,
        separator=separator,
        infer_schema=False,
        empty_string_is_null=False,
        row_index_name=LINE,
        encoding="utf8-lossy",
    )
    try:
        names = lf.collect_schema().names()
    except pl.exceptions.NoDataError as e:
        raise _empty_file(path) from e
    except pl.exceptions.PolarsError as e:
        raise IngestError(f"{path}: cannot read the CSV header: {e}") from e
    cols = tuple(n for n in names if n != LINE)
    dup = sorted({c for c in cols if cols.count(c) > 1})
    if dup:
        raise IngestError(f"{path}: line 1: duplicate column name(s) {dup}")
    # Re-scan with one phantom column past the header: Polars drops surplus fields silently when
    # projecting, but a record with too many fields fills the phantom one (a suspect).
    lf = pl.scan_csv(
        path,
        separator=separator,
        has_header=False,
        skip_rows=1,
        schema={**dict.fromkeys(cols, pl.String()), _EXTRA: pl.String()},
        missing_columns="insert",
        empty_string_is_null=False,
        row_index_name=LINE,
        encoding="utf8-lossy",
    )
    lf = lf.with_columns(pl.col(LINE).cast(pl.Int64))
    return _csv_table(path, lf, cols, separator)


def _csv_table(path: Path, lf: pl.LazyFrame, cols: tuple[str, ...], sep: str = ",") -> Table:
    # Polars reads an absent trailing field, an empty one and a blank line all as "": a record
    # whose last field is empty is a *suspect*, re-checked against its raw line (see
    # _check_suspects) so short records are errors and blank lines are skipped.
    return Table(
        path,
        lf,
        cols,
        first_line=2,
        expected_fields=len(cols),
        suspect=(pl.col(cols[-1]).fill_null("") == "") | (pl.col(_EXTRA).fill_null("") != ""),
        csv_sep=sep,
    )


def open_parquet(path: Path) -> Table:
    """Open a Parquet file; columns keep their stored types."""
    path = Path(path)
    if not path.is_file():
        raise IngestError(f"{path}: file not found")
    try:
        lf = pl.scan_parquet(path)
        names = lf.collect_schema().names()
    except pl.exceptions.PolarsError as e:
        raise IngestError(f"{path}: cannot read Parquet: {e}") from e
    lf = lf.with_row_index(LINE).with_columns(pl.col(LINE).cast(pl.Int64))
    return Table(path, lf, tuple(names), first_line=1, unit="row")


def open_delimited(
    path: Path,
    names: Sequence[str] | None,
    separator: str | None,
    *,
    header: bool = False,
    data: bytes | None = None,
) -> Table:
    """Open a text file of delimited lines without quoting (u.data, ratings.dat, RecBole atomic).

    ``separator`` None splits on runs of whitespace. With ``header`` the first line names the
    fields (RecBole atomic files spell them ``name:type``; the ``:type`` part is dropped);
    otherwise ``names`` does. Every line must have exactly that many fields. ``data`` replaces
    reading ``path`` (for files decoded in Python, e.g. Latin-1). Blank lines are skipped.
    """
    path = Path(path)
    lf = lines_frame(path, data)
    split = _split_expr(separator)
    first_line = 1
    if header:
        head = lf.head(1).collect()
        if head.height == 0 or head.item(0, _RAW) is None:
            raise _empty_file(path)
        raw_header = str(head.item(0, _RAW))
        hdr = raw_header.split() if separator is None else raw_header.split(separator)
        names = [h.strip().split(":", 1)[0] for h in hdr]
        lf = lf.slice(1).with_columns(pl.col(LINE) - 1)
        first_line = 2
    if names is None:
        raise ValueError("open_delimited needs names or header=True")
    cols = tuple(names)
    dup = sorted({c for c in cols if cols.count(c) > 1})
    if dup:
        raise IngestError(f"{path}: line 1: duplicate column name(s) {dup}")
    lf = lf.filter(pl.col(_RAW).str.strip_chars().str.len_bytes() > 0).with_columns(
        split.alias(_FIELDS)
    )
    lf = lf.with_columns(
        [pl.col(_FIELDS).list.get(i, null_on_oob=True).alias(n) for i, n in enumerate(cols)]
    )
    lf = lf.with_columns(pl.col(_FIELDS).list.len().alias(_FIELDS))
    return Table(
        path,
        lf,
        cols,
        first_line=first_line,
        expected_fields=len(cols),
        count_bad=pl.col(_FIELDS) != len(cols),
    )


def lines_frame(path: Path, data: bytes | None = None) -> pl.LazyFrame:
    """The file as one text column (``__raw``, trailing CR removed) plus :data:`LINE`."""
    if data is None:
        if not path.is_file():
            raise IngestError(f"{path}: file not found")
        if path.stat().st_size == 0:
            raise _empty_file(path)
    elif not data:
        raise _empty_file(path)
    src: Path | bytes = path if data is None else data
    # \x00 never occurs in a text file, so every line is one field; no quoting.
    lf = pl.scan_csv(
        src,
        has_header=False,
        separator="\x00",
        quote_char=None,
        new_columns=[_RAW],
        schema={_RAW: pl.String},
        row_index_name=LINE,
        encoding="utf8-lossy",
    )
    return lf.with_columns(pl.col(LINE).cast(pl.Int64), pl.col(_RAW).str.strip_suffix("\r"))


def _split_expr(separator: str | None) -> pl.Expr:
    if separator is None:
        return pl.col(_RAW).str.extract_all(r"\S+")
    return pl.col(_RAW).str.split(separator, literal=True)


# ---------------------------------------------------------------- parsing


def _number(raw: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    """The field as Float64 (null where absent or unparsable)."""
    if dtype == pl.String:
        num = raw.str.strip_chars().cast(pl.Float64, strict=False)
    elif dtype == pl.Boolean or dtype.is_numeric():
        num = raw.cast(pl.Float64)
    else:
        num = pl.lit(None, pl.Float64)
    return num


def _flag(raw: pl.Expr) -> pl.Expr:
    """Text flag to Boolean (null where absent or not a flag); one hash lookup per value."""
    return raw.str.strip_chars().replace_strict(_FLAGS, default=None, return_dtype=pl.Boolean)


def _parse(
    raw: pl.Expr, f: Field, dtype: pl.DataType, num: pl.Expr | None = None
) -> tuple[pl.Expr, pl.Expr, str]:
    """Parsed expression, "bad value" expression and problem text for one field.

    ``num`` is :func:`_number` of the field when the caller has already computed it as a column
    (it is referenced several times; a column is computed once, an expression each time).
    """
    is_text = dtype == pl.String
    if f.kind in ("id", "text"):
        val = raw.cast(pl.String).str.strip_chars() if f.kind == "id" else raw.cast(pl.String)
        val = pl.when(val.str.len_bytes() > 0).then(val)
        return val, pl.lit(False), ""
    if f.kind == "bool":
        if is_text:
            val = _flag(raw) if num is None else num
            bad = (raw.str.strip_chars().str.len_bytes() > 0) & val.is_null()
        elif dtype == pl.Boolean:
            val, bad = raw, pl.lit(False)
        else:
            num = raw.cast(pl.Float64)
            val = num != 0
            bad = raw.is_not_null() & ~num.is_in([0.0, 1.0])
        return val, bad, "not a flag (expected 0/1, true/false)"
    if f.kind == "datetime":
        if isinstance(dtype, pl.Datetime):
            val = raw.dt.replace_time_zone("UTC") if dtype.time_zone is None else raw
            val = val.dt.convert_time_zone("UTC").dt.cast_time_unit("us")
            return val, pl.lit(False), ""
        if isinstance(dtype, pl.Date):
            val = raw.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
            return val, pl.lit(False), ""
        txt = raw.cast(pl.String).str.strip_chars()
        val = txt.str.to_datetime(time_unit="us", time_zone="UTC", strict=False)
        bad = (txt.str.len_bytes() > 0) & val.is_null()
        return val, bad, "not a date/time (expected ISO 8601)"
    # numbers
    if num is None:
        num = _number(raw, dtype)
    if is_text:
        present = raw.str.strip_chars().str.len_bytes() > 0
        bad = present & num.is_null()
    elif dtype == pl.Boolean or dtype.is_numeric():
        bad = pl.lit(False)
    else:
        bad = raw.is_not_null()
    # NaN is how pandas writes a missing number: read it as missing, never as a value.
    num = num.fill_nan(None)
    problem = "not a number"
    bad = bad | num.is_infinite().fill_null(False)
    if f.kind == "int":
        bad = bad | (num.is_not_null() & (num != num.floor()))
        problem = "not an integer"
    if f.lo is not None or f.hi is not None:
        lo = f.lo if f.lo is not None else float("-inf")
        hi = f.hi if f.hi is not None else float("inf")
        bad = bad | (num.is_not_null() & ((num < lo) | (num > hi)))
        problem += f" in [{lo:g}, {hi:g}]"
    val = num.cast(pl.Int64, strict=False) if f.kind == "int" else num
    return val, bad.fill_null(False), problem


def parse_fields(table: Table, fields: Sequence[Field], keep: Sequence[str] = ()) -> pl.LazyFrame:
    """Typed columns for ``fields`` (+ :data:`LINE` and ``keep``) and a first-problem code.

    Blank records are dropped. The result carries ``__bad``: null on good records, else the index
    of the first bad field (or the wrong-field-count code); :func:`collect_fields` consumes it.
    """
    table.require([f.source for f in fields])
    schema = table.lf.collect_schema()
    exprs: list[pl.Expr] = []
    codes: list[pl.Expr] = []
    if table.count_bad is not None:
        codes.append(pl.when(table.count_bad).then(pl.lit(_BAD_COUNT, pl.UInt8)))
    nums = {
        f"__num{i}": _number(pl.col(f.source), schema[f.source])
        for i, f in enumerate(fields)
        if f.kind in ("float", "int")
    }
    nums.update(
        {
            f"__num{i}": _flag(pl.col(f.source))
            for i, f in enumerate(fields)
            if f.kind == "bool" and schema[f.source] == pl.String
        }
    )
    for i, f in enumerate(fields):
        raw = pl.col(f.source)
        num = pl.col(f"__num{i}") if f"__num{i}" in nums else None
        val, bad, _ = _parse(raw, f, schema[f.source], num)
        if f.required:
            bad = bad | val.is_null()
        codes.append(pl.when(bad).then(pl.lit(i, pl.UInt8)))
        exprs.append(val.alias(f.out))
    lf = table.lf if table.blank is None else table.lf.filter(~table.blank)
    if nums:
        lf = lf.with_columns(**nums)
    extra = [] if table.suspect is None else [table.suspect.alias(_SUSPECT)]
    return lf.select(
        pl.col(LINE), *[pl.col(k) for k in keep], *exprs, pl.coalesce(codes).alias(_BAD), *extra
    )


def collect_fields(
    table: Table,
    fields: Sequence[Field],
    keep: Sequence[str] = (),
    post: pl.Expr | None = None,
) -> pl.DataFrame:
    """Collect :func:`parse_fields` (streaming engine), raising on the first bad record."""
    lf = parse_fields(table, fields, keep)
    try:
        df = lf.collect(engine="streaming")
    except pl.exceptions.PolarsError as e:
        raise diagnose(table, e) from e
    if _SUSPECT in df.columns:
        suspects = df.filter(pl.col(_SUSPECT)).get_column(LINE)
        df = df.drop(_SUSPECT)
        if suspects.len():
            blank = _check_suspects(table, suspects)
            if blank.len():
                df = df.filter(~pl.col(LINE).is_in(blank.implode()))
    bad = df.filter(pl.col(_BAD).is_not_null())
    if bad.height:
        raise located_error(table, fields, int(bad.item(0, LINE)), int(bad.item(0, _BAD)))
    df = df.drop(_BAD)
    if post is not None:
        df = df.filter(post)
    return df


def _check_suspects(table: Table, records: pl.Series) -> pl.Series:
    """Re-count the fields of CSV ``records`` on their raw lines; return the blank ones.

    Raises on the first record whose field count differs from the header's. Lines without a
    quote are counted by separators (vectorised); quoted ones by :mod:`csv` (exact).
    """
    sep = table.csv_sep or ","
    offset = table.first_line - 1  # record index -> 0-based physical line
    raw = (
        lines_frame(table.path)
        .filter(pl.col(LINE).is_in((records + offset).implode()))
        .select(
            (pl.col(LINE) - offset).alias(LINE),
            pl.col(_RAW).fill_null(""),
        )
        .collect()
    )
    blank = raw.filter(pl.col(_RAW).str.strip_chars().str.len_bytes() == 0)
    rest = raw.filter(pl.col(_RAW).str.strip_chars().str.len_bytes() > 0)
    plain = rest.filter(~pl.col(_RAW).str.contains('"', literal=True)).with_columns(
        (pl.col(_RAW).str.count_matches(sep, literal=True) + 1).alias(_FIELDS)
    )
    wrong = plain.filter(pl.col(_FIELDS) != table.expected_fields)
    found: list[tuple[int, int]] = [(int(r), int(n)) for r, n in wrong.select(LINE, _FIELDS).rows()]
    for rec, text in (
        rest.filter(pl.col(_RAW).str.contains('"', literal=True)).select(LINE, _RAW).rows()
    ):
        n = len(next(csv.reader([text], delimiter=sep)))
        if n != table.expected_fields:
            found.append((int(rec), n))
    if found:
        rec, n = min(found)
        raise IngestError(
            f"{table.where(rec)}: wrong column count: expected {table.expected_fields} fields, "
            f"found {n}"
        )
    return blank.get_column(LINE)


def located_error(table: Table, fields: Sequence[Field], index: int, code: int) -> IngestError:
    """The error for record ``index`` whose first problem has code ``code``."""
    row = table.lf.filter(pl.col(LINE) == index).collect()
    where = table.where(index)
    if code == _BAD_COUNT:
        found = _field_count(table, index, row)
        got = f", found {found}" if found is not None else ""
        return IngestError(
            f"{where}: wrong column count: expected {table.expected_fields} fields{got}"
        )
    f = fields[code]
    value = row.item(0, f.source) if row.height else None
    if value is None or (isinstance(value, str) and not value.strip()):
        return IngestError(f"{where}: field {f.source!r}: missing value")
    _, _, problem = _parse(pl.col(f.source), f, row.schema[f.source])
    return IngestError(f"{where}: field {f.source!r}: {problem}: {value!r}")


def _field_count(table: Table, index: int, row: pl.DataFrame) -> int | None:
    if _FIELDS in row.columns and row.height:
        return int(row.item(0, _FIELDS))
    # CSV: re-read the record with the csv module (exact, and only on this error path).
    if table.csv_sep is None:
        return None
    with table.path.open(newline="", encoding="utf-8", errors="replace") as fh:
        reader = csv.reader(fh, delimiter=table.csv_sep)
        for i, rec in enumerate(reader):
            if i == index + 1:
                return len(rec)
    return None


def diagnose(table: Table, err: Exception) -> IngestError:
    """Turn a Polars read failure (e.g. a record with too many fields) into a located error."""
    if table.csv_sep is not None and table.expected_fields is not None:
        with table.path.open(newline="", encoding="utf-8", errors="replace") as fh:
            reader = csv.reader(fh, delimiter=table.csv_sep)
            for rec in reader:
                if len(rec) > table.expected_fields:
                    return IngestError(
                        f"{table.path}: line {reader.line_num}: wrong column count: expected "
                        f"{table.expected_fields} fields, found {len(rec)}"
                    )
    msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return IngestError(f"{table.path}: cannot parse: {msg}")


def decode_latin1(path: Path) -> bytes:
    """The file's bytes re-encoded as UTF-8 from Latin-1 (MovieLens 100K/1M side files)."""
    if not path.is_file():
        raise IngestError(f"{path}: file not found")
    return path.read_bytes().decode("latin-1").encode("utf-8")


def decode_text(path: Path) -> bytes:
    """UTF-8 bytes of a text file that may be UTF-8 or (older MovieLens) Latin-1."""
    if not path.is_file():
        raise IngestError(f"{path}: file not found")
    raw = path.read_bytes()
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1").encode("utf-8")
    return raw
