"""Simulator: output schema and invariants, determinism, truth round trip, oracle exactness,
and the behavioural properties later work relies on."""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from pydantic import ValidationError
from scipy import stats

from shortrec import schema as S
from shortrec.config import SimConfig
from shortrec.data import io
from shortrec.data.simulator import (
    POLICIES,
    LoggingPolicy,
    World,
    _row_counts,
    build_world,
    chunk_bounds,
    generate,
    plan_segments,
    resolve_workers,
    simulate_users,
)
from shortrec.data.world import WorldError
from shortrec.domain import Oracle


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    out = tmp_path_factory.mktemp("sim") / "tiny"
    summary = generate(SimConfig.preset_config("tiny", seed=7), out, progress=False)
    return out, summary


@pytest.fixture(scope="module")
def events(tiny: tuple[Path, dict[str, object]]) -> pl.DataFrame:
    return io.Dataset.open(tiny[0]).events().collect()


# ---------------------------------------------------------------- output
def test_every_table_passes_its_schema(tiny: tuple[Path, dict[str, object]]) -> None:
    root, summary = tiny
    ds = io.Dataset.open(root)
    assert ds.validate() == []
    assert ds.is_synthetic
    m = ds.manifest
    assert m["kind"] == "synthetic" and m["preset"] == "tiny" and m["seed"] == 7
    assert m["skip_threshold_s"] == S.DEFAULT_SKIP_THRESHOLD_S
    assert SimConfig(**m["config"]) == SimConfig.preset_config("tiny", seed=7)
    counts = m["counts"]
    assert counts == summary["counts"]  # type: ignore[comparison-overlap]
    assert counts["events"] == ds.events().select(pl.len()).collect().item() > 10_000
    for name in io.VOCAB_NAMES:
        assert ds.vocab(name).height > 0
    assert ds.vocab("users")[S.ID][3] == "u3" and ds.vocab("videos")[S.ID][42] == "v42"
    assert ds.vocab("categories")[S.ID].to_list()[:4] == ["comedy", "dance", "food", "pets"]
    assert ds.vocab("tags")[S.ID][0] == "comedy_tips"


def test_event_invariants(tiny: tuple[Path, dict[str, object]], events: pl.DataFrame) -> None:
    ev = events
    ids = ev[S.EVENT_ID].to_numpy()
    assert (np.diff(ids) == 1).all() and ids[0] == 0
    # ordered by (user, time) with strictly increasing time inside a user
    same = ev.select(
        (pl.col(S.USER_IDX).diff() == 0).alias("same"),
        (pl.col(S.USER_IDX).diff() >= 0).alias("sorted"),
        (pl.col(S.TS).diff() > pl.duration(microseconds=0)).alias("later"),
    ).slice(1)
    assert same["sorted"].all()
    assert same.filter("same")["later"].all()
    # positions count 0, 1, 2... inside each session; a session belongs to one user
    s = ev.group_by(S.SESSION_ID).agg(
        pl.col(S.USER_IDX).n_unique().alias("users"),
        (pl.col(S.POSITION) == pl.int_range(pl.len())).all().alias("consecutive"),
    )
    assert (s["users"] == 1).all() and s["consecutive"].all()
    # pages of 8 impressions
    pages = ev.group_by(S.REQUEST_ID).agg(
        pl.len().alias("n"), pl.col(S.SESSION_ID).n_unique().alias("sessions")
    )
    assert pages["n"].max() == 8 and (pages["sessions"] == 1).all()
    # outcomes
    assert (ev[S.SKIPPED] == (ev[S.WATCH_TIME_S] < S.DEFAULT_SKIP_THRESHOLD_S)).all()
    vids = pl.read_parquet(tiny[0] / io.VIDEOS_FILE)
    j = ev.join(vids.select(S.VIDEO_IDX, S.DURATION_S, S.UPLOAD_TS), on=S.VIDEO_IDX)
    ratio = j[S.WATCH_TIME_S] / j[S.DURATION_S]
    assert np.allclose(ratio.to_numpy(), j[S.WATCH_RATIO].to_numpy(), rtol=1e-5)
    assert (j[S.UPLOAD_TS] <= j[S.TS]).all()  # a video is shown only after its upload
    assert (j[S.DURATION_S] >= 5).all() and (j[S.DURATION_S] <= 180).all()
    assert set(ev[S.POLICY].unique()) == set(POLICIES)
    assert not (ev[S.LIKED] & ev[S.SKIPPED]).any()
    assert (ev[S.WATCH_RATIO] > 1).any()  # replays exist


