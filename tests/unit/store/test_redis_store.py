"""Redis-specific behaviour: failure mapping, script reload, memory measurement, slots."""

from __future__ import annotations

import re
import socket
import time

import numpy as np
import pytest
import redis
from redis.crc import key_slot

from shortrec.config import StoreConfig
from shortrec.store import StoreEvent, StoreUnavailable
from shortrec.store.keys import Keys
from shortrec.store.redis import RedisStore

URL = "redis://127.0.0.1:6379"
DB = 15
T0 = 1_700_000_000_000_000


def _ev(eid: int, user: str = "alice") -> StoreEvent:
    return StoreEvent(
        event_id=eid, user_id=user, session_id=1, video_idx=3, ts_us=T0 + eid, engagement=1.0
    )


@pytest.fixture
def live() -> RedisStore:
    store = RedisStore(StoreConfig(url=URL, db=DB, key_prefix="srunit"))
    if not store.ping():
        pytest.skip(f"no Redis server at {URL}")
    redis.Redis.from_url(URL, db=DB).flushdb()
    return store


def test_dead_port_raises_store_unavailable_quickly() -> None:
    store = RedisStore(
        StoreConfig(url="redis://127.0.0.1:1", connect_timeout_s=0.2, socket_timeout_s=0.2)
    )
    start = time.perf_counter()
    assert store.ping() is False
    with pytest.raises(StoreUnavailable, match=re.escape("127.0.0.1:1")):
        store.read_request_context("alice", 1, T0)
    with pytest.raises(StoreUnavailable):
        store.apply_events([_ev(1)])
    with pytest.raises(StoreUnavailable):
        store.video_features(np.array([1, 2]))
    with pytest.raises(StoreUnavailable):
        store.enqueue_events([_ev(1)])
    with pytest.raises(StoreUnavailable):
        store.begin_version()
    assert time.perf_counter() - start < 5.0


def test_a_server_that_never_answers_times_out_as_unavailable() -> None:
    # a listening socket nobody accepts on: connect succeeds, every read times out
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        store = RedisStore(StoreConfig(url=f"redis://127.0.0.1:{port}", socket_timeout_s=0.1))
        start = time.perf_counter()
        with pytest.raises(StoreUnavailable, match=r"Timeout|timed out"):
            store.read_request_context("alice", 1, T0)
        assert store.ping() is False
        assert time.perf_counter() - start < 2.0


def test_scripts_are_reloaded_after_a_script_flush(live: RedisStore) -> None:
    assert live.apply_events([_ev(1)]) == 1
    redis.Redis.from_url(URL, db=DB).script_flush()
    assert live.apply_events([_ev(2)]) == 1
    assert live.apply_events([_ev(2)]) == 0


def test_memory_usage_is_measured_by_the_server(live: RedisStore) -> None:
    live.apply_events([_ev(i) for i in range(1, 20)])
    k = live.keys
    keys = [k.history("alice"), k.seen("alice"), k.session("alice"), k.dedup("alice")]
    used = live.memory_usage(keys)
    assert 200 < used < 20_000
    assert live.memory_usage([k.history("nobody")]) == 0


def test_keys_read_together_share_one_cluster_slot() -> None:
    k = Keys(StoreConfig())
    user = [
        k.history("u-42"),
        k.seen("u-42"),
        k.session("u-42"),
        k.dedup("u-42"),
        k.user_base(3, "u-42"),
        k.user_base(4, "u-42"),
    ]
    assert len({key_slot(x.encode()) for x in user}) == 1
    trend = [k.trend(3, "US"), k.trend_landmark(3, "US")]
    assert len({key_slot(x.encode()) for x in trend}) == 1
    # different users spread over slots
    assert len({key_slot(k.history(f"u-{i}").encode()) for i in range(50)}) > 40


def test_a_wiped_store_is_noticed_by_a_client_with_a_cached_version(live: RedisStore) -> None:
    v = live.begin_version()
    live.activate(v, T0)
    assert live.read_request_context("alice", 1, T0).version == v
    redis.Redis.from_url(URL, db=DB).flushdb()
    assert live.read_request_context("alice", 1, T0).version == 0
