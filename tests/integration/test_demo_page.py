"""The ``/demo`` feed page end to end: its JSON endpoints over HTTP, and the page itself in
headless Chromium (Debian's ``chromium``, driven by Playwright; no browser is downloaded).

The service runs on the tiny bundle with a ``names`` component written from the tiny world,
over an in-process store published from the same world (so known users have histories). The
browser test loads the page, acts on a card, sees the event posted with the card's
``request_id`` and the next card change, and saves a screenshot (also copied to
``docs/img/demo.png``). It skips when Chromium or Playwright is missing outside CI and fails
under CI (``CI`` set).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import polars as pl
import pytest
from fastapi import FastAPI
from PIL import Image

from shortrec import schema as S
from shortrec.artifacts import BundleError
from shortrec.config import ServingConfig
from shortrec.publish import publish
from shortrec.serving.app import create_app
from shortrec.serving.names import NAMES_COMPONENT, NamesConfig, load_names, write_names
from shortrec.store import MemoryStore

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img" / "demo.png"
RunServer = Callable[[FastAPI], AbstractContextManager[str]]


def _settings() -> ServingConfig:
    return ServingConfig(
        gc_freeze=False,
        budget_ms=10_000,
        deadline_ranking_ms=5_000,
        deadline_sources_ms=5_000,
    )


@pytest.fixture(scope="module")
def named_art(tiny_bundle: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tiny bundle with a names component (the shared bundle stays as it is)."""
    art = tmp_path_factory.mktemp("demo") / "art"
    shutil.copytree(tiny_bundle.art, art)
    write_names(tiny_bundle.root, art, NamesConfig(max_users=40))
    return art


@pytest.fixture(scope="module")
def demo_url(tiny_bundle: Any, named_art: Path, run_server: RunServer) -> Iterator[str]:
    store = MemoryStore()
    publish(tiny_bundle.root, named_art, store=store, progress=False)
    app = create_app(_settings(), named_art, store, clock=lambda: tiny_bundle.now_us)
    with run_server(app) as url:
        yield url


@pytest.fixture(scope="module")
def client(demo_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=demo_url, timeout=30) as c:
        yield c


def _videos(c: httpx.Client, ids: list[int]) -> dict[str, Any]:
    r = c.get("/v1/videos", params=[("ids", i) for i in ids])
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


# ---------------------------------------------------------------- JSON endpoints
def test_videos_carry_the_worlds_names(client: httpx.Client, tiny_bundle: Any) -> None:
    videos = pl.read_parquet(tiny_bundle.root / "videos.parquet")
    tags = dict(pl.read_parquet(tiny_bundle.root / "vocab" / "tags.parquet").iter_rows())
    cats = dict(pl.read_parquet(tiny_bundle.root / "vocab" / "categories.parquet").iter_rows())
    creators = dict(pl.read_parquet(tiny_bundle.root / "vocab" / "creators.parquet").iter_rows())
    ids = [7, 3, 7, 10**6, 0]
    body = _videos(client, ids)
    assert body["missing"] == [10**6]
    assert [v["video_idx"] for v in body["items"]] == [7, 3, 7, 0]  # order asked, dups kept
    for v in body["items"]:
        row = videos.row(by_predicate=pl.col(S.VIDEO_IDX) == v["video_idx"], named=True)
        assert v["named"] is True
        assert v["title"] == row[S.TITLE]
        assert v["creator"] == creators[row[S.CREATOR_IDX]]
        assert v["category"] == cats[row[S.CATEGORY]]
        assert v["tags"] == [tags[t] for t in row[S.TAGS]]
        assert v["duration_s"] == pytest.approx(row[S.DURATION_S], abs=1e-3)
        assert v["upload_ts"].endswith("+00:00")


def test_videos_rejects_bad_ids(client: httpx.Client) -> None:
    assert client.get("/v1/videos").status_code == 422
    assert client.get("/v1/videos", params={"ids": -1}).status_code == 422
    too_many: list[tuple[str, str | int | float | bool | None]] = [("ids", i) for i in range(101)]
    r = client.get("/v1/videos", params=too_many)
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"


def test_demo_users_are_the_busiest_known_users(client: httpx.Client, tiny_bundle: Any) -> None:
    body = client.get("/v1/demo/users", params={"n": 1000}).json()
    assert body["named"] is True and len(body["users"]) == 40
    vocab = pl.read_parquet(tiny_bundle.root / "vocab" / "users.parquet")
    hist = pl.read_parquet(tiny_bundle.root / "etl" / "histories.parquet")
    lens = dict(
        zip(
            hist.get_column(S.USER_IDX).to_list(),
            hist.get_column(S.HIST_VIDEO_IDX).list.len().to_list(),
            strict=True,
        )
    )
    idx_of = dict(zip(vocab.get_column(S.ID), vocab.get_column(S.IDX), strict=True))
    picked = [lens[idx_of[u]] for u in body["users"]]
    rest = [n for i, n in lens.items() if vocab.get_column(S.ID)[i] not in body["users"]]
    assert min(picked) >= max(rest, default=0)  # nobody left out had a longer history
    assert client.get("/v1/demo/users", params={"n": 3}).json()["users"] == body["users"][:3]
    assert client.get("/v1/demo/users", params={"n": 0}).status_code == 422