def test_videos_arrive_over_the_horizon_and_tags_are_readable(
    tiny: tuple[Path, dict[str, object]],
) -> None:
    root, _ = tiny
    m = io.read_json(root / io.MANIFEST)
    v = pl.read_parquet(root / io.VIDEOS_FILE)
    up = v[S.UPLOAD_TS].dt.epoch("us").to_numpy()
    late = up > m["start_us"] + (m["end_us"] - m["start_us"]) // 2
    assert 0.15 < late.mean() < 0.5  # uploads keep arriving: cold start matters
    tags = v[S.TAGS]
    assert tags.list.len().min() >= 1
    # most tags come from the video's own category (tag g belongs to topic g % n_topics)
    t = m["config"]["n_topics"]
    same = (
        v.explode(S.TAGS)
        .group_by(S.VIDEO_IDX)
        .agg((pl.col(S.TAGS) % t == pl.col(S.CATEGORY).cast(pl.Int32)).any().alias("own"))
        ["own"]
        .mean()
    )  # fmt: skip
    assert same > 0.7
    assert v[S.TITLE].str.starts_with("#").all()


def test_same_seed_gives_byte_identical_files(tmp_path: Path) -> None:
    cfg = SimConfig.preset_config("tiny", seed=3).model_copy(update={"n_users": 60})
    a, b = tmp_path / "a", tmp_path / "b"
    generate(cfg, a, progress=False)
    generate(cfg, b, progress=False)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert len(files) > 8
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    c = tmp_path / "c"
    generate(cfg.model_copy(update={"seed": 4}), c, progress=False)
    assert (c / "events/part-00000.parquet").read_bytes() != (
        a / "events/part-00000.parquet"
    ).read_bytes()


def test_chunks_write_parts_with_global_ids(tmp_path: Path) -> None:
    cfg = SimConfig.preset_config("tiny").model_copy(update={"n_users": 50, "chunk_users": 20})
    summary = generate(cfg, tmp_path / "d", progress=False)
    parts = sorted((tmp_path / "d" / io.EVENTS_DIR).glob("part-*.parquet"))
    assert len(parts) == 3
    ev = pl.concat([pl.read_parquet(p) for p in parts])
    assert ev[S.EVENT_ID].to_list() == list(range(ev.height))
    assert ev[S.SESSION_ID].is_sorted() and ev[S.REQUEST_ID].is_sorted()
    assert ev[S.SESSION_ID].n_unique() == summary["counts"]["sessions"]
    assert S.validate(ev, S.EVENTS) == []


def test_worker_processes_give_byte_identical_files(tmp_path: Path) -> None:
    """Chunks on 2 processes (finishing in any order) == chunks in order in this process."""
    cfg = SimConfig.preset_config("tiny", seed=5).model_copy(
        update={"n_users": 90, "chunk_users": 25}
    )
    one = generate(cfg.model_copy(update={"workers": 1}), tmp_path / "one", progress=False)
    two = generate(cfg.model_copy(update={"workers": 2}), tmp_path / "two", progress=False)
    assert (one["workers"], two["workers"]) == (1, 2)
    a, b = tmp_path / "one", tmp_path / "two"
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert len(list((a / io.EVENTS_DIR).glob("part-*.parquet"))) == 4
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    ev = io.Dataset.open(b).events().collect()
    assert ev[S.EVENT_ID].to_list() == list(range(ev.height))
    assert ev[S.SESSION_ID].is_sorted() and ev[S.REQUEST_ID].is_sorted()


