"""The PromQL scanner used to check rules and dashboards against the metric contract."""

from __future__ import annotations

import pytest

from shortrec.monitoring.promql import PromQLError, Selector, presence_query, scan
from shortrec.schema import BadInput


def test_scan_finds_selectors_and_grouping_labels() -> None:
    expr = (
        "histogram_quantile(0.99, sum by (route, le) (rate(shortrec_http_request_duration_"
        'seconds_bucket{route!="/metrics", method=~"GET|POST"}[$__rate_interval]))) > 0.2'
    )
    s = scan(expr)
    assert s.selectors == (
        Selector(
            "shortrec_http_request_duration_seconds_bucket",
            (("route", "!=", "/metrics"), ("method", "=~", "GET|POST")),
        ),
    )
    assert s.grouping_labels == {"route", "le"}


def test_scan_skips_functions_aggregations_keywords_numbers_and_strings() -> None:
    expr = (
        "abs((sum by (experiment, arm) (increase(a_total[1h])) - on (experiment, arm) "
        "(max by (experiment, arm) (b) * on (experiment) group_left sum by (experiment) "
        "(increase(a_total[1h]))))) > 4 and on (experiment) c offset 1d > bool 1e3 "
        'or label_replace(d, "x", "$1", "y", "(.*)") unless sum without (z) (e) '
        "or vector(0) or 1-f"
    )
    s = scan(expr)
    assert [x.metric for x in s.selectors] == ["a_total", "b", "a_total", "c", "d", "e", "f"]
    assert s.grouping_labels == {"experiment", "arm", "z"}


def test_scan_group_left_without_label_list_and_name_matcher() -> None:
    s = scan('x * on (a) group_left y + {__name__="z", k="v"}')
    assert s.metrics == {"x", "y", "z"}
    assert s.selectors[-1].labels == {"__name__", "k"}


@pytest.mark.parametrize("bad", ['x{a="b}', "sum(rate(x[5m])", 'x{a~"b"}'])
def test_scan_rejects_unreadable_expressions(bad: str) -> None:
    with pytest.raises(BadInput):
        scan(bad)
    assert issubclass(PromQLError, BadInput)


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("up == 0", "up == bool 0"),
        ("a > 0.25\n  or b > 0.2", "a > bool\n   0.25\n  or b > bool 0.2"),
        ('x{route!="/metrics"} >= 1e-3', 'x{route!="/metrics"} >= bool 1e-3'),
        ("a > bool 1", "a > bool 1"),
        ('rate(x{s=~"5.."}[5m]) < -1', 'rate(x{s=~"5.."}[5m]) < bool -1'),
        ("a > b", "a > b"),
    ],
)
def test_presence_query_turns_filters_into_bool_comparisons(expr: str, expected: str) -> None:
    assert " ".join(presence_query(expr).split()) == " ".join(expected.split())
