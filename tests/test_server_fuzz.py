"""No route answers 500, whatever it is sent: schemathesis against ``/openapi.json`` on a live ``ai-memory serve``.

Every operation of the app gets ``EXAMPLES`` generated requests, schema-valid
and schema-invalid ones (derandomized, so a failure reproduces), and each
answer is checked: never a server error, a documented status code, the
documented content type, headers and response schema, and invalid input
refused with a 4xx. One check is left out: that every schema-valid request is
accepted. The schema documents each field's rules, but some rules span fields
(a block's value against its own limit, ``content: null`` only on an assistant
message with ``tool_calls``), and those get a 400 naming the field, as they
should. A route whose parameters are all free-form strings has no invalid
request; its negative case is skipped.
"""

from __future__ import annotations

import re

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import positive_data_acceptance
from schemathesis.schemas import BaseSchema
from support.ai_memory_server import ServeProcess, headers

from ai_memory_sdk import inspector
from ai_memory_sdk.server import probes, routes

EXAMPLES = 20
_UI = inspector.router(lambda request: None).routes  # type: ignore[arg-type, return-value]
OPERATIONS = sorted(
    {(method, route.path) for route in (*routes.router.routes, *probes.router.routes) for method in route.methods}
    | {(method, "/ui" + route.path) for route in _UI for method in getattr(route, "methods", ())}
    - {("HEAD", path) for path in ("/healthz", "/readyz", "/metrics")}
)


@pytest.fixture(scope="module")
def api_schema(ai_memory_server: ServeProcess) -> BaseSchema:
    auth = headers(ai_memory_server.key())
    schema = schemathesis.openapi.from_url(f"{ai_memory_server.url}/openapi.json", headers=auth)
    schema.config.update(headers=auth, base_url=ai_memory_server.url)
    return schema


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
def test_no_route_answers_a_server_error(api_schema: BaseSchema, method: str, path: str, mode: GenerationMode) -> None:
    operation = api_schema.find_operation_by_label(f"{method} {path}")
    assert operation is not None, f"{method} {path} is missing from /openapi.json"

    @settings(
        max_examples=EXAMPLES, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(case=operation.as_strategy(mode))
    def check(case: schemathesis.Case) -> None:
        case.call_and_validate(excluded_checks=[positive_data_acceptance])

    try:
        check()
    except Unsatisfiable:
        if mode is GenerationMode.POSITIVE:
            raise
        pytest.skip(f"{method} {path} has no parameter a request could get wrong (every string is a valid id)")


def test_the_server_logged_no_internal_error(ai_memory_server: ServeProcess) -> None:
    log = ai_memory_server.log()
    assert re.search(r'" 500 [\d.]+ms tenant=', log) is None, "an access line with status 500"
    assert "ERROR ai_memory_sdk.server.errors" not in log  # where an unexpected exception is logged
