"""`Idempotency-Key` for uploads, whose body is only known once it has streamed in."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.auth.dependencies import IdempotencyKey, idempotency_for, track
from app.core.dependencies import ResourcesDep, SessionDep
from app.core.idempotency import Idempotency
from app.files import upload


async def get_upload_idempotency(
    request: Request,
    session: SessionDep,
    resources: ResourcesDep,
    idempotency_key: IdempotencyKey = None,
) -> Idempotency | None:
    """Take the key before the upload streams in; the upload's fingerprint (its files'
    names, types and hashes) is derived from the response when it is stored. A repeat
    of a finished upload is read and hashed, never stored, and answered with the first
    response, or 422 if it uploads something else."""
    if idempotency_key is None:
        return None
    idempotency = idempotency_for(
        request, resources.redis, idempotency_key, derive=upload.fingerprint_of_response
    )
    record = await idempotency.claim()
    if record is not None:
        digest = await upload.fingerprint(
            request.headers.get("content-type"), request.stream(), limits=resources.settings.files
        )
        idempotency.answer(record, digest)
    track(request, session, idempotency)
    return idempotency


UploadIdempotency = Annotated[Idempotency | None, Depends(get_upload_idempotency)]
