"""Builders of tiny experiment logs for the tests (imported by conftest and tests)."""

from __future__ import annotations

import datetime as dt

import polars as pl

from shortrec import schema as S
from shortrec.experiments import logs as L

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def ts(minutes: float) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


def exposure_rows(rows: list[tuple[int, int, float, int, int, int, str]]) -> pl.DataFrame:
    """(request, user, minute, rank, video, category, arm) -> an EXPOSURES frame for 'e'."""
    df = pl.DataFrame(
        {
            S.REQUEST_ID: [r[0] for r in rows],
            S.SESSION_ID: [None] * len(rows),
            S.USER_IDX: [r[1] for r in rows],
            S.TS: [ts(r[2]) for r in rows],
            L.RANK: [r[3] for r in rows],
            S.VIDEO_IDX: [r[4] for r in rows],
            S.CATEGORY: [r[5] for r in rows],
            L.ARMS: [
                [{L.EXPERIMENT: "other", L.ARM: "x"}, {L.EXPERIMENT: "e", L.ARM: r[6]}]
                for r in rows
            ],
            L.CONFIG_VERSION: ["v"] * len(rows),
        },
    )
    return S.conform(df, L.EXPOSURES)


def event_rows(
    rows: list[tuple[int | None, int, int, float, float, float, bool, bool, int]],
) -> pl.DataFrame:
    """(request, user, video, minute, watch_time, watch_ratio, skipped, liked, session)."""
    df = pl.DataFrame(
        {
            S.EVENT_ID: list(range(len(rows))),
            S.REQUEST_ID: [r[0] for r in rows],
            S.SESSION_ID: [r[8] for r in rows],
            S.USER_IDX: [r[1] for r in rows],
            S.VIDEO_IDX: [r[2] for r in rows],
            S.TS: [ts(r[3]) for r in rows],
            S.WATCH_TIME_S: [r[4] for r in rows],
            S.WATCH_RATIO: [r[5] for r in rows],
            S.SKIPPED: [r[6] for r in rows],
            S.LIKED: [r[7] for r in rows],
        },
        schema_overrides={S.REQUEST_ID: pl.Int64},
    )
    return S.conform(df, S.EVENTS)
