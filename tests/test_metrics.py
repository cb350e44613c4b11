"""GET /metrics: Prometheus text, behind HTTP Basic credentials, off by default."""

from __future__ import annotations

import re

import httpx
from pydantic import SecretStr

from app.core.config import ObservabilitySettings, Settings
from app.core.resources import Resources
from tests.conftest import RunJobs, app_client
from tests.factories import create_account

CREDENTIALS = ("scraper", "scrape-secret-1")


def _with_metrics(settings: Settings) -> Settings:
    observability = ObservabilitySettings(
        _env_file=None, metrics_username=CREDENTIALS[0], metrics_password=SecretStr(CREDENTIALS[1])
    )
    return settings.model_copy(update={"observability": observability})


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in the Prometheus text format."""
    for line in text.splitlines():
        if not line.startswith(name + ("{" if labels else " ")):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0])) if labels else {}
        if all(found.get(key) == value for key, value in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    msg = f"no sample {name} {labels} in:\n{text}"
    raise AssertionError(msg)


async def test_metrics_are_off_unless_credentials_are_configured(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/metrics", auth=CREDENTIALS)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


async def test_metrics_need_the_configured_credentials(settings: Settings) -> None:
    async with app_client(_with_metrics(settings)) as http:
        missing = await http.get("/metrics")
        wrong = await http.get("/metrics", auth=(CREDENTIALS[0], "guess"))
    for response in (missing, wrong):
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Basic"


async def test_metrics_cover_requests_pool_redis_realtime_and_jobs(
    settings: Settings, committed: Resources, client: httpx.AsyncClient, run_jobs: RunJobs
) -> None:
    await create_account(client)  # queues a welcome email ...
    await run_jobs()  # ... that a worker runs and counts in Redis
    async with app_client(_with_metrics(settings)) as http:
        await http.get("/api/v1/items")  # 401
        await http.get("/api/v1/nowhere")  # 404, no route
        await http.get("/health/live")  # answered by the edge layer, before the router
        response = await http.get("/metrics", auth=CREDENTIALS)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert response.headers["cache-control"] == "no-store"
    text = response.text
    labels = {"method": "GET", "route": "/api/v1/items", "status": "401"}
    assert sample(text, "http_requests_total", **labels) >= 1
    assert sample(text, "http_requests_total", route="<unmatched>", status="404") >= 1
    assert sample(text, "http_requests_total", route="/health/live", status="200") >= 1
    assert (
        sample(text, "http_request_duration_seconds_count", method="GET", route="/api/v1/items")
        >= 1
    )
    assert sample(text, "http_requests_in_progress", method="GET") >= 1  # this very scrape
    assert sample(text, "db_pool_connections", state="checked_out") >= 0
    assert "# TYPE redis_errors_total counter" in text
    assert sample(text, "realtime_connections") == 0
    welcome = {"function": "auth.send_welcome_email", "outcome": "complete"}
    assert sample(text, "jobs_total", **welcome) >= 1
    assert sample(text, "job_duration_seconds_total", function="auth.send_welcome_email") > 0
    assert sample(text, "job_queue_depth") == 0
