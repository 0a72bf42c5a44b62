"""The metric names and labels are a contract with deploy/ (alert rules, dashboards): pin
them, and check that the registry is per instance (no global state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from shortrec.serving.metrics import FALLBACK_REASONS, STAGES, Metrics, new_registry

# name -> (type, labels), exactly as in the metric-name contract
CONTRACT: dict[str, tuple[str, tuple[str, ...]]] = {
    "shortrec_http_requests_total": ("counter", ("route", "method", "status")),
    "shortrec_http_request_duration_seconds": ("histogram", ("route", "method")),
    "shortrec_http_requests_in_flight": ("gauge", ()),
    "shortrec_stage_duration_seconds": ("histogram", ("stage",)),
    "shortrec_candidates": ("histogram", ("source",)),
    "shortrec_fallbacks_total": ("counter", ("reason",)),
    "shortrec_degraded_responses_total": ("counter", ()),
    "shortrec_degraded": ("gauge", ()),
    "shortrec_store_errors_total": ("counter", ("op",)),
    "shortrec_store_duration_seconds": ("histogram", ("op",)),
    "shortrec_cache_requests_total": ("counter", ("cache", "result")),
    "shortrec_rank_batch_size": ("histogram", ()),
    "shortrec_model_info": ("gauge", ("model_version", "ranker_backend")),
    "shortrec_model_ready": ("gauge", ()),
    "shortrec_score": ("histogram", ("head",)),
    "shortrec_feed_diversity": ("histogram", ()),
    "shortrec_feed_fresh_share": ("histogram", ()),
    "shortrec_feeds_served_total": ("counter", ("arm",)),
    "shortrec_impressions_total": ("counter", ("arm",)),
    "shortrec_skips_total": ("counter", ("arm",)),
    "shortrec_likes_total": ("counter", ("arm",)),
    "shortrec_watch_seconds_total": ("counter", ("arm",)),
    "shortrec_events_ingested_total": ("counter", ()),
    "shortrec_events_rejected_total": ("counter", ("reason",)),
    "shortrec_event_lag_seconds": ("histogram", ()),
    "shortrec_drift_psi": ("gauge", ("feature",)),
    "shortrec_drift_ks": ("gauge", ("feature",)),
    "shortrec_experiment_assignments_total": ("counter", ("experiment", "arm")),
    "shortrec_experiment_allocation": ("gauge", ("experiment", "arm")),
}


def _exported(reg: CollectorRegistry) -> dict[str, str]:
    out = {}
    for fam in reg.collect():
        name = fam.name + ("_total" if fam.type == "counter" else "")
        out[name] = fam.type
    return out


def test_every_contract_metric_is_exported_with_its_type() -> None:
    m = Metrics(new_registry())
    got = _exported(m.registry)
    assert set(got) == set(CONTRACT), set(got) ^ set(CONTRACT)
    for name, (kind, _) in CONTRACT.items():
        assert got[name] == kind, name


def test_label_names_match_the_contract() -> None:
    m = Metrics(new_registry())
    objs = {
        "shortrec_http_requests_total": m.http_requests,
        "shortrec_stage_duration_seconds": m.stage_duration,
        "shortrec_model_info": m.model_info,
        "shortrec_experiment_assignments_total": m.experiment_assignments,
        "shortrec_cache_requests_total": m.cache_requests,
        "shortrec_drift_psi": m.drift_psi,
    }
    for name, obj in objs.items():
        assert tuple(obj._labelnames) == CONTRACT[name][1], name


def test_registries_are_independent_and_fixed_labels_start_at_zero() -> None:
    a, b = Metrics(new_registry()), Metrics(new_registry())
    a.fallbacks.labels("cold_start").inc()
    text_a, ctype = a.render()
    text_b, _ = b.render()
    assert ctype.startswith("text/plain")
    assert b'shortrec_fallbacks_total{reason="cold_start"} 1.0' in text_a
    assert b'shortrec_fallbacks_total{reason="cold_start"} 0.0' in text_b
    for reason in FALLBACK_REASONS:
        assert f'reason="{reason}"'.encode() in text_b
    assert "total" in STAGES and "ranking" in STAGES


def test_model_info_keeps_one_series_and_allocation_is_replaced() -> None:
    m = Metrics(new_registry())
    m.set_model("v1", "onnx")
    m.set_model("v2", "torch")
    text = m.render()[0].decode()
    assert 'model_version="v2"' in text and 'model_version="v1"' not in text
    assert "shortrec_model_ready 1.0" in text
    m.set_allocation({("exp", "a"): 0.5, ("exp", "b"): 0.5})
    m.set_allocation({("exp2", "a"): 1.0})
    text = m.render()[0].decode()
    assert 'experiment="exp2"' in text and 'experiment="exp",' not in text
    m.set_drift({"score_final": (0.1, 0.2)})
    text = m.render()[0].decode()
    assert 'shortrec_drift_psi{feature="score_final"} 0.1' in text


def test_observe_many_matches_one_observe_per_value() -> None:
    import math

    import numpy as np

    from shortrec.serving.metrics import observe_many

    rng = np.random.default_rng(0)
    bounds = [i / 20 for i in range(1, 21)]
    values = np.concatenate(
        [rng.uniform(-0.2, 1.3, 500), np.array(bounds[:5]), [math.nan, math.inf, -math.inf]]
    )
    one, many = Metrics(new_registry()), Metrics(new_registry())
    for v in values:
        if math.isfinite(v):
            one.score.labels("like").observe(float(v))
    observe_many(many.child(many.score, "like"), values)
    observe_many(many.feed_diversity, [])  # nothing to observe: no-op

    def dump(m: Metrics) -> dict[tuple[str, str], float]:
        return {
            (s.name, s.labels.get("le", "")): s.value
            for fam in m.registry.collect()
            if fam.name == "shortrec_score"
            for s in fam.samples
            if s.labels.get("head") == "like" and not s.name.endswith("_created")
        }

    got, want = dump(many), dump(one)
    assert got.keys() == want.keys() and len(got) == 23  # 21 buckets, count, sum
    for k, v in want.items():
        assert math.isclose(got[k], v, rel_tol=1e-12, abs_tol=1e-12), k


def test_cached_children_are_the_labelled_series() -> None:
    m = Metrics(new_registry())
    m.stage("ranking").observe(0.002)
    m.stage("source_custom").observe(0.001)  # not a fixed stage: still recorded
    m.candidates_child("tags").observe(7)
    assert m.candidates_child("tags") is m.candidates_child("tags")
    reg = m.registry
    assert reg.get_sample_value("shortrec_stage_duration_seconds_count", {"stage": "ranking"}) == 1
    assert (
        reg.get_sample_value("shortrec_stage_duration_seconds_count", {"stage": "source_custom"})
        == 1
    )
    assert reg.get_sample_value("shortrec_candidates_sum", {"source": "tags"}) == 7


def test_set_model_and_allocation_replace_the_previous_series() -> None:
    m = Metrics(new_registry())
    m.set_model("v1", "onnx")
    m.set_model("v2", "onnx")
    reg = m.registry
    assert (
        reg.get_sample_value(
            "shortrec_model_info", {"model_version": "v1", "ranker_backend": "onnx"}
        )
        is None
    )
    assert (
        reg.get_sample_value(
            "shortrec_model_info", {"model_version": "v2", "ranker_backend": "onnx"}
        )
        == 1
    )
    m.set_allocation({("e", "a"): 0.5, ("e", "b"): 0.5})
    m.set_allocation({("e", "a"): 1.0})
    assert (
        reg.get_sample_value("shortrec_experiment_allocation", {"experiment": "e", "arm": "b"})
        is None
    )
    assert (
        reg.get_sample_value("shortrec_experiment_allocation", {"experiment": "e", "arm": "a"})
        == 1.0
    )


def test_observe_scores_matches_one_observe_per_value() -> None:
    import math

    import numpy as np

    rng = np.random.default_rng(1)
    rows = {h: rng.uniform(-0.1, 1.2, 10).tolist() for h in ("final", "engage", "like")}
    rows["like"][3] = math.nan  # unknown head values are skipped
    rows["diversity"] = [math.nan] * 10  # a head with nothing to record
    rows["final"][0] = 0.25  # exactly on a bucket bound
    one, many = Metrics(new_registry()), Metrics(new_registry())
    for h, values in rows.items():
        for v in values:
            if math.isfinite(v):
                one.score.labels(h).observe(v)
    many.observe_scores(rows)

    def dump(m: Metrics) -> dict[tuple[str, str, str], float]:
        return {
            (s.name, s.labels["head"], s.labels.get("le", "")): s.value
            for fam in m.registry.collect()
            if fam.name == "shortrec_score"
            for s in fam.samples
            if not s.name.endswith("_created")
        }

    got, want = dump(many), dump(one)
    assert got.keys() == want.keys()
    for k, v in want.items():
        assert math.isclose(got[k], v, rel_tol=1e-12, abs_tol=1e-12), k
    assert got[("shortrec_score_count", "diversity", "")] == 0


def test_arm_children_are_cached_per_label() -> None:
    m = Metrics(new_registry())
    first = m.arm_children("exp:a")
    assert m.arm_children("exp:a") is first
    first[1].inc(3)
    assert m.registry.get_sample_value("shortrec_impressions_total", {"arm": "exp:a"}) == 3
