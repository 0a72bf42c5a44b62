"""Shared fixture: a tiny hand-computable experiment log (builders in abtest_helpers)."""

from __future__ import annotations

import polars as pl
import pytest
from abtest_helpers import event_rows, exposure_rows


@pytest.fixture
def tiny_logs() -> tuple[pl.DataFrame, pl.DataFrame]:
    exposures = exposure_rows(
        [
            (1, 0, 10, 0, 10, 1, "c"),
            (1, 0, 10, 1, 11, 1, "c"),
            (1, 0, 10, 2, 12, 2, "c"),
            (2, 1, 10, 0, 10, 1, "c"),
            (2, 1, 10, 1, 13, 2, "c"),
            (3, 2, 10, 0, 14, 1, "t"),
            (3, 2, 10, 1, 15, 2, "t"),
            (3, 2, 10, 2, 16, 3, "t"),
            (4, 3, 10, 0, 10, 1, "t"),
            (4, 3, 10, 1, 11, 1, "t"),
        ]
    )
    events = event_rows(
        [
            (None, 0, 99, 1, 30.0, 3.0, False, True, 90),  # before exposure: ignored
            (1, 0, 10, 11, 5.0, 0.5, False, True, 100),
            (1, 0, 11, 12, 0.5, 0.05, True, False, 100),
            (2, 1, 10, 11, 10.0, 1.0, False, False, 101),
            (2, 1, 13, 12, 20.0, 2.5, False, False, 102),
            (3, 2, 14, 11, 0.1, 0.0, True, False, 103),
            (3, 2, 15, 12, 15.0, 1.5, False, False, 103),
            (3, 2, 16, 13, 2.0, 0.2, False, False, 103),
        ]
    )
    return exposures, events
