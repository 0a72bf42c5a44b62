"""The online store interface: one protocol, implemented by :class:`~shortrec.store.redis.
RedisStore` (production) and :class:`~shortrec.store.memory.MemoryStore` (in process: tests,
the demo, and the degraded-mode snapshot). ``tests/contract/test_store_contract.py`` runs one
suite on both.

Reads for one request are one round trip; event writes are batched; publishing writes a new
version and switches to it atomically. Errors: :class:`~shortrec.store.types.StoreUnavailable`
when the backend cannot be reached, :class:`~shortrec.store.types.StoreInputError` (a
``BadInput``) for malformed values.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy.typing as npt

from shortrec.store.types import (
    RequestContext,
    ScoredList,
    StoreEvent,
    VideoFeatureBatch,
)


@runtime_checkable
class OnlineStore(Protocol):
    """What serving and the publisher need from the online store."""

    # ------------------------------------------------------------ health
    def ping(self) -> bool:
        """True when the backend answers (never raises)."""
        ...

    def close(self) -> None:
        """Release connections; the store is unusable afterwards."""
        ...

    def current_version(self) -> tuple[int, int]:
        """``(version, as_of_us)`` of the live published version; ``(0, -2**63)`` if none."""
        ...

    # ------------------------------------------------------------ per-request reads
    def read_request_context(self, user_id: str, session_id: int, now_us: int) -> RequestContext:
        """History, seen set, session state and tag affinities of ``user_id`` at ``now_us``,
        all from one published version (plus live state), in one round trip."""
        ...

    def video_features(self, video_idx: npt.ArrayLike) -> VideoFeatureBatch:
        """Published features and live counters of ``video_idx`` (n,), in that order,
        all from one published version (a non-atomic batch across videos)."""
        ...

    def trending(self, n: int, now_us: int, region: str = "*") -> ScoredList:
        """Top ``n`` trending videos of ``region`` with their decayed scores at ``now_us``."""
        ...

    def tag_top(self, tag_idx: npt.ArrayLike, n: int) -> list[ScoredList]:
        """Top ``n`` videos of each tag in ``tag_idx`` (aligned; empty for unknown tags)."""
        ...

    def fresh(self, n: int) -> ScoredList:
        """The ``n`` newest videos of the fresh pool, scored by upload time (µs)."""
        ...

    # ------------------------------------------------------------ event writes
    def apply_events(self, events: Sequence[StoreEvent]) -> int:
        """Apply events in order; return how many were new. An event id already applied for
        the same user (within ``dedup_ttl_s``/``dedup_cap``) changes nothing."""
        ...

    def enqueue_events(self, events: Sequence[StoreEvent]) -> int:
        """Append events to the durable, bounded event queue; return how many were queued.
        Acknowledge a client only after this returns."""
        ...

    def drain_events(self, consumer: str, max_events: int) -> tuple[int, int]:
        """Apply up to ``max_events`` queued events (first those another consumer took but did
        not acknowledge for ``stream_claim_idle_ms``) and acknowledge them; return
        ``(processed, newly_applied)``."""
        ...

    # ------------------------------------------------------------ publishing (see publish.py)
    def begin_version(self) -> int:
        """Reserve a new version number (greater than every earlier one)."""
        ...

    def write_videos(self, version: int, rows: Sequence[tuple[int, bytes]]) -> None:
        """Store encoded video features ``(video_idx, blob)`` under ``version``."""
        ...

    def write_users(self, version: int, rows: Sequence[tuple[str, bytes, bytes]]) -> None:
        """Store ``(user_id, history_blob, affinity_blob)`` under ``version``."""
        ...

    def write_ranked(
        self,
        version: int,
        kind: str,
        group: str,
        video_idx: npt.ArrayLike,
        score: npt.ArrayLike,
        landmark_us: int | None = None,
    ) -> None:
        """Store one ranked list: ``kind`` is ``"trending"`` (``group`` a region; needs the
        forward-decay ``landmark_us``), ``"tag"`` (``group`` a tag index) or ``"fresh"``."""
        ...

    def activate(self, version: int, as_of_us: int) -> None:
        """Make ``version`` (fully written, snapshot time ``as_of_us``) the live one in one
        atomic pointer switch, then let every older version expire after
        ``old_version_grace_s`` (in-flight readers finish on the version they started with).
        Raises ``StoreError`` if a newer version is already live."""
        ...

    # ------------------------------------------------------------ introspection (tests, ops)
    def key_ttls(self) -> dict[str, float | None]:
        """Every key of this store with its remaining TTL in seconds (None: no TTL)."""
        ...

    def memory_usage(self, keys: Sequence[str]) -> int:
        """Bytes used by ``keys`` (Redis ``MEMORY USAGE``; an estimate in process)."""
        ...
