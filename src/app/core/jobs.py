"""Enqueue ARQ jobs only after the transaction that asked for them commits.

A job belongs to a write: it must not run against data that was rolled back, and it
must not be lost once the write is committed. `enqueue_after_commit` buffers the job on
the session; `app.core.db.commit` sends it once the commit succeeded. Jobs take ids and
plain values, never ORM objects.
"""

from __future__ import annotations

import logging
from typing import Any

from arq import ArqRedis
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.db import after_commit

logger = logging.getLogger(__name__)

ARQ_INFO_KEY = "arq"


def enqueue_after_commit(
    session: AsyncSession,
    function: str,
    *args: Any,
    job_id: str | None = None,
) -> None:
    arq = session.info.get(ARQ_INFO_KEY)
    if not isinstance(arq, ArqRedis):
        msg = "this session was not opened by session_scope(..., info=job_info(arq))"
        raise TypeError(msg)

    async def send() -> None:
        job = await arq.enqueue_job(function, *args, _job_id=job_id)
        if job is None:
            logger.info("job %s already queued as %s", function, job_id)
        else:
            logger.info("job %s queued as %s", function, job.job_id)

    after_commit(session, send)


def job_info(arq: ArqRedis) -> dict[str, object]:
    return {ARQ_INFO_KEY: arq}
