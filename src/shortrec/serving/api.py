"""Request and response models of the HTTP API (pydantic; they are the OpenAPI schema).

Ids: ``user_id`` is the external user id (1-256 characters, no braces, whitespace or control
characters: the online store's rule); ``video_idx`` is the dense video index the catalogue,
index and ranker share; ``request_id``/``event_id``/``session_id`` are non-negative integers
(``request_id`` below 2**53 so that JavaScript clients keep it exact). Times are UTC.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

USER_ID_PATTERN = r"^[^{}\s\x00-\x1f\x7f]{1,256}$"
MAX_N = 100
MAX_INT64 = 2**63 - 1
MAX_REQUEST_ID = 2**53 - 1
MAX_VIDEO_IDS = 100
MAX_DEMO_USERS = 1_000

UserId = Annotated[
    str, Field(min_length=1, max_length=256, pattern=USER_ID_PATTERN, examples=["u42"])
]
SessionId = Annotated[int, Field(ge=0, le=MAX_INT64, examples=[1])]
VideoIdx = Annotated[int, Field(ge=0, le=2**31 - 1)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FeedContext(_Model):
    """Optional request context sent with ``POST /v1/feed``."""

    region: str | None = Field(
        default=None, min_length=1, max_length=16, pattern=r"^[A-Za-z0-9_*-]+$"
    )
    age_bucket: str | None = Field(default=None, max_length=16)
    device: str | None = Field(default=None, max_length=16)
    exclude: list[VideoIdx] = Field(
        default_factory=list, max_length=1_000, description="Videos the client already holds."
    )


class FeedRequest(_Model):
    """Body of ``POST /v1/feed``."""

    user_id: UserId
    session_id: SessionId = 0
    n: int = Field(default=10, ge=1, le=MAX_N)
    context: FeedContext = FeedContext()


class FeedItem(_Model):
    """One served video: its final score, per-head scores, proposing sources and a reason."""

    video_idx: int
    position: int
    score: float
    heads: dict[str, float]
    sources: list[str]
    reason: str


class FeedResponse(_Model):
    """A page of the feed."""

    request_id: int
    user_id: str
    session_id: int
    model_version: str
    arms: dict[str, str] = Field(description="experiment -> arm for this user")
    degraded: bool = Field(description="served from the in-process snapshot (store down)")
    fallbacks: list[str] = Field(description="declared fallbacks taken for this page")
    items: list[FeedItem]


class EventIn(_Model):
    """One impression outcome. ``watch_ratio`` defaults to ``watch_time_s / duration``
    (duration from the catalogue) and ``skipped`` to ``watch_time_s < skip threshold``."""

    event_id: int = Field(ge=0, le=MAX_INT64)
    user_id: UserId
    session_id: SessionId
    video_idx: VideoIdx
    request_id: int | None = Field(default=None, ge=0, le=MAX_INT64)
    ts: dt.datetime | None = Field(default=None, description="event time (UTC; default now)")
    watch_time_s: float = Field(ge=0, le=86_400, allow_inf_nan=False)
    watch_ratio: float | None = Field(default=None, ge=0, le=1_000, allow_inf_nan=False)
    skipped: bool | None = None
    liked: bool = False
    shared: bool = False
    followed: bool = False
    region: str | None = Field(
        default=None, min_length=1, max_length=16, pattern=r"^[A-Za-z0-9_-]+$"
    )


class EventBatch(_Model):
    """Body of ``POST /v1/events``."""

    events: list[EventIn] = Field(min_length=1, max_length=10_000)


class EventsAccepted(_Model):
    """Acknowledgement: every event is durably queued; ``applied`` were new, ``duplicates``
    had been ingested before (same user and ``event_id``) and changed nothing."""

    received: int
    queued: int
    applied: int
    duplicates: int


class VideoIn(_Model):
    """A new upload for ``POST /admin/videos`` (enters the catalogue and the fresh pool)."""

    video_idx: VideoIdx
    creator_idx: int = Field(ge=0, le=2**31 - 1)
    category: int | None = Field(default=None, ge=0, le=32_767)
    tags: list[Annotated[int, Field(ge=0, le=2**31 - 1)]] = Field(
        default_factory=list, max_length=16
    )
    duration_s: float = Field(ge=0.1, le=36_000, allow_inf_nan=False)
    upload_ts: dt.datetime | None = None


class ReloadRequest(_Model):
    """Body of ``POST /admin/reload``: a new bundle directory (None: reload the current one)
    and/or the experiment config."""

    artifacts: str | None = Field(default=None, max_length=4_096)
    experiments: bool = False


class ReloadResponse(_Model):
    model_version: str
    ranker_backend: str
    experiments_version: str | None
    changed: bool


class VideoInfo(_Model):
    """Human-readable metadata of one video, for clients that show it (the ``/demo`` page).

    ``named`` is false when the bundle carries no names (labels are made from indices, e.g.
    ``"topic 3"``; ``creator`` is then the ranker's creator bucket) or the video was uploaded
    after the bundle. ``duration_s`` is exact when named, else the upper edge of the ranker's
    duration bucket; null when unknown.
    """

    video_idx: int
    title: str
    creator: str
    category: str | None = Field(description="topic name; null when the video has none")
    tags: list[str]
    duration_s: float | None
    upload_ts: dt.datetime | None = Field(description="upload time (UTC); null when unknown")
    named: bool


class VideoList(_Model):
    """Body of ``GET /v1/videos``: one entry per known id in the order asked, and the ids the
    catalogue does not know."""

    items: list[VideoInfo]
    missing: list[int]


class DemoUsers(_Model):
    """Body of ``GET /v1/demo/users``: a sample of known user ids (those with the longest
    histories). ``named`` is false when the bundle has no names component, and then
    ``users`` is empty: only new (cold-start) users can be simulated."""

    users: list[str]
    named: bool


class Health(_Model):
    status: str


class Ready(_Model):
    status: str
    model_version: str | None
    store: str
    degraded: bool


class Problem(_Model):
    """RFC 9457 problem details (``application/problem+json``)."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    instance: str | None = None
    errors: list[dict[str, object]] | None = None
