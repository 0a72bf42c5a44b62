"""In-process store specifics: expiry on its clock, the bounded queue, redelivery."""

from __future__ import annotations

import pytest

from shortrec.config import StoreConfig
from shortrec.store import MemoryStore, StoreError, StoreEvent

T0 = 1_700_000_000_000_000


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _ev(eid: int, user: str = "alice") -> StoreEvent:
    return StoreEvent(
        event_id=eid, user_id=user, session_id=1, video_idx=eid % 3, ts_us=T0 + eid, engagement=1.0
    )


def test_keys_expire_on_the_clock() -> None:
    clock = Clock()
    store = MemoryStore(
        StoreConfig(session_ttl_s=60, seen_ttl_s=120, history_ttl_s=300, dedup_ttl_s=400),
        clock=clock,
    )
    store.apply_events([_ev(1)])
    assert len(store.key_ttls()) == 4
    clock.t += 61
    assert not any(k.endswith(":sess") for k in store.key_ttls())
    clock.t += 60
    assert not any(k.endswith(":seen") for k in store.key_ttls())
    clock.t += 300
    assert store.key_ttls() == {}
    # the dedup marker is gone too: the event is applied again (documented window)
    assert store.apply_events([_ev(1)]) == 1


def test_queue_is_bounded() -> None:
    store = MemoryStore(StoreConfig(stream_maxlen=3))
    store.enqueue_events([_ev(i) for i in range(1, 6)])
    assert store.drain_events("w", 10) == (3, 3)  # the two oldest were trimmed


def test_unacknowledged_events_are_redelivered_after_idle() -> None:
    clock = Clock()
    store = MemoryStore(StoreConfig(stream_claim_idle_ms=5_000), clock=clock)
    store.enqueue_events([_ev(1), _ev(2)])
    real = store.apply_events
    calls = {"n": 0}

    def crash_once(events: list[StoreEvent]) -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("worker died")
        return real(events)

    store.apply_events = crash_once  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        store.drain_events("w1", 10)
    assert store.drain_events("w2", 10) == (0, 0)  # still leased to w1
    clock.t += 6
    assert store.drain_events("w2", 10) == (2, 2)
    assert store.drain_events("w2", 10) == (0, 0)


def test_closed_store_refuses_work() -> None:
    store = MemoryStore()
    store.close()
    assert not store.ping()
    with pytest.raises(StoreError, match="closed"):
        store.apply_events([_ev(1)])
