"""A burst of connections is accepted in one turn of a busy event loop
(app.core.serving), not one connection per turn as uvloop's own server does."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop

from app.core.serving import Acceptor

BURST = 50
TURN_SECONDS = 0.01  # each turn of the loop takes this long: a busy server


class Counted(asyncio.Protocol):
    made: list[asyncio.BaseTransport]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.made.append(transport)


def _on_uvloop(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(scenario())


def _accepting(backlog: int) -> tuple[Acceptor, tuple[str, int], list[asyncio.BaseTransport]]:
    """An acceptor on a fresh port (call it on the running loop), the port's address, and
    the transports of the connections it has accepted so far."""
    made: list[asyncio.BaseTransport] = []
    protocol = type("Protocol", (Counted,), {"made": made})
    listener = socket.create_server(("127.0.0.1", 0))
    acceptor = Acceptor(asyncio.get_running_loop(), listener, protocol, backlog=backlog)
    return acceptor, listener.getsockname(), made


def _keep_busy(loop: asyncio.AbstractEventLoop, until: float) -> None:
    time.sleep(TURN_SECONDS)  # the point: a turn of the loop that takes long
    if time.monotonic() < until:
        loop.call_soon(_keep_busy, loop, until)


def test_a_burst_of_connections_is_accepted_in_one_turn_of_a_busy_loop() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        acceptor, address, made = _accepting(BURST)
        # The kernel completes the handshakes; the connections wait to be accepted.
        clients = [socket.create_connection(address) for _ in range(BURST)]
        try:
            loop.call_soon(_keep_busy, loop, time.monotonic() + 1)
            # Five turns. uvloop's server would have accepted five connections by now.
            await asyncio.sleep(5 * TURN_SECONDS)
            assert len(made) == BURST
        finally:
            acceptor.close()
            for client in clients:
                client.close()
            for transport in made:
                transport.close()

    _on_uvloop(scenario)


def test_a_closed_acceptor_refuses_new_connections() -> None:
    async def scenario() -> None:
        acceptor, address, made = _accepting(8)
        with socket.create_connection(address):
            await asyncio.sleep(0.05)
        assert len(made) == 1
        acceptor.close()
        await acceptor.wait_closed()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(address, timeout=1)
        made[0].close()

    _on_uvloop(scenario)
