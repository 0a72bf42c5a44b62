"""A/B statistics as pure functions of per-arm sufficient statistics (numpy + scipy).

Every test here consumes :class:`Moments` — per-arm sums over users of a per-user pair
``(y_u, x_u)``: ``n, Σy, Σx, Σy², Σx², Σxy`` — which Polars computes with one ``group_by``
and which add up across shards (so the analysis scales to any log size). Per-user *means*
use ``x_u = 1`` (or ``x_u`` = a pre-period covariate for CUPED); *ratio* metrics (e.g. skips
per impression, users as the unit) use ``x_u`` = the user's denominator.

All functions broadcast over numpy arrays in the fields, so thousands of simulated
experiments are tested in one call (tests/unit/experiments/test_validation.py).

References: Welch (1947) for the unequal-variance t-test; Deng, Knoblich & Lu (2018), "Applying
the delta method in metric analytics", KDD, for ratio metrics; Deng, Xu, Kohavi & Walker
(2013), "Improving the sensitivity of online controlled experiments by utilizing pre-experiment
data" (CUPED), WSDM; Benjamini & Hochberg (1995), JRSS B 57(1); Johari, Pekelis & Walsh
(2017), "Always valid inference: bringing sequential analysis to A/B testing" (mSPRT), KDD;
Fabijan et al. (2019), "Diagnosing sample ratio mismatch in online controlled experiments", KDD.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, ParamSpec, TypeVar

import numpy as np
import numpy.typing as npt
from scipy import optimize, stats

F64 = npt.NDArray[np.float64]
Num = Any  # float or a float64 array (the fields broadcast)
Alternative = Literal["two-sided", "larger", "smaller"]
P = ParamSpec("P")
R = TypeVar("R")


def _quiet(fn: Callable[P, R]) -> Callable[P, R]:
    """Run ``fn`` with numpy's divide/invalid warnings off: a degenerate input (an arm with
    zero variance or no denominator) yields NaN/inf in the result instead of a warning."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with np.errstate(divide="ignore", invalid="ignore"):
            return fn(*args, **kwargs)

    return wrapper


# ---------------------------------------------------------------- sufficient statistics
@dataclass(frozen=True)
class Moments:
    """Sums over ``n`` users of a per-user pair ``(y, x)`` (floats or arrays that broadcast)."""

    n: Num
    sy: Num
    sx: Num
    syy: Num
    sxx: Num
    sxy: Num

    def __post_init__(self) -> None:
        # numpy floats, so degenerate arms (zero variance, no users) give inf/NaN, not errors
        for name in ("n", "sy", "sx", "syy", "sxx", "sxy"):
            object.__setattr__(
                self,
                name,
                np.asarray(getattr(self, name), dtype=np.float64)
                if np.ndim(getattr(self, name))
                else np.float64(getattr(self, name)),
            )

    @staticmethod
    def of(y: npt.ArrayLike, x: npt.ArrayLike | None = None, axis: int = -1) -> Moments:
        """Moments of per-user values ``y`` (and ``x``; ones when omitted) along ``axis``."""
        ya = np.asarray(y, dtype=np.float64)
        xa = np.ones_like(ya) if x is None else np.asarray(x, dtype=np.float64)
        return Moments(
            n=float(ya.shape[0])
            if ya.ndim == 1
            else np.full(ya.sum(axis=axis).shape, float(ya.shape[axis])),
            sy=ya.sum(axis=axis),
            sx=xa.sum(axis=axis),
            syy=(ya * ya).sum(axis=axis),
            sxx=(xa * xa).sum(axis=axis),
            sxy=(xa * ya).sum(axis=axis),
        )

    def __add__(self, other: Moments) -> Moments:
        return Moments(
            self.n + other.n,
            self.sy + other.sy,
            self.sx + other.sx,
            self.syy + other.syy,
            self.sxx + other.sxx,
            self.sxy + other.sxy,
        )

    # sample (co)variances with the n - 1 denominator
    @property
    def var_y(self) -> Num:
        return (self.syy - self.sy * self.sy / self.n) / (self.n - 1)

    @property
    def var_x(self) -> Num:
        return (self.sxx - self.sx * self.sx / self.n) / (self.n - 1)

    @property
    def cov_xy(self) -> Num:
        return (self.sxy - self.sx * self.sy / self.n) / (self.n - 1)

    @property
    def mean_y(self) -> Num:
        return self.sy / self.n

    @property
    def mean_x(self) -> Num:
        return self.sx / self.n

    @property
    def ratio(self) -> Num:
        """``R = Σy / Σx`` (e.g. skips per impression)."""
        return self.sy / self.sx

    @property
    def ratio_var(self) -> Num:
        """Delta-method variance of ``R``, users as the unit (Deng et al. 2018, eq. 3)::

        Var(R) ≈ (σ_y² - 2 R σ_xy + R² σ_x²) / (n · μ_x²)
        """
        r = self.ratio
        num = self.var_y - 2 * r * self.cov_xy + r * r * self.var_x
        return num / (self.n * self.mean_x**2)


