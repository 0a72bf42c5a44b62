"""Schema validation: every violation reported, with column, count and examples."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from shortrec import schema as S


def _events(n: int = 4) -> pl.DataFrame:
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    return S.conform(
        pl.DataFrame(
            {
                S.EVENT_ID: list(range(n)),
                S.USER_IDX: [0] * n,
                S.VIDEO_IDX: list(range(n)),
                S.TS: [t0 + dt.timedelta(seconds=i) for i in range(n)],
                S.WATCH_TIME_S: [1.0, 5.0, 12.0, 0.5][:n],
                S.SKIPPED: [True, False, False, True][:n],
            }
        ),
        S.EVENTS,
    )


def test_valid_table_has_no_violations() -> None:
    assert S.validate(_events(), S.EVENTS) == []


def test_every_violation_is_reported_with_counts_and_examples() -> None:
    df = _events().with_columns(
        pl.Series(S.EVENT_ID, [0, 0, 2, 2], dtype=pl.Int64),
        pl.Series(S.WATCH_TIME_S, [-1.0, 5.0, -3.0, float("nan")], dtype=pl.Float32),
        pl.Series(S.USER_IDX, [0, None, 1, 1], dtype=pl.Int32),
    )
    found = {(v.column, v.problem.split(" ")[0]): v for v in S.validate(df, S.EVENTS)}
    neg = found[(S.WATCH_TIME_S, "values")]
    assert neg.count == 2
    assert neg.examples == ("-1.0", "-3.0")
    assert found[(S.WATCH_TIME_S, "NaN")].count == 1
    assert found[(S.USER_IDX, "null")].count == 1
    assert found[(S.EVENT_ID, "duplicate")].count == 4


def test_missing_wrong_type_and_extra_columns() -> None:
    df = (
        _events()
        .drop(S.TS)
        .with_columns(pl.col(S.VIDEO_IDX).cast(pl.Int64), pl.lit(1).alias("surprise"))
    )
    msgs = [str(v) for v in S.validate(df, S.EVENTS)]
    assert "events.ts: missing column" in msgs
    assert any(m.startswith("events.video_idx: dtype Int64, expected Int32") for m in msgs)
    assert any("surprise" in m and "unexpected" in m for m in msgs)


def test_check_raises_naming_the_source() -> None:
    df = _events().with_columns(pl.lit(-5, dtype=pl.Int32).alias(S.USER_IDX))
    with pytest.raises(S.SchemaError, match=r"events\.parquet: 1 schema violation") as e:
        S.check(df, S.EVENTS, "events.parquet")
    assert "events.user_idx: 4 rows: values not >= 0" in str(e.value)
    assert isinstance(e.value, S.BadInput)


def test_conform_orders_columns_and_adds_nullable_ones() -> None:
    df = _events()
    assert df.columns == S.EVENTS.names
    assert df.get_column(S.LIKED).null_count() == df.height
    with pytest.raises(S.SchemaError, match="missing column"):
        S.conform(pl.DataFrame({S.EVENT_ID: [1]}), S.EVENTS)


def test_set_membership_checks() -> None:
    users = S.conform(pl.DataFrame({S.USER_IDX: [0, 1], S.DEVICE: ["ios", "toaster"]}), S.USERS)
    (v,) = S.validate(users, S.USERS)
    assert v.column == S.DEVICE
    assert v.examples == ("'toaster'",)
