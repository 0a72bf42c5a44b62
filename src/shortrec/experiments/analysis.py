"""A/B log analysis: exposure + outcome logs -> per-user sufficient statistics -> tests.

Pipeline (every step a Polars lazy query; only per-user and per-arm tables are collected):

1. **Units.** A user's arm is the arm of ``experiment`` in the ``arms`` column of their
   exposures. Users logged in two arms (a broken split or a mid-flight config change) are
   counted in ``crossover_users`` and dropped; arms not declared are dropped and reported.
2. **Outcomes** of a user count from their first exposure on (events joined by ``user_idx``,
   ``ts >= first exposure``), so per-user metrics include everything the arm may have changed;
   users exposed but never active count with zeros.
3. **Served feeds** (exposure rows of the experiment, ``rank < k``): Diversity@k is the share of
   pairs of served videos with different categories (``1 - Σ_c n_c(n_c-1) / (m(m-1))`` over the
   ``m`` videos with a category); NDCG@k of the served order against logged outcomes uses gain
   ``min(watch_ratio, gain_cap)`` (0 for a skip or a video never viewed), ideal = the same
   gains sorted, requests with no positive gain excluded. Coverage = distinct videos served /
   catalogue size (descriptive, no test: it grows with arm size).
4. **Statistics** per arm from sums over users (``stats.Moments``): Welch t-test for per-user
   means (CUPED when ``pre_events`` give a pre-period covariate), delta-method z-test for
   per-impression ratios, two-proportion z-test for the share of users who liked something;
   Poisson-bootstrap interval of the relative lift; Benjamini-Hochberg across all comparisons;
   the minimum detectable effect at the observed size; the sample-ratio-mismatch chi-square
   (a failure emits :class:`SampleRatioMismatchWarning` and is logged at ERROR level).
5. **Over time**: cumulative estimates of ``AnalysisConfig.sequential_metric`` per time bin and
   mSPRT always-valid p-values (safe to peek at).
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import polars as pl
from scipy import stats as sps

from shortrec import schema as S
from shortrec.config import AnalysisConfig, ExperimentConfig
from shortrec.experiments import logs as L
from shortrec.experiments import stats as st

log = logging.getLogger(__name__)

MetricKind = Literal["ratio", "mean", "proportion", "descriptive"]

# per-user columns of the intermediate table (names private to this module)
_ARM, _FIRST = "arm", "first_exposure_ts"
_U_IMP, _U_ENG, _U_SKN, _U_SKIP = "u_impressions", "u_engaged", "u_skip_n", "u_skips"
_U_WTN, _U_WT, _U_WRN, _U_WR = "u_wt_n", "u_wt_sum", "u_wr_n", "u_wr_sum"
_U_LIKES, _U_SESS, _U_ONE, _U_LIKER = "u_likes", "u_sessions", "u_one", "u_liker"
_U_DIVN, _U_DIV, _U_NDN, _U_ND = "u_div_n", "u_div_sum", "u_ndcg_n", "u_ndcg_sum"
_P_WT, _P_LIKES = "pre_wt_sum", "pre_likes"


@dataclass(frozen=True)
class MetricSpec:
    """One metric: per-user numerator ``y`` and denominator ``x`` columns (``x`` = 1 for a
    per-user mean), the test family, and the CUPED covariate column (pre-period) if any."""

    name: str
    label: str
    kind: MetricKind
    y: str
    x: str
    covariate: str | None = None
    higher_is_better: bool = True


METRICS: tuple[MetricSpec, ...] = (
    MetricSpec(
        "engagement_rate", "Engagement (share of impressions not skipped)", "ratio", _U_ENG, _U_IMP
    ),
    MetricSpec(
        "skip_rate",
        "Scroll skip rate per impression",
        "ratio",
        _U_SKIP,
        _U_SKN,
        higher_is_better=False,
    ),
    MetricSpec(
        "watch_time_per_impression", "Watch time per impression (s)", "ratio", _U_WT, _U_WTN
    ),
    MetricSpec("watch_ratio_per_impression", "Watch ratio per impression", "ratio", _U_WR, _U_WRN),
    MetricSpec(
        "watch_time_per_user", "Watch time per user (s)", "mean", _U_WT, _U_ONE, covariate=_P_WT
    ),
    MetricSpec(
        "session_length", "Session length (impressions per session)", "ratio", _U_IMP, _U_SESS
    ),
    MetricSpec("likes_per_user", "Likes per user", "mean", _U_LIKES, _U_ONE, covariate=_P_LIKES),
    MetricSpec(
        "liker_rate", "Share of users who liked at least one video", "proportion", _U_LIKER, _U_ONE
    ),
    MetricSpec(
        "diversity_at_k", "Diversity@k of served feeds (category pairs)", "ratio", _U_DIV, _U_DIVN
    ),
    MetricSpec("ndcg_at_k", "NDCG@k of served feeds vs logged outcomes", "ratio", _U_ND, _U_NDN),
)
METRIC_BY_NAME = {m.name: m for m in METRICS}


class SampleRatioMismatchWarning(UserWarning):
    """The users per arm do not match the allocation: the results are not trustworthy."""


# ---------------------------------------------------------------- result types
@dataclass(frozen=True)
class ArmEstimate:
    """Estimate of one metric in one arm with its ``1 - alpha`` normal interval."""

    metric: str
    arm: str
    users: int
    estimate: float
    ci_low: float
    ci_high: float


@dataclass(frozen=True)
class Comparison:
    """Treatment ``arm`` vs ``control`` on one metric.

    ``lift`` = relative difference; ``lift_ci_*`` from the Poisson bootstrap (or the
    difference interval over the control estimate when bootstrapping is off); ``p_adjusted``
    is Benjamini-Hochberg over every comparison of the analysis; ``mde_abs``/``mde_rel``: the
    smallest true difference detected with ``AnalysisConfig.power`` at this size.
    """

    metric: str
    arm: str
    control: str
    test: str
    cuped: bool
    control_value: float
    treatment_value: float
    diff: float
    diff_ci_low: float
    diff_ci_high: float
    lift: float
    lift_ci_low: float
    lift_ci_high: float
    p_value: float
    p_adjusted: float
    significant: bool
    mde_abs: float
    mde_rel: float


@dataclass(frozen=True)
class TimePoint:
    """Cumulative comparison of the sequential metric at the end of one time bin."""

    ts: str
    arm: str
    users_treatment: int
    users_control: int
    lift: float
    lift_ci_low: float
    lift_ci_high: float
    p_always_valid: float


@dataclass(frozen=True)
class Histogram:
    """Counts per arm over shared bin ``edges`` (``len(edges) = len(counts[arm]) + 1``)."""

    name: str
    edges: list[float]
    counts: dict[str, list[int]]


@dataclass(frozen=True)
class AnalysisResult:
    """Everything :func:`analyze` found; :meth:`to_dict` is its JSON form."""

    experiment: str
    control: str
    arms: tuple[str, ...]
    users: dict[str, int]
    srm: st.SrmResult
    estimates: tuple[ArmEstimate, ...]
    comparisons: tuple[Comparison, ...]
    coverage: dict[str, float]
    timeline: tuple[TimePoint, ...]
    histograms: tuple[Histogram, ...]
    config: AnalysisConfig
    crossover_users: int = 0
    unmatched_events: int = 0
    notes: tuple[str, ...] = field(default_factory=tuple)

    def comparison(self, metric: str, arm: str) -> Comparison:
        for c in self.comparisons:
            if c.metric == metric and c.arm == arm:
                return c
        raise KeyError(f"no comparison for metric {metric!r}, arm {arm!r}")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["srm"] = {**asdict(self.srm), "mismatch": self.srm.mismatch}
        out["config"] = self.config.model_dump(mode="json")
        strict: dict[str, Any] = _finite(out)
        return strict


def _finite(obj: Any) -> Any:
    """NaN/inf -> None, so the JSON is strict."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


