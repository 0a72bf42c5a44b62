"""The HTTP-free FeedService (the API the A/B simulator uses): declared fallbacks, experiment
arms and their metrics, and reloading the experiment config."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from shortrec.config import ServingConfig
from shortrec.experiments.spec import ExperimentSource
from shortrec.serving.api import EventIn
from shortrec.serving.metrics import Metrics, new_registry
from shortrec.serving.service import EventValidationError, FeedContext, FeedService
from shortrec.serving.snapshot import Bundle, bundle_snapshot
from shortrec.store import MemoryStore, publish


@pytest.fixture(scope="module")
def bundle(tiny_bundle: Any) -> Bundle:
    return Bundle.load(tiny_bundle.art)


def _service(
    bundle: Bundle, now: int, exp: ExperimentSource | None = None, **cfg: Any
) -> FeedService:
    store = MemoryStore()
    publish(store, bundle_snapshot(bundle), store.cfg)
    settings = ServingConfig(gc_freeze=False, budget_ms=10_000, deadline_ranking_ms=5_000, **cfg)
    return FeedService(settings, bundle, store, Metrics(new_registry()), exp, clock=lambda: now)


def _value(svc: FeedService, name: str, labels: dict[str, str] | None = None) -> float:
    v = svc.metrics.registry.get_sample_value(name, labels or {})
    return 0.0 if v is None else float(v)


def test_feed_in_process_and_events(bundle: Bundle, tiny_bundle: Any) -> None:
    svc = _service(bundle, tiny_bundle.now_us)
    r = svc.feed("sim-user", 3, 8, FeedContext(region="US"))
    assert len(r.items) == 8 and r.session_id == 3
    assert all(np.isfinite(it.score) for it in r.items)
    assert {"total", "ranking", "store_read", "merge"} <= set(r.stage_ms)
    evs = [
        EventIn(
            event_id=i,
            user_id="sim-user",
            session_id=3,
            video_idx=it.video_idx,
            watch_time_s=5.0,
            liked=i == 0,
        )
        for i, it in enumerate(r.items)
    ]
    res = svc.ingest_events(evs)
    assert (res.applied, res.duplicates) == (8, 0)
    assert _value(svc, "shortrec_likes_total", {"arm": "none"}) == 1
    assert _value(svc, "shortrec_watch_seconds_total", {"arm": "none"}) == 40.0
    with pytest.raises(EventValidationError) as e:
        svc.ingest_events(
            [
                evs[0].model_copy(update={"ts": None, "event_id": 99}),
                EventIn(
                    event_id=100,
                    user_id="sim-user",
                    session_id=3,
                    video_idx=1,
                    watch_time_s=1.0,
                    ts=dt.datetime(2000, 1, 1, tzinfo=dt.UTC),
                ),
            ]
        )
    assert e.value.errors[0][:2] == (1, "ts")
    with pytest.raises(ValueError, match=r"1\.\.100"):
        svc.feed("sim-user", 3, 0)
    svc.close()


def test_ranking_error_falls_back_to_retrieval_order(
    bundle: Bundle, tiny_bundle: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc = _service(bundle, tiny_bundle.now_us)

    def boom(*a: Any, **k: Any) -> Any:
        raise RuntimeError("onnx session died")

    monkeypatch.setattr(bundle.predictor, "score_batch", boom)
    r = svc.feed("u-fallback", 1, 10)
    assert len(r.items) == 10 and "ranking_error" in r.fallbacks
    assert all(it.heads == {} for it in r.items)
    assert _value(svc, "shortrec_fallbacks_total", {"reason": "ranking_error"}) == 1
    svc.close()


def test_retrieval_blend_moves_the_page_between_ranker_and_merge_order(
    bundle: Bundle, tiny_bundle: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # without re-ranking, caps, fresh slots or session penalties the page is the blended order:
    # weight 0 serves the ranker's order, weight 1 the merge's (the order candidates arrive in)
    seen: list[tuple[np.ndarray, np.ndarray]] = []
    real = bundle.predictor.score_batch

    def spy(histories: Any, candidates: Any, **kw: Any) -> Any:
        out = real(histories, candidates, **kw)
        seen.extend(
            (c.video_idx.copy(), s.final.copy()) for c, s in zip(candidates, out, strict=True)
        )
        return out

    monkeypatch.setattr(bundle.predictor, "score_batch", spy)
    plain = {
        "rerank": {"method": "none", "max_per_creator": None, "max_per_topic": None},
        "fresh_slots": 0,
        "skip_penalty": 0.0,
    }
    pages = {}
    for w in (0.0, 1.0):
        seen.clear()
        svc = _service(bundle, tiny_bundle.now_us, retrieval_blend=w, **plain)
        page = [it.video_idx for it in svc.feed("u-blend", 1, 10).items]
        svc.close()
        ((vids, final),) = seen
        if w == 0.0:
            assert page == vids[np.argsort(-final, kind="stable")[:10]].tolist()
        else:
            assert page == vids[:10].tolist()
        pages[w] = page
    assert pages[0.0] != pages[1.0]  # the two orders differ on this user


@pytest.mark.parametrize("on_loop", [False, True], ids=["blocking", "event-loop"])
def test_ranking_deadline_falls_back(
    bundle: Bundle, tiny_bundle: Any, monkeypatch: pytest.MonkeyPatch, on_loop: bool
) -> None:
    svc = _service(bundle, tiny_bundle.now_us)
    svc.config = svc.config.model_copy(update={"deadline_ranking_ms": 20.0})
    real = bundle.predictor.score_batch

    def slow(*a: Any, **k: Any) -> Any:
        time.sleep(0.3)
        return real(*a, **k)

    def feed(n: int) -> Any:  # the blocking path, or the HTTP app's (on an event loop)
        if on_loop:
            return asyncio.run(svc.feed_async("u-slow", 1, n))
        return svc.feed("u-slow", 1, n)

    monkeypatch.setattr(bundle.predictor, "score_batch", slow)
    t0 = time.perf_counter()
    r = feed(10)
    assert time.perf_counter() - t0 < 0.28  # did not wait for the model
    assert len(r.items) == 10 and "ranking_timeout" in r.fallbacks
    assert _value(svc, "shortrec_fallbacks_total", {"reason": "ranking_timeout"}) == 1
    with pytest.raises(ValueError, match=r"1\.\.100"):
        feed(101)
    svc.close()


def test_feed_async_serves_the_same_page_with_the_model_call_off_the_loop(
    bundle: Bundle, tiny_bundle: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the HTTP app's path: the pipeline on the event loop, the model call in the batcher's
    # thread; the page equals the blocking path's, and the loop keeps running meanwhile
    sync_svc = _service(bundle, tiny_bundle.now_us)
    want = sync_svc.feed("u-async", 2, 10)
    sync_svc.close()
    real = bundle.predictor.score_batch

    def slow(*a: Any, **k: Any) -> Any:
        time.sleep(0.2)
        return real(*a, **k)

    monkeypatch.setattr(bundle.predictor, "score_batch", slow)
    svc = _service(bundle, tiny_bundle.now_us)

    async def main() -> tuple[Any, int]:
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.create_task(tick())
        got = await svc.feed_async("u-async", 2, 10)
        ticker.cancel()
        return got, ticks

    got, ticks = asyncio.run(main())
    svc.close()
    assert [(it.video_idx, it.score) for it in got.items] == [
        (it.video_idx, it.score) for it in want.items
    ]
    assert ticks >= 5  # ~20 ticks fit in the 0.2 s model call: it did not block the loop


def test_source_error_skips_that_source(
    bundle: Bundle, tiny_bundle: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc = _service(bundle, tiny_bundle.now_us)
    real = svc._source

    def broken(b: Any, name: str, *a: Any) -> Any:
        if name == "explore":
            raise RuntimeError("explore lists corrupt")
        return real(b, name, *a)

    monkeypatch.setattr(svc, "_source", broken)
    r = svc.feed("cold-user", 1, 10)
    assert len(r.items) == 10 and "source_error" in r.fallbacks
    assert all("explore" not in it.sources for it in r.items)
    svc.close()


def test_experiment_arms_metrics_and_reload(
    bundle: Bundle, tiny_bundle: Any, tmp_path: Path, div_experiments: str
) -> None:
    path = tmp_path / "exp.toml"
    path.write_text(div_experiments)
    svc = _service(bundle, tiny_bundle.now_us, ExperimentSource(path))
    arms = {svc.feed(f"user-{i}", 1, 5).arms["div"] for i in range(30)}
    assert arms == {"control", "more_diverse"}
    total = sum(
        _value(svc, "shortrec_experiment_assignments_total", {"experiment": "div", "arm": a})
        for a in arms
    )
    assert total == 30
    assert (
        _value(svc, "shortrec_experiment_allocation", {"experiment": "div", "arm": "control"})
        == 0.5
    )
    path.write_text(
        div_experiments.replace(
            '[[experiments.arms]]\nname = "control"',
            '[[experiments.arms]]\nname = "control"\nweight = 3',
        )
    )
    status = svc.reload_experiments()
    assert status is not None and status.changed and status.error is None
    assert (
        _value(svc, "shortrec_experiment_allocation", {"experiment": "div", "arm": "control"})
        == 0.75
    )
    path.write_text("not [valid toml")
    bad = svc.reload_experiments()
    assert bad is not None and bad.error is not None and not bad.changed
    assert svc.feed("user-1", 1, 5).arms  # the last good config keeps serving
    svc.close()


def test_drift_reference_in_bundle_is_monitored_and_exported(
    tiny_bundle: Any, tmp_path: Path
) -> None:
    import shutil

    from shortrec.artifacts import write_component
    from shortrec.monitoring.drift import REFERENCE_COMPONENT, save_reference

    art = tmp_path / "art"
    shutil.copytree(tiny_bundle.art, art)
    rng = np.random.default_rng(0)
    with write_component(art, REFERENCE_COMPONENT, ServingConfig(), "test") as (d, _):
        # a reference far from what the model serves: scores near 5, long histories
        save_reference(
            d,
            {
                "score_final": rng.normal(5.0, 0.1, 2_000),
                "history_len": rng.integers(40, 50, 2_000).astype(float),
            },
        )
    bundle = Bundle.load(art)
    assert bundle.drift is not None
    svc = _service(bundle, tiny_bundle.now_us, drift_window=200, cold_cache_ttl_s=0)
    for i in range(40):
        svc.feed(f"drift-{i}", 1, 10)
    svc.export_drift()
    psi = _value(svc, "shortrec_drift_psi", {"feature": "score_final"})
    ks = _value(svc, "shortrec_drift_ks", {"feature": "score_final"})
    assert psi > 1.0 and ks > 0.9  # served scores are nowhere near the reference
    assert (
        svc.metrics.registry.get_sample_value("shortrec_drift_psi", {"feature": "video_age_hours"})
        is None
    )  # no reference for it: not exported
    svc.close()


def test_every_served_page_is_in_the_exposure_log_with_its_arms(
    bundle: Bundle, tiny_bundle: Any, tmp_path: Path, div_experiments: str
) -> None:
    from shortrec.schema import BadInput
    from shortrec.serving.exposure import read_exposures

    path = tmp_path / "exp.toml"
    path.write_text(div_experiments)
    logs = tmp_path / "exposures"
    svc = _service(bundle, tiny_bundle.now_us, ExperimentSource(path), exposure_log_dir=str(logs))
    pages = [svc.feed(f"user-{i}", 1, 5) for i in range(6)]
    svc.close()
    rows = read_exposures(logs)
    assert [r["request_id"] for r in rows] == [p.request_id for p in pages]
    for page, row in zip(pages, rows, strict=True):
        assert row["user_id"] == page.user_id and row["ts_us"] == tiny_bundle.now_us
        assert row["arms"] == [{"experiment": "div", "arm": page.arms["div"]}]
        assert [i["video_idx"] for i in row["items"]] == [i.video_idx for i in page.items]
        assert row["config_version"]
    (logs / "exposures-1.jsonl").write_text('{"request_id": 1}\nnot json\n')
    with pytest.raises(BadInput, match=r"exposures-1\.jsonl: line 2"):
        read_exposures(logs)


def test_an_arm_switches_the_model_with_model_version(
    bundle: Bundle, tiny_bundle: Any, tmp_path: Path
) -> None:
    import dataclasses

    path = tmp_path / "exp.toml"
    path.write_text(
        '[[experiments]]\nname = "mv"\n[[experiments.arms]]\nname = "old"\n'
        '[[experiments.arms]]\nname = "new"\noverrides = { model_version = "v2" }\n'
    )
    svc = _service(
        bundle, tiny_bundle.now_us, ExperimentSource(path), models={"v2": str(tiny_bundle.art)}
    )
    assert set(svc._arm_bundles) == {"v2"}  # loaded and validated at start
    # the same files under a distinct version, so the test can see which bundle served
    svc._arm_bundles["v2"] = dataclasses.replace(svc._arm_bundles["v2"], model_version="v2-hash")
    seen: dict[str, set[str]] = {"old": set(), "new": set()}
    for i in range(40):
        r = svc.feed(f"user-{i}", 1, 5)
        seen[r.arms["mv"]].add(r.model_version)
        assert len(r.items) == 5
    svc.close()
    assert seen["new"] == {"v2-hash"}
    assert seen["old"] == {bundle.model_version}