def test_chunks_are_balanced_and_independent_of_workers() -> None:
    assert chunk_bounds(20_000, 10_000) == [0, 10_000, 20_000]  # medium: 2 chunks
    b = chunk_bounds(50, 20)
    sizes = np.diff(b)
    assert b[0] == 0 and b[-1] == 50 and len(sizes) == 3 and sizes.max() - sizes.min() <= 1
    assert chunk_bounds(7, 100) == [0, 7]
    assert SimConfig.preset_config("medium").n_users >= 2 * SimConfig().chunk_users
    assert resolve_workers(3) == 3 and 1 <= resolve_workers(None) <= 2
    with pytest.raises(ValidationError):
        SimConfig(workers=0)


def test_a_failed_generation_leaves_the_previous_dataset(tmp_path: Path) -> None:
    out = tmp_path / "keep"
    out.mkdir()
    (out / "marker").write_text("old")
    cfg = SimConfig.preset_config("tiny").model_copy(update={"n_users": 10})
    with pytest.raises(OSError):
        generate(cfg, out / "marker" / "sub", progress=False)  # parent is a file
    assert (out / "marker").read_text() == "old"


def test_config_rejects_inconsistent_values() -> None:
    with pytest.raises(ValidationError):
        SimConfig(n_topics=10, n_tags=5)
    with pytest.raises(ValidationError):
        SimConfig(policy_trending=0, policy_interest=0, policy_explore=0)
    with pytest.raises(ValidationError):
        SimConfig(nope=1)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="unknown preset"):
        SimConfig.preset_config("huge")  # type: ignore[arg-type]


# ---------------------------------------------------------------- truth and oracle
def test_world_load_round_trip_and_oracle(tiny: tuple[Path, dict[str, object]]) -> None:
    root, _ = tiny
    w = World.load(root)
    assert isinstance(w, Oracle)
    cfg = SimConfig.preset_config("tiny", seed=7)
    fresh = build_world(cfg, np.random.default_rng([cfg.seed, 0]))
    for name, arr in fresh.arrays().items():
        np.testing.assert_array_equal(getattr(w, name), arr, err_msg=name)
    user = np.array([0, 5, 9])
    video = np.array([[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]])
    ts = np.full(3, w.start_us + 3 * 86_400_000_000)
    r = w.expected_response(user, video, ts)
    assert r.watch_ratio.shape == (3, 4) and r.watch_ratio.dtype == np.float32
    assert ((r.p_skip > 0) & (r.p_skip < 1)).all() and ((r.p_like >= 0) & (r.p_like < 1)).all()
    dur = w.duration_s[video]
    np.testing.assert_allclose(r.watch_time_s, r.watch_ratio * dur, rtol=1e-5)
    # a fresh session in the step API gives the same expectation
    st = w.start_session(5, int(ts[1]))
    e = w.expected_step(st, video[1])
    np.testing.assert_allclose(e.watch_time_s, r.watch_time_s[1], rtol=1e-5)
    with pytest.raises(ValueError, match="video_idx"):
        w.expected_response(user, video[0], ts)
    with pytest.raises(IndexError):
        w.expected_response(user, video + w.n_videos, ts)


def test_world_load_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(WorldError, match=r"world\.json"):
        World.load(tmp_path)
    truth = tmp_path / "truth"
    truth.mkdir()
    (truth / "world.json").write_text("{\n  bad")
    (truth / "world.npz").write_bytes(b"")
    with pytest.raises(WorldError, match=r"world\.json: line 2"):
        World.load(tmp_path)
    assert issubclass(WorldError, S.BadInput)


