"""Drift statistics: KS against SciPy, PSI against hand computations, the rolling monitor and
the reference file round trip."""

from __future__ import annotations

import json
import math
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from shortrec.artifacts import component_dir, write_component
from shortrec.config import StrictModel
from shortrec.monitoring import drift as D
from shortrec.schema import BadInput


# ---------------------------------------------------------------- KS
def _scipy_ks(x: object, y: object) -> float:
    # Only the statistic is compared; SciPy's p-value computation warns on tiny or tied
    # samples (exact method gives up, division by zero), which does not touch the statistic.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(stats.ks_2samp(x, y).statistic)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (("normal", 0.0, 1.0, 800), ("normal", 0.0, 1.0, 500)),
        (("normal", 0.0, 1.0, 800), ("normal", 0.5, 1.0, 300)),
        (("normal", 0.0, 1.0, 1000), ("normal", 0.0, 2.0, 1000)),
        (("uniform", 0.0, 1.0, 200), ("beta", 2.0, 5.0, 700)),
        (("exponential", 1.0, 0.0, 50), ("exponential", 3.0, 0.0, 60)),
    ],
)
def test_ks_matches_scipy_on_known_distributions(
    a: tuple[str, float, float, int], b: tuple[str, float, float, int]
) -> None:
    rng = np.random.default_rng(7)

    def draw(spec: tuple[str, float, float, int]) -> np.ndarray:
        kind, p1, p2, n = spec
        if kind == "normal":
            return rng.normal(p1, p2, n)
        if kind == "uniform":
            return rng.uniform(p1, p2, n)
        if kind == "beta":
            return rng.beta(p1, p2, n)
        return rng.exponential(p1, n)

    x, y = draw(a), draw(b)
    assert D.ks_statistic(x, y) == pytest.approx(_scipy_ks(x, y), abs=1e-12)


def test_ks_with_ties_matches_scipy() -> None:
    rng = np.random.default_rng(3)
    x = rng.integers(0, 5, 400).astype(float)
    y = rng.integers(1, 7, 300).astype(float)
    assert D.ks_statistic(x, y) == pytest.approx(_scipy_ks(x, y), abs=1e-12)


def test_ks_extremes_and_empty() -> None:
    assert D.ks_statistic([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]) == 0.0
    assert D.ks_statistic([0.0, 0.1], [5.0, 6.0]) == 1.0
    assert math.isnan(D.ks_statistic([1.0], [math.nan]))


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=60),
    st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=60),
)
def test_ks_property_equals_scipy(x: list[float], y: list[float]) -> None:
    assert D.ks_statistic(x, y) == pytest.approx(_scipy_ks(x, y), abs=1e-12)


# ---------------------------------------------------------------- PSI
def test_psi_hand_computed_two_bins() -> None:
    # reference 0..9: the median cut point is 4.5, shares (0.5, 0.5);
    # current: 8 values below 4.5, 2 above -> (0.8, 0.2)
    ref = np.arange(10.0)
    cur = np.array([0, 1, 1, 2, 2, 3, 3, 4, 7, 8], dtype=float)
    hand = (0.8 - 0.5) * math.log(0.8 / 0.5) + (0.2 - 0.5) * math.log(0.2 / 0.5)
    assert D.quantile_edges(ref, 2).tolist() == [4.5]
    assert D.psi(ref, cur, n_bins=2) == pytest.approx(hand, rel=1e-12)
    assert hand == pytest.approx(0.41588830833596713)


def test_psi_hand_computed_four_bins_with_empty_bin() -> None:
    ref = np.arange(1.0, 9.0)  # quartile cut points at 2.75, 4.5, 6.25 -> shares 1/4 each
    assert D.quantile_edges(ref, 4).tolist() == [2.75, 4.5, 6.25]
    cur = np.array([1.0, 1.0, 3.0, 5.0, 5.0, 5.0])  # shares 2/6, 1/6, 3/6, 0 (floored to eps)
    eps = 1e-4
    a = [2 / 6, 1 / 6, 3 / 6, eps]
    hand = sum((ai - 0.25) * math.log(ai / 0.25) for ai in a)
    assert D.psi(ref, cur, n_bins=4, eps=eps) == pytest.approx(hand, rel=1e-12)


def test_psi_values_outside_reference_range_land_in_outer_bins() -> None:
    ref = np.arange(10.0)
    shares = D.bin_shares([-100.0, 100.0, 4.5], D.quantile_edges(ref, 2))
    assert shares.tolist() == pytest.approx([1 / 3, 2 / 3])


def test_psi_identical_is_zero_and_shift_is_large() -> None:
    rng = np.random.default_rng(0)
    ref = rng.normal(0, 1, 20_000)
    same = rng.normal(0, 1, 20_000)
    shifted = rng.normal(1.0, 1, 20_000)
    assert D.psi(ref, ref) == 0.0
    assert D.psi(ref, same) < 0.01
    assert D.psi(ref, shifted) > 0.5


