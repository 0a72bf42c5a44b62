"""Property-based run of Schemathesis against the service's own OpenAPI spec: no generated
request gets a 5xx, and every response conforms to the documented schema (bounded: a few
examples per operation, well under a minute)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from schemathesis import checks  # noqa: E402

from shortrec.config import ServingConfig  # noqa: E402
from shortrec.serving.app import create_app  # noqa: E402
from shortrec.store import MemoryStore  # noqa: E402


@pytest.fixture(scope="module")
def api_schema(tiny_bundle: Any, run_server: Any) -> Iterator[Any]:
    settings_ = ServingConfig(
        admin_token="schema-test-token-0123",
        gc_freeze=False,
        budget_ms=10_000,
        deadline_ranking_ms=5_000,
        deadline_sources_ms=5_000,
    )
    app = create_app(settings_, tiny_bundle.art, MemoryStore(), clock=lambda: tiny_bundle.now_us)
    with run_server(app) as url:
        yield schemathesis.openapi.from_url(f"{url}/openapi.json")


def test_api_conforms_to_its_schema(api_schema: Any) -> None:
    # one hypothesis run per operation (schemathesis's pytest plugin is driven by hand so that
    # it works with this pytest version)
    ops = [r.ok() for r in api_schema.get_all_operations()]
    assert len(ops) >= 8
    for op in ops:

        @given(case=op.as_strategy())
        @settings(
            max_examples=10,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        def run(case: Any) -> None:
            case.call_and_validate(
                checks=[checks.not_a_server_error, checks.response_schema_conformance],
                timeout=30,
            )

        run()
