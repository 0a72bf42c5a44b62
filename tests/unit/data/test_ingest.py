"""Ingestion of every format from small hand-written fixtures, with hand-checked answers."""

from __future__ import annotations

import datetime as dt
import itertools
from pathlib import Path

import polars as pl
import pytest

from shortrec import schema as S
from shortrec.config import IngestConfig
from shortrec.data.ingest import FORMATS, ingest
from shortrec.data.io import Dataset

FIX = Path(__file__).resolve().parents[2] / "fixtures" / "ingest"
UTC = dt.UTC


def run(
    fmt: str, src: Path, out: Path, mapping: dict[str, str] | None = None, **cfg: object
) -> tuple[dict[str, object], Dataset]:
    summary = ingest(
        fmt,
        src,
        out,
        IngestConfig(**cfg),
        mapping=mapping,  # type: ignore[arg-type]
        progress=False,
    )
    ds = Dataset.open(out)
    assert ds.validate() == []
    return summary, ds


def ext(ds: Dataset, name: str, idx: pl.Series) -> list[str]:
    """External ids of dense indices ``idx`` through vocab/NAME."""
    v = ds.vocab(name)
    m = dict(zip(v[S.IDX].to_list(), v[S.ID].to_list(), strict=True))
    return [m[i] for i in idx.to_list()]


def events(ds: Dataset) -> pl.DataFrame:
    ev = ds.events().collect().sort(S.EVENT_ID)
    return ev.with_columns(
        pl.Series("u", ext(ds, "users", ev[S.USER_IDX])),
        pl.Series("v", ext(ds, "videos", ev[S.VIDEO_IDX])),
    )


def test_formats_tuple() -> None:
    assert FORMATS == ("movielens", "kuairec", "kuairand", "seq-pairs", "seq-lines", "csv")


def test_movielens_100k(tmp_path: Path) -> None:
    summary, ds = run("movielens", FIX / "ml-100k", tmp_path / "out")
    ev = events(ds)
    # sorted by (ts, line): u.data lines 3,1,2,5,4 by timestamp (lines 2 and 5 tie)
    assert list(zip(ev["u"], ev["v"], strict=True)) == [
        ("1", "20"),
        ("1", "10"),
        ("2", "20"),
        ("2", "10"),
        ("3", "10"),
    ]
    assert ev[S.EVENT_ID].to_list() == [0, 1, 2, 3, 4]
    assert ev[S.TS][0] == dt.datetime.fromtimestamp(881250948, UTC)
    assert ev[S.LIKED].to_list() == [True, True, False, True, False]  # rating >= 4
    for col in (S.WATCH_TIME_S, S.WATCH_RATIO, S.SKIPPED, S.SESSION_ID, S.POSITION):
        assert ev[col].null_count() == ev.height
    assert summary["counts"] == {  # type: ignore[comparison-overlap]
        "events": 5,
        "users": 3,
        "videos": 3,
        "vocab_users": 3,
        "vocab_videos": 3,
        "vocab_creators": 3,
        "vocab_tags": 6,
        "vocab_categories": 2,
    }
    v = ds.videos().collect().sort(S.VIDEO_IDX)
    vid = ext(ds, "videos", v[S.VIDEO_IDX])
    row = {vid[i]: v.row(i, named=True) for i in range(v.height)}
    tags = ds.vocab("tags")[S.ID].to_list()
    cats = ds.vocab("categories")[S.ID].to_list()
    assert [tags[t] for t in row["10"][S.TAGS]] == ["Animation", "Children's", "Comedy"]
    assert cats[row["10"][S.CATEGORY]] == "Animation"
    assert row["10"][S.UPLOAD_TS] == dt.datetime(1995, 1, 1, tzinfo=UTC)
    assert row["20"][S.TITLE] == "Café Noir (1996)"  # Latin-1 decoded
    assert row["20"][S.TAGS] == [] and row["20"][S.CATEGORY] is None  # genre 'unknown'
    assert [tags[t] for t in row["30"][S.TAGS]] == ["Action", "Crime", "Thriller"]
    # no creators in MovieLens: each video its own
    assert v[S.CREATOR_IDX].n_unique() == v.height
    assert ds.vocab("creators")[S.ID].to_list()[0].startswith("video:")
    u = ds.users().collect().sort(S.USER_IDX)
    assert u[S.AGE_BUCKET].to_list() == ["18-24", None, "45+"]  # 24, 12 (<13), 53
    assert u[S.REGION].to_list() == ["US", "US", None]  # T8H1N is no US ZIP
    m = ds.manifest
    assert m["kind"] == "ingested" and m["source"] == "movielens" and m["sequence"] is False
    assert m["synthetic_ts"] is False and m["skip_threshold_s"] == 2.0
    assert "rating >= 4.0" in m["derivations"][S.LIKED]


def test_movielens_like_threshold_off(tmp_path: Path) -> None:
    _, ds = run("movielens", FIX / "ml-100k" / "u.data", tmp_path / "o", like_rating_threshold=None)
    assert ds.events().collect()[S.LIKED].null_count() == 5
    assert S.LIKED not in ds.manifest["derivations"]


