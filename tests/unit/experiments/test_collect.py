"""The service's JSON-lines experiment logs -> analysed tables (experiments/collect.py):
hand-computed mapping on a tiny log, the writer/reader contract with serving/exposure.py,
and an error naming file, line and field for every kind of malformed line."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
import polars as pl
import pytest

from shortrec import schema as S
from shortrec.experiments import collect as C
from shortrec.experiments import logs as L
from shortrec.serving.exposure import ExposureLog, OutcomeLog, outcome_record

T0 = 1_767_225_600_000_000  # 2026-01-01 UTC, in µs


def _page(rid: int, user: str, arm: str | None, vids: list[int], **kw: Any) -> dict[str, Any]:
    return {
        "request_id": rid,
        "user_id": user,
        "session_id": 1,
        "ts_us": T0 + rid,
        "model_version": "m",
        "config_version": "v1",
        "degraded": False,
        "arms": [] if arm is None else [{"experiment": "e", "arm": arm}],
        "items": [
            {"video_idx": v, "rank": r, "score": 0.5, "sources": ["trending"]}
            for r, v in enumerate(vids)
        ],
        **kw,
    }


def _event(eid: int, user: str, rid: int | None, vid: int, **kw: Any) -> dict[str, Any]:
    return {
        "event_id": eid,
        "request_id": rid,
        "user_id": user,
        "session_id": 1,
        "video_idx": vid,
        "ts_us": T0 + 1_000,
        "watch_time_s": 4.0,
        "watch_ratio": 0.4,
        "skipped": False,
        "liked": False,
        "shared": False,
        "followed": False,
        **kw,
    }


def _write(path: Path, records: list[Any]) -> None:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))


def _categories(v: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Category = video // 10 for videos below 100, unknown (-1) above."""
    out: npt.NDArray[np.int64] = np.where(v < 100, v // 10, -1)
    return out


def test_tiny_log_maps_users_categories_and_drops_replays(tmp_path: Path) -> None:
    _write(
        tmp_path / "exposures-11.jsonl",
        [_page(1, "zoe", "t", [10, 21]), _page(2, "al", "c", [35]), _page(3, "al", "c", [])],
    )
    _write(tmp_path / "exposures-12.jsonl", [_page(4, "bo", None, [500])])
    _write(
        tmp_path / "outcomes-11.jsonl",
        [
            _event(7, "zoe", 1, 10, liked=True),
            _event(8, "zoe", 1, 21, watch_ratio=None, skipped=True),
            _event(9, "al", 99, 35),  # names no logged page: kept, counted
        ],
    )
    # worker 12 applied a replay of zoe's event 7 too, and bo's event 1 has no request id
    _write(
        tmp_path / "outcomes-12.jsonl",
        [_event(7, "zoe", 1, 10, liked=True), _event(1, "bo", None, 500)],
    )
    t = C.build_tables(C.read_service_logs(tmp_path), _categories)

    assert t.users.rows() == [(0, "al"), (1, "bo"), (2, "zoe")]  # sorted ids
    x = t.exposures.sort(S.REQUEST_ID, L.RANK)
    assert x[S.REQUEST_ID].to_list() == [1, 1, 2, 4]  # the empty page has no row
    assert x[S.USER_IDX].to_list() == [2, 2, 0, 1]
    assert x[L.RANK].to_list() == [0, 1, 0, 0]
    assert x[S.CATEGORY].to_list() == [1, 2, 3, None]
    assert x[L.ARMS].to_list()[0] == [{"experiment": "e", "arm": "t"}]
    assert x[L.ARMS].to_list()[3] == []
    assert x[S.TS].to_list()[0] == dt.datetime(2026, 1, 1, 0, 0, 0, 1, tzinfo=dt.UTC)
    assert S.validate(t.exposures, L.EXPOSURES) == []

    e = t.events
    assert S.validate(e, S.EVENTS) == []
    assert e[S.EVENT_ID].to_list() == [7, 8, 9, 1]  # unique already: kept as sent
    assert e[S.USER_IDX].to_list() == [2, 2, 0, 1]
    assert e[S.POLICY].to_list() == ["e:t", "e:t", None, None]
    assert e[S.WATCH_RATIO].to_list()[1] is None and e[S.SKIPPED].to_list()[1]
    assert t.stats == {
        "files": 4,
        "partial_lines_skipped": 0,
        "pages": 4,
        "empty_pages": 1,
        "exposure_rows": 4,
        "users": 3,
        "events_logged": 5,
        "events": 4,
        "duplicate_events_dropped": 1,
        "events_unmatched": 1,
        "events_without_request": 1,
        "event_ids_renumbered": False,
        "videos_without_category": 1,
        "config_versions": {"v1": 4},
    }


def test_event_ids_reused_by_two_users_are_renumbered(tmp_path: Path) -> None:
    _write(tmp_path / "exposures-1.jsonl", [_page(1, "a", "c", [1]), _page(2, "b", "t", [2])])
    _write(tmp_path / "outcomes-1.jsonl", [_event(0, "a", 1, 1), _event(0, "b", 2, 2)])
    t = C.build_tables(C.read_service_logs(tmp_path), _categories)
    assert t.events[S.EVENT_ID].to_list() == [0, 1]
    assert t.events[S.USER_IDX].to_list() == [0, 1]
    assert t.stats["event_ids_renumbered"] is True


def test_what_the_service_writes_is_what_collect_reads(tmp_path: Path) -> None:
    xlog, olog = ExposureLog(tmp_path), OutcomeLog(tmp_path)
    xlog.write(_page(5, "u1", "t", [3, 4]))
    olog.write_many(
        outcome_record(i, 5, "u1", 2, v, T0 + 9, 3.0, float("nan"), i == 1, True, False, True)
        for i, v in enumerate((3, 4))
    )
    olog.write_many([])  # an empty batch writes nothing
    xlog.close()
    olog.close()
    assert xlog.path.name.startswith(L.EXPOSURE_LOG_PREFIX)
    assert olog.path.name.startswith(L.OUTCOME_LOG_PREFIX)
    assert len(olog.path.read_bytes().splitlines()) == 2
    t = C.build_tables(C.read_service_logs(tmp_path), _categories)
    assert t.events.select(S.EVENT_ID, S.REQUEST_ID, S.SESSION_ID, S.VIDEO_IDX).rows() == [
        (0, 5, 2, 3),
        (1, 5, 2, 4),
    ]
    assert t.events[S.WATCH_RATIO].to_list() == [None, None]  # NaN (unknown duration) -> null
    assert t.events[S.SKIPPED].to_list() == [False, True]
    assert t.events[S.FOLLOWED].to_list() == [True, True]
    assert t.events[S.TS].to_list()[0] == t.exposures[S.TS].to_list()[0] + dt.timedelta(
        microseconds=4
    )
    with pytest.raises(RuntimeError, match="closed"):
        olog.write({"a": 1})


def _p(**kw: Any) -> bytes:
    """A page line with fields replaced by ``kw``."""
    return orjson.dumps(_page(1, "u", "c", [1], **kw))


def _e(**kw: Any) -> bytes:
    """An outcome line with fields replaced by ``kw``."""
    return orjson.dumps(_event(1, "u", 9, 1, **kw))


ITEMS_2 = [{"video_idx": 1, "rank": 0}, {"video_idx": "x", "rank": 1}]
SAME_RANK = [{"video_idx": 1, "rank": 0}, {"video_idx": 2, "rank": 0}]
INT32 = r"an integer in \[0, 2147483647\]"
BAD_PAGE_LINES = [
    (b"not json", "invalid JSON"),
    (b"[1, 2]", "expected a JSON object, got list"),
    (_p().replace(b'"user_id":"u",', b""), "user_id: missing"),
    (_p(request_id="1"), "request_id: expected an integer >= 0, got '1'"),
    (_p(request_id=-3), "request_id: expected an integer >= 0"),
    (_p(session_id=True), "session_id: expected an integer >= 0, got True"),
    (_p(ts_us=1.5), "ts_us: expected an integer, got 1.5"),
    (_p(arms={"e": "c"}), "arms: expected a list"),
    (_p(arms=[{"experiment": "e", "arm": 3}]), r"arms\[0\]\.arm: expected a non-empty string"),
    (_p(items=ITEMS_2), rf"items\[1\]\.video_idx: expected {INT32}, got 'x'"),
    (_p(items=[5]), r"items\[0\]: expected a JSON object"),
    (_p(config_version=7), "config_version: expected a string or null"),
    (_p(items=SAME_RANK), "field rank: each rank at most once per page"),
]  # fmt: skip


@pytest.mark.parametrize(("line", "message"), BAD_PAGE_LINES)
def test_a_malformed_exposure_line_is_named_by_file_line_and_field(
    tmp_path: Path, line: bytes, message: str
) -> None:
    good = orjson.dumps(_page(9, "u", "c", [1]))
    (tmp_path / "exposures-3.jsonl").write_bytes(good + b"\n\n" + line + b"\n")
    with pytest.raises(S.BadInput, match=rf"exposures-3\.jsonl: line 3: .*{message}"):
        C.build_tables(C.read_service_logs(tmp_path), _categories)


BAD_EVENT_LINES = [
    (b"{", "invalid JSON"),
    (_e(event_id=None), "event_id: null"),
    (_e(liked="yes"), "liked: expected true, false or null, got 'yes'"),
    (_e(watch_time_s=-1.0), "watch_time_s: expected a finite number >= 0 or null"),
    (_e(watch_ratio=True), "watch_ratio: expected a finite number"),
    (_e(user_id=""), "user_id: expected a non-empty string"),
    (_e(video_idx=2**40), rf"video_idx: expected {INT32}, got 1099511627776"),
    (_e(ts_us=1.7e15), r"ts_us: expected an integer, got 1700000000000000\.0"),
]  # fmt: skip


@pytest.mark.parametrize(("line", "message"), BAD_EVENT_LINES)
def test_a_malformed_outcome_line_is_named_by_file_line_and_field(
    tmp_path: Path, line: bytes, message: str
) -> None:
    _write(tmp_path / "exposures-3.jsonl", [_page(9, "u", "c", [1])])
    (tmp_path / "outcomes-3.jsonl").write_bytes(
        orjson.dumps(_event(0, "u", 9, 1)) + b"\n" + line + b"\n"
    )
    with pytest.raises(C.LogLineError, match=rf"outcomes-3\.jsonl: line 2: .*{message}"):
        C.read_service_logs(tmp_path)


def test_a_request_id_logged_twice_names_both_lines(tmp_path: Path) -> None:
    _write(tmp_path / "exposures-1.jsonl", [_page(4, "a", "c", [1])])
    _write(tmp_path / "exposures-2.jsonl", [_page(5, "b", "c", [1]), _page(4, "b", "c", [2])])
    with pytest.raises(
        C.LogLineError,
        match=r"exposures-2\.jsonl: line 2: field request_id: 4 was already logged by another "
        r"page \(.*exposures-1\.jsonl: line 1\)",
    ):
        C.read_service_logs(tmp_path)


def test_a_directory_without_exposure_logs_is_bad_input(tmp_path: Path) -> None:
    with pytest.raises(C.LogLineError, match="log directory not found"):
        C.read_service_logs(tmp_path / "missing")
    _write(tmp_path / "outcomes-1.jsonl", [_event(0, "u", 9, 1)])
    with pytest.raises(C.LogLineError, match=r"no exposures-\*\.jsonl files"):
        C.read_service_logs(tmp_path)


def test_an_empty_outcome_log_gives_an_empty_events_table(tmp_path: Path) -> None:
    _write(tmp_path / "exposures-1.jsonl", [_page(1, "a", "c", [1, 2])])
    t = C.build_tables(C.read_service_logs(tmp_path), _categories)
    assert t.events.height == 0 and S.validate(t.events, S.EVENTS) == []
    assert t.exposures.height == 2
    assert isinstance(t.events, pl.DataFrame)


def test_a_last_line_still_being_written_is_skipped_and_counted(tmp_path: Path) -> None:
    line = orjson.dumps(_page(2, "b", "t", [2]))
    _write(tmp_path / "exposures-1.jsonl", [_page(1, "a", "c", [1])])
    with (tmp_path / "exposures-1.jsonl").open("ab") as fh:
        fh.write(line[:20])  # no newline yet: the worker is mid-write
    logs = C.read_service_logs(tmp_path)
    assert logs.pages.height == 1 and logs.partial_lines == 1
    assert C.build_tables(logs, _categories).stats["partial_lines_skipped"] == 1
    (tmp_path / "exposures-1.jsonl").write_bytes(line[:20] + b"\n" + line + b"\n")
    with pytest.raises(C.LogLineError, match=r"exposures-1\.jsonl: line 1: invalid JSON"):
        C.read_service_logs(tmp_path)  # a cut line followed by others is corruption
