"""Races on password reset and refresh-token rotation: one winner, the rest refused,
and the stored tokens as if the requests had come one after the other."""

from __future__ import annotations

import random
from collections import Counter
from uuid import UUID

import httpx
from sqlalchemy import func, select

from app.core.resources import Resources
from app.models import PasswordResetToken, RefreshToken
from tests.factories import PASSWORD, create_account, login
from tests.races.common import TRIALS, add_reset_token, bearer, race, statuses

RESET = "/api/v1/auth/reset-password"
REFRESH = "/api/v1/auth/refresh"
LOGOUT = "/api/v1/auth/logout"
ME = "/api/v1/users/me"
REUSED = "urn:problem:refresh-token-reused"
INVALID = "urn:problem:unauthorized"


async def _unused_reset_tokens(resources: Resources, user_id: UUID) -> int:
    async with resources.sessionmaker() as session:
        count = await session.scalar(
            select(func.count())
            .select_from(PasswordResetToken)
            .where(PasswordResetToken.user_id == user_id, PasswordResetToken.used_at.is_(None))
        )
    return int(count or 0)


async def _refresh_tokens(resources: Resources, user_id: UUID) -> tuple[int, int]:
    """How many refresh tokens the account has, and how many of them are not revoked."""
    async with resources.sessionmaker() as session:
        total = await session.scalar(
            select(func.count()).select_from(RefreshToken).where(RefreshToken.user_id == user_id)
        )
        live = await session.scalar(
            select(func.count())
            .select_from(RefreshToken)
            .where(RefreshToken.user_id == user_id, RefreshToken.revoked_at.is_(None))
        )
    return int(total or 0), int(live or 0)


async def test_one_reset_token_sent_several_times_at_once_resets_once(
    committed_client: httpx.AsyncClient, committed: Resources
) -> None:
    """One reset token sent 2-4 times at once: one 204, the rest 401; the new password works."""
    account = await create_account(committed_client)
    for trial in range(TRIALS):
        token = await add_reset_token(committed, account.id)
        new_password = f"new-password-{trial}"
        copies = 2 + trial % 3
        body = {"token": token, "new_password": new_password}
        responses = await race(
            *(committed_client.post(RESET, json=body) for _ in range(copies)), trial=trial
        )
        assert statuses(responses) == {204: 1, 401: copies - 1}, f"trial {trial}"
        assert await _unused_reset_tokens(committed, account.id) == 0, f"trial {trial}"
        assert (await _refresh_tokens(committed, account.id))[1] == 0, f"trial {trial}"
        signed_in = await login(committed_client, account.email, new_password)
        assert signed_in.status_code == 200, f"trial {trial}: {signed_in.text}"
    assert (await login(committed_client, account.email, PASSWORD)).status_code == 401


async def test_two_reset_tokens_of_one_account_at_once_reset_once(
    committed_client: httpx.AsyncClient, committed: Resources
) -> None:
    """Two valid reset tokens of one account at once: one 204, one 401; every token is spent."""
    account = await create_account(committed_client)
    for trial in range(TRIALS):
        tokens = [await add_reset_token(committed, account.id) for _ in range(2)]
        passwords = [f"first-password-{trial}", f"second-password-{trial}"]
        responses = await race(
            *(
                committed_client.post(RESET, json={"token": token, "new_password": password})
                for token, password in zip(tokens, passwords, strict=True)
            ),
            trial=trial,
        )
        assert sorted(r.status_code for r in responses) == [204, 401], f"trial {trial}"
        assert await _unused_reset_tokens(committed, account.id) == 0, f"trial {trial}"
        winner, loser = passwords if responses[0].status_code == 204 else list(reversed(passwords))
        assert (await login(committed_client, account.email, loser)).status_code == 401
        signed_in = await login(committed_client, account.email, winner)
        assert signed_in.status_code == 200, f"trial {trial}: {signed_in.text}"


async def test_one_refresh_token_sent_several_times_at_once_rotates_once_and_revokes(
    committed_client: httpx.AsyncClient, committed: Resources
) -> None:
    """One refresh token sent 2-4 times at once: one 200, the rest 401; the family is revoked."""
    account = await create_account(committed_client)
    for trial in range(TRIALS):
        pair = (await login(committed_client, account.email, PASSWORD)).json()
        copies = 2 + trial % 3
        body = {"refresh_token": pair["refresh_token"]}
        responses = await race(
            *(committed_client.post(REFRESH, json=body) for _ in range(copies)), trial=trial
        )
        assert statuses(responses) == {200: 1, 401: copies - 1}, f"trial {trial}"
        [rotated] = [r.json() for r in responses if r.status_code == 200]
        assert rotated["refresh_token"] not in (None, pair["refresh_token"])
        # The first loser sees the token used (reuse), any later one sees it revoked.
        losers = Counter(r.json()["type"] for r in responses if r.status_code == 401)
        assert losers[REUSED] >= 1, f"trial {trial}: {losers}"
        assert set(losers) <= {REUSED, INVALID}, f"trial {trial}: {losers}"
        # The reuse revoked the family: the successor is refused too.
        successor = await committed_client.post(
            REFRESH, json={"refresh_token": rotated["refresh_token"]}
        )
        assert successor.status_code == 401, f"trial {trial}"
        # Each trial stored its login's token and exactly one successor, both revoked
        # (the account's first token, from create_account, stays live).
        assert await _refresh_tokens(committed, account.id) == (2 * trial + 3, 1), f"trial {trial}"


async def test_logout_during_refresh_leaves_no_working_refresh_token(
    committed_client: httpx.AsyncClient, committed: Resources
) -> None:
    """Logout amid 1-3 refreshes of its refresh token: no 5xx; no token of the family works."""
    account = await create_account(committed_client)
    shuffled = random.Random(4)
    for trial in range(TRIALS):
        pair = (await login(committed_client, account.email, PASSWORD)).json()
        body = {"refresh_token": pair["refresh_token"]}
        refreshes = 1 + trial % 3
        requests = [committed_client.post(REFRESH, json=body) for _ in range(refreshes)]
        at = shuffled.randrange(refreshes + 1)
        requests.insert(
            at, committed_client.post(LOGOUT, json=body, headers=bearer(pair["access_token"]))
        )
        responses = await race(*requests, trial=trial)
        logged_out = responses.pop(at)
        assert logged_out.status_code == 204, f"trial {trial}: {logged_out.text}"
        refreshed = statuses(responses)
        assert set(refreshed) <= {200, 401}, f"trial {trial}: {refreshed}"
        assert refreshed.get(200, 0) <= 1, f"trial {trial}: {refreshed}"
        presented = [pair["refresh_token"]] + [
            r.json()["refresh_token"] for r in responses if r.status_code == 200
        ]
        for token in presented:
            again = await committed_client.post(REFRESH, json={"refresh_token": token})
            assert again.status_code == 401, f"trial {trial}: {again.text}"
        gone = await committed_client.get(ME, headers=bearer(pair["access_token"]))
        assert gone.status_code == 401, f"trial {trial}"
        # Only the token of create_account's login is still live.
        assert (await _refresh_tokens(committed, account.id))[1] == 1, f"trial {trial}"