# ---------------------------------------------------------------- lazy building blocks
def exposures_of(exposures: pl.LazyFrame, experiment: str) -> pl.LazyFrame:
    """Exposure rows of one experiment with its arm in column ``arm`` (rows without it
    dropped)."""
    arm = (
        pl.col(L.ARMS)
        .list.eval(
            pl.element()
            .filter(pl.element().struct.field(L.EXPERIMENT) == experiment)
            .struct.field(L.ARM)
        )
        .list.first()
    )
    return exposures.with_columns(arm.alias(_ARM)).filter(pl.col(_ARM).is_not_null())


def user_arms(exp_rows: pl.LazyFrame) -> pl.LazyFrame:
    """One row per user: arm (of the first exposure), first exposure time, number of arms."""
    return exp_rows.group_by(S.USER_IDX).agg(
        pl.col(_ARM).sort_by(S.TS).first(),
        pl.col(S.TS).min().alias(_FIRST),
        pl.col(_ARM).n_unique().alias("n_arms"),
    )


def user_outcomes(events: pl.LazyFrame, units: pl.LazyFrame) -> pl.LazyFrame:
    """Per-user outcome sums from events at or after the user's first exposure."""
    ev = events.join(units.select(S.USER_IDX, _FIRST), on=S.USER_IDX, how="inner").filter(
        pl.col(S.TS) >= pl.col(_FIRST)
    )
    skipped = pl.col(S.SKIPPED)
    return ev.group_by(S.USER_IDX).agg(
        pl.len().cast(pl.Float64).alias(_U_IMP),
        (~skipped.fill_null(False)).sum().cast(pl.Float64).alias(_U_ENG),
        skipped.is_not_null().sum().cast(pl.Float64).alias(_U_SKN),
        skipped.fill_null(False).sum().cast(pl.Float64).alias(_U_SKIP),
        pl.col(S.WATCH_TIME_S).is_not_null().sum().cast(pl.Float64).alias(_U_WTN),
        pl.col(S.WATCH_TIME_S).cast(pl.Float64).sum().alias(_U_WT),
        pl.col(S.WATCH_RATIO).is_not_null().sum().cast(pl.Float64).alias(_U_WRN),
        pl.col(S.WATCH_RATIO).cast(pl.Float64).sum().alias(_U_WR),
        pl.col(S.LIKED).fill_null(False).sum().cast(pl.Float64).alias(_U_LIKES),
        pl.col(S.SESSION_ID).drop_nulls().n_unique().cast(pl.Float64).alias(_U_SESS),
    )


