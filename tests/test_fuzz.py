"""Schemathesis against the app's own OpenAPI, in-process (ASGI): every operation,
every built-in check, then stateful sequences through the links it infers.

The app runs with its lifespan on Schemathesis's own event loop thread, on the test
database, committing for real; the tables are emptied afterwards. Requests carry a
bearer token of a fresh account, so the generated data reaches past authentication.
`make test` runs FUZZ_EXAMPLES (default 5) examples per operation; `make fuzz` runs 100
with a fixed seed (FUZZ_SEED).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import schemathesis
from hypothesis import HealthCheck, Phase, seed
from hypothesis import settings as hypothesis_settings
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import positive_data_acceptance

from app.core.config import FilesSettings, RateLimitSettings
from app.core.resources import Resources
from app.main import create_app
from tests.conftest import GENEROUS_LIMITS, TEST_FILES, _empty_every_table, build_test_settings

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "5"))
SEED = int(os.environ.get("FUZZ_SEED", "20261124"))
PASSWORD = "fuzzing-password-1"
BASE = f"http://{asgi.HOST}"

FUZZ_SETTINGS = hypothesis_settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=False,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)


def _fuzzed_app() -> Any:
    """The app on the test database and Redis index, with the suite's settings. Built at
    import (Schemathesis reads its OpenAPI to parametrize the test); it connects to
    nothing until the first request, after the session fixtures made the database."""
    return create_app(
        build_test_settings(
            storage_dir=Path(tempfile.mkdtemp(prefix="fuzz-storage-")),
            files=FilesSettings(_env_file=None, **TEST_FILES),  # type: ignore[arg-type]
            rate_limit=RateLimitSettings(_env_file=None, **GENEROUS_LIMITS),  # type: ignore[arg-type]
        )
    )


APP = _fuzzed_app()
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


def _fresh_bearer() -> dict[str, str]:
    """A token of a new account, made through the API itself."""
    email = f"fuzz-{uuid.uuid4().hex[:8]}@example.com"
    with asgi.get_client(APP) as client:
        registered = client.post(
            f"{BASE}/api/v1/auth/register", json={"email": email, "password": PASSWORD}
        )
        assert registered.status_code == 201, registered.text
        tokens = client.post(
            f"{BASE}/api/v1/auth/token", data={"username": email, "password": PASSWORD}
        )
        assert tokens.status_code == 200, tokens.text
    return {"Authorization": f"Bearer {tokens.json()['access_token']}"}


@pytest.fixture
def bearer(resources: Resources, session_loop: asyncio.AbstractEventLoop) -> dict[str, str]:
    """A new account for each operation: one of them (DELETE /users/me) ends its
    account, which would leave every later operation with nothing but 401s. Throttles
    and rate limits start afresh too (the fuzzed logins fail on purpose)."""
    session_loop.run_until_complete(resources.redis.flushdb())
    return _fresh_bearer()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def session_loop(resources: Resources) -> asyncio.AbstractEventLoop:
    """The loop `resources` lives on; idle while a synchronous test runs."""
    return asyncio.get_running_loop()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def emptied_afterwards(resources: Resources) -> AsyncIterator[None]:
    yield
    await _empty_every_table(resources)


# The rules OpenAPI cannot state are about what is inside an uploaded file: an import
# must be a CSV with `title` and `price` columns (else 422), an upload one of the
# accepted types, told by its bytes (else 415). Random bytes are rightly refused there,
# so those two operations skip the "valid data is accepted" check. So does a request
# with an `If-Match` the generator made up (RFC 9110 makes a stale precondition a 412)
# or an `Idempotency-Key` it used before with another body (a 422, as the IETF draft
# says: the key is state the schema cannot show).
# Every other check applies to them, and every check to everything else.
CONTENT_RULES = {("POST", "/api/v1/items/imports"), ("POST", "/api/v1/files")}


# The event stream never ends by itself (it lasts as long as the token): the client
# keeps what it sent within this many seconds, as Schemathesis does for any stream at
# its read timeout, and checks that. Without it each accepted case holds for 10 s.
STREAM_READ_SECONDS = 0.3
STREAMS = {("GET", "/api/v1/events")}


def _call_kwargs(case: Any, headers: dict[str, str]) -> dict[str, Any]:
    if (case.method, case.path) in STREAMS:
        return {"headers": headers, "timeout": STREAM_READ_SECONDS}
    return {"headers": headers}


def _excluded_checks(case: Any) -> list[Any]:
    preconditioned = any(
        name.lower() in ("if-match", "idempotency-key") for name in case.headers or {}
    )
    if (case.method, case.path) in CONTENT_RULES or preconditioned:
        return [positive_data_acceptance]
    return []


@schema.parametrize()
@seed(SEED)
@FUZZ_SETTINGS
def test_every_operation_keeps_its_contract(
    case: Any, bearer: dict[str, str], emptied_afterwards: None
) -> None:
    # Made-up credentials (an `X-API-Key` the generator filled in) would turn most cases
    # into 401s; the account's token goes instead. Missing and wrong credentials are
    # still tried, by Schemathesis's own checks.
    for name in ("X-API-Key", "Authorization"):
        (case.headers or {}).pop(name, None)
    case.call_and_validate(**_call_kwargs(case, bearer), excluded_checks=_excluded_checks(case))


def test_stateful_sequences_keep_the_contract(
    resources: Resources, session_loop: asyncio.AbstractEventLoop, emptied_afterwards: None
) -> None:
    machine = schema.as_state_machine()

    class FromEmpty(machine):  # type: ignore[misc, valid-type]
        """Each sequence starts from empty tables and a new account, so the responses
        (and with them the links Hypothesis can follow) depend only on the sequence."""

        headers: dict[str, str]

        def setup(self) -> None:
            session_loop.run_until_complete(_empty_every_table(resources))
            # Failed-login throttles and rate limits start afresh too.
            session_loop.run_until_complete(resources.redis.flushdb())
            self.headers = _fresh_bearer()

        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return _call_kwargs(case, self.headers)

        def validate_response(
            self, response: Any, case: Any, additional_checks: Any = None, **kwargs: Any
        ) -> None:
            case.validate_response(
                response,
                additional_checks=additional_checks,
                excluded_checks=_excluded_checks(case),
                transport_kwargs=kwargs,
            )

    FromEmpty.run(
        settings=hypothesis_settings(
            max_examples=EXAMPLES,
            stateful_step_count=6,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
    )
