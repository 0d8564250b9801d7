"""The OpenAPI document is valid, documented, and the whole API holds up against it (schemathesis)."""

from __future__ import annotations

import schemathesis
from api_fake_engine import FakeEngine, ManualClock
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import positive_data_acceptance

from k2.api import create_app
from k2.config import ApiSettings

# Generous limits: schemathesis sends hundreds of requests from one address within a second.
_app = create_app(
    FakeEngine(), ApiSettings(rate_limit_per_s=1e6, rate_limit_burst=1_000_000), clock=ManualClock()
)
schema = schemathesis.openapi.from_asgi("/openapi.json", _app)


def test_openapi_document_is_valid_openapi() -> None:
    schema.validate()  # against the OpenAPI meta-schema; raises on any violation


def test_every_operation_has_a_summary_description_and_examples() -> None:
    doc = TestClient(_app).get("/openapi.json").json()
    for path, item in doc["paths"].items():
        for method, op in item.items():
            assert op.get("summary") and op.get("description"), f"{method} {path}"
            for param in op.get("parameters", []):
                assert param["schema"].get("examples") or param.get("examples"), f"{path} {param['name']}"
            if path.startswith("/v1/"):
                assert {"400", "401", "413", "422", "429", "500"} <= set(op["responses"]), path
    trades = doc["paths"]["/v1/trades"]["get"]["responses"]["200"]["content"]
    assert set(trades) == {
        "application/json",
        "text/csv",
        "application/vnd.apache.arrow.stream",
        "application/vnd.apache.parquet",
    }
    assert trades["application/json"]["example"]["rows"][0]["symbol"] == "BHP"


@schema.parametrize()
@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_operation_answers_5xx_or_breaks_its_schema(case: schemathesis.Case) -> None:
    # Every other check stays on (status codes, content types, response schemas, headers, negative
    # data rejected). Not positive_data_acceptance: some refusals are semantic, not schema-shaped
    # (end before start, a range past the trading day), and answer 400 by design.
    case.call_and_validate(excluded_checks=[positive_data_acceptance])
