"""OTEL_ENABLED turns on FastAPI's built-in OpenTelemetry: spans reach an OTLP/HTTP
collector (a stand-in on loopback), named by route template."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import httpx
import pytest

from app.core.config import Settings
from bench.common import free_port
from tests.live import live_env, start_server
from tests.waiting import wait_until


class Collector(BaseHTTPRequestHandler):
    received: list[tuple[str, str, bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Collector.received.append((self.path, self.headers["Content-Type"], body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[str]:
    Collector.received = []
    server = HTTPServer(("127.0.0.1", free_port()), Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


async def test_traces_reach_the_collector_when_enabled(
    settings: Settings, collector: str, tmp_path: Path
) -> None:
    env = live_env(
        settings,
        tmp_path,
        OTEL_ENABLED="true",
        OTEL_EXPORTER_OTLP_ENDPOINT=collector,
        OTEL_SERVICE_NAME="app-under-test",
        OTEL_BSP_SCHEDULE_DELAY="100",
        OTEL_METRICS_EXPORTER="none",
    )
    server = await start_server(env)
    try:
        async with httpx.AsyncClient(base_url=server.url) as http:
            assert (await http.get("/api/v1/items")).status_code == 401

        def traced() -> bool:
            return any(
                path == "/v1/traces" and b"/api/v1/items" in body
                for path, _, body in Collector.received
            )

        await wait_until(traced, within=10)
    finally:
        server.stop()
    traces = [(kind, body) for path, kind, body in Collector.received if path == "/v1/traces"]
    content_type, body = traces[0]
    assert content_type == "application/x-protobuf"
    assert b"app-under-test" in body  # the service name travels with the spans
    assert b"/health/live" not in body  # probes are excluded
