"""Reference handlers for `bench/http.py`: the limit of the stack the service runs on.

- **R1**, a raw ASGI callable answering `/health/live`'s JSON: what uvicorn (uvloop,
  httptools) can do with no framework at all.
- **R2**, a bare Starlette app on an asyncpg pool (the same size as the service's pool:
  pool size + overflow) doing the work of `GET /api/v1/items/{id}`: verify the access
  token exactly as the service does (algorithm, issuer, audience, required claims, `typ`),
  load the user and check it is active and the token version matches, load the item with
  its tags and attachments in one query, refuse another user's item (404), and answer
  the same JSON with the same `ETag`. No Redis, no ORM, no validation layer, no
  middleware: the least a correct handler must do.

Benchmark fixtures, not product code.

    python -m bench.reference r1|r2 --port 8001
"""

from __future__ import annotations

import argparse
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import asyncpg
import jwt
import uvicorn
from sqlalchemy.engine import make_url
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from app.core.config import Settings

LIVE = b'{"status":"ok"}'


async def r1(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(LIVE)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": LIVE})


USER = "SELECT is_active, token_version FROM users WHERE id = $1"
ITEM = """
SELECT i.id, i.title, i.description, i.price, i.status, i.owner_id, i.created_at,
       i.updated_at, i.version,
       coalesce((SELECT array_agg(t.name ORDER BY t.name)
                 FROM item_tags it JOIN tags t ON t.id = it.tag_id
                 WHERE it.item_id = i.id), '{}') AS tags,
       coalesce((SELECT json_agg(json_build_object(
                     'id', f.id, 'filename', f.filename, 'content_type', f.content_type,
                     'size', f.size, 'sha256', f.sha256, 'description', f.description,
                     'created_at', f.created_at) ORDER BY a.created_at, a.file_id)
                 FROM item_attachments a JOIN files f ON f.id = a.file_id
                 WHERE a.item_id = i.id), '[]') AS attachments
FROM items i WHERE i.id = $1
"""


def _timestamp(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _body(row: asyncpg.Record) -> dict[str, Any]:
    attachments = json.loads(row["attachments"])
    for attachment in attachments:  # PostgreSQL's JSON timestamps, in Pydantic's form
        attachment["created_at"] = _timestamp(datetime.fromisoformat(attachment["created_at"]))
    price: Decimal = row["price"]
    return {
        "id": str(row["id"]),
        "title": row["title"],
        "description": row["description"],
        "price": str(price),
        "status": row["status"],
        "tags": list(row["tags"]),
        "attachments": attachments,
        "owner_id": str(row["owner_id"]),
        "created_at": _timestamp(row["created_at"]),
        "updated_at": _timestamp(row["updated_at"]),
        "version": row["version"],
    }


def r2(settings: Settings) -> Starlette:
    auth = settings.auth
    key = auth.jwt_secret.get_secret_value()
    database = settings.database
    dsn = make_url(database.url).set(drivername="postgresql").render_as_string(hide_password=False)
    state: dict[str, asyncpg.Pool] = {}

    def unauthorized() -> Response:
        return Response(status_code=401, headers={"WWW-Authenticate": "Bearer"})

    async def read_item(request: Request) -> Response:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return unauthorized()
        try:
            decoded = jwt.api_jwt.decode_complete(
                token,
                key,
                algorithms=[auth.jwt_algorithm],
                audience=auth.jwt_audience,
                issuer=auth.jwt_issuer,
                leeway=5,
                options={"require": ["exp", "iat", "nbf", "sub", "jti", "iss", "aud"]},
            )
            claims = decoded["payload"]
            if decoded["header"].get("typ") != "at+jwt" or claims.get("type") != "access":
                return unauthorized()
            user_id = UUID(claims["sub"])
            item_id = UUID(request.path_params["item_id"])
        except (jwt.InvalidTokenError, ValueError):
            return unauthorized()
        async with state["pool"].acquire() as connection:
            user = await connection.fetchrow(USER, user_id)
            if user is None or not user["is_active"] or claims.get("ver") != user["token_version"]:
                return unauthorized()
            row = await connection.fetchrow(ITEM, item_id)
        if row is None or row["owner_id"] != user_id:
            return Response(status_code=404)
        return Response(
            json.dumps(_body(row), separators=(",", ":")),
            media_type="application/json",
            headers={"ETag": f'"{row["version"]}"', "Cache-Control": "private, no-cache"},
        )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        size = database.pool_size + database.max_overflow
        state["pool"] = await asyncpg.create_pool(dsn, min_size=database.pool_size, max_size=size)
        try:
            yield
        finally:
            await state["pool"].close()

    return Starlette(routes=[Route("/api/v1/items/{item_id}", read_item)], lifespan=lifespan)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("which", choices=["r1", "r2"])
    parser.add_argument("--port", type=int, required=True)
    arguments = parser.parse_args()
    app = r1 if arguments.which == "r1" else r2(Settings())
    # The flags `app serve` uses: one process, uvloop, httptools, no access log.
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=arguments.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
