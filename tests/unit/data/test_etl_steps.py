"""ETL kernels against brute force: sorted runs, per-key sums, tag explosion, bucket files."""

from __future__ import annotations

import pickle
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from shortrec import schema as S
from shortrec.config import EtlConfig
from shortrec.data import etl
from shortrec.data import etl_steps as T


# ---------------------------------------------------------------- sorted runs
@pytest.mark.parametrize("n", [0, 1, 2, 500])
def test_run_helpers_match_brute_force(n: int) -> None:
    rng = np.random.default_rng(n)
    a = np.sort(rng.integers(0, 7, n))
    b = rng.integers(0, 2, n)  # a second key splits some runs of the first
    firsts = T.run_firsts(a, b)
    new = [i == 0 or (a[i], b[i]) != (a[i - 1], b[i - 1]) for i in range(n)]
    assert firsts.tolist() == [i for i in range(n) if new[i]]
    lens = T.run_lengths(firsts, n)
    assert lens.sum() == n and (lens > 0).all()
    starts = T.run_starts(a, b)
    want_starts = [max(j for j in range(i + 1) if new[j]) for i in range(n)]
    assert starts.tolist() == want_starts
    assert T.firsts_of(starts).tolist() == firsts.tolist()


def test_stable_argsort_of_narrow_and_wide_keys() -> None:
    rng = np.random.default_rng(5)
    for dtype in (np.int32, np.uint16, np.int64):
        k = rng.integers(0, 60_000, 4000).astype(dtype)
        assert np.array_equal(T.stable_argsort(k), np.argsort(k, kind="stable"))
    const = np.full(10, 3)
    assert T.stable_argsort(const).tolist() == list(range(10))


def test_time_order_of_long_spans_and_ties() -> None:
    """Radix passes over the span from the earliest time; a span past 2^48 us falls back."""
    rng = np.random.default_rng(6)
    eid = rng.permutation(3000).astype(np.int64)
    for span in (10, 1 << 40, 1 << 50):
        t = (rng.integers(0, span, 3000) - span // 2).astype(np.int64)
        t[::7] = t[0]  # ties on ts are ordered by event id
        assert np.array_equal(T.time_order(t, eid), np.lexsort((eid, t)))
    assert T.time_order(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)).size == 0


# ---------------------------------------------------------------- per-key sums
def test_key_sums_match_brute_force_and_group_by() -> None:
    """Packed flags (several fields per int64), a scanned watch ratio, a constant and a
    non-flag small indicator; train totals equal a group_by over the train rows."""
    rng = np.random.default_rng(7)
    n = 3000
    key = rng.integers(0, 40, n).astype(np.int32)
    t = rng.integers(0, 500, n).astype(np.int64)
    eid = np.arange(n, dtype=np.int64)
    ind: dict[str, np.ndarray] = {
        T.ENG: rng.integers(0, 2, n).astype(np.int8),
        T.WR: rng.integers(0, 5_000_000, n).astype(np.int64),
        T.WRN: np.ones(n, dtype=np.int8),  # constant
        T.SK: rng.integers(0, 2, n).astype(np.int8),
        T.SKN: rng.integers(0, 4, n).astype(np.int8),  # not a flag: scanned on its own
        T.LK: rng.integers(0, 2, n).astype(np.int8),
        T.LKN: rng.integers(0, 2, n).astype(np.int8),
    }
    train = rng.random(n) < 0.7
    by_time = T.time_order(t, eid)
    k_time = key[by_time]
    step = T.stable_argsort(k_time)
    order = by_time[step]
    got = T.key_sums(ind, order, k_time[step], "_x", train)
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    for i in range(0, n, 97):
        before = (key == key[i]) & (rank < rank[i])
        assert got.prior["_x" + T.N][i] == before.sum()
        for name, x in ind.items():
            assert got.prior["_x" + name][i] == x[before].astype(np.int64).sum(), name
    assert got.prior["_x" + T.WR].dtype == np.int64
    assert got.prior["_x" + T.ENG].dtype == np.int32
    frame = pl.DataFrame({"k": key, **{c: x for c, x in ind.items()}}).filter(pl.Series(train))
    want = frame.group_by("k").agg(T.stat_sums("_x")).sort("k")
    have = pl.DataFrame(
        [pl.Series("k", got.keys, dtype=pl.Int32)]
        + [pl.Series(c, v, dtype=pl.Int64) for c, v in got.train.items()]
    )
    assert have.equals(want)