def test_drift_moves_interests_over_days(tiny: tuple[Path, dict[str, object]]) -> None:
    w = World.load(tiny[0])
    users = np.arange(w.n_users)
    early = w.interests(users, np.full(w.n_users, w.start_us))
    late = w.interests(users, np.full(w.n_users, w.end_us))
    np.testing.assert_allclose(early, w.theta_a, atol=1e-6)
    np.testing.assert_allclose(late.sum(1), 1.0, atol=1e-5)
    moved = np.abs(late - early).sum(1)
    assert moved.mean() > 0.1
    day1 = w.interests(users, np.full(w.n_users, w.start_us + 86_400_000_000))
    assert np.abs(day1 - early).sum(1).mean() < moved.mean() / 5  # slowly, over days


def test_expected_step_matches_monte_carlo(tiny: tuple[Path, dict[str, object]]) -> None:
    """The closed-form expectation equals the sampler's mean (same probabilities)."""
    w = World.load(tiny[0])
    rng = np.random.default_rng(0)
    st = w.start_session(3, w.start_us + 86_400_000_000)
    st = w.step(st, 10, rng).state
    st = w.step(st, 11, rng).state
    videos = np.array([12, 13, 14, 15, 16, 17, 18, 19, 11])  # 11: a repeat
    exp = w.expected_step(st, videos)
    n = 200_000
    k = videos.shape[0]
    vid = np.repeat(videos, n)
    s, _ = w._state_terms(st, vid)
    out = w.sample(w.probs(s, vid), rng.random((k * n, 8), dtype=np.float32))
    wt = out.watch_time_s.reshape(k, n)
    se = wt.std(1) / np.sqrt(n)
    assert (np.abs(wt.mean(1) - exp.watch_time_s) < 5 * se + 1e-3).all()
    np.testing.assert_allclose(out.skipped.reshape(k, n).mean(1), exp.p_skip, atol=0.006)
    np.testing.assert_allclose(out.liked.reshape(k, n).mean(1), exp.p_like, atol=0.004)


# ---------------------------------------------------------------- behaviour
def _toy_world(base: World) -> World:
    """A controlled world: uniform interests, identical 20 s videos of one topic each
    (topic = video % T), one creator per video, no latent taste, quality or patience."""
    u, v, t = base.n_users, base.n_videos, base.n_topics
    topics = np.zeros_like(base.video_topics)
    topics[:, 0] = np.arange(v) % t
    weights = np.zeros_like(base.video_topic_w)
    weights[:, 0] = 1.0
    uniform = np.full((u, t), 1.0 / t, dtype=np.float32)
    return dataclasses.replace(
        base,
        theta_a=uniform,
        theta_b=uniform,
        z_user=np.zeros_like(base.z_user),
        z_video=np.zeros_like(base.z_video),
        patience=np.zeros_like(base.patience),
        quality=np.zeros_like(base.quality),
        duration_s=np.full(v, 20.0, dtype=np.float32),
        creator=np.arange(v, dtype=np.int32) % base.creator_quality.shape[0],
        creator_quality=np.zeros_like(base.creator_quality),
        video_topics=topics,
        video_topic_w=weights,
        upload_us=np.full(v, base.start_us - 1, dtype=np.int64),
    )


@pytest.fixture(scope="module")
def toy() -> World:
    cfg = SimConfig.preset_config("tiny")
    return _toy_world(build_world(cfg, np.random.default_rng(1)))


def test_higher_affinity_means_longer_expected_watch(toy: World) -> None:
    one_hot = toy.theta_a.copy()
    one_hot[0] = 0.0
    one_hot[0, 0] = 1.0
    w = dataclasses.replace(toy, theta_a=one_hot, theta_b=one_hot)
    t = w.n_topics
    r = w.expected_response(np.array([0]), np.array([[0, 1, t, t + 1]]), np.array([w.start_us]))
    match, other = r.watch_ratio[0, [0, 2]], r.watch_ratio[0, [1, 3]]
    assert match.min() > other.max()
    assert r.p_skip[0, [0, 2]].max() < r.p_skip[0, [1, 3]].min()


