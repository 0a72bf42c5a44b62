"""An A/B test on real service traffic, end to end: a FeedService with an experiments file and
``exposure_log_dir`` serves pages and ingests events (with a replayed batch), ``abtest collect``
turns its JSON-lines logs into a logs directory and ``abtest analyze`` reports per-arm counts
equal to what was served and posted."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from shortrec import abtest
from shortrec import schema as S
from shortrec.cli import app
from shortrec.config import ServingConfig
from shortrec.experiments import logs as L
from shortrec.experiments.spec import ExperimentSource
from shortrec.serving.api import EventIn
from shortrec.serving.exposure import read_exposures, read_outcomes
from shortrec.serving.metrics import Metrics, new_registry
from shortrec.serving.service import FeedService
from shortrec.serving.snapshot import Bundle, bundle_snapshot
from shortrec.store import MemoryStore, publish

US = 1_000_000


@pytest.fixture(scope="module")
def traffic(
    tiny_bundle: Any, tmp_path_factory: pytest.TempPathFactory, div_experiments: str
) -> dict[str, Any]:
    """Serve 2 pages to each of 30 users and post 3 outcomes per page; what was served and
    posted, per arm."""
    base = tmp_path_factory.mktemp("real_traffic")
    exp = base / "experiments.toml"
    exp.write_text(div_experiments)
    logs = base / "serving-logs"
    bundle = Bundle.load(tiny_bundle.art)
    store = MemoryStore()
    publish(store, bundle_snapshot(bundle), store.cfg)
    clock = [tiny_bundle.now_us]
    settings = ServingConfig(
        gc_freeze=False,
        budget_ms=10_000,
        deadline_ranking_ms=5_000,
        deadline_sources_ms=5_000,
        exposure_log_dir=str(logs),
    )
    svc = FeedService(
        settings,
        bundle,
        store,
        Metrics(new_registry()),
        ExperimentSource(exp),
        clock=lambda: clock[0],
    )
    rng = np.random.default_rng(7)
    users: dict[str, set[str]] = defaultdict(set)
    totals: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    pages = applied = 0
    event_id = 0
    try:
        for u in range(30):
            user = f"user-{u}"
            for s in range(2):
                page = svc.feed(user, session_id=100 * u + s, n=5)
                arm = page.arms["div"]
                users[arm].add(user)
                pages += 1
                totals[arm]["rows"] += len(page.items)
                clock[0] += US  # outcomes arrive after the page (the service stamps them)
                batch = [
                    EventIn(
                        event_id=event_id + i,
                        user_id=user,
                        session_id=page.session_id,
                        video_idx=it.video_idx,
                        request_id=page.request_id,
                        watch_time_s=float(rng.integers(0, 30)),
                        liked=bool(rng.random() < 0.3),
                    )
                    for i, it in enumerate(page.items[:3])
                ]
                event_id += len(batch)
                res = svc.ingest_events(batch)
                assert res.applied == len(batch)
                applied += res.applied
                for ev in batch:
                    totals[arm]["events"] += 1
                    totals[arm]["watch"] += ev.watch_time_s
                    totals[arm]["likes"] += ev.liked
                if u == 0 and s == 0:  # the client retries a batch: applied and logged once
                    assert svc.ingest_events(batch).duplicates == len(batch)
        # an outcome naming a page nobody logged still counts for its user, and is counted
        stray = EventIn(
            event_id=10**6,
            user_id="user-1",
            session_id=101,
            video_idx=0,
            request_id=123,
            watch_time_s=5.0,
        )
        svc.ingest_events([stray])
        applied += 1
        arm1 = next(a for a, us in users.items() if "user-1" in us)
        totals[arm1]["events"] += 1
        totals[arm1]["watch"] += 5.0
    finally:
        svc.close()
    return {
        "base": base,
        "logs": logs,
        "experiments": exp,
        "art": tiny_bundle.art,
        "users": {a: len(us) for a, us in users.items()},
        "totals": totals,
        "pages": pages,
        "applied": applied,
    }


def test_the_service_logs_every_page_and_every_applied_event_once(traffic: dict[str, Any]) -> None:
    assert len(read_exposures(traffic["logs"])) == traffic["pages"]
    outcomes = read_outcomes(traffic["logs"])
    assert len(outcomes) == traffic["applied"]  # the replayed batch is not logged again
    assert len({(o["user_id"], o["event_id"]) for o in outcomes}) == len(outcomes)
    first = outcomes[0]
    assert set(first) == {
        "event_id",
        "request_id",
        "user_id",
        "session_id",
        "video_idx",
        "ts_us",
        "watch_time_s",
        "watch_ratio",
        "skipped",
        "liked",
        "shared",
        "followed",
    }
    assert first["ts_us"] > 0 and isinstance(first["skipped"], bool)


def test_collect_then_analyze_counts_what_was_served_and_posted(
    traffic: dict[str, Any], tmp_path: Path, div_experiments: str
) -> None:
    out = tmp_path / "logs"
    summary = abtest.collect_logs(traffic["logs"], traffic["art"], out, traffic["experiments"])
    tot = traffic["totals"]
    assert summary["pages"] == traffic["pages"]
    assert summary["exposure_rows"] == sum(t["rows"] for t in tot.values())
    assert summary["events"] == traffic["applied"] == sum(t["events"] for t in tot.values())
    assert summary["duplicate_events_dropped"] == 0
    assert summary["events_unmatched"] == 1 and summary["events_without_request"] == 0
    assert summary["videos_without_category"] == 0
    assert summary["pages_other_config_version"] == 0
    assert json.loads((out / abtest.COLLECT_FILE).read_text()) == summary
    assert (out / abtest.EXPERIMENTS_FILE).read_text() == div_experiments
    users = pl.read_parquet(out / abtest.USERS_FILE)
    assert S.validate(users, S.VOCAB) == [] and users.height == 30
    x = pl.read_parquet(out / "exposures" / abtest.COLLECT_PART)
    assert S.validate(x, L.EXPOSURES) == []
    assert S.validate(pl.read_parquet(out / "events" / abtest.COLLECT_PART), S.EVENTS) == []

    report = abtest.analyze_logs(out, "div", tmp_path / "report")
    assert report["users"] == traffic["users"]
    assert report["crossover_users"] == 0
    result = json.loads((tmp_path / "report" / "result.json").read_text())
    assert result["unmatched_events"] == 1
    est = {(e["metric"], e["arm"]): e for e in result["estimates"]}
    for arm, n in traffic["users"].items():
        assert est[("likes_per_user", arm)]["estimate"] * n == pytest.approx(tot[arm]["likes"])
        assert est[("watch_time_per_user", arm)]["estimate"] * n == pytest.approx(tot[arm]["watch"])


def test_the_cli_collects_and_names_a_malformed_line(
    traffic: dict[str, Any], tmp_path: Path
) -> None:
    logs = tmp_path / "serving-logs"
    logs.mkdir()
    for p in traffic["logs"].iterdir():
        (logs / p.name).write_bytes(p.read_bytes())
    out = tmp_path / "collected"
    runner = CliRunner()
    args = ["abtest", "collect", str(logs), "--artifacts", str(traffic["art"]), "--out", str(out)]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert (out / "events" / abtest.COLLECT_PART).is_file()
    assert not (out / abtest.EXPERIMENTS_FILE).exists()  # none given
    before = (out / abtest.COLLECT_FILE).read_text()

    worker = next(logs.glob("outcomes-*.jsonl"))
    n_lines = len(worker.read_bytes().splitlines())
    with worker.open("ab") as fh:
        fh.write(b'{"event_id": 1, "user_id": "u", "liked": "yes"}\n')
    res = runner.invoke(app, args)
    assert res.exit_code == 2
    text = " ".join(res.output.split())
    assert f"{worker.name}: line {n_lines + 1}: field video_idx: missing" in text
    assert (out / abtest.COLLECT_FILE).read_text() == before  # the old output is untouched