def test_page_and_assets_are_served_without_external_resources(client: httpx.Client) -> None:
    page = client.get("/demo")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'src="demo/demo.js"' in page.text and 'href="demo/demo.css"' in page.text
    js = client.get("/demo/demo.js")
    css = client.get("/demo/demo.css")
    assert js.headers["content-type"].startswith("text/javascript") and "/v1/events" in js.text
    assert css.headers["content-type"].startswith("text/css")
    for text in (page.text, js.text, css.text):  # no CDN, no external fonts
        assert "://" not in text and "@import" not in text
    assert client.get("/demo/demo.html").status_code == 404
    assert client.get("/demo/nothing.js").status_code == 404


def _page(c: httpx.Client, user: str, session: int, exclude: list[int]) -> dict[str, Any]:
    r = c.post(
        "/v1/feed",
        json={"user_id": user, "session_id": session, "n": 10, "context": {"exclude": exclude}},
    )
    assert r.status_code == 200, r.text
    page: dict[str, Any] = r.json()
    meta = {
        v["video_idx"]: v for v in _videos(c, [it["video_idx"] for it in page["items"]])["items"]
    }
    page["categories"] = [meta[it["video_idx"]]["category"] for it in page["items"]]
    return page


def test_skipping_a_topic_three_times_makes_it_fade(client: httpx.Client) -> None:
    """What the page does: skip three videos of one topic (each event carries its page's
    request_id) and that topic fades from the next page, compared with a page for the same
    user in another session (the skip penalty is per session) and with the first page."""
    users = client.get("/v1/demo/users", params={"n": 20}).json()["users"]
    for user in users:  # a known user whose first page has four videos of one topic
        first = _page(client, user, 11, [])
        counts = {c: first["categories"].count(c) for c in set(first["categories"]) if c}
        topic = max(sorted(counts), key=lambda c: counts[c])
        if counts[topic] >= 4:  # three to skip, and the topic still on the next page
            break
    else:
        pytest.fail(f"no first page of {users} has four videos of one topic")
    victims = [
        it["video_idx"]
        for it, c in zip(first["items"], first["categories"], strict=True)
        if c == topic
    ][:3]
    events = [
        {
            "event_id": 9_000 + i,
            "user_id": user,
            "session_id": 11,
            "video_idx": v,
            "request_id": first["request_id"],
            "watch_time_s": 0.8,
            "skipped": True,
        }
        for i, v in enumerate(victims)
    ]
    r = client.post("/v1/events", json={"events": events})
    assert r.status_code == 200 and r.json()["applied"] == 3, r.text
    after = _page(client, user, 11, victims)
    other_session = _page(client, user, 12, victims)
    assert not set(victims) & {it["video_idx"] for it in after["items"]}
    assert other_session["categories"].count(topic) >= 1, (topic, other_session["categories"])
    assert after["categories"].count(topic) < other_session["categories"].count(topic)
    assert after["categories"].count(topic) < counts[topic]


# ---------------------------------------------------------------- without names, bad names
def test_bundle_without_names_falls_back_to_index_labels(
    tiny_bundle: Any, run_server: RunServer
) -> None:
    app = create_app(_settings(), tiny_bundle.art, MemoryStore(), clock=lambda: tiny_bundle.now_us)
    with run_server(app) as url, httpx.Client(base_url=url, timeout=30) as c:
        assert c.get("/v1/demo/users").json() == {"users": [], "named": False}
        v = _videos(c, [5])["items"][0]
        assert v["named"] is False and v["title"] == "video 5"
        assert v["category"] is None or v["category"].startswith("topic ")
        assert all(t.startswith("tag ") for t in v["tags"]) and v["creator"].startswith("creator #")
        assert v["duration_s"] is None or v["duration_s"] > 0
        assert c.get("/demo").status_code == 200


def test_write_names_names_the_missing_input(tiny_bundle: Any, tmp_path: Path) -> None:
    world = tmp_path / "world"
    shutil.copytree(tiny_bundle.root, world, ignore=shutil.ignore_patterns("events", "truth"))
    (world / "vocab" / "tags.parquet").unlink()
    with pytest.raises(S.BadInput, match=r"vocab/tags\.parquet"):
        write_names(world, tmp_path / "art")
    assert not (tmp_path / "art" / NAMES_COMPONENT).exists()