def test_higher_affinity_means_longer_watches_in_the_logs(
    tiny: tuple[Path, dict[str, object]], events: pl.DataFrame
) -> None:
    w = World.load(tiny[0])
    user = events[S.USER_IDX].to_numpy().astype(np.int64)
    video = events[S.VIDEO_IDX].to_numpy().astype(np.int64)
    ts = events[S.TS].dt.epoch("us").to_numpy()
    theta = w.interests(user, ts)
    aff = (theta[np.arange(user.shape[0])[:, None], w.video_topics[video]]
           * w.video_topic_w[video]).sum(1)  # fmt: skip
    ratio = events[S.WATCH_RATIO].to_numpy()
    lo, hi = np.quantile(aff, [1 / 3, 2 / 3])
    assert ratio[aff >= hi].mean() > 1.3 * ratio[aff <= lo].mean()
    assert stats.spearmanr(aff, ratio).statistic > 0.1


def test_repeating_one_topic_raises_skip_probability(toy: World) -> None:
    rng = np.random.default_rng(2)
    t = toy.n_topics
    st = toy.start_session(0, toy.start_us)
    # p_skip of an unseen topic-0 video after k = 0..5 other topic-0 videos
    p_same = [float(toy.expected_step(st, np.array([t * 50])).p_skip[0])]
    for k in range(1, 6):
        st = toy.step(st, t * k, rng).state
        p_same.append(float(toy.expected_step(st, np.array([t * 50])).p_skip[0]))
    assert all(b > a for a, b in itertools.pairwise(p_same))
    other = float(toy.expected_step(st, np.array([t * 50 + 1])).p_skip[0])
    assert p_same[-1] > other + 0.1  # it is the repetition, not only fatigue