def test_movielens_1m(tmp_path: Path) -> None:
    _, ds = run("movielens", FIX / "ml-1m" / "ratings.dat", tmp_path / "o")
    ev = events(ds)
    assert list(zip(ev["u"], ev["v"], strict=True)) == [("1", "10"), ("2", "10"), ("1", "20")]
    tags = ds.vocab("tags")[S.ID].to_list()
    assert tags == ["Animation", "Children's", "Comedy", "Adventure", "Fantasy"]
    u = ds.users().collect().sort(S.USER_IDX)
    assert u[S.AGE_BUCKET].to_list() == [None, "45+"]  # code 1 (under 18) and 56
    assert u[S.REGION].to_list() == ["US", "US"]  # ZIP and ZIP+4


def test_movielens_latest_csv(tmp_path: Path) -> None:
    _, ds = run("movielens", FIX / "ml-latest", tmp_path / "o")
    ev = events(ds)
    assert ev["v"].to_list() == ["3", "1", "1"]
    assert ev[S.LIKED].to_list() == [True, True, False]  # 4.5, 4.0, 2.5
    v = ds.videos().collect().sort(S.VIDEO_IDX)
    assert ext(ds, "videos", v[S.VIDEO_IDX]) == ["3", "1", "5"]  # movie 5: catalogue only
    assert v[S.TITLE].to_list()[1] == "American President, The (1995)"
    assert v[S.TAGS].to_list()[0] == []  # (no genres listed)


def test_movielens_recbole_atomic(tmp_path: Path) -> None:
    _, ds = run("movielens", FIX / "ml-atomic", tmp_path / "o")
    ev = events(ds)
    assert list(zip(ev["u"], ev["v"], strict=True)) == [
        ("196", "242"),
        ("196", "302"),
        ("186", "302"),
    ]
    v = ds.videos().collect().sort(S.VIDEO_IDX)
    tags = ds.vocab("tags")[S.ID].to_list()
    assert [tags[t] for t in v[S.TAGS][1]] == ["Crime", "Film-Noir", "Mystery", "Thriller"]
    assert v[S.TITLE].to_list() == ["Kolya", "L.A. Confidential"]
    u = ds.users().collect().sort(S.USER_IDX)
    assert u[S.AGE_BUCKET].to_list() == ["45+", "35-44"]


def test_kuairec(tmp_path: Path) -> None:
    summary, ds = run("kuairec", FIX / "kuairec", tmp_path / "o", kuairec_matrix="small")
    assert summary["dropped"] == {"missing_ts": 1}
    assert ds.manifest["dropped"] == {"missing_ts": 1}
    ev = events(ds)
    assert ev["v"].to_list() == ["183", "148", "183", "3649"]
    assert ev[S.WATCH_TIME_S].to_list() == pytest.approx([0.0, 4.381, 1.0, 22.422])
    assert ev[S.WATCH_RATIO].to_list() == pytest.approx([0.0, 0.722103, 0.092021, 2.063311])
    assert ev[S.SKIPPED].to_list() == [True, False, True, False]  # < 2 s
    assert ev[S.LIKED].null_count() == 4
    v = ds.videos().collect().sort(S.VIDEO_IDX)
    ids = ext(ds, "videos", v[S.VIDEO_IDX])
    assert ids == ["183", "148", "3649", "9999"]
    assert v[S.DURATION_S].to_list() == pytest.approx([10.867, 6.067, 10.867, None])
    creators = ext(ds, "creators", v[S.CREATOR_IDX])
    assert creators == ["42", "3309", "video:3649", "video:9999"]
    tags = ds.vocab("tags")[S.ID].to_list()
    assert [tags[t] for t in v[S.TAGS][0]] == ["27", "9"]


def test_kuairec_missing_ts_error(tmp_path: Path) -> None:
    with pytest.raises(S.BadInput, match=r"small_matrix.csv: line 5: field 'timestamp'"):
        ingest(
            "kuairec",
            FIX / "kuairec" / "small_matrix.csv",
            tmp_path / "o",
            IngestConfig(drop_missing_ts=False),
            progress=False,
        )
    assert not (tmp_path / "o").exists()


