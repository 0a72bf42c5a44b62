"""Encodings, value types and key names of the store."""

from __future__ import annotations

import math

import numpy as np
import pytest

from shortrec import schema as S
from shortrec.config import StoreConfig
from shortrec.store import codec
from shortrec.store.keys import COUNTER_FIELDS, Keys, decode_pointer, encode_pointer
from shortrec.store.redis import COUNTERS
from shortrec.store.types import NO_IDX, ScoredRows, StoreEvent, StoreInputError, check_id

T0 = 1_700_000_000_123_457  # odd µs: rounding to 14 digits would change it


def test_video_roundtrip_and_tag_cap() -> None:
    r = codec.VideoRecord(7, -1, (1, 2, 3), 12.5, T0, 42, 0.5, 0.75, float("nan"), 0.125)
    back = codec.decode_video(codec.encode_video(r, max_tags=2))
    assert back.tags == (1, 2) and back.upload_us == T0 and back.category == -1
    assert math.isnan(back.skip_rate) and back.like_rate == 0.125
    with pytest.raises(StoreInputError, match="category"):
        codec.encode_video(codec.VideoRecord(1, 70_000, (), 1.0, 0, 0, 0, 0, 0, 0), 4)


def test_event_and_live_entry_roundtrip() -> None:
    ev = StoreEvent(
        event_id=2**40,
        user_id="ü-1",
        session_id=9,
        video_idx=5,
        ts_us=T0,
        watch_ratio=1.5,
        skipped=False,
        liked=True,
        followed=True,
        engagement=2.25,
        region="BR",
    )
    back = codec.decode_event(codec.encode_event(ev), "test")
    assert back == ev
    vid = codec.VideoRecord(3, 2, (4, 8), 1.0, 0, 0, 0, 0, 0, 0)
    e = codec.decode_live(codec.encode_live(ev, vid, max_tags=8))
    assert (e.video_idx, e.ts_us, e.creator_idx, e.category, e.tags) == (5, T0, 3, 2, (4, 8))
    assert e.engagement == 2.25 and not e.skipped
    unknown = codec.decode_live(codec.encode_live(ev, None, max_tags=8))
    assert unknown.creator_idx == NO_IDX and unknown.tags == ()
    with pytest.raises(StoreInputError, match="test: malformed"):
        codec.decode_event({"e": b"short", "u": b"x"}, "test")


def test_store_event_validation_names_the_field() -> None:
    ok = {"event_id": 1, "user_id": "a", "session_id": 1, "video_idx": 1, "ts_us": T0}
    StoreEvent(**ok)  # type: ignore[arg-type]
    for field, bad in [
        ("event_id", -1),
        ("video_idx", 2**31),
        ("ts_us", -5),
        ("session_id", 1.5),
        ("user_id", ""),
        ("watch_ratio", -0.1),
        ("skipped", 1),
        ("region", "a b"),
    ]:
        with pytest.raises(StoreInputError, match=field.replace("ts_us", S.TS)):
            StoreEvent(**{**ok, field: bad})  # type: ignore[arg-type]


def test_check_id() -> None:
    assert check_id("user:42@x", "user_id") == "user:42@x"
    for bad in ["", "a{b", "a}", "a b", "a\nb", "x" * 257, 5]:
        with pytest.raises(StoreInputError):
            check_id(bad, "user_id")


def test_scored_rows_groups_best_first_in_first_appearance_order() -> None:
    rows = ScoredRows(
        np.array(["US", "*", "US", "*"]), np.array([1, 2, 3, 4]), np.array([1.0, 5.0, 2.0, 5.0])
    )
    groups = rows.groups()
    assert [g for g, _, _ in groups] == ["US", "*"]
    assert groups[0][1].tolist() == [3, 1]
    assert groups[1][1].tolist() == [2, 4]  # equal scores: lower video_idx first
    with pytest.raises(StoreInputError, match="NaN"):
        ScoredRows(np.array([1]), np.array([1]), np.array([np.nan]))
    with pytest.raises(StoreInputError, match="length"):
        ScoredRows(np.array([1, 2]), np.array([1]), np.array([1.0]))


def test_pointer_and_key_layout() -> None:
    assert decode_pointer(encode_pointer(12, T0).encode()) == (12, T0)
    assert decode_pointer(None)[0] == 0
    k = Keys(StoreConfig(key_prefix="sr", key_version=2))
    assert k.history("bob") == "sr:2:{u:bob}:hist"
    assert k.user_base(5, "bob") == "sr:2:v5:{u:bob}:b"
    assert k.version_of(k.video(5, 3)) == 5 and k.version_of(k.history("bob")) is None
    assert k.bounded_without_ttl(k.current, 5) and k.bounded_without_ttl(k.fresh(5), 5)
    assert not k.bounded_without_ttl(k.fresh(4), 5)
    assert not k.bounded_without_ttl(k.seen("bob"), 5)


def test_counter_fields_match_the_script() -> None:
    assert "{'" + "', '".join(COUNTER_FIELDS) + "'}" in COUNTERS
