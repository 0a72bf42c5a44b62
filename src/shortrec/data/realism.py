"""Realism report of a dataset's logs against published short-video statistics.

:func:`realism_report` computes a few distribution summaries of ``events/`` (skip rate,
watch ratio, session length, popularity long tail, per-user topic concentration, like rate),
compares each with the target range the simulator is calibrated to, and writes
``realism.json`` plus PNG plots. The ranges and their sources are listed in :data:`TARGETS`
and discussed in ``docs/simulator.md`` ("Realism"); ranges marked approximate are reasoned
estimates, not published figures. Works on any dataset in the ``data/io.py`` layout (also
ingested real logs), streaming the events with Polars.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from shortrec import schema as S
from shortrec.data import io

REPORT_FILE = "realism.json"

_KUAIREC = "KuaiRec (Gao et al., CIKM 2022, doi:10.1145/3511808.3557220)"
_KUAIRAND = "KuaiRand (Gao et al., CIKM 2022, doi:10.1145/3511808.3557624)"


@dataclass(frozen=True)
class Target:
    """A calibration range ``[lo, hi]`` and where it comes from."""

    lo: float
    hi: float
    source: str


#: metric name -> target range and source (see docs/simulator.md for the reasoning)
TARGETS: dict[str, Target] = {
    "skip_rate": Target(
        0.30, 0.60,
        "approximate: short-video feeds swipe a large share of impressions within seconds; "
        f"{_KUAIRAND} records play time for every impression but publishes no skip rate, so "
        "the range is a reasoned estimate",
    ),
    "watch_ratio_mean": Target(
        0.40, 1.20,
        f"approximate: {_KUAIREC} defines watch_ratio = play duration / video duration, with "
        "values above 1 from replays; its mean lies near 1 on the fully observed matrix; "
        "feed logs with fast skips sit lower",
    ),
    "complete_view_share": Target(
        0.10, 0.40,
        f"approximate: complete views and replays (watch_ratio >= 1) are common in {_KUAIREC}; "
        "reasoned range",
    ),
    "session_length_median": Target(
        5.0, 40.0,
        "approximate: impressions per app session (30-min gap); a few minutes of 5-60 s "
        "videos; reasoned range",
    ),
    "popularity_gini": Target(
        0.60, 0.95,
        "approximate: impressions per video are long-tailed in logged feeds (exposure "
        f"concentrated on popular items), as in {_KUAIRAND}'s standard logs; reasoned range",
    ),
    "user_top_category_share": Target(
        0.20, 0.70,
        "approximate: mean share of a user's impressions from their most-watched category; "
        "feeds mix interest matching with exploration; reasoned range",
    ),
    "like_rate": Target(
        0.005, 0.05,
        f"approximate: likes are a few percent of impressions or less in {_KUAIRAND}'s "
        "is_like signal; reasoned range",
    ),
}  # fmt: skip


def gini(x: npt.ArrayLike) -> float:
    """Gini coefficient of non-negative values (0: all equal; -> 1: one item has everything).

    ``G = sum_i (2i - n - 1) x_(i) / (n sum x)`` over the ascending order statistics
    ``x_(1..n)`` (the mean-difference form; Gini 1912).
    """
    v = np.sort(np.asarray(x, dtype=np.float64).ravel())
    n = v.shape[0]
    if n == 0 or v.sum() <= 0:
        return 0.0
    if v[0] < 0:
        raise ValueError("gini needs non-negative values")
    i = np.arange(1, n + 1)
    return float(((2 * i - n - 1) * v).sum() / (n * v.sum()))


def _metric(name: str, value: float) -> dict[str, Any]:
    t = TARGETS[name]
    return {
        "value": value,
        "target": [t.lo, t.hi],
        "in_range": bool(t.lo <= value <= t.hi),
        "source": t.source,
    }


def realism_report(dataset_root: Path, out_dir: Path) -> dict[str, Any]:
    """Compute the realism metrics of ``dataset_root`` and write ``out_dir/realism.json`` and
    PNG plots (``watch_ratio.png``, ``session_length.png``, ``popularity.png``,
    ``topic_concentration.png``, ``skip_by_position.png``).

    Returns ``{"dataset": str, "events": int, "metrics": {name: {value, target, in_range,
    source}}, "plots": [file names]}``. Session length uses the dataset's ``session_id``.
    """
    ds = io.Dataset.open(Path(dataset_root))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ev = ds.events()
    thr = ds.skip_threshold_s
    base = ev.select(
        pl.len().alias("n"),
        (pl.col(S.WATCH_TIME_S) < thr).mean().alias("skip"),
        pl.col(S.WATCH_RATIO).mean().alias("wr_mean"),
        (pl.col(S.WATCH_RATIO) >= 1.0).mean().alias("wr_ge1"),
        pl.col(S.LIKED).cast(pl.Float64).mean().alias("like"),
    ).collect()
    n_events = int(base["n"][0])
    if n_events == 0:
        raise io.DatasetError(f"{ds.root}: no events to report on")
    wr_hist = _watch_ratio_hist(ev)
    sess = ev.group_by(S.SESSION_ID).agg(pl.len().alias("len")).collect()["len"].to_numpy()
    per_video = ev.group_by(S.VIDEO_IDX).agg(pl.len().alias("n")).collect()
    n_videos = ds.videos().select(pl.len()).collect().item()
    counts = np.zeros(n_videos, dtype=np.int64)
    counts[per_video[S.VIDEO_IDX].to_numpy()] = per_video["n"].to_numpy()
    cat = ds.videos().select(S.VIDEO_IDX, S.CATEGORY)
    top_share = (
        ev.select(S.USER_IDX, S.VIDEO_IDX)
        .join(cat, on=S.VIDEO_IDX, how="left")
        .group_by(S.USER_IDX, S.CATEGORY)
        .agg(pl.len().alias("n"))
        .group_by(S.USER_IDX)
        .agg((pl.col("n").max() / pl.col("n").sum()).alias("share"))
        .collect()["share"]
        .to_numpy()
    )
    by_pos = (
        ev.group_by(pl.col(S.POSITION).clip(0, 49).alias("pos"))
        .agg((pl.col(S.WATCH_TIME_S) < thr).mean().alias("skip"))
        .sort("pos")
        .collect()
    )
    metrics = {
        "skip_rate": _metric("skip_rate", float(base["skip"][0])),
        "watch_ratio_mean": _metric("watch_ratio_mean", float(base["wr_mean"][0])),
        "complete_view_share": _metric("complete_view_share", float(base["wr_ge1"][0])),
        "session_length_median": _metric("session_length_median", float(np.median(sess))),
        "popularity_gini": _metric("popularity_gini", gini(counts)),
        "user_top_category_share": _metric("user_top_category_share", float(top_share.mean())),
        "like_rate": _metric("like_rate", float(base["like"][0])),
    }
    plots = _plots(out_dir, wr_hist, sess, counts, top_share, by_pos)
    report = {"dataset": str(ds.root), "events": n_events, "metrics": metrics, "plots": plots}
    io.write_json_atomic(report, out_dir / REPORT_FILE)
    return report


def _watch_ratio_hist(ev: pl.LazyFrame, bins: int = 60, top: float = 3.0) -> npt.NDArray[Any]:
    """Counts of watch ratios in ``bins`` equal bins over [0, top] (the last one open)."""
    h = (
        ev.select(
            (pl.col(S.WATCH_RATIO) / top * bins).floor().clip(0, bins - 1).cast(pl.Int32)
            .alias("b")
        )
        .group_by("b")
        .agg(pl.len().alias("n"))
        .collect()
    )  # fmt: skip
    out = np.zeros(bins, dtype=np.int64)
    out[h["b"].to_numpy()] = h["n"].to_numpy()
    return out


def _plots(
    out_dir: Path,
    wr_hist: npt.NDArray[Any],
    sess: npt.NDArray[Any],
    counts: npt.NDArray[Any],
    top_share: npt.NDArray[Any],
    by_pos: pl.DataFrame,
) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files: list[str] = []

    def save(fig: Any, name: str) -> None:
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=90)
        plt.close(fig)
        files.append(name)

    fig, ax = plt.subplots(figsize=(5, 3.2))
    edges = np.linspace(0, 3.0, wr_hist.shape[0] + 1)
    ax.bar(edges[:-1], wr_hist / max(wr_hist.sum(), 1), width=np.diff(edges), align="edge")
    ax.set(
        xlabel="watch ratio (last bin: >= 2.95)", ylabel="share of impressions", title="Watch ratio"
    )
    save(fig, "watch_ratio.png")

    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.hist(np.minimum(sess, 100), bins=50)
    ax.set(
        xlabel="impressions per session (capped at 100)", ylabel="sessions", title="Session length"
    )
    save(fig, "session_length.png")

    fig, ax = plt.subplots(figsize=(5, 3.2))
    v = np.sort(counts.astype(np.float64))
    lorenz = np.concatenate([[0.0], np.cumsum(v) / max(v.sum(), 1.0)])
    ax.plot(np.linspace(0, 1, lorenz.shape[0]), lorenz, label="impressions")
    ax.plot([0, 1], [0, 1], "--", color="grey", label="equality")
    ax.set(
        xlabel="share of videos",
        ylabel="share of impressions",
        title=f"Popularity (Gini {gini(counts):.2f})",
    )
    ax.legend()
    save(fig, "popularity.png")

    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.hist(top_share, bins=40, range=(0, 1))
    ax.set(
        xlabel="share of a user's impressions in their top category",
        ylabel="users",
        title="Per-user topic concentration",
    )
    save(fig, "topic_concentration.png")

    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(by_pos["pos"].to_numpy(), by_pos["skip"].to_numpy(), marker=".")
    ax.set(
        xlabel="position in session (49: 49+)", ylabel="skip rate", title="Skip rate by position"
    )
    save(fig, "skip_by_position.png")
    return files
