"""ARQ jobs that keep the job machinery itself healthy."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from arq.cron import CronJob

from app.core.jobs import cron_job, relay_outbox
from app.core.resources import Resources
from app.jobs import service as job_service

logger = logging.getLogger(__name__)

# Longer than any job that writes a file may run (the export's timeout is 600 s).
STALE_PARTIAL_AFTER = timedelta(hours=1)


async def relay(ctx: dict[str, Any]) -> int:
    """Send jobs whose request committed but could not reach Redis."""
    resources: Resources = ctx["resources"]
    async with resources.session() as session:
        sent = await relay_outbox(session, resources.arq)
    if sent:
        logger.warning("relayed %d jobs from the outbox", sent)
    return sent


async def purge(ctx: dict[str, Any]) -> dict[str, int]:
    resources: Resources = ctx["resources"]
    retention = timedelta(hours=resources.settings.export_retention_hours)
    async with resources.session() as session:
        deleted, stalled = await job_service.purge(
            session, storage=resources.storage, retention=retention
        )
    partials = await resources.storage.remove_stale_partials(older_than=STALE_PARTIAL_AFTER)
    logger.info(
        "deleted %d finished jobs and %d files left by killed writers; failed %d stalled jobs",
        deleted,
        partials,
        stalled,
    )
    return {"deleted": deleted, "stalled": stalled, "partials": partials}


CRON_JOBS: list[CronJob] = [
    cron_job(relay, name="jobs.relay_outbox", timeout=60, second={0, 30}),
    cron_job(purge, name="jobs.purge", timeout=300, minute={17, 47}),
]
