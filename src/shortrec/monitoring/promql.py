"""Just enough PromQL reading to check alert rules and dashboards against the metric contract.

Not a PromQL parser: a scanner that finds the instant/range vector selectors of an expression
(metric name + label matchers) and the labels it groups or matches on, so tests can verify
that every metric an alert or a panel uses is one the service exports, with labels it has.
Prometheus itself (``promtool check rules`` and the integration test) remains the judge of
syntax.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from shortrec.schema import BadInput

# Aggregation operators may be followed by `by (...)`/`without (...)` before their `(`.
AGGREGATIONS = frozenset(
    {
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
        "limitk",
        "limit_ratio",
    }
)
# Keywords followed by a parenthesised label list.
_LABEL_LIST_KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
_KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"})
_IDENT_START = re.compile(r"[A-Za-z_:]")
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_MATCHER = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*')
# a number literal, possibly a duration (`offset 1d`)
_NUMBER = re.compile(r"0[xX][0-9a-fA-F]+|[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?(?:ms|[smhdwy])*")
_COMPARISON = re.compile(r"(==|!=|>=|<=|>|<)(\s*)(?!bool\b)(?=[-+]?(?:[0-9.]|Inf|NaN))")


class PromQLError(BadInput):
    """An expression this scanner cannot read (unbalanced brackets, bad matcher)."""


@dataclass(frozen=True)
class Selector:
    """One vector selector: ``metric{label op "value", ...}``."""

    metric: str
    matchers: tuple[tuple[str, str, str], ...] = ()

    @property
    def labels(self) -> frozenset[str]:
        return frozenset(m[0] for m in self.matchers)


@dataclass(frozen=True)
class Scan:
    """What an expression references: its selectors and the labels of its by/without/on/
    ignoring/group_left/group_right clauses."""

    selectors: tuple[Selector, ...]
    grouping_labels: frozenset[str]

    @property
    def metrics(self) -> frozenset[str]:
        return frozenset(s.metric for s in self.selectors)


def _skip_string(expr: str, i: int) -> int:
    quote = expr[i]
    j = i + 1
    while j < len(expr):
        if expr[j] == "\\":
            j += 2
            continue
        if expr[j] == quote:
            return j + 1
        j += 1
    raise PromQLError(f"unterminated string at offset {i} in {expr!r}")


def _closing(expr: str, i: int, open_ch: str, close_ch: str) -> int:
    """Index just past the bracket that closes the one at ``i`` (strings skipped)."""
    depth = 0
    j = i
    while j < len(expr):
        c = expr[j]
        if c in "\"'`":
            j = _skip_string(expr, j)
            continue
        if c == open_ch:
            depth += 1
        elif c == close_ch:
            depth -= 1
            if depth == 0:
                return j + 1
        j += 1
    raise PromQLError(f"unbalanced {open_ch!r} at offset {i} in {expr!r}")


def _next_char(expr: str, i: int) -> tuple[str, int]:
    while i < len(expr) and expr[i].isspace():
        i += 1
    return (expr[i], i) if i < len(expr) else ("", i)


def _matchers(body: str, expr: str) -> tuple[tuple[str, str, str], ...]:
    out: list[tuple[str, str, str]] = []
    pos = 0
    while pos < len(body):
        m = _MATCHER.match(body, pos)
        if m is None:
            if body[pos:].strip() in ("", ","):
                break
            raise PromQLError(f"cannot read label matcher {body[pos:]!r} in {expr!r}")
        out.append((m.group(1), m.group(2), m.group(3)))
        pos = m.end()
        if pos < len(body) and body[pos] == ",":
            pos += 1
    return tuple(out)


def scan(expr: str) -> Scan:
    """Selectors and grouping labels of ``expr`` (a PromQL expression, Grafana macros such as
    ``$__rate_interval`` allowed inside range brackets)."""
    selectors: list[Selector] = []
    grouping: set[str] = set()
    depth = 0  # parentheses, checked so a truncated expression is not silently accepted
    i, n = 0, len(expr)
    while i < n:
        c = expr[i]
        if c in "()":
            depth += 1 if c == "(" else -1
            if depth < 0:
                raise PromQLError(f"unbalanced ')' at offset {i} in {expr!r}")
            i += 1
        elif c in "\"'`":
            i = _skip_string(expr, i)
        elif c == "[":
            i = _closing(expr, i, "[", "]")  # range or subquery: durations, not names
        elif c == "{":  # selector without a metric name
            end = _closing(expr, i, "{", "}")
            ms = _matchers(expr[i + 1 : end - 1], expr)
            names = [v for label, op, v in ms if label == "__name__" and op == "="]
            selectors.append(Selector(names[0] if names else "", ms))
            i = end
        elif c.isdigit() or (c == "." and i + 1 < n and expr[i + 1].isdigit()):
            m = _NUMBER.match(expr, i)
            i = m.end() if m else i + 1
        elif _IDENT_START.match(c):
            m = _IDENT.match(expr, i)
            if m is None:  # pragma: no cover - _IDENT_START guarantees a match
                raise PromQLError(f"cannot read identifier at offset {i} in {expr!r}")
            word, i = m.group(0), m.end()
            nxt, j = _next_char(expr, i)
            if word in _LABEL_LIST_KEYWORDS:
                if nxt == "(":
                    end = _closing(expr, j, "(", ")")
                    grouping |= {w.strip() for w in expr[j + 1 : end - 1].split(",") if w.strip()}
                    i = end
            elif word in _KEYWORDS or word in AGGREGATIONS or nxt == "(":
                pass  # operator, aggregation or function call
            elif nxt == "{":
                end = _closing(expr, j, "{", "}")
                selectors.append(Selector(word, _matchers(expr[j + 1 : end - 1], expr)))
                i = end
            else:
                selectors.append(Selector(word))
        else:
            i += 1
    if depth:
        raise PromQLError(f"unbalanced '(' in {expr!r}")
    return Scan(tuple(selectors), frozenset(grouping))


def presence_query(expr: str) -> str:
    """``expr`` with every filtering comparison against a number turned into a ``bool`` one.

    ``x > 0.2`` returns nothing while the condition is false; ``x > bool 0.2`` returns 0 or 1
    for every series of ``x``, so the rewritten expression returns data exactly when the series
    the alert looks at exist. Set operators (``and``/``or``) keep their meaning, ``unless``
    does not (it is not used in the shortrec rules).
    """
    return _COMPARISON.sub(r"\1 bool\2 ", expr)
