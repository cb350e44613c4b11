"""The app starts and stops cleanly, whatever ran in between."""

from __future__ import annotations

import asyncio
import gc

import httpx
from asgi_lifespan import LifespanManager

from app.core.config import Settings
from app.main import create_app


async def test_shutdown_is_prompt_after_requests_from_other_tasks(settings: Settings) -> None:
    # A request made inside asyncio.wait_for used to leave the event hub's blocking
    # XREAD deaf to cancellation, and the shutdown hung until the next event.
    app = create_app(settings)
    async with LifespanManager(app, shutdown_timeout=3) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            response = await asyncio.wait_for(http.get("/health/live"), 5)
            assert response.status_code == 200
        started = asyncio.get_running_loop().time()
    assert asyncio.get_running_loop().time() - started < 2


async def test_the_collector_is_tuned_while_the_app_runs_and_restored_after(
    settings: Settings,
) -> None:
    before = gc.get_threshold(), gc.get_freeze_count()
    tuned = settings.model_copy(update={"gc_young_threshold": 12_345})
    async with LifespanManager(create_app(tuned)):
        # What startup left alive is out of the collector's way; young collections
        # are rarer.
        assert gc.get_freeze_count() > 10_000
        assert gc.get_threshold() == (12_345, *before[0][1:])
    assert gc.get_threshold() == before[0]
    assert gc.get_freeze_count() == 0


async def test_a_zero_threshold_leaves_the_collector_alone(settings: Settings) -> None:
    before = gc.get_threshold(), gc.get_freeze_count()
    async with LifespanManager(create_app(settings.model_copy(update={"gc_young_threshold": 0}))):
        assert (gc.get_threshold(), gc.get_freeze_count()) == before
