"""One contract suite for every online store implementation (in process and Redis).

The Redis run uses logical database 15 of the server on 127.0.0.1:6379 (flushed before each
test) and is skipped, with the reason, when that server is unreachable.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator

import numpy as np
import polars as pl
import pytest

from shortrec import schema as S
from shortrec.config import StoreConfig
from shortrec.store import (
    MemoryStore,
    OnlineStore,
    ScoredRows,
    Snapshot,
    StoreError,
    StoreEvent,
    StoreInputError,
    publish,
)

REDIS_URL = "redis://127.0.0.1:6379"
REDIS_DB = 15
US = 1_000_000
HOUR = 3600 * US
DAY = 24 * HOUR
T0 = 1_700_000_000 * US  # as_of of the test snapshots
N_VIDEOS = 12


def _cfg(**kw: object) -> StoreConfig:
    base: dict[str, object] = {
        "url": REDIS_URL,
        "db": REDIS_DB,
        "key_prefix": "srtest",
        "history_cap": 8,
        "seen_cap": 6,
        "session_recent_cap": 4,
        "old_version_grace_s": 30,
        "connect_timeout_s": 0.5,
        "socket_timeout_s": 2.0,
    }
    base.update(kw)
    return StoreConfig.model_validate(base)


def _redis_store(cfg: StoreConfig) -> OnlineStore:
    from shortrec.store.redis import RedisStore

    store = RedisStore(cfg)
    if not store.ping():
        pytest.skip(f"no Redis server at {REDIS_URL} (the Redis contract run needs one)")
    import redis

    redis.Redis.from_url(REDIS_URL, db=REDIS_DB).flushdb()
    return store


@pytest.fixture(params=["memory", "redis"])
def make_store(request: pytest.FixtureRequest) -> Iterator[object]:
    made: list[OnlineStore] = []

    def make(**kw: object) -> OnlineStore:
        cfg = _cfg(**kw)
        store: OnlineStore = MemoryStore(cfg) if request.param == "memory" else _redis_store(cfg)
        made.append(store)
        return store

    yield make
    for s in made:
        s.close()


@pytest.fixture
def store(make_store: object) -> OnlineStore:
    return make_store()  # type: ignore[operator, no-any-return]


# ---------------------------------------------------------------- fixtures: a tiny catalogue
def _videos() -> pl.DataFrame:
    n = N_VIDEOS
    return pl.DataFrame(
        {
            S.VIDEO_IDX: pl.Series(range(n), dtype=pl.Int32),
            S.CREATOR_IDX: pl.Series([i // 3 for i in range(n)], dtype=pl.Int32),
            S.CATEGORY: pl.Series([i % 4 if i != 5 else None for i in range(n)], dtype=pl.Int16),
            S.TAGS: pl.Series(
                [[i % 5, 10 + i % 2] if i % 6 else [] for i in range(n)], dtype=pl.List(pl.Int32)
            ),
            S.DURATION_S: pl.Series([10.0 + i for i in range(n)], dtype=pl.Float32),
            S.UPLOAD_TS: pl.Series([T0 - (n - i) * HOUR for i in range(n)], dtype=pl.Int64).cast(
                S.UTC_TS
            ),
        }
    )


def _stats() -> pl.DataFrame:
    n = N_VIDEOS
    return pl.DataFrame(
        {
            S.VIDEO_IDX: pl.Series(range(n), dtype=pl.Int32),
            S.IMPRESSIONS: pl.Series([100 * i for i in range(n)], dtype=pl.Int64),
            S.ENGAGE_RATE: pl.Series([0.5] * n, dtype=pl.Float32),
            S.WATCH_RATIO_MEAN: pl.Series([0.7] * n, dtype=pl.Float32),
            S.SKIP_RATE: pl.Series([0.25] * n, dtype=pl.Float32),
            S.LIKE_RATE: pl.Series([None] * n, dtype=pl.Float32),
        }
    )


def _snapshot(
    hist: list[int],
    tags: list[tuple[int, float]],
    as_of: int = T0,
    trending: tuple[list[int], list[float]] = ([3, 1], [2.0, 1.0]),
) -> Snapshot:
    return Snapshot(
        as_of_us=as_of,
        videos=_videos(),
        video_stats=_stats(),
        trending=ScoredRows(
            np.array(["*"] * len(trending[0])), np.array(trending[0]), np.array(trending[1])
        ),
        tag_top=ScoredRows(np.array([1, 1, 2]), np.array([1, 6, 2]), np.array([0.5, 0.9, 1.0])),
        fresh=np.array([9, 11, 10]),
        user_vocab=pl.DataFrame({S.IDX: pl.Series([0, 1], dtype=pl.Int32), S.ID: ["alice", "bob"]}),
        histories=pl.DataFrame(
            {
                S.USER_IDX: pl.Series([0], dtype=pl.Int32),
                S.HIST_VIDEO_IDX: pl.Series([hist], dtype=pl.List(pl.Int32)),
                S.HIST_TS: pl.Series(
                    [[as_of - (len(hist) - i) * US for i in range(len(hist))]],
                    dtype=pl.List(pl.Int64),
                ).cast(pl.List(S.UTC_TS)),
                S.WATCH_RATIO: pl.Series([[0.5] * len(hist)], dtype=pl.List(pl.Float32)),
                S.SKIPPED: pl.Series([[False] * len(hist)], dtype=pl.List(pl.Boolean)),
            }
        ),
        affinities=pl.DataFrame(
            {
                S.USER_IDX: pl.Series([0] * len(tags), dtype=pl.Int32),
                S.TAG_IDX: pl.Series([t for t, _ in tags], dtype=pl.Int32),
                S.AFFINITY: pl.Series([w for _, w in tags], dtype=pl.Float32),
            }
        ),
    )


def _ev(
    eid: int,
    vid: int,
    ts: int,
    user: str = "alice",
    session: int = 1,
    skipped: bool = False,
    engagement: float = 1.0,
    liked: bool = False,
    region: str | None = None,
) -> StoreEvent:
    return StoreEvent(
        event_id=eid,
        user_id=user,
        session_id=session,
        video_idx=vid,
        ts_us=ts,
        skipped=skipped,
        engagement=engagement,
        watch_ratio=0.8,
        liked=liked,
        region=region,
    )


# ---------------------------------------------------------------- tests
def test_ping_and_empty_store(store: OnlineStore) -> None:
    assert store.ping()
    assert store.current_version()[0] == 0
    ctx = store.read_request_context("nobody", 1, T0)
    assert ctx.is_cold and ctx.version == 0
    assert ctx.seen.size == 0 and ctx.tag_idx.size == 0
    assert ctx.session.n_served == 0
    assert len(store.trending(10, T0)) == 0
    assert not store.video_features(np.array([1, 2])).known.any()


def test_publish_then_read(store: OnlineStore) -> None:
    cfg = _cfg()
    v = publish(store, _snapshot([4, 2, 7], [(1, 2.0), (3, 1.0)]), cfg)
    assert v >= 1 and store.current_version() == (v, T0)
    now = T0 + 7 * DAY  # one affinity half-life later
    ctx = store.read_request_context("alice", 5, now)
    assert ctx.version == v
    assert ctx.history.tolist() == [4, 2, 7]
    assert ctx.history_ts.tolist() == [T0 - 3 * US, T0 - 2 * US, T0 - US]
    np.testing.assert_allclose(ctx.watch_ratio, 0.5)
    assert ctx.seen.tolist() == [2, 4, 7]
    assert ctx.tag_idx.tolist() == [1, 3]
    np.testing.assert_allclose(ctx.tag_weight, [1.0, 0.5], rtol=1e-6)
    bob = store.read_request_context("bob", 1, now)
    assert bob.is_cold and bob.version == v

    f = store.video_features(np.array([5, 1, 99]))
    assert f.known.tolist() == [True, True, False]
    assert f.creator_idx.tolist() == [1, 0, -1]
    assert f.category.tolist() == [-1, 1, -1]
    assert f.tags(0).tolist() == [0, 11] and f.tags(2).size == 0
    assert f.duration_s[1] == pytest.approx(11.0)
    assert f.upload_us[1] == T0 - (N_VIDEOS - 1) * HOUR
    assert f.impressions.tolist() == [500, 100, 0]
    assert f.engage_rate[0] == pytest.approx(0.5) and math.isnan(f.like_rate[0])
    assert f.live_impressions.tolist() == [0, 0, 0]

    tops = store.tag_top(np.array([1, 2, 77]), 5)
    assert tops[0].video_idx.tolist() == [6, 1] and tops[0].score.tolist() == [0.9, 0.5]
    assert tops[1].video_idx.tolist() == [2] and len(tops[2]) == 0
    assert store.tag_top(np.array([1]), 1)[0].video_idx.tolist() == [6]
    fr = store.fresh(2)
    assert fr.video_idx.tolist() == [11, 10]
    assert fr.score[0] == T0 - HOUR
    tr = store.trending(5, T0 + DAY)
    assert tr.video_idx.tolist() == [3, 1]
    np.testing.assert_allclose(tr.score, [1.0, 0.5])


def test_history_cap_and_live_merge(store: OnlineStore) -> None:
    publish(store, _snapshot([4, 2, 7], [(1, 1.0)]), _cfg())
    # one event before the snapshot (already in it, must not count twice), then 7 after it
    assert store.apply_events([_ev(100, 8, T0 - 10 * US)]) == 1
    events = [_ev(i, i % N_VIDEOS, T0 + (i + 1) * US) for i in range(7)]
    assert store.apply_events(events) == 7
    ctx = store.read_request_context("alice", 1, T0 + HOUR)
    cap = _cfg().history_cap
    assert ctx.history.size == cap
    assert ctx.history.tolist() == ([4, 2, 7] + [e.video_idx for e in events])[-cap:]
    assert np.all(np.diff(ctx.history_ts) > 0)
    assert ctx.session.n_served == 8
    # the live list itself is capped too
    more = [_ev(200 + i, 1, T0 + HOUR + i * US) for i in range(20)]
    store.apply_events(more)
    ctx = store.read_request_context("alice", 1, T0 + 2 * HOUR)
    assert ctx.history.tolist() == [1] * cap
    assert ctx.history_ts.tolist() == [e.ts_us for e in more][-cap:]


def test_live_affinity_adds_decayed_engagement(store: OnlineStore) -> None:
    cfg = _cfg()
    publish(store, _snapshot([], [(1, 2.0)]), cfg)
    h = cfg.affinity_half_life_s * US
    # video 1 has tags (1, 11); an engagement of 3 gives 1.5 to each
    store.apply_events(
        [
            _ev(1, 1, T0 + int(h), engagement=3.0),
            _ev(2, 1, T0 + int(h) + 1, engagement=0.0, skipped=True),
            _ev(3, 6, T0 + 5, engagement=5.0),
        ]
    )  # video 6 has no tags
    now = T0 + 2 * int(h)
    ctx = store.read_request_context("alice", 1, now)
    got = dict(zip(ctx.tag_idx.tolist(), ctx.tag_weight.tolist(), strict=True))
    assert set(got) == {1, 11}
    assert got[1] == pytest.approx(2.0 * 0.25 + 1.5 * 0.5, rel=1e-6)
    assert got[11] == pytest.approx(1.5 * 0.5, rel=1e-6)
    assert ctx.tag_idx.tolist() == [1, 11]


def test_seen_ttl_and_bound(make_store: object) -> None:
    store: OnlineStore = make_store(seen_ttl_s=3600)  # type: ignore[operator]
    store.apply_events([_ev(1, 1, T0), _ev(2, 2, T0 + 10 * US)])
    assert store.read_request_context("alice", 1, T0 + 20 * US).seen.tolist() == [1, 2]
    # an hour after the first view it has left the seen set; the second not yet
    assert store.read_request_context("alice", 1, T0 + HOUR + 5 * US).seen.tolist() == [2]
    # bounded: only the seen_cap most recent videos stay
    store.apply_events([_ev(10 + i, i, T0 + (100 + i) * US) for i in range(10)])
    seen = store.read_request_context("alice", 1, T0 + 200 * US).seen
    assert seen.tolist() == list(range(4, 10))
    ttls = store.key_ttls()
    seen_keys = [k for k in ttls if k.endswith(":seen")]
    assert len(seen_keys) == 1
    ttl = ttls[seen_keys[0]]
    assert ttl is not None and 3500 < ttl <= 3600


def test_session_state(store: OnlineStore) -> None:
    publish(store, _snapshot([], []), _cfg())
    store.apply_events(
        [
            _ev(1, 0, T0 + 1, session=7),
            _ev(2, 3, T0 + 2, session=7, skipped=True, engagement=0.0),
            _ev(3, 4, T0 + 3, session=7),
            _ev(4, 9, T0 + 4, session=7),
            _ev(5, 10, T0 + 5, session=7, skipped=True, engagement=0.0),
        ]
    )
    s = store.read_request_context("alice", 7, T0 + 10).session
    assert (s.n_served, s.n_skips, s.started_us, s.last_us) == (5, 2, T0 + 1, T0 + 5)
    # recent entries are capped at session_recent_cap = 4, most recent last
    assert s.recent_video_idx.tolist() == [3, 4, 9, 10]
    assert s.recent_creator_idx.tolist() == [1, 1, 3, 3]
    assert s.recent_category.tolist() == [3, 0, 1, 2]
    assert s.recent_skips.tolist() == [3, 10]
    assert s.creators == {1, 3} and s.categories == {0, 1, 2, 3}
    # another session id reads as a new, empty session
    assert store.read_request_context("alice", 8, T0 + 10).session.n_served == 0
    # a new session replaces the old one; a late event of the old session does not
    store.apply_events([_ev(6, 2, T0 + 20, session=8), _ev(7, 1, T0 + 6, session=7)])
    s8 = store.read_request_context("alice", 8, T0 + 30).session
    assert (s8.n_served, s8.recent_video_idx.tolist()) == (1, [2])
    assert store.read_request_context("alice", 7, T0 + 30).session.n_served == 0
    # an idle session is over after session_ttl_s
    later = T0 + 20 + _cfg().session_ttl_s * US + 1
    assert store.read_request_context("alice", 8, later).session.n_served == 0


def test_trending_decay_order(make_store: object) -> None:
    store: OnlineStore = make_store(trending_half_life_s=3600.0)  # type: ignore[operator]
    publish(store, _snapshot([], [], trending=([2], [4.0])), _cfg())
    # video 5 gets 8 two hours ago, video 7 gets 3 now, video 2 had 4 at T0
    now = T0 + 5 * HOUR
    store.apply_events(
        [
            _ev(1, 5, now - 2 * HOUR, engagement=8.0, user="u1"),
            _ev(2, 7, now, engagement=3.0, user="u2"),
            _ev(3, 8, now, engagement=0.0, user="u3", skipped=True),  # no engagement: no entry
        ]
    )
    tr = store.trending(10, now)
    expected = {5: 8.0 / 4, 7: 3.0, 2: 4.0 / 32}
    assert tr.video_idx.tolist() == [7, 5, 2]
    np.testing.assert_allclose(tr.score, [expected[v] for v in tr.video_idx.tolist()], rtol=1e-9)
    # an hour later nothing overtakes anything (decay is uniform), all halve
    tr2 = store.trending(10, now + HOUR)
    assert tr2.video_idx.tolist() == [7, 5, 2]
    np.testing.assert_allclose(tr2.score, tr.score / 2, rtol=1e-9)
    # far in the future (past the 64 half-lives that force a rescale) the order of new
    # events is still right and old ones have decayed to nothing
    far = now + 100 * HOUR
    store.apply_events(
        [
            _ev(4, 9, far, engagement=1.0, user="u4"),
            _ev(5, 10, far - HOUR, engagement=1.0, user="u5"),
        ]
    )
    tr3 = store.trending(2, far)
    assert tr3.video_idx.tolist() == [9, 10]
    np.testing.assert_allclose(tr3.score, [1.0, 0.5], rtol=1e-9)
    assert store.trending(5, far, region="US").video_idx.size == 0


def test_idempotent_events(store: OnlineStore) -> None:
    publish(store, _snapshot([], []), _cfg())
    batch = [
        _ev(1, 3, T0 + 1, liked=True),
        _ev(2, 3, T0 + 2, skipped=True, engagement=0.0),
        _ev(1, 3, T0 + 1, liked=True),
    ]  # replayed inside the batch
    assert store.apply_events(batch) == 2
    assert store.apply_events(batch) == 0  # replayed as a whole
    f = store.video_features(np.array([3]))
    assert f.live_impressions.tolist() == [2] and f.live_engaged.tolist() == [1]
    assert f.live_skips.tolist() == [1] and f.live_likes.tolist() == [1]
    assert f.live_watch_ratio_sum[0] == pytest.approx(1.6, rel=1e-6)
    ctx = store.read_request_context("alice", 1, T0 + 10)
    assert ctx.history.tolist() == [3, 3] and ctx.session.n_served == 2
    tr = store.trending(5, T0 + 1)  # published 2.0 and 1.0, plus one engagement of 1.0
    assert tr.video_idx.tolist() == [3, 1]
    np.testing.assert_allclose(tr.score, [3.0, 1.0], rtol=1e-6)
    # the same event id of another user is another event
    assert store.apply_events([_ev(1, 3, T0 + 3, user="bob")]) == 1


def test_enqueue_and_drain_apply_once(store: OnlineStore) -> None:
    publish(store, _snapshot([], []), _cfg())
    events = [_ev(i, i % 4, T0 + 1 + i, region="US") for i in range(5)]
    assert store.enqueue_events(events) == 5
    assert store.enqueue_events(events[:2]) == 2  # a client retried
    assert store.drain_events("worker-1", 4) == (4, 4)
    assert store.drain_events("worker-1", 100) == (3, 1)
    assert store.drain_events("worker-1", 100) == (0, 0)
    ctx = store.read_request_context("alice", 1, T0 + 10)
    assert ctx.history.tolist() == [0, 1, 2, 3, 0]
    assert store.video_features(np.array([0])).live_impressions.tolist() == [2]


def test_publish_switch_is_atomic_for_readers(store: OnlineStore) -> None:
    cfg = _cfg()
    snaps = {
        "a": _snapshot([1, 2], [(1, 1.0)], trending=([1], [1.0])),
        "b": _snapshot([3, 4, 5], [(2, 1.0)], trending=([2], [1.0])),
    }
    expect = {"a": ([1, 2], [1]), "b": ([3, 4, 5], [2])}
    publish(store, snaps["a"], cfg)
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            for i in range(6):
                publish(store, snaps["ab"[(i + 1) % 2]], cfg)
        except BaseException as e:
            errors.append(e)
        finally:
            stop.set()

    t = threading.Thread(target=writer)
    t.start()
    reads = 0
    while not stop.is_set() or reads < 5:
        ctx = store.read_request_context("alice", 1, T0)
        got = (ctx.history.tolist(), ctx.tag_idx.tolist())
        assert got in expect.values(), got
        reads += 1
    t.join()
    assert not errors, errors
    assert store.read_request_context("alice", 1, T0).history.tolist() == [1, 2]


def test_every_key_has_a_ttl_or_a_bound(store: OnlineStore) -> None:
    cfg = _cfg()
    publish(store, _snapshot([1, 2], [(1, 1.0)]), cfg)
    store.apply_events([_ev(i, i % 5, T0 + i, region="US") for i in range(6)])
    store.enqueue_events([_ev(50, 1, T0 + 50, user="bob")])
    store.drain_events("w", 10)
    v2 = publish(store, _snapshot([3], [(2, 1.0)]), cfg)
    store.apply_events([_ev(60, 2, T0 + 60, user="carol")])
    keys_ = __import__("shortrec.store.keys", fromlist=["Keys"]).Keys(cfg)
    ttls = store.key_ttls()
    assert ttls, "no keys at all"
    old = [k for k in ttls if keys_.version_of(k) not in (None, v2)]
    assert old, "the replaced version's keys should still be there during the grace period"
    for key, ttl in ttls.items():
        assert keys_.is_store_key(key), key
        if ttl is None:
            assert keys_.bounded_without_ttl(key, v2), f"{key} has no TTL and no bound"
        else:
            assert ttl > 0, key
    for key in old:
        ttl = ttls[key]
        assert ttl is not None and ttl <= cfg.old_version_grace_s, key


def test_activate_refuses_an_older_version(store: OnlineStore) -> None:
    older = store.begin_version()
    newer = store.begin_version()
    store.activate(newer, T0)
    with pytest.raises(StoreError, match="is live"):
        store.activate(older, T0)
    assert store.current_version() == (newer, T0)


def test_bad_input_is_rejected(store: OnlineStore) -> None:
    with pytest.raises(StoreInputError, match="user_id"):
        store.read_request_context("a{b}", 1, T0)
    with pytest.raises(StoreInputError, match="video_idx"):
        _ev(1, -3, T0)
    with pytest.raises(StoreInputError, match="engagement"):
        _ev(1, 3, T0, engagement=float("nan"))
    snap = _snapshot([1], [(1, 1.0)])
    bad_vocab = Snapshot(as_of_us=T0, videos=_videos(), histories=snap.histories)
    with pytest.raises(StoreInputError, match="user_vocab"):
        publish(store, bad_vocab, _cfg())
    assert store.current_version()[0] == 0