@dataclass(frozen=True)
class TestResult:
    """A two-sample comparison ``treatment - control``: the difference ``diff``, its standard
    error, the statistic, degrees of freedom (``inf`` for z-tests), p-value and the
    ``1 - alpha`` confidence interval of ``diff``; ``rel`` = ``diff / control estimate``."""

    diff: Num
    se: Num
    stat: Num
    df: Num
    p_value: Num
    ci_low: Num
    ci_high: Num
    control: Num
    treatment: Num

    @property
    def rel(self) -> Num:
        return self.diff / self.control


def _p_and_ci(
    diff: Num, se: Num, df: Num, alpha: float, alternative: Alternative = "two-sided"
) -> tuple[Num, Num, Num, Num]:
    with np.errstate(divide="ignore", invalid="ignore"):
        stat = diff / se
    dist = stats.norm if np.all(np.isinf(df)) else stats.t(df)
    if alternative == "two-sided":
        p = 2 * dist.sf(np.abs(stat))
    elif alternative == "larger":
        p = dist.sf(stat)
    else:
        p = dist.cdf(stat)
    q = dist.ppf(1 - alpha / 2)
    return stat, p, diff - q * se, diff + q * se


# ---------------------------------------------------------------- tests
@_quiet
def welch_ttest(
    t: Moments, c: Moments, alpha: float = 0.05, alternative: Alternative = "two-sided"
) -> TestResult:
    """Welch's unequal-variance t-test of ``mean_y(t) - mean_y(c)``.

    ``se = sqrt(s_t²/n_t + s_c²/n_c)``; Welch-Satterthwaite degrees of freedom. Matches
    ``scipy.stats.ttest_ind(equal_var=False)``.
    """
    vt, vc = t.var_y / t.n, c.var_y / c.n
    se = np.sqrt(vt + vc)
    df = (vt + vc) ** 2 / (vt**2 / (t.n - 1) + vc**2 / (c.n - 1))
    diff = t.mean_y - c.mean_y
    stat, p, lo, hi = _p_and_ci(diff, se, df, alpha, alternative)
    return TestResult(diff, se, stat, df, p, lo, hi, c.mean_y, t.mean_y)


@_quiet
def ratio_ztest(
    t: Moments, c: Moments, alpha: float = 0.05, alternative: Alternative = "two-sided"
) -> TestResult:
    """z-test of ``R_t - R_c`` for ratio metrics with delta-method variances (users as the
    unit; valid when one user contributes many correlated impressions)."""
    se = np.sqrt(t.ratio_var + c.ratio_var)
    diff = t.ratio - c.ratio
    stat, p, lo, hi = _p_and_ci(diff, se, np.inf, alpha, alternative)
    return TestResult(diff, se, stat, np.inf, p, lo, hi, c.ratio, t.ratio)


