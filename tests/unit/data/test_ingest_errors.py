"""Bad input: every error names file, line and field; output appears atomically or not at all."""

from __future__ import annotations

from pathlib import Path

import pytest

from shortrec import schema as S
from shortrec.config import IngestConfig
from shortrec.data import ingest as ingest_mod
from shortrec.data.ingest import ingest
from shortrec.data.io import Dataset

FIX = Path(__file__).resolve().parents[2] / "fixtures" / "ingest"
CFG = IngestConfig()

KR_HEADER = (
    "user_id,video_id,date,hourmin,time_ms,is_click,is_like,is_follow,is_comment,"
    "is_forward,is_hate,long_view,play_time_ms,duration_ms,profile_stay_time,"
    "comment_stay_time,is_profile_enter,is_rand,tab"
)
KR_ROW = "0,10,20220408,1000,1649383200000,1,1,0,0,0,0,1,20000,15000,0,0,0,0,1"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def fails(fmt: str, src: Path, out: Path, pattern: str, **kw: object) -> None:
    with pytest.raises(S.BadInput, match=pattern):
        ingest(fmt, src, out, CFG, progress=False, **kw)  # type: ignore[arg-type]
    assert not out.exists()


def test_unknown_format_lists_valid(tmp_path: Path) -> None:
    fails(
        "netflix",
        FIX / "ml-100k",
        tmp_path / "o",
        r"unknown format 'netflix'; valid formats: movielens, kuairec, kuairand, seq-pairs, "
        r"seq-lines, csv",
    )


def test_missing_source(tmp_path: Path) -> None:
    fails("movielens", tmp_path / "nope", tmp_path / "o", r"nope: not found")


@pytest.mark.parametrize(
    "fmt,name",
    [
        ("movielens", "u.data"),
        ("seq-pairs", "p.txt"),
        ("seq-lines", "l.txt"),
        ("kuairand", "log_a.csv"),
    ],
)
def test_empty_file(tmp_path: Path, fmt: str, name: str) -> None:
    src = write(tmp_path / "src" / name, "")
    fails(fmt, src, tmp_path / "o", rf"{name}: empty file")


def test_header_only_has_no_interactions(tmp_path: Path) -> None:
    src = write(tmp_path / "log_a.csv", KR_HEADER + "\n")
    fails("kuairand", src, tmp_path / "o", r"log_a.csv: no interactions")


def test_wrong_column_count_delimited(tmp_path: Path) -> None:
    src = write(tmp_path / "u.data", "1\t2\t3\t881250949\n1\t2\t3\n")
    fails(
        "movielens",
        src,
        tmp_path / "o",
        r"u.data: line 2: wrong column count: expected 4 fields, found 3",
    )


def test_wrong_column_count_csv_too_few_and_too_many(tmp_path: Path) -> None:
    few = write(tmp_path / "a" / "log_a.csv", f"{KR_HEADER}\n{KR_ROW}\n0,10,20220408\n")
    fails(
        "kuairand",
        few,
        tmp_path / "o",
        r"log_a.csv: line 3: wrong column count: expected 19 fields, found 3",
    )
    many = write(tmp_path / "b" / "log_a.csv", f"{KR_HEADER}\n{KR_ROW}\n{KR_ROW},7\n")
    fails(
        "kuairand",
        many,
        tmp_path / "o",
        r"log_a.csv: line 3: wrong column count: expected 19 fields, found 20",
    )


def test_seq_pairs_column_count(tmp_path: Path) -> None:
    src = write(tmp_path / "p.txt", "u1 a\nu1 b c\n")
    fails("seq-pairs", src, tmp_path / "o", r"p.txt: line 2: wrong column count")
    src = write(tmp_path / "l.txt", "u1 a b\nu2\n")
    fails("seq-lines", src, tmp_path / "o", r"l.txt: line 2: wrong column count")


def test_bad_number(tmp_path: Path) -> None:
    src = write(tmp_path / "u.data", "1\t2\t3\t881250949\n1\t2\tfive\t881250949\n")
    fails(
        "movielens",
        src,
        tmp_path / "o",
        r"u.data: line 2: field 'rating': not a number in \[0, inf\]: 'five'",
    )
    row = KR_ROW.replace(",20000,", ",20s,")
    src = write(tmp_path / "k" / "log_a.csv", f"{KR_HEADER}\n{KR_ROW}\n{KR_ROW}\n{row}\n")
    fails(
        "kuairand",
        src,
        tmp_path / "o",
        r"log_a.csv: line 4: field 'play_time_ms': not a number in \[0, inf\]: '20s'",
    )


