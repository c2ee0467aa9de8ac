"""Schemathesis against the live receiver, driven by its own OpenAPI document (`GET /openapi.json`).

Every operation gets positive and negative (schema-violating) generated requests; the checks require
no 5xx other than a documented 503, documented status codes, content types, headers and bodies, and the
read API refusing requests without its token (`ignored_auth`). The budget is small and derandomized so CI
runs the same cases every time (a few seconds); set POSTRELAY_SOAK=1 for a larger budget.
"""

from __future__ import annotations

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    ignored_auth,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from postrelay.receiver.openapi import document
from tests.receiver.harness import API_TOKEN, Service

SOAK = os.environ.get("POSTRELAY_SOAK", "") not in ("", "0")
EXAMPLES = 150 if SOAK else 25
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]
SCHEMA = schemathesis.openapi.from_dict(document())
OPERATIONS = [result.ok() for result in SCHEMA.get_all_operations()]
CASES = [(op, mode) for op in OPERATIONS for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
         # negative data needs something to violate: parameters or a body
         if mode is GenerationMode.POSITIVE or op.definition.raw.get("parameters") or op.definition.raw.get("requestBody")]


def test_the_served_document_is_the_one_tested(service: Service) -> None:
    resp = service.http.get("/openapi.json")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("application/json")
    assert resp.json() == document()
    assert resp.json()["openapi"].startswith("3.")


def test_every_route_is_documented(service: Service) -> None:
    from starlette.routing import Route

    app = service._server.server.config.app
    routes = {r.path.replace(":path}", "}") for r in app.routes if isinstance(r, Route)}
    documented = set(document()["paths"])
    assert routes - {"/webhooks/{source}"} <= documented
    assert {f"/webhooks/{s}" for s in ("postgrid", "lob", "generic")} <= documented


@pytest.mark.parametrize(("operation", "mode"), CASES, ids=[f"{m.value}-{op.label}" for op, m in CASES])
def test_schemathesis(service: Service, operation, mode) -> None:  # type: ignore[no-untyped-def]
    secured = bool(operation.definition.raw.get("security"))
    headers = {"Authorization": f"Bearer {API_TOKEN}"} if secured else {}
    checks = [*CHECKS, ignored_auth] if secured else CHECKS

    @settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case) -> None:  # type: ignore[no-untyped-def]
        case.call_and_validate(base_url=service.url, headers=headers, checks=checks)

    run()
