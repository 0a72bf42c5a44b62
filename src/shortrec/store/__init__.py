"""Online store: per-user live state, published offline tables, trending, event queue.

``OnlineStore`` is the interface; ``MemoryStore`` the in-process implementation and
``RedisStore`` (``shortrec.store.redis``, imported lazily by :func:`open_store`) the production
one. ``publish`` loads offline outputs under a new version. ``docs/store.md`` has the key
layout, bounds and measured memory.
"""

from __future__ import annotations

from shortrec.config import StoreConfig
from shortrec.store.memory import MemoryStore
from shortrec.store.protocol import OnlineStore
from shortrec.store.publish import Snapshot, publish
from shortrec.store.types import (
    GLOBAL_REGION,
    NO_IDX,
    NO_TS,
    RequestContext,
    ScoredList,
    ScoredRows,
    SessionState,
    StoreError,
    StoreEvent,
    StoreInputError,
    StoreUnavailable,
    VideoFeatureBatch,
)


def open_store(cfg: StoreConfig) -> OnlineStore:
    """A :class:`RedisStore` for ``cfg`` (connections open lazily, on first use)."""
    from shortrec.store.redis import RedisStore

    return RedisStore(cfg)


__all__ = [
    "GLOBAL_REGION",
    "NO_IDX",
    "NO_TS",
    "MemoryStore",
    "OnlineStore",
    "RequestContext",
    "ScoredList",
    "ScoredRows",
    "SessionState",
    "Snapshot",
    "StoreConfig",
    "StoreError",
    "StoreEvent",
    "StoreInputError",
    "StoreUnavailable",
    "VideoFeatureBatch",
    "open_store",
    "publish",
]
