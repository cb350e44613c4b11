"""`Idempotency-Key` for creates: a retried POST returns the first response.

How it fits together:
- a dependency (wired with the caller's identity in `auth.dependencies`) calls
  `Idempotency.begin()` once the caller is authenticated: it replays a stored response,
  refuses a key reused with another body (422) or still in flight (409), or takes the key.
  It then ties the key to the request's transaction: `store` after the commit,
  `release` on rollback;
- `IdempotentRoute` hands the final response of the path operation to the taken key. The
  session commits after that (when FastAPI closes the function-scoped dependencies), and
  only then is the response stored, for 24 hours; a failed request frees the key so the
  client can retry. A retry can never replay a response whose write was rolled back.
Keys are scoped per caller, so one user can never replay another's response.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from collections.abc import Callable, Coroutine
from typing import Any, NoReturn

from fastapi import Request, Response
from fastapi.routing import APIRoute
from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.datastructures import FormData, UploadFile

from app.core.errors import AppError, Conflict
from app.core.ids import uuid7

RECORD_TTL_SECONDS = 24 * 3600
# A request that holds a key longer than this (a crashed process) releases it.
IN_FLIGHT_TTL_SECONDS = 60
# A request in flight renews its claim this often, for at most MAX_IN_FLIGHT_SECONDS: a
# slow upload keeps its key, a crashed process frees it within IN_FLIGHT_TTL_SECONDS.
RENEW_EVERY_SECONDS = 20
MAX_IN_FLIGHT_SECONDS = 3600

# Change the record only while this request still owns the key (a claim that lapsed
# and was taken by another request must not be overwritten or freed).
# KEYS: the key. ARGV: owner, then "renew" | "delete" | a record to set, its TTL (s).
_IF_OWNER = """
local current = redis.call('GET', KEYS[1])
if not current then return 0 end
local ok, record = pcall(cjson.decode, current)
if not ok or record['owner'] ~= ARGV[1] then return 0 end
if ARGV[2] == 'renew' then
    redis.call('EXPIRE', KEYS[1], ARGV[3])
elseif ARGV[2] == 'delete' then
    redis.call('DEL', KEYS[1])
else
    redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