def test_psi_discrete_feature_merges_duplicate_edges() -> None:
    ref = np.array([0, 0, 0, 0, 0, 0, 1, 1, 2, 3], dtype=float)
    edges = D.quantile_edges(ref, 10)
    assert np.all(np.diff(edges) > 0)
    assert D.bin_shares(ref, edges).sum() == pytest.approx(1.0)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.floats(-1e3, 1e3), min_size=2, max_size=80),
    st.lists(st.floats(-1e3, 1e3), min_size=1, max_size=80),
)
def test_psi_is_non_negative(ref: list[float], cur: list[float]) -> None:
    assert D.psi(ref, cur) >= -1e-12


def test_bad_arguments_raise_bad_input() -> None:
    with pytest.raises(BadInput, match="n_bins"):
        D.quantile_edges([1.0, 2.0], 1)
    with pytest.raises(BadInput, match="no finite values"):
        D.quantile_edges([math.nan], 4)
    with pytest.raises(BadInput, match="not numeric"):
        D.psi(["a", "b"], [1.0])
    with pytest.raises(BadInput, match="shape"):
        D.psi_from_shares([0.5, 0.5], [1.0])


# ---------------------------------------------------------------- reference
def _reference(seed: int = 1) -> D.Reference:
    rng = np.random.default_rng(seed)
    return D.Reference.from_samples(
        {
            D.SCORE_FINAL: rng.beta(2, 5, 3_000),
            D.HISTORY_LEN: rng.integers(0, 50, 3_000),
        },
        n_bins=10,
        max_sample=1_000,
        seed=seed,
    )


def test_reference_shares_use_all_values_and_sample_is_bounded() -> None:
    ref = _reference()
    f = ref[D.SCORE_FINAL]
    assert f.count == 3_000
    assert f.sample.size == 1_000
    assert np.all(np.diff(f.sample) >= 0)
    assert f.shares.sum() == pytest.approx(1.0)
    assert f.shares == pytest.approx(np.full(10, 0.1), abs=1e-3)
    with pytest.raises(BadInput, match="no drift reference for feature 'nope'"):
        ref["nope"]


def test_reference_is_reproducible_from_seed() -> None:
    a, b = _reference(5), _reference(5)
    assert np.array_equal(a[D.SCORE_FINAL].sample, b[D.SCORE_FINAL].sample)


def test_save_and_load_round_trip_in_bundle(tmp_path: Path) -> None:
    class DriftRefConfig(StrictModel):
        n_bins: int = 10

    ref = _reference()
    art = tmp_path / "art"
    with write_component(art, D.REFERENCE_COMPONENT, DriftRefConfig(), "fp") as (d, _):
        D.save_reference(d, ref)
    loaded = D.load_reference(component_dir(art, D.REFERENCE_COMPONENT))
    assert loaded.n_bins == ref.n_bins
    assert set(loaded.features) == set(ref.features)
    for name, f in ref.features.items():
        g = loaded.features[name]
        assert np.array_equal(f.edges, g.edges)
        assert np.array_equal(f.shares, g.shares)
        assert np.array_equal(f.sample, g.sample)
        assert f.count == g.count
    # identical statistics after the round trip
    cur = {D.SCORE_FINAL: np.linspace(0, 1, 400)}
    assert D.drift_report(ref, cur) == D.drift_report(loaded, cur)