def feed_quality(
    exp_rows: pl.LazyFrame, events: pl.LazyFrame, k: int, gain_cap: float
) -> pl.LazyFrame:
    """Per-user sums of Diversity@k and NDCG@k over served requests (formulas: module doc)."""
    top = exp_rows.filter(pl.col(L.RANK) < k).select(
        S.REQUEST_ID, S.USER_IDX, L.RANK, S.VIDEO_IDX, S.CATEGORY
    )
    cat = (
        top.filter(pl.col(S.CATEGORY).is_not_null())
        .group_by(S.REQUEST_ID, S.CATEGORY)
        .agg(pl.len().cast(pl.Float64).alias("c"))
        .group_by(S.REQUEST_ID)
        .agg(pl.col("c").sum().alias("m"), (pl.col("c") * (pl.col("c") - 1)).sum().alias("same"))
        .filter(pl.col("m") >= 2)
        .select(S.REQUEST_ID, (1 - pl.col("same") / (pl.col("m") * (pl.col("m") - 1))).alias("div"))
    )
    outcome = (
        events.select(
            S.REQUEST_ID,
            S.VIDEO_IDX,
            pl.when(pl.col(S.SKIPPED).fill_null(False))
            .then(0.0)
            .otherwise(pl.col(S.WATCH_RATIO).cast(pl.Float64).fill_null(0.0).clip(0.0, gain_cap))
            .alias("gain"),
        )
        .filter(pl.col(S.REQUEST_ID).is_not_null())
        .group_by(S.REQUEST_ID, S.VIDEO_IDX)
        .agg(pl.col("gain").max())
    )
    g = top.join(outcome, on=[S.REQUEST_ID, S.VIDEO_IDX], how="left").with_columns(
        pl.col("gain").fill_null(0.0)
    )
    g = g.with_columns(
        pl.col("gain").rank("ordinal", descending=True).over(S.REQUEST_ID).alias("ideal_pos")
    )
    ndcg = (
        g.group_by(S.REQUEST_ID)
        .agg(
            pl.col(S.USER_IDX).first(),
            (pl.col("gain") / (pl.col(L.RANK).cast(pl.Float64) + 2).log(2)).sum().alias("dcg"),
            (pl.col("gain") / (pl.col("ideal_pos").cast(pl.Float64) + 1).log(2))
            .sum()
            .alias("idcg"),
        )
        .join(cat, on=S.REQUEST_ID, how="left")
    )
    return ndcg.group_by(S.USER_IDX).agg(
        pl.col("div").is_not_null().sum().cast(pl.Float64).alias(_U_DIVN),
        pl.col("div").sum().cast(pl.Float64).alias(_U_DIV),
        (pl.col("idcg") > 0).sum().cast(pl.Float64).alias(_U_NDN),
        pl.when(pl.col("idcg") > 0)
        .then(pl.col("dcg") / pl.col("idcg"))
        .otherwise(0.0)
        .sum()
        .alias(_U_ND),
    )


