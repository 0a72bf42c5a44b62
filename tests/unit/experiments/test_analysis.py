"""Log analysis on a hand-computed tiny log, plus planted effects and bad input."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from abtest_helpers import event_rows, exposure_rows

from shortrec import schema as S
from shortrec.config import AnalysisConfig, ArmConfig, ExperimentConfig
from shortrec.experiments import logs as L
from shortrec.experiments.analysis import SampleRatioMismatchWarning, analyze
from shortrec.experiments.synthetic import ArmEffect, synthetic_logs

CFG = AnalysisConfig(n_bootstrap=0)
DECL = ExperimentConfig(name="e", arms=(ArmConfig(name="c"), ArmConfig(name="t")))


def _est(res, metric: str, arm: str) -> float:  # type: ignore[no-untyped-def]
    return next(e.estimate for e in res.estimates if e.metric == metric and e.arm == arm)


def test_hand_computed_metrics(tiny_logs: tuple[pl.DataFrame, pl.DataFrame]) -> None:
    x, e = tiny_logs
    res = analyze(x.lazy(), e.lazy(), DECL, CFG)
    assert res.users == {"c": 2, "t": 2} and res.control == "c"
    got = {
        m: (_est(res, m, "c"), _est(res, m, "t"))
        for m in (
            "engagement_rate",
            "skip_rate",
            "watch_time_per_user",
            "watch_ratio_per_impression",
            "session_length",
            "likes_per_user",
            "liker_rate",
            "diversity_at_k",
            "ndcg_at_k",
        )
    }
    l3 = math.log2(3)
    ndcg2 = (1 + 2 / l3) / (2 + 1 / l3)
    ndcg3 = (1.5 / l3 + 0.2 / 2) / (1.5 + 0.2 / l3)
    want = {
        "engagement_rate": (3 / 4, 2 / 3),  # user 3 was served but never watched
        "skip_rate": (1 / 4, 1 / 3),
        "watch_time_per_user": ((5.5 + 30) / 2, 17.1 / 2),
        "watch_ratio_per_impression": ((0.55 + 3.5) / 4, 1.7 / 3),
        "session_length": (4 / 3, 3 / 1),  # user 1 had two sessions
        "likes_per_user": (0.5, 0.0),
        "liker_rate": (0.5, 0.0),
        "diversity_at_k": ((2 / 3 + 1) / 2, (1 + 0) / 2),
        "ndcg_at_k": ((1 + ndcg2) / 2, ndcg3),  # gain capped at 2; request 4 has no gain
    }
    for m, (c, t) in want.items():
        assert got[m] == pytest.approx((c, t), rel=1e-5), m
    comp = res.comparison("engagement_rate", "t")
    assert comp.lift == pytest.approx((2 / 3) / (3 / 4) - 1, rel=1e-6)
    assert comp.test == "delta-method z"
    assert res.coverage == {"c": pytest.approx(4 / 7), "t": pytest.approx(5 / 7)}
    assert not res.srm.mismatch and res.crossover_users == 0 and res.unmatched_events == 0
    assert all(
        0 <= c.p_value <= c.p_adjusted <= 1 for c in res.comparisons if math.isfinite(c.p_value)
    )


def test_diversity_at_k_reads_only_the_top_k(tiny_logs: tuple[pl.DataFrame, pl.DataFrame]) -> None:
    x, e = tiny_logs
    res = analyze(x.lazy(), e.lazy(), DECL, CFG.model_copy(update={"k": 2}))
    # request 1 truncated to categories (1, 1): diversity 0
    assert _est(res, "diversity_at_k", "c") == pytest.approx((0 + 1) / 2)


def test_crossover_users_and_undeclared_arms_are_dropped(
    tiny_logs: tuple[pl.DataFrame, pl.DataFrame],
) -> None:
    x, e = tiny_logs
    extra = exposure_rows(
        [(5, 7, 10, 0, 10, 1, "c"), (6, 7, 20, 0, 10, 1, "t"), (7, 8, 10, 0, 10, 1, "zz")]
    )
    res = analyze(pl.concat([x, extra]).lazy(), e.lazy(), DECL, CFG)
    assert res.crossover_users == 1
    assert res.users == {"c": 2, "t": 2}
    assert any("undeclared" in n for n in res.notes)


def test_bad_logs_raise_bad_input(tiny_logs: tuple[pl.DataFrame, pl.DataFrame]) -> None:
    x, e = tiny_logs
    with pytest.raises(S.BadInput, match=r"event log: watch_ratio: missing column"):
        analyze(x.lazy(), e.drop(S.WATCH_RATIO).lazy(), DECL, CFG)
    with pytest.raises(S.BadInput, match=r"exposure log: rank: dtype"):
        analyze(x.with_columns(pl.col(L.RANK).cast(pl.Float64)).lazy(), e.lazy(), DECL, CFG)
    with pytest.raises(S.BadInput, match="no exposures of experiment 'nope'"):
        analyze(x.lazy(), e.lazy(), "nope", CFG)


def test_planted_effect_found_and_no_false_alarm() -> None:
    rng = np.random.default_rng(3)
    arms = [ArmEffect("control"), ArmEffect("treatment", skip_logit=-0.15, watch_mult=1.0)]
    x, e = synthetic_logs("exp", arms, 4_000, rng, sessions_per_user=2, mean_session_len=8)
    res = analyze(x.lazy(), e.lazy(), "exp", AnalysisConfig(n_bootstrap=200))
    skip = res.comparison("skip_rate", "treatment")
    assert skip.significant and skip.lift < 0
    assert skip.lift_ci_low < skip.lift < skip.lift_ci_high < 0
    div = res.comparison("diversity_at_k", "treatment")  # unchanged by construction
    assert not div.significant
    assert res.timeline and res.timeline[-1].users_treatment == res.users["treatment"]
    assert all(np.diff([p.p_always_valid for p in res.timeline]) <= 0)
    json_like = res.to_dict()
    assert json_like["srm"]["mismatch"] is False


def test_sample_ratio_mismatch_warns_loudly() -> None:
    rng = np.random.default_rng(5)
    arms = [ArmEffect("control", weight=0.56), ArmEffect("treatment", weight=0.44)]
    x, e = synthetic_logs("exp", arms, 3_000, rng, sessions_per_user=1, mean_session_len=4)
    decl = ExperimentConfig(
        name="exp", arms=(ArmConfig(name="control"), ArmConfig(name="treatment"))
    )
    with pytest.warns(SampleRatioMismatchWarning, match="SAMPLE RATIO MISMATCH"):
        res = analyze(x.lazy(), e.lazy(), decl, CFG)
    assert res.srm.mismatch


def test_cuped_with_pre_period_narrows_the_interval() -> None:
    rng = np.random.default_rng(11)
    arms = [ArmEffect("control"), ArmEffect("treatment")]
    x, e = synthetic_logs("exp", arms, 3_000, rng, sessions_per_user=2, mean_session_len=8)
    start = x.select(pl.col(S.TS).min()).item()
    # the pre-period: the same users' behaviour a week earlier, correlated via their activity
    pre = e.with_columns(
        pl.col(S.TS) - pl.duration(days=30), (pl.col(S.WATCH_TIME_S) * 0.9).alias(S.WATCH_TIME_S)
    )
    assert pre.select(pl.col(S.TS).max()).item() < start
    plain = analyze(x.lazy(), e.lazy(), "exp", CFG)
    cuped = analyze(x.lazy(), e.lazy(), "exp", CFG, pre_events=pre.lazy())
    p, c = (r.comparison("watch_time_per_user", "treatment") for r in (plain, cuped))
    assert c.test == "cuped welch t" and p.test == "welch t"
    assert (c.diff_ci_high - c.diff_ci_low) < 0.5 * (p.diff_ci_high - p.diff_ci_low)


def test_users_exposed_without_events_count_as_zeros() -> None:
    x = exposure_rows(
        [
            (1, 0, 0, 0, 1, 1, "c"),
            (2, 1, 0, 0, 1, 1, "c"),
            (3, 2, 0, 0, 1, 1, "t"),
            (4, 3, 0, 0, 1, 1, "t"),
        ]
    )
    e = event_rows(
        [(1, 0, 1, 1, 10.0, 1.0, False, False, 1), (3, 2, 1, 1, 4.0, 0.4, False, False, 2)]
    )
    res = analyze(x.lazy(), e.lazy(), DECL, CFG)
    assert _est(res, "watch_time_per_user", "c") == pytest.approx(5.0)
    assert _est(res, "watch_time_per_user", "t") == pytest.approx(2.0)