@_quiet
def two_proportion_ztest(
    x_t: Num,
    n_t: Num,
    x_c: Num,
    n_c: Num,
    alpha: float = 0.05,
    alternative: Alternative = "two-sided",
) -> TestResult:
    """Two-proportion z-test of ``x_t/n_t - x_c/n_c`` with the pooled variance under H0
    (the test of ``statsmodels...proportions_ztest``); the CI uses the unpooled variance.

    Valid when the units are independent (e.g. users who liked anything); for per-impression
    rates with users as the randomisation unit use :func:`ratio_ztest`.
    """
    pt, pc = np.divide(x_t, n_t), np.divide(x_c, n_c)
    pool = (np.add(x_t, x_c)) / (np.add(n_t, n_c))
    se0 = np.sqrt(pool * (1 - pool) * (1 / np.asarray(n_t) + 1 / np.asarray(n_c)))
    diff = pt - pc
    stat, p, _, _ = _p_and_ci(diff, se0, np.inf, alpha, alternative)
    se = np.sqrt(pt * (1 - pt) / n_t + pc * (1 - pc) / n_c)
    q = stats.norm.ppf(1 - alpha / 2)
    return TestResult(diff, se, stat, np.inf, p, diff - q * se, diff + q * se, pc, pt)


@_quiet
def cuped_theta(t: Moments, c: Moments) -> Num:
    """CUPED coefficient ``θ = Cov(y, x) / Var(x)`` pooled over both arms (x = pre-period
    covariate), from within-arm (co)variances so a treatment effect does not leak into θ."""
    cov = ((t.n - 1) * t.cov_xy + (c.n - 1) * c.cov_xy) / (t.n + c.n - 2)
    var = ((t.n - 1) * t.var_x + (c.n - 1) * c.var_x) / (t.n + c.n - 2)
    return np.divide(
        cov, var, out=np.zeros_like(np.asarray(cov, dtype=np.float64)), where=np.asarray(var) > 0
    )


@_quiet
def cuped_ttest(
    t: Moments, c: Moments, alpha: float = 0.05, alternative: Alternative = "two-sided"
) -> TestResult:
    """Welch test on the CUPED-adjusted metric ``y - θ (x - x̄)`` (Deng et al. 2013).

    Adjusted arm mean ``ȳ - θ (x̄_arm - x̄_all)``, adjusted variance
    ``σ_y² - 2 θ σ_xy + θ² σ_x²``; with θ the pooled optimum the variance falls by the factor
    ``1 - ρ²``. Unbiased because x is measured before assignment.
    """
    theta = cuped_theta(t, c)
    x_all = (t.sx + c.sx) / (t.n + c.n)

    def adj(m: Moments) -> tuple[Num, Num]:
        mean = m.mean_y - theta * (m.mean_x - x_all)
        var = m.var_y - 2 * theta * m.cov_xy + theta**2 * m.var_x
        return mean, var

    mt, vt_ = adj(t)
    mc, vc_ = adj(c)
    vt, vc = vt_ / t.n, vc_ / c.n
    se = np.sqrt(vt + vc)
    df = (vt + vc) ** 2 / (vt**2 / (t.n - 1) + vc**2 / (c.n - 1))
    diff = mt - mc
    stat, p, lo, hi = _p_and_ci(diff, se, df, alpha, alternative)
    return TestResult(diff, se, stat, df, p, lo, hi, mc, mt)


# ---------------------------------------------------------------- sample ratio mismatch
@dataclass(frozen=True)
class SrmResult:
    """Sample-ratio check: observed and expected users per arm, chi-square statistic and
    p-value; ``mismatch`` when ``p_value < alpha`` (Fabijan et al. 2019 use alpha = 0.0005
    to 0.001 so that the check rarely cries wolf but a broken split never passes)."""

    observed: tuple[int, ...]
    expected: tuple[float, ...]
    chi2: float
    p_value: float
    alpha: float

    @property
    def mismatch(self) -> bool:
        return bool(self.p_value < self.alpha)