def pre_period(pre_events: pl.LazyFrame) -> pl.LazyFrame:
    """Per-user pre-period covariates for CUPED (watch time, likes)."""
    return pre_events.group_by(S.USER_IDX).agg(
        pl.col(S.WATCH_TIME_S).cast(pl.Float64).sum().alias(_P_WT),
        pl.col(S.LIKED).fill_null(False).sum().cast(pl.Float64).alias(_P_LIKES),
    )


def per_user_table(
    exposures: pl.LazyFrame,
    events: pl.LazyFrame,
    experiment: str,
    cfg: AnalysisConfig,
    pre_events: pl.LazyFrame | None = None,
) -> pl.LazyFrame:
    """The per-user table: arm, outcomes, feed quality, covariates (zeros where absent)."""
    rows = exposures_of(exposures, experiment)
    units = user_arms(rows).filter(pl.col("n_arms") == 1).drop("n_arms")
    t = units.join(user_outcomes(events, units), on=S.USER_IDX, how="left").join(
        feed_quality(rows, events, cfg.k, cfg.gain_cap), on=S.USER_IDX, how="left"
    )
    if pre_events is not None:
        t = t.join(pre_period(pre_events), on=S.USER_IDX, how="left")
    else:
        t = t.with_columns(pl.lit(0.0).alias(_P_WT), pl.lit(0.0).alias(_P_LIKES))
    filled = [c for c in t.collect_schema().names() if c.startswith(("u_", "pre_"))]
    return t.with_columns(pl.col(filled).fill_null(0.0)).with_columns(
        pl.lit(1.0).alias(_U_ONE), (pl.col(_U_LIKES) > 0).cast(pl.Float64).alias(_U_LIKER)
    )


def arm_moments(users: pl.DataFrame, y: str, x: str) -> dict[str, st.Moments]:
    """Per-arm :class:`~shortrec.experiments.stats.Moments` of ``(y, x)`` via one group_by."""
    agg = users.group_by(_ARM).agg(
        pl.len().cast(pl.Float64).alias("n"),
        pl.col(y).sum().alias("sy"),
        pl.col(x).sum().alias("sx"),
        (pl.col(y) ** 2).sum().alias("syy"),
        (pl.col(x) ** 2).sum().alias("sxx"),
        (pl.col(x) * pl.col(y)).sum().alias("sxy"),
    )
    return {
        r[_ARM]: st.Moments(r["n"], r["sy"], r["sx"], r["syy"], r["sxx"], r["sxy"])
        for r in agg.iter_rows(named=True)
    }


