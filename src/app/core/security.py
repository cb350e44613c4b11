"""Password hashing (argon2id) and JWT encoding (PyJWT), both domain-free.

Hashing is CPU-bound (tens of milliseconds by design), so it runs on a few threads of
its own (`argon2_max_threads`): the event loop keeps serving other requests, and a login
storm queues for a thread instead of multiplying memory (each hash allocates
`argon2_memory_kib`). On Linux those threads run at a lower scheduling priority
(`argon2_thread_nice`): they use whatever CPU the event loop leaves, and the loop gets a
core back as soon as a request wants one, so a login storm takes less from every other
request (README.md, Performance).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import secrets
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import argon2
import jwt
from argon2.exceptions import InvalidHashError, VerificationError

from app.core.config import AuthSettings

logger = logging.getLogger(__name__)

# Verified against when the email is unknown, so both paths cost one argon2 verify.
_DUMMY_PASSWORD = "not-a-real-password-0"  # noqa: S105


def _lower_priority(increment: int) -> None:
    """Raise the calling thread's nice value by `increment` (at most to 19), so that it
    yields the CPU to the process's other threads. Linux keeps a nice value per thread;
    elsewhere this changes nothing."""
    if increment <= 0 or sys.platform != "linux":
        return
    thread = threading.get_native_id()
    try:
        nice = os.getpriority(os.PRIO_PROCESS, thread)
        os.setpriority(os.PRIO_PROCESS, thread, min(nice + increment, 19))
    except OSError as exc:  # a sandbox that forbids it: hash at the usual priority
        logger.warning("could not lower the priority of a hashing thread: %s", exc)


class PasswordHasher:
    def __init__(self, hasher: argon2.PasswordHasher, *, max_threads: int, nice: int = 0) -> None:
        self._hasher = hasher
        self._threads = ThreadPoolExecutor(
            max_threads,
            thread_name_prefix="argon2",
            initializer=_lower_priority,
            initargs=(nice,),
        )
        self._dummy_hash: str | None = None

    @classmethod
    def from_settings(cls, auth: AuthSettings) -> PasswordHasher:
        hasher = argon2.PasswordHasher(
            time_cost=auth.argon2_time_cost,
            memory_cost=auth.argon2_memory_kib,
            parallelism=auth.argon2_parallelism,
            type=argon2.Type.ID,
        )
        return cls(hasher, max_threads=auth.argon2_max_threads, nice=auth.argon2_thread_nice)

    def close(self) -> None:
        """Stop the threads once the hashes they run are done; drop the queued ones."""
        self._threads.shutdown(wait=False, cancel_futures=True)

    async def _on_thread(self, work: Callable[..., Any], *args: str) -> Any:
        # Queued beyond the threads; a request cancelled while queued never hashes.
        return await asyncio.get_running_loop().run_in_executor(self._threads, work, *args)

    async def hash(self, password: str) -> str:
        hashed: str = await self._on_thread(self._hasher.hash, password)
        return hashed

    async def verify(self, hashed: str, password: str) -> bool:
        verified: bool = await self._on_thread(self._verify, hashed, password)
        return verified

    async def verify_dummy(self, password: str) -> None:
        """Spend the same work as a real verification, for an account that does not exist."""
        if self._dummy_hash is None:
            self._dummy_hash = await self.hash(_DUMMY_PASSWORD)
        await self.verify(self._dummy_hash, password)

    def needs_rehash(self, hashed: str) -> bool:
        try:
            return self._hasher.check_needs_rehash(hashed)
        except InvalidHashError:
            return True

    def _verify(self, hashed: str, password: str) -> bool:
        try:
            return self._hasher.verify(hashed, password)
        except (VerificationError, InvalidHashError):
            return False


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def new_secret_token() -> str:
    return secrets.token_urlsafe(32)


class TokenType(StrEnum):
    access = "access"
    refresh = "refresh"


# RFC 8725 §3.11: explicit typing, so one kind of token is never accepted as another.
_TYP_HEADER = {TokenType.access: "at+jwt", TokenType.refresh: "rt+jwt"}


class InvalidTokenError(Exception):
    """The token is malformed, forged, expired, or of the wrong kind."""


@dataclass(frozen=True, slots=True)
class EncodedToken:
    token: str
    jti: str
    expires_at: datetime


LEEWAY_SECONDS = 5
VERIFIED_TOKENS = 4096  # ~1 KiB each


class TokenCodec:
    """Signs and verifies this service's JWTs.

    A verified token is remembered (the last VERIFIED_TOKENS of them, in this process)
    with its claims: a client sends the same access token with every request, and
    verifying it again (base64, JSON, HMAC, the claim checks) cost each request more
    than anything else in authentication. A remembered token is still refused once it
    expires; revocation is checked on every request elsewhere (app.auth.service).
    """

    def __init__(self, auth: AuthSettings) -> None:
        self._key = auth.jwt_secret.get_secret_value()
        self._algorithm = auth.jwt_algorithm
        self._issuer = auth.jwt_issuer
        self._audience = auth.jwt_audience
        self._verified: OrderedDict[str, tuple[TokenType, dict[str, Any]]] = OrderedDict()

    def encode(
        self,
        kind: TokenType,
        *,
        subject: str,
        jti: str,
        lifetime: timedelta,
        claims: dict[str, Any] | None = None,
    ) -> EncodedToken:
        now = datetime.now(UTC)
        expires_at = now + lifetime
        payload: dict[str, Any] = {
            **(claims or {}),
            "iss": self._issuer,
            "aud": self._audience,
            "sub": subject,
            "iat": now,
            "nbf": now,
            "exp": expires_at,
            "jti": jti,
            "type": kind.value,
        }
        token = jwt.encode(
            payload, self._key, algorithm=self._algorithm, headers={"typ": _TYP_HEADER[kind]}
        )
        return EncodedToken(token=token, jti=jti, expires_at=expires_at)

    def decode(self, token: str, kind: TokenType) -> dict[str, Any]:
        """The claims of a valid token of `kind`; InvalidTokenError otherwise."""
        remembered = self._verified.get(token)
        if remembered is not None:
            remembered_kind, claims = remembered
            if remembered_kind is kind and time.time() < claims["exp"] + LEEWAY_SECONDS:
                self._verified.move_to_end(token)
                return dict(claims)
        payload = self._verify(token, kind)
        self._verified[token] = (kind, payload)
        if len(self._verified) > VERIFIED_TOKENS:
            self._verified.popitem(last=False)
        return dict(payload)

    def _verify(self, token: str, kind: TokenType) -> dict[str, Any]:
        try:
            decoded = jwt.api_jwt.decode_complete(
                token,
                self._key,
                algorithms=[self._algorithm],
                audience=self._audience,
                issuer=self._issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iat", "nbf", "sub", "jti", "iss", "aud"]},
            )
        except jwt.InvalidTokenError as exc:
            raise InvalidTokenError(str(exc)) from exc
        payload: dict[str, Any] = decoded["payload"]
        if decoded["header"].get("typ") != _TYP_HEADER[kind] or payload.get("type") != kind.value:
            msg = "wrong token type"
            raise InvalidTokenError(msg)
        return payload
