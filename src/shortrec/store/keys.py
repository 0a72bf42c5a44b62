"""Every key name of the online store, its TTL and its bound: the one place they are spelled.

Layout under ``base = "{key_prefix}:{key_version}"`` (``docs/store.md`` has the table):

Global, unversioned::

    {base}:current                   "version:as_of_us" of the live published version (bounded: 1)
    {base}:version_seq               counter of published versions (bounded: 1)
    {base}:versions                  zset of versions not yet expired (bounded: a handful)
    {base}:events                    event stream, XADD MAXLEN ~ stream_maxlen (bounded)

Published, under a version (no TTL while current: bounded by the published tables; after a
switch every key of an older version gets ``old_version_grace_s`` and expires)::

    {base}:v{V}:meta                 as_of_us of the version
    {base}:v{V}:{u:USER}:b           hash h=history blob, a=affinity blob
    {base}:v{V}:vid:VIDEO            hash f=features blob + live counters (i e s l sh fo w)
    {base}:v{V}:{tr:REGION}:z        trending zset (forward-decayed scores, capped)
    {base}:v{V}:{tr:REGION}:l        its decay landmark (µs)
    {base}:v{V}:tag:TAG              per-tag top list (zset)
    {base}:v{V}:fresh                fresh-video pool (zset scored by upload µs)

Per user, live (TTL refreshed on every write, and capped)::

    {base}:{u:USER}:hist             list of history entries, newest first (history_cap)
    {base}:{u:USER}:seen             zset video -> last seen µs (seen_cap, seen_ttl_s)
    {base}:{u:USER}:sess             hash: current session (session_ttl_s)
    {base}:{u:USER}:dedup            zset event_id -> ts of applied events (dedup_cap)

Keys one request reads together share the hash tag ``{u:USER}`` (and a trending list with its
landmark ``{tr:REGION}``), so scripts and reads stay in one Redis Cluster slot.
"""

from __future__ import annotations

import fnmatch
import re

from shortrec.config import StoreConfig

# Field names inside hashes (short: they are repeated in every hash).
F_HISTORY = "h"
F_AFFINITY = "a"
F_FEATURES = "f"
# live counters of a video, in the order VideoFeatureBatch lists them
COUNTER_FIELDS = ("i", "e", "s", "l", "sh", "fo")
F_WATCH_SUM = "w"
# session hash
F_SESSION_ID = "sid"
F_STARTED = "t0"
F_LAST = "t1"
F_SERVED = "n"
F_SKIPS = "k"
F_RECENT = "r"
SESSION_FIELDS = (F_SESSION_ID, F_STARTED, F_LAST, F_SERVED, F_SKIPS, F_RECENT)

#: Consumer group that applies queued events.
APPLY_GROUP = "apply"


class Keys:
    """Key names and TTLs for one :class:`StoreConfig` (cheap; build one per store)."""

    def __init__(self, cfg: StoreConfig) -> None:
        self.cfg = cfg
        self.base = f"{cfg.key_prefix}:{cfg.key_version}"
        self.current = f"{self.base}:current"
        self.version_seq = f"{self.base}:version_seq"
        self.versions = f"{self.base}:versions"
        self.events = f"{self.base}:events"
        self._version_re = re.compile(rf"^{re.escape(self.base)}:v(\d+):")

    # ------------------------------------------------------------ published, versioned
    def version_prefix(self, version: int) -> str:
        return f"{self.base}:v{version}:"

    def version_pattern(self, version: int) -> str:
        """SCAN pattern matching every key of ``version``."""
        return f"{self.version_prefix(version)}*"

    def meta(self, version: int) -> str:
        return f"{self.version_prefix(version)}meta"

    def user_base(self, version: int, user_id: str) -> str:
        return f"{self.version_prefix(version)}{{u:{user_id}}}:b"

    def video(self, version: int, video_idx: int) -> str:
        return f"{self.version_prefix(version)}vid:{video_idx}"

    def trend(self, version: int, region: str) -> str:
        return f"{self.version_prefix(version)}{{tr:{region}}}:z"

    def trend_landmark(self, version: int, region: str) -> str:
        return f"{self.version_prefix(version)}{{tr:{region}}}:l"

    def tag_top(self, version: int, tag_idx: int) -> str:
        return f"{self.version_prefix(version)}tag:{tag_idx}"

    def fresh(self, version: int) -> str:
        return f"{self.version_prefix(version)}fresh"

    # ------------------------------------------------------------ per user, live
    def _user(self, user_id: str) -> str:
        return f"{self.base}:{{u:{user_id}}}"

    def history(self, user_id: str) -> str:
        return f"{self._user(user_id)}:hist"

    def seen(self, user_id: str) -> str:
        return f"{self._user(user_id)}:seen"

    def session(self, user_id: str) -> str:
        return f"{self._user(user_id)}:sess"

    def dedup(self, user_id: str) -> str:
        return f"{self._user(user_id)}:dedup"

    # ------------------------------------------------------------ TTLs (seconds)
    @property
    def history_ttl_s(self) -> int:
        return self.cfg.history_ttl_s

    @property
    def seen_ttl_s(self) -> int:
        return self.cfg.seen_ttl_s

    @property
    def session_ttl_s(self) -> int:
        return self.cfg.session_ttl_s

    @property
    def dedup_ttl_s(self) -> int:
        return self.cfg.dedup_ttl_s

    @property
    def old_version_grace_s(self) -> int:
        return self.cfg.old_version_grace_s

    # ------------------------------------------------------------ bounds
    def version_of(self, key: str) -> int | None:
        """The published version a key belongs to, or None for an unversioned key."""
        m = self._version_re.match(key)
        return int(m.group(1)) if m else None

    def bounded_without_ttl(self, key: str, current_version: int) -> bool:
        """True for keys that may live without a TTL because something else bounds them.

        The global singletons (pointer, sequence, version registry), the capped event stream,
        and the keys of the *current* published version (bounded by the published tables; they
        get a TTL the moment another version replaces them). Every other key must have a TTL.
        """
        if key in (self.current, self.version_seq, self.versions, self.events):
            return True
        v = self.version_of(key)
        return v is not None and v == current_version

    def is_store_key(self, key: str) -> bool:
        return fnmatch.fnmatchcase(key, f"{self.base}:*")


def encode_pointer(version: int, as_of_us: int) -> str:
    """Value of the ``current`` key."""
    return f"{version}:{as_of_us}"


def decode_pointer(raw: bytes | str | None) -> tuple[int, int]:
    """``(version, as_of_us)`` of a ``current`` value; ``(0, NO_TS-like -2**63)`` when none."""
    if raw is None:
        return 0, -(2**63)
    text = raw.decode() if isinstance(raw, bytes) else raw
    v, _, t = text.partition(":")
    return int(v), int(t)