# ---------------------------------------------------------------- the analysis
def analyze(
    exposures: pl.LazyFrame,
    events: pl.LazyFrame,
    experiment: ExperimentConfig | str,
    config: AnalysisConfig | None = None,
    pre_events: pl.LazyFrame | None = None,
    rng: np.random.Generator | None = None,
) -> AnalysisResult:
    """Analyse one experiment from its logs (see the module doc for every definition).

    ``exposures``: :data:`~shortrec.experiments.logs.EXPOSURES` rows; ``events``:
    ``schema.EVENTS`` rows (columns :data:`~shortrec.experiments.logs.OUTCOME_COLUMNS`);
    ``experiment``: its declaration (arms, weights and control for the SRM check and the
    comparisons) or just its name (arms then come from the log, the first in sorted order is
    the control and equal allocation is assumed); ``pre_events``: events before the experiment
    for CUPED; ``rng``: for the bootstrap (default: ``config.seed``).
    """
    cfg = config if config is not None else AnalysisConfig()
    rng = rng if rng is not None else np.random.default_rng(cfg.seed)
    L.check_columns(exposures, L.EXPOSURES, L.EXPOSURE_COLUMNS, "exposure log")
    L.check_columns(events, S.EVENTS, L.OUTCOME_COLUMNS, "event log")
    if pre_events is not None:
        L.check_columns(
            pre_events, S.EVENTS, (S.USER_IDX, S.WATCH_TIME_S, S.LIKED), "pre-period event log"
        )
    notes: list[str] = []
    name = experiment if isinstance(experiment, str) else experiment.name

    rows = exposures_of(exposures, name)
    unit_stats = user_arms(rows).group_by("n_arms").agg(pl.len()).collect()
    crossover = int(unit_stats.filter(pl.col("n_arms") > 1).get_column("len").sum())
    users = per_user_table(exposures, events, name, cfg, pre_events).collect()
    if users.height == 0:
        raise S.BadInput(f"exposure log: no exposures of experiment {name!r}")

    seen_arms = sorted(users.get_column(_ARM).unique().to_list())
    if isinstance(experiment, str):
        arms = tuple(seen_arms)
        weights = [1.0] * len(arms)
        control = arms[0]
        notes.append(
            "No declaration given: arms taken from the log, equal allocation "
            f"assumed for the SRM check, control = {control!r}."
        )
    else:
        arms = tuple(a.name for a in experiment.arms)
        weights = [a.weight for a in experiment.arms]
        control = experiment.control_arm
        unknown = sorted(set(seen_arms) - set(arms))
        if unknown:
            n_unknown = users.filter(pl.col(_ARM).is_in(unknown)).height
            notes.append(f"{n_unknown} users in undeclared arms {unknown} were dropped.")
            users = users.filter(pl.col(_ARM).is_in(list(arms)))
    if crossover:
        notes.append(f"{crossover} users were exposed to more than one arm and were dropped.")
    counts = dict(users.group_by(_ARM).agg(pl.len()).iter_rows())
    n_users = {a: int(counts.get(a, 0)) for a in arms}
    if len(arms) < 2:
        raise S.BadInput(f"experiment {name!r}: the log holds fewer than two arms ({arms})")
    if n_users[control] < 2:
        raise S.BadInput(
            f"experiment {name!r}: control arm {control!r} has "
            f"{n_users[control]} users; at least 2 are needed"
        )

    srm = st.srm_test([n_users[a] for a in arms], weights, cfg.srm_alpha)
    if srm.mismatch:
        msg = (
            f"SAMPLE RATIO MISMATCH in experiment {name!r}: users per arm {n_users} vs "
            f"allocation {dict(zip(arms, weights, strict=True))} (chi2={srm.chi2:.2f}, "
            f"p={srm.p_value:.2e}); do not trust these results until the cause is found"
        )
        log.error(msg)
        warnings.warn(msg, SampleRatioMismatchWarning, stacklevel=2)
        notes.append(msg)

    treatments = [a for a in arms if a != control and n_users[a] >= 2]
    estimates: list[ArmEstimate] = []
    raw: list[dict[str, Any]] = []
    use_cuped = cfg.cuped and pre_events is not None
    z = float(sps.norm.ppf(1 - cfg.alpha / 2))
    boot = _bootstrap(users, (control, *treatments), cfg, rng)
    for m in METRICS:
        mom = arm_moments(users, m.y, m.x)
        for a in arms:
            if a not in mom or n_users[a] < 2:
                continue
            est, se = _estimate(m, mom[a])
            estimates.append(ArmEstimate(m.name, a, n_users[a], est, est - z * se, est + z * se))
        for a in treatments:
            res, test_name = _compare(m, users, mom, a, control, cfg.alpha, use_cuped)
            if boot and not test_name.startswith("cuped"):
                lift_lo, lift_hi = st.bootstrap_lift_ci(
                    boot[a][m.name], boot[control][m.name], cfg.alpha
                )
            else:  # CUPED or no bootstrap: the difference interval over the control value
                lift_lo = _div(float(res.ci_low), float(res.control))
                lift_hi = _div(float(res.ci_high), float(res.control))
            n_t, n_c = n_users[a], n_users[control]
            d_mde = st.mde(n_c, n_t / n_c, cfg.alpha, cfg.power, test="normal")
            mde_abs = d_mde * math.sqrt(n_c * n_t / (n_c + n_t)) * float(res.se)
            raw.append(
                dict(
                    metric=m.name,
                    arm=a,
                    control=control,
                    test=test_name,
                    cuped=test_name.startswith("cuped"),
                    control_value=float(res.control),
                    treatment_value=float(res.treatment),
                    diff=float(res.diff),
                    diff_ci_low=float(res.ci_low),
                    diff_ci_high=float(res.ci_high),
                    lift=_div(float(res.diff), float(res.control)),
                    lift_ci_low=lift_lo,
                    lift_ci_high=lift_hi,
                    p_value=float(res.p_value),
                    mde_abs=mde_abs,
                    mde_rel=_div(mde_abs, abs(float(res.control))),
                )
            )
    p_adj = st.benjamini_hochberg([r["p_value"] for r in raw])
    comparisons = tuple(
        Comparison(**r, p_adjusted=float(q), significant=bool(q < cfg.alpha))
        for r, q in zip(raw, p_adj, strict=True)
    )

    coverage = _coverage(rows, users, cfg)
    timeline = _timeline(rows, events, users, name, control, treatments, cfg, z)
    histograms = _histograms(events, users)
    unmatched = _unmatched_events(events, exposures)
    return AnalysisResult(
        experiment=name,
        control=control,
        arms=arms,
        users=n_users,
        srm=srm,
        estimates=tuple(estimates),
        comparisons=comparisons,
        coverage=coverage,
        timeline=timeline,
        histograms=histograms,
        config=cfg,
        crossover_users=crossover,
        unmatched_events=unmatched,
        notes=tuple(notes),
    )