def test_save_reference_from_raw_samples_leaves_no_temp_files(tmp_path: Path) -> None:
    D.save_reference(tmp_path, {"x": np.arange(100.0)}, n_bins=4, max_sample=50)
    assert [p.name for p in tmp_path.iterdir()] == [D.REFERENCE_FILE]
    assert D.load_reference(tmp_path)["x"].sample.size == 50


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda doc: doc.update(format=99), "format 99"),
        (lambda doc: doc.update(features={}), "features"),
        (lambda doc: doc.update(n_bins="ten"), "n_bins"),
        (lambda doc: doc["features"]["x"].pop("sample"), "features.x: missing field 'sample'"),
        (lambda doc: doc["features"]["x"].update(edges=[3.0, 1.0, 2.0]), "features.x.edges"),
        (lambda doc: doc["features"]["x"].update(shares=[0.5, 0.1, 0.1, 0.1]), "x.shares"),
        (lambda doc: doc["features"]["x"].update(sample=[]), "features.x.sample"),
        (lambda doc: doc["features"]["x"].update(count=1), "features.x.count"),
        (lambda doc: doc["features"]["x"].update(edges=["a"]), "non-numeric"),
    ],
)
def test_load_reference_rejects_malformed_files(tmp_path: Path, mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    D.save_reference(tmp_path, {"x": np.arange(100.0)}, n_bins=4)
    path = tmp_path / D.REFERENCE_FILE
    doc = json.loads(path.read_text())
    mutate(doc)
    path.write_text(json.dumps(doc))
    with pytest.raises(BadInput, match=str(path).replace(".", r"\.")) as e:
        D.load_reference(tmp_path)
    assert message in str(e.value)


def test_load_reference_names_file_and_line_of_bad_json(tmp_path: Path) -> None:
    (tmp_path / D.REFERENCE_FILE).write_text('{\n  "format": 1,\n  oops\n}')
    with pytest.raises(BadInput, match=r"drift_reference\.json: line 3: invalid JSON"):
        D.load_reference(tmp_path)
    with pytest.raises(BadInput, match="not found"):
        D.load_reference(tmp_path / "missing")


# ---------------------------------------------------------------- monitor
def test_monitor_snapshot_matches_offline_statistics_on_window() -> None:
    ref = _reference()
    mon = D.DriftMonitor(ref, window=500, min_count=10)
    rng = np.random.default_rng(2)
    values = rng.beta(2, 3, 1_300)
    for chunk in np.array_split(values, 13):  # wraps the ring buffer several times
        mon.observe(D.SCORE_FINAL, chunk)
    window = values[-500:]
    f = ref[D.SCORE_FINAL]
    p, ks = mon.snapshot()[D.SCORE_FINAL]
    assert p == pytest.approx(D.psi_from_shares(f.shares, D.bin_shares(window, f.edges)))
    assert ks == pytest.approx(_scipy_ks(f.sample, window), abs=1e-12)


def test_monitor_single_large_batch_keeps_newest_values() -> None:
    ref = _reference()
    mon = D.DriftMonitor(ref, window=100, min_count=1)
    mon.observe(D.SCORE_FINAL, np.concatenate([np.zeros(50), np.linspace(0, 1, 100)]))
    stat = mon.stats()[D.SCORE_FINAL]
    assert stat.n == 100
    expected = stats.ks_2samp(ref[D.SCORE_FINAL].sample, np.linspace(0, 1, 100)).statistic
    assert stat.ks == pytest.approx(expected, abs=1e-12)


def test_monitor_detects_shift_and_not_same_distribution() -> None:
    ref = _reference()
    rng = np.random.default_rng(11)
    same = D.DriftMonitor(ref, window=2_000)
    shifted = D.DriftMonitor(ref, window=2_000)
    for _ in range(20):
        same.observe(D.SCORE_FINAL, rng.beta(2, 5, 100))
        shifted.observe(D.SCORE_FINAL, rng.beta(5, 2, 100))
    p0, k0 = same.snapshot()[D.SCORE_FINAL]
    p1, k1 = shifted.snapshot()[D.SCORE_FINAL]
    assert p0 < 0.05 and k0 < 0.06
    assert p1 > 1.0 and k1 > 0.5


def test_monitor_min_count_drops_nonfinite_and_rejects_unknown_features() -> None:
    mon = D.DriftMonitor(_reference(), window=1_000, min_count=50)
    mon.observe(D.HISTORY_LEN, np.arange(40.0))
    assert mon.snapshot() == {}
    mon.observe(D.HISTORY_LEN, [1.0, math.nan, math.inf, *range(20)])
    stat = mon.stats()[D.HISTORY_LEN]
    assert stat.n == 61 and stat.dropped == 2
    assert set(mon.snapshot()) == {D.HISTORY_LEN}
    with pytest.raises(BadInput, match="'video_age_hours'"):
        mon.observe(D.VIDEO_AGE_HOURS, [1.0])
    mon.reset()
    assert mon.snapshot() == {}
    with pytest.raises(BadInput, match="window"):
        D.DriftMonitor(_reference(), window=0)


def test_monitor_is_thread_safe() -> None:
    mon = D.DriftMonitor(_reference(), window=10_000, min_count=1)

    def work() -> None:
        for _ in range(200):
            mon.observe(D.SCORE_FINAL, np.full(7, 0.5))
            mon.snapshot()

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert mon.stats()[D.SCORE_FINAL].n == 4 * 200 * 7


def test_drift_report_offline() -> None:
    ref = _reference()
    rng = np.random.default_rng(4)
    rep = D.drift_report(ref, {D.SCORE_FINAL: rng.beta(2, 5, 2_000), D.HISTORY_LEN: [math.nan]})
    assert rep[D.SCORE_FINAL].psi < 0.05
    assert rep[D.SCORE_FINAL].n == 2_000
    assert rep[D.HISTORY_LEN].n == 0 and rep[D.HISTORY_LEN].dropped == 1
    assert math.isnan(rep[D.HISTORY_LEN].psi)
    with pytest.raises(BadInput):
        D.drift_report(ref, {"unknown": [1.0]})