def _session_lengths(w: World, feed: str, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = w.n_topics
    out = []
    for i in range(n):
        st = w.start_session(i % w.n_users, w.start_us, rng)
        k = 0
        while True:
            topic = 0 if feed == "repeat" else k % t
            video = (topic + t * (k + 1)) % w.n_videos  # a new video (and creator) each time
            r = w.step(st, video, rng)
            k += 1
            if r.ended:
                break
            st = r.state
        out.append(k)
    return np.array(out)


def test_a_diverse_feed_gives_longer_sessions(toy: World) -> None:
    repeat = _session_lengths(toy, "repeat", 300, seed=3)
    diverse = _session_lengths(toy, "diverse", 300, seed=4)
    assert diverse.mean() > 1.2 * repeat.mean()
    assert stats.mannwhitneyu(diverse, repeat, alternative="greater").pvalue < 1e-3


def test_step_api_and_batch_generator_agree_in_distribution(
    tiny: tuple[Path, dict[str, object]], events: pl.DataFrame
) -> None:
    """Replay each user's first logged session with the step API and the same logging policy;
    session lengths, watch times and skip rates must match the batch logs (KS / chi-square)."""
    cfg = SimConfig.preset_config("tiny", seed=7)
    w = World.load(tiny[0])
    policy = LoggingPolicy(w, cfg)
    first = events.filter(
        pl.col(S.SESSION_ID) == pl.col(S.SESSION_ID).min().over(S.USER_IDX)
    )  # fmt: skip
    starts = first.filter(pl.col(S.POSITION) == 0)
    rng = np.random.default_rng(11)
    lengths, watch, skipped = [], [], []
    for _ in range(4):
        for user, ts in zip(starts[S.USER_IDX].to_list(),
                            starts[S.TS].dt.epoch("us").to_list(), strict=True):  # fmt: skip
            st = w.start_session(user, ts, rng)
            while True:
                v, _, _ = policy.serve(np.array([user]), np.array([st.ts_us]),
                                       st.seen[None, :], rng)  # fmt: skip
                r = w.step(st, int(v[0]), rng)
                watch.append(r.response.watch_time_s)
                skipped.append(r.response.skipped)
                if r.ended:
                    lengths.append(r.state.position)
                    break
                st = r.state
    batch_len = first.group_by(S.SESSION_ID).len()["len"].to_numpy()
    assert stats.ks_2samp(lengths, batch_len).pvalue > 0.01
    assert stats.ks_2samp(watch, first[S.WATCH_TIME_S].to_numpy()).pvalue > 0.01
    table = np.array(
        [
            [sum(skipped), len(skipped) - sum(skipped)],
            [first[S.SKIPPED].sum(), first.height - first[S.SKIPPED].sum()],
        ]
    )
    assert stats.chi2_contingency(table).pvalue > 0.01


def test_segments_cover_each_users_timeline(tiny: tuple[Path, dict[str, object]]) -> None:
    w = World.load(tiny[0])
    users = np.arange(w.n_users, dtype=np.int64)
    local, lo, hi = plan_segments(w, users, target_events=16)
    assert np.array_equal(np.unique(local), users)
    assert (hi > lo).all()
    cont = local[1:] == local[:-1]
    assert np.array_equal(lo[1:][cont], hi[:-1][cont])  # contiguous, in time order
    first = np.r_[True, ~cont]
    assert np.array_equal(lo[first], np.maximum(w.signup_us, w.start_us))
    assert (hi[np.r_[~cont, True]] == w.end_us).all()


def test_manifest_is_json_with_counts(tiny: tuple[Path, dict[str, object]]) -> None:
    m = json.loads((tiny[0] / io.MANIFEST).read_text())
    assert {"kind", "preset", "seed", "config", "counts", "skip_threshold_s"} <= set(m)
    assert (tiny[0] / "truth" / "world.npz").is_file()


def test_progress_reports_every_user_once(tiny: tuple[Path, dict[str, object]]) -> None:
    cfg = SimConfig.preset_config("tiny", seed=7)
    w = World.load(tiny[0])
    done: list[int] = []
    users = np.arange(50, dtype=np.int64)
    cols = simulate_users(w, LoggingPolicy(w, cfg), users, np.random.default_rng(0), done.append)
    assert sum(done) == 50
    assert set(np.unique(cols["user"])) <= set(users.tolist())


def test_videos_exist_only_after_their_upload(tiny: tuple[Path, dict[str, object]]) -> None:
    w = World.load(tiny[0])
    early, late = w.videos_available(w.start_us), w.videos_available(w.end_us)
    assert 0 < early.shape[0] < late.shape[0] == w.n_videos
    assert (w.upload_us[early] <= w.start_us).all()
    assert set(early.tolist()) == set(np.flatnonzero(w.upload_us <= w.start_us).tolist())


# ---------------------------------------------------------------- fast paths
@pytest.mark.parametrize("width", [1, 6, 8, 24, 32, 256])
def test_row_counts_equal_a_plain_sum(width: int) -> None:
    """The packed-bits count (widths that are multiples of 8) and its fallback both equal
    ``sum(1)``, up to a full row of 256 (no uint8 overflow)."""
    rng = np.random.default_rng(width)
    eq = rng.random((50, width)) < 0.3
    eq[0] = True
    eq[1] = False
    np.testing.assert_array_equal(_row_counts(eq), eq.sum(1))
    np.testing.assert_array_equal(_row_counts(eq[:, ::-1]), eq.sum(1))  # not C-contiguous


def test_weighted_draws_equal_plain_inversion() -> None:
    """Sorting the keys before the search changes the speed, not the positions drawn."""
    rng = np.random.default_rng(0)
    w = rng.lognormal(0.0, 2.0, size=1_000)
    w[rng.random(1_000) < 0.05] = 0.0  # zero-weight items are never drawn
    cum = np.concatenate([[0.0], np.cumsum(w)])
    lo = rng.integers(0, 500, size=5_000)
    hi = lo + rng.integers(1, 500, size=5_000)
    u = rng.random(5_000)
    u[:3] = [0.0, 1.0 - 1e-16, 0.5]
    x = cum[lo] + u * (cum[hi] - cum[lo])
    plain = np.clip(np.searchsorted(cum, x, side="right") - 1, lo, hi - 1)
    got = LoggingPolicy._weighted(cum, lo, hi, u)
    np.testing.assert_array_equal(got, plain)
    assert ((got >= lo) & (got < hi)).all()