def test_kuairand(tmp_path: Path) -> None:
    _, ds = run("kuairand", FIX / "kuairand", tmp_path / "o")
    assert ds.manifest["source_files"][:2] == [
        "log_random_4_22_to_5_08_x.csv",
        "log_standard_4_08_to_4_21_x.csv",
    ]
    ev = events(ds)
    assert list(zip(ev["u"], ev["v"], strict=True)) == [
        ("1", "10"),
        ("0", "10"),
        ("0", "11"),
        ("1", "12"),
    ]
    assert ev[S.WATCH_TIME_S].to_list() == pytest.approx([9.0, 20.0, 1.5, 3.0])
    assert ev[S.WATCH_RATIO].to_list()[:3] == pytest.approx([0.6, 20 / 15, 0.05])
    assert ev[S.WATCH_RATIO][3] is None  # duration_ms = 0
    assert ev[S.SKIPPED].to_list() == [False, False, True, False]
    assert ev[S.LIKED].to_list() == [False, True, False, False]
    assert ev[S.FOLLOWED].to_list() == [True, False, False, False]
    assert ev[S.SHARED].to_list() == [False, False, True, False]
    assert ev[S.POLICY].to_list() == ["logged", "logged", "logged", "random"]
    v = ds.videos().collect().sort(S.VIDEO_IDX)
    assert ext(ds, "creators", v[S.CREATOR_IDX]) == ["441", "441", "7"]
    assert v[S.DURATION_S].to_list() == pytest.approx([15.0, 30.0, None])
    tags = ds.vocab("tags")[S.ID].to_list()
    assert [[tags[t] for t in ts] for ts in v[S.TAGS]] == [["12", "65"], ["8"], []]
    assert v[S.UPLOAD_TS][0] == dt.datetime(2022, 3, 1, tzinfo=UTC)
    # user 2 appears only in user_features: kept in the catalogue and the vocabulary
    assert ds.users().collect().height == 3
    assert ds.vocab("users")[S.ID].to_list() == ["1", "0", "2"]


def test_seq_pairs(tmp_path: Path) -> None:
    _, ds = run("seq-pairs", FIX / "seq" / "pairs.txt", tmp_path / "o")
    ev = events(ds)
    assert ds.manifest["sequence"] is True and ds.manifest["synthetic_ts"] is True
    per_user = ev.group_by("u", maintain_order=True).agg("v", S.TS).sort("u")
    assert per_user["v"].to_list() == [["a", "b", "c"], ["b", "a"]]
    for ts in per_user[S.TS].to_list():
        assert all(a < b for a, b in itertools.pairwise(ts))  # strictly increasing


def test_seq_lines(tmp_path: Path) -> None:
    _, ds = run("seq-lines", FIX / "seq" / "lines.txt", tmp_path / "o")
    ev = events(ds)
    per_user = ev.sort(S.TS, S.EVENT_ID).group_by("u", maintain_order=True).agg("v").sort("u")
    assert per_user["v"].to_list() == [["a", "b", "c"], ["b", "a"], ["c"]]
    assert ev.height == 6 and ds.manifest["synthetic_ts"] is True


def test_generic_csv_and_parquet(tmp_path: Path) -> None:
    mapping = {
        "user_idx": "uid",
        "video_idx": "vid",
        "ts": "when",
        "watch_time_s": "watched",
        "duration_s": "dur",
        "liked": "like",
        "creator_idx": "creator",
    }
    _, ds = run("csv", FIX / "csv" / "events.csv", tmp_path / "a", mapping)
    ev = events(ds)
    assert list(zip(ev["u"], ev["v"], strict=True)) == [
        ("bob", "v2"),
        ("alice", "v1"),
        ("alice", "v2"),
    ]
    assert ev[S.TS][2] == dt.datetime(2024, 1, 1, 10, tzinfo=UTC)  # +01:00 converted
    assert ev[S.SKIPPED].to_list() == [False, True, False]
    assert ev[S.LIKED].to_list() == [True, False, True]
    assert ev[S.WATCH_RATIO].to_list() == pytest.approx([0.6, 0.05, 1.25])
    assert ds.manifest["mapping"] == mapping
    # the same data as Parquet, typed columns and epoch-second timestamps
    src = pl.read_csv(FIX / "csv" / "events.csv").with_columns(
        pl.col("when").str.to_datetime(time_zone="UTC").dt.epoch("s"),
        pl.col("like").replace({"true": "1"}).cast(pl.Int8),
    )
    pq = tmp_path / "events.parquet"
    src.write_parquet(pq)
    _, ds2 = run("csv", pq, tmp_path / "b", mapping)
    assert events(ds2).drop(S.USER_IDX, S.VIDEO_IDX).equals(ev.drop(S.USER_IDX, S.VIDEO_IDX))


def test_events_parts_and_vocab_round_trip(tmp_path: Path) -> None:
    _, ds = run("movielens", FIX / "ml-100k", tmp_path / "o", events_per_part=2)
    parts = sorted((tmp_path / "o" / "events").glob("part-*.parquet"))
    assert [p.name for p in parts] == [
        "part-00000.parquet",
        "part-00001.parquet",
        "part-00002.parquet",
    ]
    ev = events(ds)
    # round trip: external ids -> idx -> external ids reproduces the source pairs and ratings
    src = pl.read_csv(
        FIX / "ml-100k" / "u.data",
        separator="\t",
        has_header=False,
        new_columns=["u", "v", "r", "t"],
        schema_overrides={"u": pl.String, "v": pl.String},
    )
    assert sorted(zip(ev["u"], ev["v"], strict=True)) == sorted(
        zip(src["u"], src["v"], strict=True)
    )
    for name in ("users", "videos", "creators", "tags", "categories"):
        voc = ds.vocab(name)
        assert voc[S.IDX].to_list() == list(range(voc.height))
        assert voc[S.ID].n_unique() == voc.height