def _div(a: float, b: float) -> float:
    return a / b if b != 0 and math.isfinite(b) else float("nan")


def _estimate(m: MetricSpec, mom: st.Moments) -> tuple[float, float]:
    if m.kind in {"mean", "proportion"}:
        return float(mom.mean_y), float(np.sqrt(mom.var_y / mom.n))
    if mom.sx == 0:
        return float("nan"), float("nan")
    return float(mom.ratio), float(np.sqrt(max(float(mom.ratio_var), 0.0)))


def _compare(
    m: MetricSpec,
    users: pl.DataFrame,
    mom: dict[str, st.Moments],
    arm: str,
    control: str,
    alpha: float,
    use_cuped: bool,
) -> tuple[st.TestResult, str]:
    t, c = mom[arm], mom[control]
    with np.errstate(divide="ignore", invalid="ignore"):
        if m.kind == "ratio":
            return st.ratio_ztest(t, c, alpha), "delta-method z"
        if m.kind == "proportion":
            return st.two_proportion_ztest(t.sy, t.n, c.sy, c.n, alpha), "two-proportion z"
        if use_cuped and m.covariate is not None:
            cov = arm_moments(users, m.y, m.covariate)
            if float(cov[arm].var_x) > 0 or float(cov[control].var_x) > 0:
                return st.cuped_ttest(cov[arm], cov[control], alpha), "cuped welch t"
        return st.welch_ttest(t, c, alpha), "welch t"


def _bootstrap(
    users: pl.DataFrame, arms: tuple[str, ...], cfg: AnalysisConfig, rng: np.random.Generator
) -> dict[str, dict[str, st.F64]]:
    """Poisson-bootstrap replicate sums per arm and metric: arm -> metric -> (n_boot, 2)."""
    if cfg.n_bootstrap == 0:
        return {}
    cols = sorted({c for m in METRICS for c in (m.y, m.x)})
    where = {c: i for i, c in enumerate(cols)}
    out: dict[str, dict[str, st.F64]] = {}
    for a in arms:
        values = users.filter(pl.col(_ARM) == a).select(cols).to_numpy().astype(np.float64)
        sums = st.poisson_bootstrap_sums(values, cfg.n_bootstrap, rng)
        out[a] = {m.name: sums[:, [where[m.y], where[m.x]]] for m in METRICS}
    return out


def _coverage(rows: pl.LazyFrame, users: pl.DataFrame, cfg: AnalysisConfig) -> dict[str, float]:
    """Distinct videos served per arm over the catalogue size (or over the distinct videos
    served in the whole experiment when the catalogue size is not configured)."""
    kept = rows.join(users.lazy().select(S.USER_IDX), on=S.USER_IDX, how="semi")
    per_arm = kept.group_by(_ARM).agg(pl.col(S.VIDEO_IDX).n_unique().alias("n")).collect()
    denom = cfg.catalog_size
    if denom is None:
        denom = int(kept.select(pl.col(S.VIDEO_IDX).n_unique()).collect().item())
    return {a: n / denom for a, n in per_arm.iter_rows()} if denom else {}