def srm_test(counts: Sequence[int], weights: Sequence[float], alpha: float = 0.001) -> SrmResult:
    """Pearson chi-square goodness of fit of ``counts`` per arm to the allocation ``weights``
    (normalised), ``len(counts) - 1`` degrees of freedom. Matches ``scipy.stats.chisquare``."""
    obs = np.asarray(counts, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    if obs.shape != w.shape or obs.size < 2:
        raise ValueError("counts and weights must have the same length, at least 2")
    exp = obs.sum() * w / w.sum()
    chi2 = float(np.sum((obs - exp) ** 2 / exp)) if obs.sum() > 0 else 0.0
    p = float(stats.chi2.sf(chi2, obs.size - 1)) if obs.sum() > 0 else 1.0
    return SrmResult(tuple(int(v) for v in obs), tuple(float(v) for v in exp), chi2, p, alpha)


# ---------------------------------------------------------------- multiple testing
def benjamini_hochberg(p_values: npt.ArrayLike) -> F64:
    """Benjamini-Hochberg adjusted p-values (step-up FDR control), same shape as the input.

    ``p_(i) * m / i`` made monotone from the largest down and capped at 1; NaN entries stay NaN
    and do not count in ``m``. Matches ``statsmodels multipletests(method="fdr_bh")``.
    """
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    q = p[ok]
    m = q.size
    if m == 0:
        return out
    order = np.argsort(q)
    scaled = q[order] * m / np.arange(1, m + 1)
    adj = np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 1.0)
    res = np.empty(m)
    res[order] = adj
    out[ok] = res
    return out


# ---------------------------------------------------------------- power and MDE
def _z(alpha: float, alternative: Alternative) -> float:
    return float(stats.norm.ppf(1 - (alpha / 2 if alternative == "two-sided" else alpha)))


def power_normal(
    effect_size: float,
    nobs1: float,
    ratio: float = 1.0,
    alpha: float = 0.05,
    alternative: Alternative = "two-sided",
) -> float:
    """Power of the two-sample z-test for a standardised effect ``d = Δ / σ`` with ``nobs1``
    and ``ratio * nobs1`` users (statsmodels ``NormalIndPower().power``)::

        power = Φ(d √(n1 n2/(n1+n2)) - z) [+ Φ(-d √(·) - z) two-sided]
    """
    n2 = nobs1 * ratio
    ncp = effect_size * np.sqrt(nobs1 * n2 / (nobs1 + n2))
    z = _z(alpha, alternative)
    if alternative == "two-sided":
        return float(stats.norm.sf(z - ncp) + stats.norm.cdf(-z - ncp))
    if alternative == "larger":
        return float(stats.norm.sf(z - ncp))
    return float(stats.norm.cdf(-z - ncp))


def power_t(
    effect_size: float,
    nobs1: float,
    ratio: float = 1.0,
    alpha: float = 0.05,
    alternative: Alternative = "two-sided",
) -> float:
    """Power of the two-sample t-test (noncentral t with ``n1 + n2 - 2`` degrees of freedom,
    noncentrality ``d √(n1 n2/(n1+n2))``); statsmodels ``TTestIndPower().power``."""
    n2 = nobs1 * ratio
    df = nobs1 + n2 - 2
    ncp = effect_size * np.sqrt(nobs1 * n2 / (nobs1 + n2))
    if alternative == "two-sided":
        crit = stats.t.ppf(1 - alpha / 2, df)
        return float(stats.nct.sf(crit, df, ncp) + stats.nct.cdf(-crit, df, ncp))
    crit = stats.t.ppf(1 - alpha, df)
    if alternative == "larger":
        return float(stats.nct.sf(crit, df, ncp))
    return float(stats.nct.cdf(-crit, df, ncp))


def mde(
    nobs1: float,
    ratio: float = 1.0,
    alpha: float = 0.05,
    power: float = 0.8,
    alternative: Alternative = "two-sided",
    test: Literal["t", "normal"] = "t",
) -> float:
    """Minimum detectable standardised effect ``d`` (multiply by σ for metric units) at the
    given power: the root of ``power_*(d) = power`` (brentq)."""
    fn = power_t if test == "t" else power_normal
    scale = np.sqrt(nobs1 * nobs1 * ratio / (nobs1 + nobs1 * ratio))
    hi = 2 * (_z(alpha, alternative) + float(stats.norm.ppf(power))) / scale
    while fn(hi, nobs1, ratio, alpha, alternative) < power:  # few-user t-tests need more
        hi *= 2
        if hi > 1e6:
            return float("inf")
    return float(
        optimize.brentq(
            lambda d: fn(d, nobs1, ratio, alpha, alternative) - power, 1e-12, hi, xtol=1e-12
        )
    )


