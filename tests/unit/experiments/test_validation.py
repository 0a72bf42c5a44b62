"""Statistical validation by vectorised simulation: A/A false-positive rates and power.

Every simulated experiment is one row of a (sims, users) array; the tests run on all rows at
once through the same functions the analysis uses.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from shortrec.experiments import stats as st

SIMS = 400
ALPHA = 0.05


def test_aa_welch_false_positive_rate_on_skewed_data() -> None:
    rng = np.random.default_rng(101)
    a = rng.lognormal(3.0, 1.0, size=(SIMS, 600))  # watch time per user: heavy right tail
    b = rng.lognormal(3.0, 1.0, size=(SIMS, 500))
    res = st.welch_ttest(st.Moments.of(a, axis=1), st.Moments.of(b, axis=1))
    assert res.p_value.shape == (SIMS,)
    assert 0.02 <= np.mean(res.p_value < ALPHA) <= 0.08


def _clustered(rng: np.random.Generator, users: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-user impressions and skips; each user has their own skip propensity."""
    imps = rng.poisson(15, size=(SIMS, users)) + 1
    p = rng.beta(2, 3, size=(SIMS, users))
    return rng.binomial(imps, p).astype(float), imps.astype(float)


def test_aa_delta_method_is_valid_where_naive_proportions_are_not() -> None:
    rng = np.random.default_rng(202)
    yt, xt = _clustered(rng, 400)
    yc, xc = _clustered(rng, 400)
    delta = st.ratio_ztest(st.Moments.of(yt, xt, axis=1), st.Moments.of(yc, xc, axis=1))
    assert 0.02 <= np.mean(delta.p_value < ALPHA) <= 0.08
    # impressions as independent units ignore the per-user correlation: false alarms galore
    naive = st.two_proportion_ztest(yt.sum(1), xt.sum(1), yc.sum(1), xc.sum(1))
    assert np.mean(naive.p_value < ALPHA) > 0.15


def test_aa_cuped_false_positive_rate() -> None:
    rng = np.random.default_rng(303)
    pre = rng.gamma(2.0, 50.0, size=(SIMS, 1_000))
    y = 0.7 * pre + rng.normal(0, 40, size=(SIMS, 1_000))
    arm = np.zeros(1_000, dtype=bool)
    arm[:500] = True
    res = st.cuped_ttest(
        st.Moments.of(y[:, arm], pre[:, arm], axis=1),
        st.Moments.of(y[:, ~arm], pre[:, ~arm], axis=1),
    )
    assert 0.02 <= np.mean(res.p_value < ALPHA) <= 0.08


def test_planted_effect_detected_with_the_predicted_power() -> None:
    rng = np.random.default_rng(404)
    n, d = 400, 0.2
    predicted = st.power_t(d, n)  # ~0.81
    a = rng.normal(d, 1.0, size=(SIMS, n))
    b = rng.normal(0.0, 1.0, size=(SIMS, n))
    res = st.welch_ttest(st.Moments.of(a, axis=1), st.Moments.of(b, axis=1))
    observed = np.mean(res.p_value < ALPHA)
    assert abs(observed - predicted) <= 0.10, (observed, predicted)
    # and the MDE at that size is the effect that gives 80% power
    assert abs(st.power_t(st.mde(n), n) - 0.8) < 1e-6


def test_planted_ratio_effect_detected_with_the_predicted_power() -> None:
    rng = np.random.default_rng(505)
    users = 500
    yc, xc = _clustered(rng, users)
    imps = rng.poisson(15, size=(SIMS, users)) + 1
    p = np.clip(rng.beta(2, 3, size=(SIMS, users)) + 0.02, 0, 1)
    yt, xt = rng.binomial(imps, p).astype(float), imps.astype(float)
    t, c = st.Moments.of(yt, xt, axis=1), st.Moments.of(yc, xc, axis=1)
    res = st.ratio_ztest(t, c)
    # predicted power from the (average) delta-method standard error and the true effect
    se = float(np.sqrt(np.mean(t.ratio_var + c.ratio_var)))
    true_diff = 0.02 * np.mean(xt) / np.mean(xt)  # +0.02 skip probability per impression
    ncp = true_diff / se
    predicted = stats.norm.sf(1.96 - ncp) + stats.norm.cdf(-1.96 - ncp)
    observed = np.mean(res.p_value < ALPHA)
    assert abs(observed - predicted) <= 0.10, (observed, predicted)
