"""Schema-driven fuzzing: every operation of the published OpenAPI document, valid and
invalid inputs, against the real gateway on Postgres: no 5xx, nothing the spec does not
promise (status, content type, headers, body schema)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import (
    negative_data_rejection,
    positive_data_acceptance,
)

from service.app import create_app
from service.db import Database
from service.settings import Settings
from tests.service.fixtures import REPOSITORY_ROOT, new_api_key
from tests.service.live_server import serve_in_thread

# The committed document, which the drift test holds equal to what the app serves.
schema = schemathesis.openapi.from_path(REPOSITORY_ROOT / "openapi" / "openapi.json")


@pytest.fixture
def gateway_url(parked_settings: Settings, clean_database: Database) -> Iterator[str]:
    """The gateway over real HTTP (uvicorn), so dropped connections would show too."""
    with serve_in_thread(create_app(parked_settings)) as url:
        yield url


@pytest.fixture
def fuzz_auth(clean_database: Database) -> dict[str, str]:
    return {"Authorization": f"Bearer {new_api_key(clean_database, 'fuzz-tenant')}"}


# Examples per operation: 100 keeps `make test` within a couple of minutes; a deeper run
# (e.g. TRUSTDIFF_FUZZ_EXAMPLES=250, about 2,800 cases) is one environment variable away.
FUZZ_EXAMPLES = int(os.environ.get("TRUSTDIFF_FUZZ_EXAMPLES", "100"))


@schema.parametrize()
@settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_every_operation_answers_within_its_spec(
    case: schemathesis.Case, gateway_url: str, fuzz_auth: dict[str, str]
) -> None:
    # Schema-valid is not always acceptable: a well-formed path may name no checkpoint, a
    # cursor may be one this API never issued; those are 422 problems, which the spec lists.
    # Unknown query parameters are ignored by design (caches and proxies add their own), and
    # the key is always sent, so "invalid data accepted" would flag exactly those.
    case.call_and_validate(
        base_url=gateway_url,
        headers=fuzz_auth,
        excluded_checks=[positive_data_acceptance, negative_data_rejection],
    )