_SEQ_EVENT_EXPR: dict[str, tuple[pl.Expr, pl.Expr | None]] = {
    # metric -> (per-event numerator, per-event denominator or None for a per-user mean)
    "engagement_rate": (~pl.col(S.SKIPPED).fill_null(False), pl.lit(1.0)),
    "skip_rate": (pl.col(S.SKIPPED).fill_null(False), pl.col(S.SKIPPED).is_not_null()),
    "watch_time_per_impression": (
        pl.col(S.WATCH_TIME_S).fill_null(0.0),
        pl.col(S.WATCH_TIME_S).is_not_null(),
    ),
    "watch_ratio_per_impression": (
        pl.col(S.WATCH_RATIO).fill_null(0.0),
        pl.col(S.WATCH_RATIO).is_not_null(),
    ),
    "watch_time_per_user": (pl.col(S.WATCH_TIME_S).fill_null(0.0), None),
    "likes_per_user": (pl.col(S.LIKED).fill_null(False), None),
}


def _timeline(
    rows: pl.LazyFrame,
    events: pl.LazyFrame,
    users: pl.DataFrame,
    name: str,
    control: str,
    treatments: list[str],
    cfg: AnalysisConfig,
    z: float,
) -> tuple[TimePoint, ...]:
    """Cumulative comparison per time bin with mSPRT always-valid p-values.

    Per-user cumulative sums change only in bins where the user is active, so each (user, bin)
    row contributes the *change* of ``Y``, ``X``, ``Y²``, ``X²``, ``XY`` and ``n``; a cumulative
    sum over bins per arm then gives every bin's :class:`~shortrec.experiments.stats.Moments`
    without materialising users x bins.
    """
    m = METRIC_BY_NAME[cfg.sequential_metric]
    y_expr, x_expr = _SEQ_EVENT_EXPR[cfg.sequential_metric]
    units = users.lazy().select(S.USER_IDX, _ARM, _FIRST)
    b = "bin"
    ev = (
        events.join(units, on=S.USER_IDX, how="inner")
        .filter(pl.col(S.TS) >= pl.col(_FIRST))
        .select(
            S.USER_IDX,
            pl.col(S.TS).dt.truncate(cfg.time_bin).alias(b),
            y_expr.cast(pl.Float64).alias("dy"),
            (x_expr if x_expr is not None else pl.lit(0.0)).cast(pl.Float64).alias("dx"),
        )
    )
    first = units.select(
        S.USER_IDX,
        pl.col(_FIRST).dt.truncate(cfg.time_bin).alias(b),
        pl.lit(0.0).alias("dy"),
        pl.lit(1.0 if x_expr is None else 0.0).alias("dx"),
    )
    inc = (
        pl.concat([ev, first])
        .group_by(S.USER_IDX, b)
        .agg(pl.col("dy").sum(), pl.col("dx").sum())
        .join(units.select(S.USER_IDX, _ARM), on=S.USER_IDX)
    )
    cum = inc.with_columns(
        pl.col("dy").cum_sum().over(S.USER_IDX, order_by=b).alias("Y"),
        pl.col("dx").cum_sum().over(S.USER_IDX, order_by=b).alias("X"),
    ).with_columns(
        (pl.col("Y") - pl.col("dy")).alias("Yp"),
        (pl.col("X") - pl.col("dx")).alias("Xp"),
        (pl.col(b) == pl.col(b).min().over(S.USER_IDX)).cast(pl.Float64).alias("dn"),
    )
    per_bin = (
        cum.group_by(_ARM, b)
        .agg(
            pl.col("dn").sum(),
            pl.col("dy").sum(),
            pl.col("dx").sum(),
            (pl.col("Y") ** 2 - pl.col("Yp") ** 2).sum().alias("dyy"),
            (pl.col("X") ** 2 - pl.col("Xp") ** 2).sum().alias("dxx"),
            (pl.col("X") * pl.col("Y") - pl.col("Xp") * pl.col("Yp")).sum().alias("dxy"),
        )
        .collect()
    )
    if per_bin.height == 0:
        return ()
    bins = per_bin.get_column(b).unique().sort()

    def moments(arm: str) -> st.Moments:
        full = (
            pl.DataFrame({b: bins})
            .join(per_bin.filter(pl.col(_ARM) == arm), on=b, how="left")
            .sort(b)
            .fill_null(0.0)
        )
        c = {
            k: np.cumsum(full.get_column(k).to_numpy().astype(np.float64))
            for k in ("dn", "dy", "dx", "dyy", "dxx", "dxy")
        }
        return st.Moments(c["dn"], c["dy"], c["dx"], c["dyy"], c["dxx"], c["dxy"])

    mc = moments(control)
    out: list[TimePoint] = []
    labels = [str(v) for v in bins.to_list()]
    for arm in treatments:
        mt = moments(arm)
        ok = (mt.n >= 2) & (mc.n >= 2)
        with np.errstate(divide="ignore", invalid="ignore"):
            res = (
                st.ratio_ztest(mt, mc, cfg.alpha)
                if m.kind == "ratio"
                else st.welch_ttest(mt, mc, cfg.alpha)
            )
            ctrl = np.asarray(res.control, dtype=np.float64)
            tau = cfg.msprt_tau_rel * abs(float(ctrl[-1]))
            var = np.where(ok, np.asarray(res.se, dtype=np.float64) ** 2, np.nan)
            p = st.msprt_pvalues(np.where(ok, res.diff, 0.0), var, max(tau, 1e-12) ** 2)
            lift = np.asarray(res.diff) / ctrl
            lo = np.asarray(res.diff - z * res.se) / ctrl
            hi = np.asarray(res.diff + z * res.se) / ctrl
        for i, label in enumerate(labels):
            if not ok[i]:
                continue
            out.append(
                TimePoint(
                    label,
                    arm,
                    int(mt.n[i]),
                    int(mc.n[i]),
                    float(lift[i]),
                    float(lo[i]),
                    float(hi[i]),
                    float(p[i]),
                )
            )
    return tuple(out)


