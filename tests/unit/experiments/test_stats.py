"""Statistics cross-checked against SciPy and statsmodels on the same data."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import NormalIndPower, TTestIndPower
from statsmodels.stats.proportion import proportions_ztest

from shortrec.experiments import stats as st


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


def test_moments_add_up_across_shards(rng: np.random.Generator) -> None:
    y, x = rng.normal(size=100), rng.normal(size=100)
    whole = st.Moments.of(y, x)
    parts = st.Moments.of(y[:30], x[:30]) + st.Moments.of(y[30:], x[30:])
    for f in ("n", "sy", "sx", "syy", "sxx", "sxy"):
        assert getattr(whole, f) == pytest.approx(getattr(parts, f))
    assert whole.var_y == pytest.approx(np.var(y, ddof=1))
    assert whole.cov_xy == pytest.approx(np.cov(x, y)[0, 1])


def test_welch_matches_scipy(rng: np.random.Generator) -> None:
    a, b = rng.exponential(2.0, 300), rng.exponential(2.3, 120)
    res = st.welch_ttest(st.Moments.of(a), st.Moments.of(b))
    ref = sps.ttest_ind(a, b, equal_var=False)
    assert res.stat == pytest.approx(ref.statistic)
    assert res.p_value == pytest.approx(ref.pvalue)
    assert res.df == pytest.approx(ref.df)
    ci = ref.confidence_interval(0.95)
    assert (res.ci_low, res.ci_high) == pytest.approx((ci.low, ci.high))
    one = st.welch_ttest(st.Moments.of(a), st.Moments.of(b), alternative="larger")
    assert one.p_value == pytest.approx(
        sps.ttest_ind(a, b, equal_var=False, alternative="greater").pvalue
    )


def test_two_proportion_matches_statsmodels() -> None:
    res = st.two_proportion_ztest(430, 1000, 390, 1050)
    z, p = proportions_ztest([430, 390], [1000, 1050])
    assert res.stat == pytest.approx(z) and res.p_value == pytest.approx(p)
    assert res.diff == pytest.approx(0.43 - 390 / 1050)


def test_ratio_with_unit_denominator_is_the_mean_z(rng: np.random.Generator) -> None:
    y = rng.normal(3, 1, 500)
    m = st.Moments.of(y)
    assert m.ratio == pytest.approx(y.mean())
    assert m.ratio_var == pytest.approx(np.var(y, ddof=1) / 500)


def test_delta_method_variance_matches_bootstrap(rng: np.random.Generator) -> None:
    n = 2_000
    x = rng.poisson(20, n) + 1.0
    y = rng.binomial(x.astype(int), rng.beta(2, 3, n)).astype(float)
    m = st.Moments.of(y, x)
    idx = rng.integers(0, n, size=(2_000, n))
    boot = y[idx].sum(1) / x[idx].sum(1)
    assert np.sqrt(m.ratio_var) == pytest.approx(boot.std(), rel=0.08)


def test_cuped_equals_ols_with_covariate_and_reduces_variance(rng: np.random.Generator) -> None:
    n = 4_000
    pre = rng.gamma(2.0, 50.0, n)
    arm = rng.random(n) < 0.5
    y = 0.8 * pre + rng.normal(0, 30, n) + 5.0 * arm
    t, c = st.Moments.of(y[arm], pre[arm]), st.Moments.of(y[~arm], pre[~arm])
    cup = st.cuped_ttest(t, c)
    design = np.column_stack([np.ones(n), arm, pre])
    coef = np.linalg.lstsq(design, y, rcond=None)[0]
    assert cup.diff == pytest.approx(coef[1], rel=1e-9)
    plain = st.welch_ttest(st.Moments.of(y[arm]), st.Moments.of(y[~arm]))
    assert cup.se < 0.5 * plain.se


def test_srm_matches_chisquare() -> None:
    res = st.srm_test([5_100, 4_900, 10_300], [1, 1, 2])
    ref = sps.chisquare([5_100, 4_900, 10_300], [5_075, 5_075, 10_150])
    assert res.chi2 == pytest.approx(ref.statistic) and res.p_value == pytest.approx(ref.pvalue)
    assert not res.mismatch
    assert st.srm_test([5_300, 4_700], [1, 1]).mismatch


def test_bh_matches_statsmodels(rng: np.random.Generator) -> None:
    p = np.concatenate([rng.uniform(size=30), rng.uniform(0, 0.01, size=10)])
    ref = multipletests(p, method="fdr_bh")[1]
    np.testing.assert_allclose(st.benjamini_hochberg(p), ref)
    with_nan = st.benjamini_hochberg([0.01, np.nan, 0.04])
    assert np.isnan(with_nan[1])
    np.testing.assert_allclose(with_nan[[0, 2]], multipletests([0.01, 0.04], method="fdr_bh")[1])


@pytest.mark.parametrize("alternative", ["two-sided", "larger"])
@pytest.mark.parametrize(("d", "n", "ratio"), [(0.1, 800, 1.0), (0.25, 120, 2.0)])
def test_power_matches_statsmodels(d: float, n: float, ratio: float, alternative: str) -> None:
    alt = alternative  # statsmodels spells the alternatives the same way
    assert st.power_normal(d, n, ratio, 0.05, alt) == pytest.approx(  # type: ignore[arg-type]
        NormalIndPower().power(d, n, 0.05, ratio=ratio, alternative=alt)
    )
    assert st.power_t(d, n, ratio, 0.05, alt) == pytest.approx(  # type: ignore[arg-type]
        TTestIndPower().power(d, n, 0.05, ratio=ratio, alternative=alt), rel=1e-6
    )


def test_mde_and_sample_size_invert_power() -> None:
    d = st.mde(1_000, power=0.8)
    assert TTestIndPower().power(d, 1_000, 0.05) == pytest.approx(0.8, abs=1e-6)
    n = st.sample_size(0.2, power=0.9, test="normal")
    ref = NormalIndPower().solve_power(0.2, power=0.9, alpha=0.05)
    assert n == pytest.approx(ref, rel=1e-4)


def test_msprt_is_monotone_and_valid_under_peeking(rng: np.random.Generator) -> None:
    sims, looks, per_look = 400, 20, 50
    a = rng.normal(size=(sims, looks * per_look))
    b = rng.normal(size=(sims, looks * per_look))
    n = per_look * np.arange(1, looks + 1)
    diff = np.cumsum(a, 1)[:, n - 1] / n - np.cumsum(b, 1)[:, n - 1] / n
    var = 2.0 / n
    p = np.array([st.msprt_pvalues(diff[i], var, tau2=0.05) for i in range(sims)])
    assert np.all(np.diff(p, axis=1) <= 0)
    fpr_any_look = np.mean(p[:, -1] < 0.05)
    assert fpr_any_look <= 0.06
    # naive peeking with fixed-horizon z-tests rejects far more often
    naive = np.any(np.abs(diff / np.sqrt(var)) > 1.96, axis=1).mean()
    assert naive > 2 * max(fpr_any_look, 0.05)
    # and a real effect is found
    p1 = st.msprt_pvalues(0.3 + 0 * n, 2.0 / n, tau2=0.05)
    assert p1[-1] < 0.01


def test_poisson_bootstrap_interval_covers_the_truth(rng: np.random.Generator) -> None:
    y_t, y_c = rng.normal(1.1, 1, 3_000), rng.normal(1.0, 1, 3_000)
    ones = np.ones(3_000)
    bt = st.poisson_bootstrap_sums(np.column_stack([y_t, ones]), 500, rng)
    bc = st.poisson_bootstrap_sums(np.column_stack([y_c, ones]), 500, rng)
    assert bt.shape == (500, 2)
    assert bt[:, 1].mean() == pytest.approx(3_000, rel=0.01)
    lo, hi = st.bootstrap_lift_ci(bt, bc)
    lift = y_t.mean() / y_c.mean() - 1
    assert lo < lift < hi
    se = np.sqrt(y_t.var() / 3_000 + y_c.var() / 3_000) / y_c.mean()
    assert hi - lo == pytest.approx(2 * 1.96 * se, rel=0.2)