def sample_size(
    effect_size: float,
    ratio: float = 1.0,
    alpha: float = 0.05,
    power: float = 0.8,
    alternative: Alternative = "two-sided",
    test: Literal["t", "normal"] = "t",
) -> float:
    """Users needed in the first arm (``ratio`` times as many in the second) to detect a
    standardised effect ``d`` with the given power (not rounded)."""
    fn = power_t if test == "t" else power_normal
    z = _z(alpha, alternative) + float(stats.norm.ppf(power))
    guess = (1 + 1 / ratio) * (z / effect_size) ** 2
    return float(
        optimize.brentq(
            lambda n: fn(effect_size, n, ratio, alpha, alternative) - power,
            2.0 + 1e-9,
            max(10.0, 10 * guess),
        )
    )


# ---------------------------------------------------------------- sequential testing
def msprt_pvalues(diff: npt.ArrayLike, var: npt.ArrayLike, tau2: float) -> F64:
    """Always-valid p-values of the normal-mixture mSPRT (Johari et al. 2017, eq. 11).

    ``diff[i]``/``var[i]`` are the estimated difference and its variance at the i-th look
    (cumulative data). With mixing prior N(0, τ²) on the effect::

        Λ_i = sqrt(V_i / (V_i + τ²)) · exp(τ² diff_i² / (2 V_i (V_i + τ²)))
        p_i = min(1, p_{i-1}, 1 / Λ_i)

    Rejecting when ``p_i < alpha`` at any look keeps the type-I error at ``alpha`` however
    often one peeks.
    """
    d = np.asarray(diff, dtype=np.float64)
    v = np.asarray(var, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        log_lam = 0.5 * np.log(v / (v + tau2)) + tau2 * d * d / (2 * v * (v + tau2))
        p = np.where(np.isfinite(log_lam), np.minimum(1.0, np.exp(-log_lam)), 1.0)
    return np.minimum.accumulate(p)


# ---------------------------------------------------------------- bootstrap
@functools.cache
def _poisson1_table() -> F64:
    """Poisson(1) quantiles at the midpoints of 2^16 equal probability cells: indexing it with
    uniform 16-bit integers draws Poisson(1) with every probability off by less than 2^-16,
    about 20 times faster than ``Generator.poisson``."""
    u = (np.arange(1 << 16) + 0.5) / (1 << 16)
    return np.asarray(stats.poisson.ppf(u, 1.0), dtype=np.float64)


def poisson_bootstrap_sums(
    values: npt.ArrayLike, n_boot: int, rng: np.random.Generator, chunk: int = 16_384
) -> F64:
    """Column sums of ``values`` (shape ``(n_users, k)``) under ``n_boot`` Poisson-bootstrap
    replicates, shape ``(n_boot, k)``: every user gets an independent Poisson(1) weight per
    replicate (Chamandy et al. 2012, "Estimating uncertainty for massive data streams"; Hanley
    & MacGibbon 2006), drawn from a 16-bit quantile table. One weight matrix serves every
    column, so all metrics share replicates.
    Users are processed in chunks: memory ``O(chunk * n_boot)``.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 2:
        raise ValueError(f"values must be 2-d (n_users, k), got shape {v.shape}")
    out = np.zeros((n_boot, v.shape[1]))
    for lo in range(0, v.shape[0], chunk):
        block = v[lo : lo + chunk]
        w = _poisson1_table()[
            rng.integers(0, 1 << 16, size=(n_boot, block.shape[0]), dtype=np.uint16)
        ]
        out += w @ block
    return out


def bootstrap_lift_ci(sums_t: F64, sums_c: F64, alpha: float = 0.05) -> tuple[float, float]:
    """Percentile interval of the relative lift ``(Σy_t/Σx_t) / (Σy_c/Σx_c) - 1`` from
    replicate sums of shape ``(n_boot, 2)`` (columns ``Σy, Σx``) of each arm."""
    with np.errstate(divide="ignore", invalid="ignore"):
        lift = (sums_t[:, 0] / sums_t[:, 1]) / (sums_c[:, 0] / sums_c[:, 1]) - 1
    lift = lift[np.isfinite(lift)]
    if lift.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.quantile(lift, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)
