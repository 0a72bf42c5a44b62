"""The A/B report opens in a real browser from disk (no server) and its charts draw.

Headless Chromium (Debian's ``chromium`` package; no browser is ever downloaded) loads
``index.html`` over ``file://``: once with a probe script appended to a copy of the page that
records every image's decoded size (``--dump-dom``), once as a screenshot whose pixels must
not be blank. Skipped when Chromium is missing outside CI; a failure under CI (``CI`` set).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image

from shortrec.config import AnalysisConfig
from shortrec.experiments.analysis import analyze
from shortrec.experiments.report import write_report
from shortrec.experiments.synthetic import ArmEffect, synthetic_logs

PROBE = """<script>
window.addEventListener("load", () => {
  const imgs = Array.from(document.images).map(i => ({
    alt: i.alt, complete: i.complete, w: i.naturalWidth, h: i.naturalHeight}));
  const out = document.createElement("pre");
  out.id = "probe";
  out.textContent = JSON.stringify(imgs);
  document.body.appendChild(out);
});
</script>"""


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed but CI is set: apt-get install -y chromium")
        pytest.skip("chromium is not installed (apt-get install -y chromium); CI is unset")
    return exe


def _run(exe: str, profile: Path, *args: str) -> str:
    cmd = [
        exe,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        *args,
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=90, check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(3)
    arms = [ArmEffect("control"), ArmEffect("treatment", skip_logit=-0.2, watch_mult=1.1)]
    x, ev = synthetic_logs("exp", arms, 2_000, rng, days=3)
    res = analyze(x.lazy(), ev.lazy(), "exp", AnalysisConfig(n_bootstrap=200), rng=rng)
    return write_report(res, tmp_path_factory.mktemp("report") / "exp")


def test_report_images_decode_in_chromium(report: Path, tmp_path: Path) -> None:
    exe = _chromium()
    page = report.parent / "probe.html"
    page.write_text(report.read_text().replace("</body>", PROBE + "</body>"))
    dom = _run(
        exe, tmp_path / "profile", "--virtual-time-budget=10000", "--dump-dom", page.as_uri()
    )
    m = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert m, dom[-2000:]
    imgs = json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    pngs = sorted(p.stem for p in report.parent.glob("*.png"))
    assert sorted(i["alt"] for i in imgs) == pngs and len(pngs) >= 3
    for i in imgs:  # every embedded chart decoded to a real bitmap
        assert i["complete"] and i["w"] > 100 and i["h"] > 50, i


def test_report_screenshot_is_not_blank(report: Path, tmp_path: Path) -> None:
    exe = _chromium()
    shot = tmp_path / "shot.png"
    _run(
        exe,
        tmp_path / "profile",
        "--hide-scrollbars",
        f"--screenshot={shot}",
        "--window-size=1200,2400",
        report.as_uri(),
    )
    img = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert img.shape == (2400, 1200)
    dark = img < 200  # text, table rules and plot lines on the white page
    assert dark.mean() > 0.01 and img.std() > 20
    # the charts draw below the tables: the lower half has ink too
    assert dark[1200:].mean() > 0.005
    assert pl.Series(img.ravel()).n_unique() > 50  # anti-aliased plots, not a flat fill