# ---------------------------------------------------------------- catalogue
def test_explode_tags_padded_rows_match_offsets() -> None:
    videos = pl.DataFrame(
        {
            S.VIDEO_IDX: pl.Series([0, 1, 2, 3], dtype=pl.Int32),
            S.CREATOR_IDX: pl.Series([0, 0, 1, 1], dtype=pl.Int32),
            S.TAGS: pl.Series([[5, 2, 5], [], [7], [1, None, 3]], dtype=pl.List(pl.Int32)),
            S.UPLOAD_TS: pl.Series([0, 0, None, 0], dtype=pl.Int64).cast(S.UTC_TS),
        }
    )
    cat = T.Catalogue.from_frame(videos)
    assert cat.tag_matrix is not None and cat.tag_matrix.shape == (4, 2)
    row = np.array([3, 0, 1, 2, 0], dtype=np.int64)
    ev, tags = cat.explode_tags(row)
    ev2, tags2 = replace(cat, tag_matrix=None).explode_tags(row)
    assert ev.tolist() == ev2.tolist() == [0, 0, 1, 1, 3, 4, 4]
    assert tags.tolist() == tags2.tolist() == [1, 3, 2, 5, 7, 2, 5]
    skewed = pl.concat([videos] * 5).with_columns(
        pl.Series(S.VIDEO_IDX, range(20), dtype=pl.Int32),
        pl.Series(S.TAGS, [list(range(40))] + [[1]] * 19, dtype=pl.List(pl.Int32)),
    )
    wide = T.Catalogue.from_frame(skewed)
    assert wide.tag_matrix is None  # padding 20 rows to 40 tags: 800 cells for 59 tags
    ev, tags = wide.explode_tags(np.array([1, 0], dtype=np.int64))
    assert ev.tolist() == [0] + [1] * 40 and tags.tolist() == [1, *range(40)]


# ---------------------------------------------------------------- runner pieces
def test_job_pickles_with_its_catalogue_and_without_the_videos(tmp_path: Path) -> None:
    videos = pl.DataFrame(
        {
            S.VIDEO_IDX: pl.Series(range(1000), dtype=pl.Int32),
            S.CREATOR_IDX: pl.Series([i % 7 for i in range(1000)], dtype=pl.Int32),
            S.TAGS: pl.Series([[i % 11] for i in range(1000)], dtype=pl.List(pl.Int32)),
            S.UPLOAD_TS: pl.Series([0] * 1000, dtype=pl.Int64).cast(S.UTC_TS),
        }
    ).lazy()
    ctx = etl.BucketContext(videos, etl.Cutoffs(0, 0), 0, EtlConfig(), "x")
    job = etl._Job(ctx, 4, tmp_path, tmp_path, False)
    back = pickle.loads(pickle.dumps(job))
    assert back.ctx.videos.collect().height == 0
    assert back.ctx.videos.collect_schema() == videos.collect_schema()
    assert np.array_equal(back.ctx.catalogue.tag_values, ctx.catalogue.tag_values)
    kept = back.context(etl.Cutoffs(1, 2))  # new cut-offs keep the shipped catalogue
    assert kept.catalogue is back.ctx.catalogue and kept.cutoffs == etl.Cutoffs(1, 2)


def test_tmp_parts_of_a_chunked_frame(tmp_path: Path) -> None:
    """A frame of several chunks (as read from Parquet) splits like its rechunked copy, and
    reads back as one chunk per column."""
    rng = np.random.default_rng(8)
    parts = [
        pl.DataFrame(
            {
                "a": rng.integers(0, 100, 50),
                "s": rng.choice(["p", "qq", None], 50).tolist(),
                "b": rng.integers(0, 3, 50).astype(np.int32),
            }
        )
        for _ in range(3)
    ]
    df = pl.concat(parts, rechunk=False)
    assert df.n_chunks() == 3
    etl._write_tmp_parts(df, df["b"].to_numpy(), 3, tmp_path / "x.arrow")
    for k in range(3):
        got = etl._read_tmp_parts(tmp_path, k)
        assert got is not None and got.n_chunks() == 1
        assert got.equals(df.filter(pl.col("b") == k))
