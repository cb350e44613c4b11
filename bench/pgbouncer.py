"""A private PgBouncer in transaction pooling mode, for the tests and the benchmarks.

It listens on a free port of 127.0.0.1 and sends every database to the PostgreSQL
server given (the shared one on 5432 by default), with a small server pool so that
clients really share server sessions. `pgbouncer` comes from the system's packages
(`apt-get install pgbouncer`; `.ci/run` installs it). PgBouncer refuses to run as root:
as root it runs as the `postgres` OS user.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.common import die_with_parent, free_port

PGBOUNCER = os.environ.get("PGBOUNCER", "pgbouncer")


@dataclass(frozen=True)
class PgBouncer:
    port: int
    log: Path

    def url(self, database_url: str) -> str:
        """`database_url` with its host and port replaced by this PgBouncer's."""
        from sqlalchemy.engine import make_url

        url = make_url(database_url).set(host="127.0.0.1", port=self.port)
        return url.render_as_string(hide_password=False)


def _ini(directory: Path, port: int, upstream: tuple[str, int], pool_size: int) -> str:
    host, upstream_port = upstream
    return f"""[databases]
* = host={host} port={upstream_port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {directory}/userlist.txt
pool_mode = transaction
default_pool_size = {pool_size}
max_client_conn = 500
ignore_startup_parameters = extra_float_digits
logfile = {directory}/pgbouncer.log
pidfile = {directory}/pgbouncer.pid
"""


def _wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            text = log.read_text() if log.exists() else ""
            msg = f"pgbouncer exited with {process.returncode}: {text[-2000:]}"
            raise RuntimeError(msg)
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    msg = f"pgbouncer did not listen on {port} within 10 s"
    raise TimeoutError(msg)


@contextlib.contextmanager
def pgbouncer(
    *, upstream: tuple[str, int] = ("127.0.0.1", 5432), pool_size: int = 4
) -> Iterator[PgBouncer]:
    binary = shutil.which(PGBOUNCER) or shutil.which("/usr/sbin/pgbouncer")
    if binary is None:
        msg = "pgbouncer is not installed (apt-get install pgbouncer; .ci/run installs it)"
        raise RuntimeError(msg)
    as_root = os.geteuid() == 0
    with tempfile.TemporaryDirectory(prefix="pgbouncer-") as name:
        directory = Path(name)
        port = free_port()
        (directory / "userlist.txt").write_text('"postgres" ""\n')
        (directory / "pgbouncer.ini").write_text(_ini(directory, port, upstream, pool_size))
        if as_root:
            entry = pwd.getpwnam("postgres")
            for path in (directory, *directory.iterdir()):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        log = directory / "pgbouncer.log"
        process = subprocess.Popen(  # noqa: S603 - our own arguments
            [binary, str(directory / "pgbouncer.ini")],
            user="postgres" if as_root else None,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=die_with_parent(signal.SIGTERM),
        )
        try:
            _wait_for_port(port, process, log)
            yield PgBouncer(port=port, log=log)
        finally:
            process.send_signal(signal.SIGINT)  # fast shutdown
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