end
return 1
"""
SCOPE_KEY = "app.idempotency"
REPLAYED_HEADER = "Idempotent-Replayed"
_KEPT_HEADERS = ("content-type", "location", "etag")


class IdempotencyKeyReused(AppError):
    """The key already stands for another request (another body, path or method): a
    422, as the IETF Idempotency-Key draft says; a 409 only means the same request is
    still in flight."""

    status = 422
    code = "idempotency-key-reused"


class ReplayResponse(Exception):
    def __init__(self, response: Response) -> None:
        super().__init__("idempotent replay")
        self.response = response


async def replay_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ReplayResponse)
    return exc.response


def fingerprint(method: str, path: str, body: bytes) -> str:
    try:
        canonical = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")).encode()
    except ValueError:
        canonical = body
    digest = hashlib.sha256()
    for part in (method.encode(), path.encode(), canonical):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


async def form_fingerprint(method: str, path: str, form: FormData) -> str:
    """The fingerprint of a form body by its fields, files by name, type and SHA-256:
    its raw bytes change with the multipart boundary clients pick anew on each retry."""
    fields: list[list[str]] = []
    for name, value in form.multi_items():
        if isinstance(value, UploadFile):
            content = await value.read()
            await value.seek(0)
            digest = hashlib.sha256(content).hexdigest()
            fields.append([name, value.filename or "", value.content_type or "", digest])
        else:
            fields.append([name, value])
    return fingerprint(method, path, json.dumps(fields, sort_keys=True).encode())


class Idempotency:
    """One `Idempotency-Key` of one caller.

    `fingerprint` identifies the request; when it can only be known from the body after
    processing (an upload, read as it streams), leave it None and pass `derive`, which
    computes it from the response body when the response is stored.
    """

    def __init__(
        self,
        redis: Redis,
        *,
        scope: str,
        key: str,
        fingerprint: str | None = None,
        derive: Callable[[bytes], str] | None = None,
    ) -> None:
        self._redis = redis
        self._if_owner_script = redis.register_script(_IF_OWNER)
        self._key = f"idempotency:{scope}:{hashlib.sha256(key.encode()).hexdigest()}"
        self._fingerprint = fingerprint
        self._derive = derive
        self._owner = uuid7().hex
        self._owned = False
        self._renewal: asyncio.Task[None] | None = None
        self.response: Response | None = None

    async def begin(self) -> None:
        """Take the key, or raise what the client must get instead."""
        record = await self.claim()
        if record is not None:
            assert self._fingerprint is not None
            self.answer(record, self._fingerprint)

    async def claim(self) -> dict[str, Any] | None:
        """Take the key (None), or return the record of the request that used it first;
        409 while that one is still in flight."""
        in_flight = json.dumps(
            {"state": "in_flight", "fingerprint": self._fingerprint, "owner": self._owner}
        )
        if await self._redis.set(self._key, in_flight, nx=True, ex=IN_FLIGHT_TTL_SECONDS):
            self._owned = True
            self._renewal = asyncio.create_task(self._renew(), name="idempotency-renewal")
            return None
        raw = await self._redis.get(self._key)
        if raw is None:  # expired between the two calls: the key is free again
            return await self.claim()
        record: dict[str, Any] = json.loads(raw)
        if record["state"] == "in_flight":
            if None not in (self._fingerprint, record["fingerprint"]):
                self._refuse_if_other(record, self._fingerprint)
            raise Conflict("A request with this Idempotency-Key is still in progress; retry later")
        return record

    def answer(self, record: dict[str, Any], fingerprint: str) -> NoReturn:
        """Replay the stored response if it answered the same request, else 422."""
        self._refuse_if_other(record, fingerprint)
        raise ReplayResponse(_restore(record))

    @staticmethod
    def _refuse_if_other(record: dict[str, Any], fingerprint: str | None) -> None:
        if record["fingerprint"] != fingerprint:
            raise IdempotencyKeyReused(
                "This Idempotency-Key was already used with a different request"
            )

    async def _renew(self) -> None:
        deadline = asyncio.get_running_loop().time() + MAX_IN_FLIGHT_SECONDS
        while asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(RENEW_EVERY_SECONDS)
            try:
                if not await self._if_owner("renew", IN_FLIGHT_TTL_SECONDS):
                    return
            except (RedisError, OSError):  # the next round may reach Redis again
                continue

    async def _if_owner(self, action: str, ttl: int = 0) -> bool:
        args: list[str | int] = [self._owner, action, ttl]
        return bool(await self._if_owner_script(keys=[self._key], args=args))

    def _stop_renewing(self) -> None:
        self._owned = False
        if self._renewal is not None:
            self._renewal.cancel()
            self._renewal = None

    async def store(self) -> None:
        """After the commit: keep a 2xx response for replays, else free the key."""
        response = self.response
        body = getattr(response, "body", None)
        if not self._owned:
            return
        if response is not None and 200 <= response.status_code < 300 and isinstance(body, bytes):
            fingerprint = self._fingerprint
            if fingerprint is None and self._derive is not None:
                fingerprint = self._derive(body)
            record = {
                "state": "done",
                "fingerprint": fingerprint,
                "status": response.status_code,
                "headers": {
                    name: value for name, value in response.headers.items() if name in _KEPT_HEADERS
                },
                "body": base64.b64encode(body).decode(),
            }
            self._stop_renewing()
            await self._if_owner(json.dumps(record), RECORD_TTL_SECONDS)
        else:
            await self.release()

    async def release(self) -> None:
        if self._owned:
            self._stop_renewing()
            await self._if_owner("delete")


def _restore(record: dict[str, Any]) -> Response:
    headers = {**record["headers"], REPLAYED_HEADER: "true"}
    return Response(
        content=base64.b64decode(record["body"]), status_code=record["status"], headers=headers
    )


def attach(request: Request, idempotency: Idempotency) -> None:
    """Let `IdempotentRoute` hand this request's response to the taken key."""
    request.scope[SCOPE_KEY] = idempotency


class IdempotentRoute(APIRoute):
    """Hands the path operation's response to the `Idempotency` taken for the request."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            response = await handler(request)
            idempotency = request.scope.get(SCOPE_KEY)
            if isinstance(idempotency, Idempotency):
                idempotency.response = response
            return response

        return handle
