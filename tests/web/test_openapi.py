"""schemathesis against the app's OpenAPI spec: no input makes a route crash or break its schema.

Bounded: a few examples per operation and no per-example deadline, so it stays a smoke test of
the input handling (filters, sorts, ranges, batch bodies) rather than a fuzzing campaign.
"""

from __future__ import annotations

import pytest

import schemathesis
from hypothesis import HealthCheck, settings

from labfolio.store import open_store  # noqa: E402
from labfolio.store.tokens import create_token  # noqa: E402
from labfolio.web.app import WebSettings, create_app  # noqa: E402
from seed import seed_study  # noqa: E402


def _app():
    import tempfile

    store = open_store(tempfile.mkdtemp(prefix="labfolio-schemathesis-"))
    seed_study(store, steps=50, seeds=2)
    token, _ = create_token(store, "schemathesis")
    app = create_app(store, WebSettings(auth=True, ingest=True))
    app.state.fuzz_token = token
    return app


@schemathesis.serializer("application/x-labfolio-batch")
def _raw_batch(ctx, value):
    # Arbitrary bytes for the binary batch body: the decoder must refuse garbage with a 400.
    return value if isinstance(value, bytes) else str(value).encode()


APP = _app()
schema = schemathesis.openapi.from_asgi("/api/openapi.json", APP)


@schema.parametrize()
@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_input_crashes_a_route_or_breaks_its_schema(case):
    from schemathesis.checks import not_a_server_error

    case.headers = {**(case.headers or {}), "Authorization": f"Bearer {APP.state.fuzz_token}"}
    response = case.call()
    case.validate_response(response, checks=(not_a_server_error,))
