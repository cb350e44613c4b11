"""uvicorn's server, accepting every waiting connection at once.

uvloop runs on libuv, which accepts one connection per turn of the event loop (libuv
pull request 3696: most wake-ups have only one). When a burst of connections arrives
at a busy server, the last of them waits one turn per connection ahead of it. In
`make bench`, at 256 connections, a loop turn took about 22 ms and the listening
socket still held 109 connections 0.1 s in. The last were accepted 1.2 s after they
connected. Their first requests were the p99 (1.1 s against a p50 of 120 ms, and wrk's
2 s timeouts), while the app itself answered every request it got within 180 ms.

`Acceptor` watches the listening socket itself. Each time the socket is readable, it
accepts what is waiting (up to `ACCEPTS_PER_WAKEUP`, as asyncio's own event loop does)
and hands every connection to the loop as a transport for uvicorn's HTTP protocol.
The same run then had p99 at 1.3 x p50, and no timeouts.

With several worker processes (`WEB_CONCURRENCY` > 1), `run()` hands over to uvicorn's
supervisor, which builds uvicorn's own server in each process, and that server accepts
as libuv does. (A greedy accept there would also let one idle worker take a whole
burst.)
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import ssl
import sys
from collections.abc import Callable

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import ChangeReload, Multiprocess

logger = logging.getLogger("uvicorn.error")

ACCEPTS_PER_WAKEUP = 100
# Out of file descriptors or memory: stop accepting for this long, as asyncio does
# (Linux keeps reporting the socket readable, which would spin the loop).
ACCEPT_RETRY_SECONDS = 1.0
_OUT_OF_RESOURCES = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


class Acceptor:
    """Accepts every connection waiting on `listener` when it is readable, and serves
    each with a protocol from `protocol_factory`. Stands where uvicorn keeps its
    `asyncio.Server` objects: `close()` stops accepting."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        listener: socket.socket,
        protocol_factory: Callable[[], asyncio.Protocol],
        *,
        backlog: int,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self._loop = loop
        self._tls = tls
        self._listener = listener
        self._protocol_factory = protocol_factory
        self._connecting: set[asyncio.Task[object]] = set()
        self._closed = False
        listener.setblocking(False)
        listener.listen(backlog)
        self._watch()

    def _watch(self) -> None:
        if not self._closed:
            self._loop.add_reader(self._listener.fileno(), self._accept)

    def _accept(self) -> None:
        for _ in range(ACCEPTS_PER_WAKEUP):
            try:
                connection, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return  # nothing more is waiting
            except ConnectionAbortedError:
                continue  # the client gave up before we got to it
            except OSError as exc:
                if exc.errno not in _OUT_OF_RESOURCES:
                    raise  # the loop logs it; the socket stays watched
                logger.error("cannot accept connections for now: %s", exc)
                self._loop.remove_reader(self._listener.fileno())
                self._loop.call_later(ACCEPT_RETRY_SECONDS, self._watch)
                return
            self._serve(connection)

    def _serve(self, connection: socket.socket) -> None:
        if connection.family in (socket.AF_INET, socket.AF_INET6):
            # As uvloop sets on the connections it accepts: no Nagle delay between a
            # response's head and its body.
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        task: asyncio.Task[object] = self._loop.create_task(
            self._loop.connect_accepted_socket(self._protocol_factory, connection, ssl=self._tls)
        )
        self._connecting.add(task)
        task.add_done_callback(lambda done: self._connected(done, connection))

    def _connected(self, task: asyncio.Task[object], connection: socket.socket) -> None:
        self._connecting.discard(task)
        if task.cancelled() or task.exception() is not None:
            logger.warning("dropped a connection as it was accepted: %r", task)
            connection.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._loop.remove_reader(self._listener.fileno())
        self._listener.close()

    async def wait_closed(self) -> None:
        """Nothing to wait for: uvicorn tracks the connections themselves."""


class Server(uvicorn.Server):
    """uvicorn's server with an `Acceptor` on each listening socket."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        if not sockets:
            # `run()` binds the socket first; without one, uvicorn's own way.
            await super().startup(sockets)
            return
        await self.lifespan.startup()
        if self.lifespan.should_exit:
            sys.exit(STARTUP_FAILURE)
        config = self.config

        def protocol() -> asyncio.Protocol:
            # What uvicorn's own startup builds for each connection.
            made: asyncio.Protocol = config.http_protocol_class(  # type: ignore[call-arg]
                config=config, server_state=self.server_state, app_state=self.lifespan.state
            )
            return made

        loop = asyncio.get_running_loop()
        # uvicorn only calls close() and wait_closed() on what it keeps here.
        self.servers = [
            Acceptor(loop, listener, protocol, backlog=config.backlog, tls=config.ssl)  # type: ignore[misc]
            for listener in sockets
        ]
        self.started = True


def run(config: uvicorn.Config) -> None:
    """`uvicorn.run()`, with `Server` in one process (or the reloader's); several
    workers are uvicorn's supervisor's, which builds uvicorn's own server in each."""
    listener = config.bind_socket()  # logs "Uvicorn running on ..."
    server = Server(config)
    try:
        if config.should_reload:
            ChangeReload(config, target=server.run, sockets=[listener]).run()
        elif config.workers > 1:
            Multiprocess(config, sockets=[listener]).run()
        else:
            server.run(sockets=[listener])
    finally:
        listener.close()
        if config.uds and os.path.exists(config.uds):
            os.remove(config.uds)
    if not server.started and not config.should_reload and config.workers == 1:
        sys.exit(STARTUP_FAILURE)