def test_bad_flag_and_negative(tmp_path: Path) -> None:
    row = KR_ROW.replace("1,1,0,0,0,0,1", "1,2,0,0,0,0,1", 1)
    src = write(tmp_path / "log_a.csv", f"{KR_HEADER}\n{row}\n")
    fails("kuairand", src, tmp_path / "o", r"line 2: field 'is_like': not a flag.*'2'")
    row = KR_ROW.replace(",20000,", ",-5,")
    src = write(tmp_path / "b" / "log_a.csv", f"{KR_HEADER}\n{row}\n")
    fails("kuairand", src, tmp_path / "o", r"line 2: field 'play_time_ms': .*'-5'")


def test_missing_required_column(tmp_path: Path) -> None:
    src = write(tmp_path / "log_a.csv", "user_id,video_id,play_time_ms\n1,2,3\n")
    fails("kuairand", src, tmp_path / "o", r"log_a.csv: missing required column\(s\) 'time_ms'")
    src = write(tmp_path / "ev.csv", "u,v\n1,2\n")
    fails(
        "csv",
        src,
        tmp_path / "o",
        r"ev.csv: missing required column\(s\) 't'",
        mapping={"user_idx": "u", "video_idx": "v", "ts": "t"},
    )


def test_missing_required_value(tmp_path: Path) -> None:
    src = write(tmp_path / "ev.csv", "u,v,t\n1,2,5\n,3,6\n")
    fails(
        "csv",
        src,
        tmp_path / "o",
        r"ev.csv: line 3: field 'u': missing value",
        mapping={"user_idx": "u", "video_idx": "v", "ts": "t"},
    )


def test_duplicate_item_ids(tmp_path: Path) -> None:
    d = tmp_path / "ml"
    write(d / "ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n")
    write(d / "movies.csv", "movieId,title,genres\n1,A,Drama\n2,B,Drama\n1,C,Comedy\n")
    fails(
        "movielens",
        d,
        tmp_path / "o",
        r"movies.csv: line 4: field 'movieId': duplicate id '1' \(first at line 2\)",
    )
    fails(
        "seq-lines",
        write(tmp_path / "l.txt", "u1 a\nu2 b\nu1 c\n"),
        tmp_path / "o",
        r"l.txt: line 3: field 'user': duplicate id 'u1' \(first at line 1\)",
    )


def test_bad_mapping(tmp_path: Path) -> None:
    src = FIX / "csv" / "events.csv"
    fails(
        "csv",
        src,
        tmp_path / "o",
        r"unknown column name\(s\) \['watch'\]",
        mapping={"user_idx": "uid", "video_idx": "vid", "ts": "when", "watch": "watched"},
    )
    fails(
        "csv",
        src,
        tmp_path / "o",
        r"required column name\(s\) \['ts'\] not mapped",
        mapping={"user_idx": "uid", "video_idx": "vid"},
    )
    fails("csv", src, tmp_path / "o", r"needs a mapping")
    fails(
        "movielens",
        FIX / "ml-100k",
        tmp_path / "o",
        r"mapping applies only to the csv",
        mapping={"user_idx": "u"},
    )


def test_bad_timestamp_text(tmp_path: Path) -> None:
    src = write(tmp_path / "ev.csv", "u,v,t\n1,2,2024-01-01T00:00:00Z\n1,3,yesterday\n")
    fails(
        "csv",
        src,
        tmp_path / "o",
        r"ev.csv: line 3: field 't': not a date/time.*'yesterday'",
        mapping={"user_idx": "u", "video_idx": "v", "ts": "t"},
    )


def test_failure_keeps_existing_output(tmp_path: Path) -> None:
    out = tmp_path / "o"
    ingest("seq-lines", FIX / "seq" / "lines.txt", out, CFG, progress=False)
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    bad = write(tmp_path / "bad.txt", "u1 a\nu1 b\n")
    with pytest.raises(S.BadInput):
        ingest("seq-lines", bad, out, CFG, progress=False)
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    assert Dataset.open(out).events().collect().height == 6
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_failure_while_writing_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "o"
    ingest("seq-lines", FIX / "seq" / "lines.txt", out, CFG, progress=False)
    calls = {"n": 0}
    real = ingest_mod.io.write_parquet_atomic

    def flaky(df: object, path: Path) -> None:
        calls["n"] += 1
        if calls["n"] == 4:
            raise OSError("disk full")
        real(df, path)  # type: ignore[arg-type]

    monkeypatch.setattr(ingest_mod.io, "write_parquet_atomic", flaky)
    with pytest.raises(OSError, match="disk full"):
        ingest("seq-pairs", FIX / "seq" / "pairs.txt", out, CFG, progress=False)
    assert Dataset.open(out).manifest["source"] == "seq-lines"  # old dataset intact
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    with pytest.raises(OSError, match="disk full"):
        calls["n"] = 0
        ingest("seq-pairs", FIX / "seq" / "pairs.txt", tmp_path / "new", CFG, progress=False)
    assert not (tmp_path / "new").exists()
