"""HTTP conditional requests (RFC 9110 §13): entity tags for versioned resources."""

from __future__ import annotations

from datetime import datetime
from email.utils import formatdate, parsedate_to_datetime
from typing import Annotated

from fastapi import Depends, Header, Response
from pydantic import BaseModel, Field
from starlette.requests import HTTPConnection

from app.core.context import add_response_headers
from app.core.errors import NotModified, PreconditionFailed

API_PREFIX = "/api/v1"


def etag_of(version: int) -> str:
    return f'"{version}"'


def _tags(header: str) -> list[str]:
    return [part.strip() for part in header.split(",") if part.strip()]


class Precondition:
    """The request's `If-Match`, checked by a service against the current entity tag. A
    class dependency: FastAPI reads the header from `__init__`'s signature."""

    def __init__(
        self,
        if_match: Annotated[
            str | None,
            Header(
                max_length=1024,
                description="Apply the change only if the resource's ETag is one of these.",
            ),
        ] = None,
    ) -> None:
        self.if_match = if_match

    @property
    def sent(self) -> bool:
        return self.if_match is not None

    def check(self, current_etag: str) -> None:
        if self.if_match is None:
            return
        # Strong comparison: a weak tag (W/"...") never satisfies If-Match.
        tags = _tags(self.if_match)
        if "*" in tags or current_etag in tags:
            return
        raise PreconditionFailed(
            f"The resource has changed (its ETag is now {current_etag}); fetch it and retry"
        )


IfMatch = Annotated[Precondition, Depends()]


def client_address(connection: HTTPConnection) -> str:
    """The client's address. Behind a proxy it is the one uvicorn takes from
    X-Forwarded-For when the proxy is in FORWARDED_ALLOW_IPS, else the proxy's."""
    return connection.client.host if connection.client else "unknown"


class ConditionalGet(BaseModel):
    """The validators a cache sends to revalidate its copy (RFC 9110 §13.1), as a
    header parameter model."""

    if_none_match: Annotated[str | None, Field(max_length=1024)] = None
    if_modified_since: Annotated[str | None, Field(max_length=64)] = None

    def check(self, etag: str, last_modified: datetime, *, cache_control: str) -> None:
        """Raise `NotModified` when the client's copy is current. `If-None-Match` wins;
        `If-Modified-Since` counts only without it, and an unreadable date is ignored."""
        headers = {"ETag": etag, "Cache-Control": cache_control}
        if self.if_none_match is not None:
            not_modified_unless_changed(self.if_none_match, etag, cache_control=cache_control)
            return
        if self.if_modified_since is None:
            return
        try:
            since = parsedate_to_datetime(self.if_modified_since)
        except (TypeError, ValueError):
            return
        if since.tzinfo is not None and last_modified.replace(microsecond=0) <= since:
            raise NotModified(headers | {"Last-Modified": http_date(last_modified)})


def http_date(moment: datetime) -> str:
    return formatdate(moment.timestamp(), usegmt=True)


def not_modified_unless_changed(
    if_none_match: str | None, current_etag: str, *, cache_control: str
) -> None:
    """Raise `NotModified` when `If-None-Match` still matches (weak comparison)."""
    if if_none_match is None:
        return
    wanted = {tag.removeprefix("W/") for tag in _tags(if_none_match)}
    if "*" in wanted or current_etag in wanted:
        raise NotModified({"ETag": current_etag, "Cache-Control": cache_control})


def is_operational(path: str) -> bool:
    """The probes and the metrics: what orchestrators and scrapers call, outside the API
    (no Host check, no traces)."""
    return path.startswith("/health/") or path == "/metrics"


def set_validators(response: Response, etag: str, *, cache_control: str) -> None:
    response.headers["ETag"] = etag
    response.headers["Cache-Control"] = cache_control


# May be kept by the client (never by shared caches) but must be revalidated with its
# ETag before each use.
REVALIDATE = "private, no-cache"


class CacheControl:
    """A router- or route-level dependency that sets the answer's Cache-Control, so
    each part of the API declares how it may be cached in one place. It applies to a
    Response a route builds itself too (added on the way out, by `EdgeMiddleware`);
    an answer that says otherwise (an error's no-store, a 304) keeps its own."""

    def __init__(self, value: str) -> None:
        self.headers = {"Cache-Control": value}
        if "no-store" in value:
            self.headers["Pragma"] = "no-cache"  # HTTP/1.0 caches

    async def __call__(self, connection: HTTPConnection) -> None:
        add_response_headers(connection.scope, self.headers)


# Credentials and account data are never stored anywhere (RFC 6749 §5.1).
NO_STORE = Depends(CacheControl("no-store"))
REVALIDATE_WITH_ETAG = Depends(CacheControl(REVALIDATE))
