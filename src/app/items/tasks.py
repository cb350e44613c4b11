"""ARQ jobs of the items domain."""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from uuid import UUID

from arq.worker import Function
from sqlalchemy.exc import DBAPIError

from app.core.jobs import job, retry_backoff
from app.core.resources import Resources
from app.items import export
from app.items.service import EXPORT_JOB
from app.jobs import service as job_service

logger = logging.getLogger(__name__)

EXPORT_TIMEOUT = 600
EXPORT_MAX_TRIES = 3


async def export_items(ctx: dict[str, Any], job_id: str) -> dict[str, int] | None:
    """Write the owner's items as CSV to storage, then mark the job complete.

    Idempotent: a rerun rewrites the same file (atomically) and the job completes once.
    """
    resources: Resources = ctx["resources"]
    key = f"exports/{job_id}.csv"
    async with resources.session() as session:
        started = await job_service.start(session, UUID(job_id))
        owner_id = started.owner_id if started else None
    if owner_id is None:
        logger.info("export %s is gone or already finished", job_id)
        return None
    try:
        # Our own deadline, inside ARQ's, so a slow export is marked failed, not lost.
        async with asyncio.timeout(EXPORT_TIMEOUT - 10):
            async with (
                resources.session() as session,
                resources.storage.writer(key) as sink,
            ):
                stats = await export.write_csv(session, owner_id=owner_id, sink=sink)
    except (DBAPIError, OSError) as exc:
        if ctx["job_try"] < EXPORT_MAX_TRIES:
            raise retry_backoff(ctx["job_try"], 5) from exc
        await _fail(resources, job_id, "The export could not be written; try again later")
        raise
    except TimeoutError:
        await _fail(resources, job_id, "The export took too long")
        raise
    except Exception:
        # The details go to the log (the job id is on every line), not to the owner.
        await _fail(resources, job_id, "The export failed")
        raise
    async with resources.session() as session:
        await job_service.complete(
            session,
            UUID(job_id),
            result=stats,
            file_key=key,
            base_url=resources.settings.public_base_url,
        )
    return stats


async def _fail(resources: Resources, job_id: str, error: str) -> None:
    async with resources.session() as session:
        await job_service.fail(
            session, UUID(job_id), error=error, base_url=resources.settings.public_base_url
        )


FUNCTIONS: list[Function] = [
    job(export_items, name=EXPORT_JOB, timeout=EXPORT_TIMEOUT, max_tries=EXPORT_MAX_TRIES),
]
