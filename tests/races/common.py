"""What every race of this package shares: how requests are fired at once, and how
their answers are checked."""

from __future__ import annotations

import asyncio
import secrets
from collections import Counter
from collections.abc import Awaitable, Iterable
from datetime import timedelta
from uuid import UUID

import httpx

from app.core.db import utcnow
from app.core.resources import Resources
from app.core.security import sha256_hex
from app.models import PasswordResetToken

# Each race runs this many times: a race lost one time in ten passes 20 trials by luck
# about once in eight runs, so a flaky pass is rare; each test still takes seconds.
TRIALS = 20


async def race(*requests: Awaitable[httpx.Response], trial: int) -> list[httpx.Response]:
    """Send the requests at once and wait for all of them, in order. Any request that
    raised (a 5xx refused by `committed_client`, an exception escaping the app) fails
    the race, naming the trial, every failure and what the others answered."""
    outcomes = await asyncio.gather(*requests, return_exceptions=True)
    failures = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
    if failures:
        answered = statuses(o for o in outcomes if isinstance(o, httpx.Response))
        reasons = "; ".join(f"{type(f).__name__}: {str(f)[:400]}" for f in failures)
        msg = f"trial {trial}: {len(failures)} of {len(outcomes)} requests failed"
        msg += f" (the others answered {answered}): "
        raise AssertionError(msg + reasons)
    return [outcome for outcome in outcomes if isinstance(outcome, httpx.Response)]


async def later(delay: float, request: Awaitable[httpx.Response]) -> httpx.Response:
    """`request`, sent after `delay` seconds: to spread requests over another's run."""
    await asyncio.sleep(delay)
    return await request


def statuses(responses: Iterable[httpx.Response]) -> dict[int, int]:
    """How many responses answered each status, as a plain dict (readable on failure)."""
    return dict(sorted(Counter(response.status_code for response in responses).items()))


def no_server_errors(responses: Iterable[httpx.Response]) -> None:
    """For clients without `committed_client`'s check: no 5xx at all."""
    failed = [r for r in responses if r.status_code >= 500]
    assert not failed, [
        f"{r.request.method} {r.request.url}: {r.status_code} {r.text}" for r in failed
    ]


async def add_reset_token(resources: Resources, user_id: UUID) -> str:
    """A valid password-reset token of the account, stored as the mail job stores one
    (only its SHA-256), without running the job."""
    token = secrets.token_urlsafe(32)
    async with resources.sessionmaker() as session:
        session.add(
            PasswordResetToken(
                user_id=user_id,
                token_hash=sha256_hex(token),
                expires_at=utcnow() + timedelta(hours=1),
            )
        )
        await session.commit()
    return token


def bearer(access_token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {access_token}"}
