"""Distribution drift: population stability index and Kolmogorov-Smirnov statistics.

One set of functions serves offline checks (compare two samples) and the online service
(:class:`DriftMonitor` keeps a rolling window of the most recent values per feature and compares
it with the training reference saved in the artifact bundle).

Definitions
-----------
*Reference binning.* ``n_bins`` quantile bins of the reference sample: the interior cut points
are its ``1/n_bins, ..., (n_bins-1)/n_bins`` quantiles (duplicates removed, so a discrete
feature may get fewer bins). A value ``x`` falls into bin ``searchsorted(edges, x, "right")``,
i.e. bins are ``(-inf, e_0), [e_0, e_1), ..., [e_last, +inf)``; values outside the reference
range land in the outer bins, so nothing is dropped.

*PSI* (population stability index; Siddiqi, *Credit Risk Scorecards*, Wiley 2006, ch. 8;
Yurdakul, "Statistical properties of the population stability index", 2018)::

    PSI = sum_i (a_i - e_i) * ln(a_i / e_i)

with ``e_i`` the reference and ``a_i`` the current share of bin ``i``, each floored at ``eps``
(default 1e-4) so an empty bin gives a large but finite term. PSI >= 0; the usual reading is
< 0.1 no shift, 0.1-0.25 moderate, > 0.25 major.

*KS* (two-sample Kolmogorov-Smirnov statistic)::

    D = sup_x |F_ref(x) - F_cur(x)|

over the empirical CDFs, evaluated at every point of the pooled sample. This is exactly the
statistic of ``scipy.stats.ks_2samp`` (computed here without SciPy, in O((n+m) log(n+m))). The
reference side uses the stored sample (at most ``max_sample`` values drawn without replacement
from the training data), the current side the whole window.

Non-finite values (NaN, +-inf) are not part of either distribution: they are dropped and
counted (:attr:`DriftStat.dropped`).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from shortrec.schema import BadInput

# ---------------------------------------------------------------- names
#: Drift feature names: the ``feature`` label values of ``shortrec_drift_psi``/``_ks``.
SCORE_FINAL = "score_final"
SCORE_ENGAGE = "score_engage"
VIDEO_AGE_HOURS = "video_age_hours"
HISTORY_LEN = "history_len"
CANDIDATE_ENGAGE_RATE = "candidate_engage_rate"
DRIFT_FEATURES = (SCORE_FINAL, SCORE_ENGAGE, VIDEO_AGE_HOURS, HISTORY_LEN, CANDIDATE_ENGAGE_RATE)

#: The file :func:`save_reference` writes inside its directory.
REFERENCE_FILE = "drift_reference.json"
#: Suggested artifact-bundle component name for the reference (``artifacts.write_component``).
REFERENCE_COMPONENT = "drift"
REFERENCE_FORMAT = 1

DEFAULT_BINS = 10
DEFAULT_MAX_SAMPLE = 5_000
DEFAULT_EPS = 1e-4

FloatArray = npt.NDArray[np.float64]


class DriftError(BadInput):
    """Bad drift input: unknown feature, empty reference, malformed reference file."""


# ---------------------------------------------------------------- statistics
def _finite(values: npt.ArrayLike, what: str) -> tuple[FloatArray, int]:
    """Flatten to float64 and drop non-finite values; returns (finite values, dropped count)."""
    try:
        arr = np.asarray(values, dtype=np.float64).ravel()
    except (TypeError, ValueError) as e:
        raise DriftError(f"{what}: values are not numeric: {e}") from e
    ok = np.isfinite(arr)
    if ok.all():
        return arr, 0
    return arr[ok], int(arr.size - np.count_nonzero(ok))


def quantile_edges(reference: npt.ArrayLike, n_bins: int = DEFAULT_BINS) -> FloatArray:
    """Interior cut points of ``n_bins`` quantile bins of ``reference``, shape ``(<= n_bins-1,)``.

    Uses linear-interpolation quantiles; repeated cut points (discrete data) are merged, so the
    result is strictly increasing and may be shorter than ``n_bins - 1``.
    """
    if n_bins < 2:
        raise DriftError(f"n_bins must be >= 2, got {n_bins}")
    ref, _ = _finite(reference, "reference")
    if ref.size == 0:
        raise DriftError("reference: no finite values")
    qs = np.linspace(0.0, 1.0, n_bins + 1)[1:-1]
    return np.unique(np.quantile(ref, qs))


def bin_shares(values: npt.ArrayLike, edges: npt.ArrayLike) -> FloatArray:
    """Share of ``values`` in each bin ``(-inf, e_0), [e_0, e_1), ..., [e_last, inf)``.

    Returns shape ``(len(edges) + 1,)`` summing to 1 (all zeros for no finite value).
    """
    v, _ = _finite(values, "values")
    e = np.asarray(edges, dtype=np.float64)
    counts = np.bincount(np.searchsorted(e, v, side="right"), minlength=e.size + 1)
    n = counts.sum()
    return counts / n if n else np.zeros(e.size + 1)


def psi_from_shares(
    expected: npt.ArrayLike, actual: npt.ArrayLike, eps: float = DEFAULT_EPS
) -> float:
    """PSI of two bin-share vectors of the same length: ``sum (a-e) ln(a/e)``, shares floored at
    ``eps``."""
    e = np.maximum(np.asarray(expected, dtype=np.float64), eps)
    a = np.maximum(np.asarray(actual, dtype=np.float64), eps)
    if e.shape != a.shape:
        raise DriftError(f"bin shares differ in shape: {e.shape} vs {a.shape}")
    return float(np.sum((a - e) * np.log(a / e)))


def psi(
    reference: npt.ArrayLike,
    current: npt.ArrayLike,
    n_bins: int = DEFAULT_BINS,
    eps: float = DEFAULT_EPS,
) -> float:
    """PSI of ``current`` against ``reference`` over the reference's quantile bins (see module
    docstring). NaN when ``current`` has no finite value."""
    edges = quantile_edges(reference, n_bins)
    cur, _ = _finite(current, "current")
    if cur.size == 0:
        return math.nan
    return psi_from_shares(bin_shares(reference, edges), bin_shares(cur, edges), eps)


def _ks_sorted(ref_sorted: FloatArray, cur_sorted: FloatArray) -> float:
    # Both empirical CDFs at every pooled point; the sup over x is attained at a data point.
    pooled = np.concatenate([ref_sorted, cur_sorted])
    cdf_ref = np.searchsorted(ref_sorted, pooled, side="right") / ref_sorted.size
    cdf_cur = np.searchsorted(cur_sorted, pooled, side="right") / cur_sorted.size
    return float(np.max(np.abs(cdf_ref - cdf_cur)))


def ks_statistic(reference: npt.ArrayLike, current: npt.ArrayLike) -> float:
    """Two-sample KS statistic ``sup |F_ref - F_cur|`` (equals ``scipy.stats.ks_2samp(...)
    .statistic``). NaN when either side has no finite value."""
    ref, _ = _finite(reference, "reference")
    cur, _ = _finite(current, "current")
    if ref.size == 0 or cur.size == 0:
        return math.nan
    return _ks_sorted(np.sort(ref), np.sort(cur))


# ---------------------------------------------------------------- reference
@dataclass(frozen=True)
class FeatureReference:
    """The training-time distribution of one feature.

    ``edges``: interior quantile cut points, shape ``(k,)``, strictly increasing.
    ``shares``: reference share per bin, shape ``(k+1,)``, computed on all ``count`` values.
    ``sample``: sorted reference values for KS, shape ``(<= max_sample,)``.
    """

    name: str
    edges: FloatArray
    shares: FloatArray
    sample: FloatArray
    count: int

    @staticmethod
    def build(
        name: str,
        values: npt.ArrayLike,
        n_bins: int = DEFAULT_BINS,
        max_sample: int = DEFAULT_MAX_SAMPLE,
        rng: np.random.Generator | None = None,
    ) -> FeatureReference:
        """Reference of ``values``; when there are more than ``max_sample`` finite values the KS
        sample is drawn without replacement with ``rng`` (default: seed 0, reproducible)."""
        v, _ = _finite(values, f"reference {name!r}")
        if v.size == 0:
            raise DriftError(f"reference {name!r}: no finite values")
        if max_sample < 1:
            raise DriftError(f"max_sample must be >= 1, got {max_sample}")
        edges = quantile_edges(v, n_bins)
        sample = v
        if v.size > max_sample:
            gen = rng if rng is not None else np.random.default_rng(0)
            sample = gen.choice(v, size=max_sample, replace=False)
        return FeatureReference(name, edges, bin_shares(v, edges), np.sort(sample), int(v.size))

    def to_json(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "edges": self.edges.tolist(),
            "shares": self.shares.tolist(),
            "sample": self.sample.tolist(),
        }

    @staticmethod
    def from_json(name: str, doc: Any, source: str) -> FeatureReference:
        where = f"{source}: features.{name}"
        if not isinstance(doc, dict):
            raise DriftError(f"{where}: expected an object")
        try:
            edges = np.asarray(doc["edges"], dtype=np.float64)
            shares = np.asarray(doc["shares"], dtype=np.float64)
            sample = np.asarray(doc["sample"], dtype=np.float64)
            count = int(doc["count"])
        except KeyError as e:
            raise DriftError(f"{where}: missing field {e.args[0]!r}") from e
        except (TypeError, ValueError) as e:
            raise DriftError(f"{where}: non-numeric value: {e}") from e
        if edges.ndim != 1 or np.any(np.diff(edges) <= 0) or not np.all(np.isfinite(edges)):
            raise DriftError(f"{where}.edges: must be a strictly increasing list of numbers")
        if shares.shape != (edges.size + 1,) or abs(shares.sum() - 1.0) > 1e-6:
            raise DriftError(f"{where}.shares: must have len(edges)+1 entries summing to 1")
        if sample.ndim != 1 or sample.size == 0 or not np.all(np.isfinite(sample)):
            raise DriftError(f"{where}.sample: must be a non-empty list of finite numbers")
        if count < sample.size:
            raise DriftError(f"{where}.count: {count} is below the sample size {sample.size}")
        return FeatureReference(name, edges, shares, np.sort(sample), count)


@dataclass(frozen=True)
class Reference:
    """Training references of several features, keyed by feature name."""

    features: Mapping[str, FeatureReference]
    n_bins: int = DEFAULT_BINS

    @staticmethod
    def from_samples(
        samples: Mapping[str, npt.ArrayLike],
        n_bins: int = DEFAULT_BINS,
        max_sample: int = DEFAULT_MAX_SAMPLE,
        seed: int = 0,
    ) -> Reference:
        """Build from raw values per feature (e.g. validation-split scores and inputs)."""
        if not samples:
            raise DriftError("reference: no features given")
        rng = np.random.default_rng(seed)
        feats = {
            name: FeatureReference.build(name, values, n_bins, max_sample, rng)
            for name, values in sorted(samples.items())
        }
        return Reference(feats, n_bins)

    def __getitem__(self, feature: str) -> FeatureReference:
        try:
            return self.features[feature]
        except KeyError:
            raise DriftError(
                f"no drift reference for feature {feature!r} (have: {sorted(self.features)})"
            ) from None


def save_reference(
    directory: Path,
    samples: Mapping[str, npt.ArrayLike] | Reference,
    n_bins: int = DEFAULT_BINS,
    max_sample: int = DEFAULT_MAX_SAMPLE,
    seed: int = 0,
) -> Reference:
    """Write ``directory/drift_reference.json`` atomically and return the reference.

    ``directory`` is typically an artifact-bundle component directory (the one yielded by
    ``artifacts.write_component(art, REFERENCE_COMPONENT, ...)``). ``samples`` maps feature name
    to raw training values (binned and subsampled here) or is an already built
    :class:`Reference`.
    """
    ref = (
        samples
        if isinstance(samples, Reference)
        else Reference.from_samples(samples, n_bins, max_sample, seed)
    )
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    doc = {
        "format": REFERENCE_FORMAT,
        "n_bins": ref.n_bins,
        "features": {name: f.to_json() for name, f in sorted(ref.features.items())},
    }
    path = directory / REFERENCE_FILE
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w") as fh:
            # repr-exact floats: a reloaded reference gives bit-identical statistics
            json.dump(doc, fh, sort_keys=True)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return ref


def load_reference(directory: Path) -> Reference:
    """Read the reference :func:`save_reference` wrote into ``directory``.

    Raises :class:`DriftError` (a ``BadInput``) naming the file, line and field on any problem.
    """
    path = Path(directory) / REFERENCE_FILE
    if not path.is_file():
        raise DriftError(f"{path}: drift reference not found")
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DriftError(f"{path}: line {e.lineno}: invalid JSON: {e.msg}") from e
    if not isinstance(doc, dict) or doc.get("format") != REFERENCE_FORMAT:
        got = doc.get("format") if isinstance(doc, dict) else None
        raise DriftError(f"{path}: format {got!r}, expected {REFERENCE_FORMAT}")
    feats = doc.get("features")
    if not isinstance(feats, dict) or not feats:
        raise DriftError(f"{path}: features: expected a non-empty object")
    n_bins = doc.get("n_bins")
    if not isinstance(n_bins, int) or n_bins < 2:
        raise DriftError(f"{path}: n_bins: expected an integer >= 2, got {n_bins!r}")
    return Reference(
        {name: FeatureReference.from_json(name, f, str(path)) for name, f in feats.items()},
        n_bins,
    )


# ---------------------------------------------------------------- online monitor
@dataclass(frozen=True)
class DriftStat:
    """Drift of one feature's window: PSI, KS, how many values it holds and how many non-finite
    values were dropped since the monitor started."""

    psi: float
    ks: float
    n: int
    dropped: int


class _Ring:
    """Fixed-capacity buffer of the most recent float values."""

    def __init__(self, capacity: int) -> None:
        self.buf = np.empty(capacity, dtype=np.float64)
        self.pos = 0
        self.size = 0
        self.dropped = 0

    def push(self, v: FloatArray) -> None:
        cap = self.buf.size
        if v.size >= cap:
            # only the newest `cap` values survive anyway
            self.buf[:] = v[-cap:]
            self.pos, self.size = 0, cap
            return
        end = self.pos + v.size
        if end <= cap:
            self.buf[self.pos : end] = v
        else:
            first = cap - self.pos
            self.buf[self.pos :] = v[:first]
            self.buf[: v.size - first] = v[first:]
        self.pos = end % cap
        self.size = min(cap, self.size + v.size)

    def values(self) -> FloatArray:
        return self.buf[: self.size].copy() if self.size < self.buf.size else self.buf.copy()


class DriftMonitor:
    """Rolling-window drift of live values against a training :class:`Reference`.

    ``window`` is the number of most recent values kept per feature (count-based, so the
    statistic's noise floor does not depend on traffic). ``min_count``: a feature with fewer
    values in its window is left out of :meth:`snapshot` (PSI of a handful of values is noise).
    Thread-safe: the service calls :meth:`observe` from request threads and :meth:`snapshot`
    from the metrics exporter.

    Cost: ``observe`` is O(len(values)); ``snapshot`` O(F * (w + s) log(w + s)) for ``F``
    features, window ``w`` and reference sample ``s``.
    """

    def __init__(self, reference: Reference, window: int = 5_000, min_count: int = 100) -> None:
        if window < 1:
            raise DriftError(f"window must be >= 1, got {window}")
        if min_count < 1:
            raise DriftError(f"min_count must be >= 1, got {min_count}")
        self.reference = reference
        self.window = window
        self.min_count = min(min_count, window)
        self._rings = {name: _Ring(window) for name in reference.features}
        self._lock = threading.Lock()

    @property
    def features(self) -> tuple[str, ...]:
        return tuple(sorted(self._rings))

    def observe(self, feature: str, values: npt.ArrayLike) -> None:
        """Append ``values`` (any shape, flattened) to ``feature``'s window; non-finite values
        are counted and dropped. Raises :class:`DriftError` for a feature without reference."""
        ring = self._rings.get(feature)
        if ring is None:
            raise DriftError(
                f"no drift reference for feature {feature!r} (have: {sorted(self._rings)})"
            )
        v, dropped = _finite(values, feature)
        with self._lock:
            ring.dropped += dropped
            if v.size:
                ring.push(v)

    def stats(self) -> dict[str, DriftStat]:
        """:class:`DriftStat` of every feature with at least ``min_count`` values."""
        with self._lock:
            windows = {name: (r.values(), r.dropped) for name, r in self._rings.items()}
        out: dict[str, DriftStat] = {}
        for name, (vals, dropped) in sorted(windows.items()):
            if vals.size < self.min_count:
                continue
            ref = self.reference.features[name]
            cur = np.sort(vals)
            p = psi_from_shares(ref.shares, bin_shares(cur, ref.edges))
            out[name] = DriftStat(p, _ks_sorted(ref.sample, cur), int(vals.size), dropped)
        return out

    def snapshot(self) -> dict[str, tuple[float, float]]:
        """``{feature: (psi, ks)}`` for every feature with at least ``min_count`` values."""
        return {name: (s.psi, s.ks) for name, s in self.stats().items()}

    def reset(self) -> None:
        """Empty every window (e.g. after loading a new bundle with a new reference)."""
        with self._lock:
            self._rings = {name: _Ring(self.window) for name in self.reference.features}


def drift_report(
    reference: Reference, samples: Mapping[str, npt.ArrayLike]
) -> dict[str, DriftStat]:
    """Offline check: drift of each sample against ``reference`` (same statistics as
    :class:`DriftMonitor`, whole sample instead of a window)."""
    out: dict[str, DriftStat] = {}
    for name, values in sorted(samples.items()):
        ref = reference[name]
        cur, dropped = _finite(values, name)
        if cur.size == 0:
            out[name] = DriftStat(math.nan, math.nan, 0, dropped)
            continue
        cur = np.sort(cur)
        p = psi_from_shares(ref.shares, bin_shares(cur, ref.edges))
        out[name] = DriftStat(p, _ks_sorted(ref.sample, cur), int(cur.size), dropped)
    return out