def _histograms(events: pl.LazyFrame, users: pl.DataFrame) -> tuple[Histogram, ...]:
    """Watch ratio per impression (0..3 in 0.1 steps, the last bin open) and impressions per
    session (1..60, the last bin open), per arm."""
    units = users.lazy().select(S.USER_IDX, _ARM, _FIRST)
    ev = events.join(units, on=S.USER_IDX, how="inner").filter(pl.col(S.TS) >= pl.col(_FIRST))
    out = []
    wr = ev.filter(pl.col(S.WATCH_RATIO).is_not_null()).select(
        _ARM,
        (pl.col(S.WATCH_RATIO).cast(pl.Float64) * 10).floor().clip(0, 29).cast(pl.Int64).alias("i"),
    )
    sess = (
        ev.filter(pl.col(S.SESSION_ID).is_not_null())
        .group_by(_ARM, S.USER_IDX, S.SESSION_ID)
        .agg(pl.len().alias("n"))
        .select(_ARM, (pl.col("n").cast(pl.Int64) - 1).clip(0, 59).alias("i"))
    )
    for hname, lf, edges in (
        ("watch_ratio", wr, [i / 10 for i in range(31)]),
        ("session_length", sess, [float(i) for i in range(1, 62)]),
    ):
        counts = lf.group_by(_ARM, "i").agg(pl.len()).collect()
        per: dict[str, list[int]] = {}
        for arm in users.get_column(_ARM).unique().sort().to_list():
            row = [0] * (len(edges) - 1)
            for i, n in counts.filter(pl.col(_ARM) == arm).select("i", "len").iter_rows():
                row[int(i)] = int(n)
            per[arm] = row
        out.append(Histogram(hname, edges, per))
    return tuple(out)


def _unmatched_events(events: pl.LazyFrame, exposures: pl.LazyFrame) -> int:
    """Events whose request has no exposure row at all (a logging gap worth knowing about)."""
    served = exposures.select(S.REQUEST_ID).unique()
    return int(
        events.filter(pl.col(S.REQUEST_ID).is_not_null())
        .join(served, on=S.REQUEST_ID, how="anti")
        .select(pl.len())
        .collect()
        .item()
    )