def test_a_broken_names_component_is_a_bad_bundle(named_art: Path, tmp_path: Path) -> None:
    art = tmp_path / "art"
    shutil.copytree(named_art, art)
    path = art / NAMES_COMPONENT / "videos.parquet"
    path.write_bytes(b"not parquet")
    with pytest.raises(BundleError, match=str(path)):
        load_names(art)
    names = load_names(named_art)
    assert names is not None and len(names.users) == 40


# ---------------------------------------------------------------- the page in Chromium
def _playwright() -> Any:
    """The Playwright sync API, or skip (outside CI) / fail (under CI) saying why."""
    why = None
    sync_api: Any = None
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        why = "chromium is not installed (apt-get install -y chromium)"
    try:
        from playwright import sync_api
    except ImportError:
        why = why or "playwright is not installed (pip install playwright; no `playwright install`)"
    if why is not None:
        if os.environ.get("CI"):
            pytest.fail(f"{why} but CI is set")
        pytest.skip(f"{why}; CI is unset")
    return sync_api


def _save_png(src: Path, dest: Path) -> None:
    """Copy the screenshot as a small palette PNG (commit-worthy), written atomically."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    Image.open(src).convert("RGB").quantize(colors=128).save(tmp, format="PNG", optimize=True)
    os.replace(tmp, dest)


def test_feed_page_in_chromium(demo_url: str, tmp_path: Path) -> None:
    sync_api = _playwright()
    user = httpx.get(f"{demo_url}/v1/demo/users", params={"n": 1}).json()["users"][0]
    exe = CHROMIUM if Path(CHROMIUM).exists() else str(shutil.which("chromium"))
    posted: list[dict[str, Any]] = []
    feeds: list[dict[str, Any]] = []
    errors: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 720})
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on(
                "request",
                lambda r: (
                    posted.append(json.loads(r.post_data or "{}"))
                    if r.url.endswith("/v1/events")
                    else None
                ),
            )
            page.on(
                "response",
                lambda r: feeds.append(r.json()) if r.url.endswith("/v1/feed") else None,
            )
            page.goto(f"{demo_url}/demo?user={user}")
            page.wait_for_selector("body[data-state=ready]", timeout=30_000)
            card = page.locator("[data-testid=card]")
            first = card.get_attribute("data-video-idx")
            assert first, "no card shown"
            assert page.locator("[data-testid=title]").inner_text().strip()
            assert "Why this video" in page.locator("[data-testid=why]").inner_text()
            assert page.locator("[data-testid=user-picker]").input_value() == user
            assert page.locator("[data-testid=user-picker] option").count() == 41  # + new user
            request_id = int(card.get_attribute("data-request-id") or -1)
            assert request_id == feeds[-1]["request_id"]

            with page.expect_response(lambda r: r.url.endswith("/v1/events")) as ev:
                page.locator("[data-testid=skip]").click()
            assert ev.value.status == 200
            page.wait_for_function(
                "v => document.querySelector('[data-testid=card]').dataset.videoIdx !== v"
                " && document.body.dataset.state === 'ready'",
                arg=first,
                timeout=30_000,
            )
            sent = posted[-1]["events"][0]
            assert sent["video_idx"] == int(first) and sent["request_id"] == request_id
            assert sent["user_id"] == user and sent["skipped"] is True
            second = card.get_attribute("data-video-idx")
            assert second != first
            page.keyboard.press("w")  # keyboard: watch
            page.wait_for_function(
                "v => document.querySelector('[data-testid=card]').dataset.videoIdx !== v"
                " && document.body.dataset.state === 'ready'",
                arg=second,
                timeout=30_000,
            )
            assert posted[-1]["events"][0]["video_idx"] == int(second or -1)
            assert page.locator("[data-testid=log] li").count() == 2
            shot = tmp_path / "demo.png"
            page.screenshot(path=str(shot))

            # the picker switches to a new (cold-start) user with a fresh session
            page.locator("[data-testid=user-picker]").select_option("__new__")
            page.wait_for_function(
                "() => document.body.dataset.state === 'ready'"
                " && document.querySelectorAll('[data-testid=log] li').length === 0",
                timeout=30_000,
            )
            assert card.get_attribute("data-video-idx")
            assert "cold_start" in feeds[-1]["fallbacks"]
            assert feeds[-1]["user_id"].startswith("new-")
        finally:
            browser.close()
    assert not errors, errors
    img = np.asarray(Image.open(shot).convert("RGB"), dtype=np.float64)
    assert img.shape == (720, 1000, 3)
    assert img.std() > 20  # text, the coloured placeholder and buttons, not a blank page
    if os.environ.get("SHORTREC_UPDATE_DOCS_IMG"):  # refresh the committed screenshot on demand
        _save_png(shot, DOCS_IMG)
        assert DOCS_IMG.stat().st_size < 300_000
