"""A big upload: the API process's memory and the upload's throughput.

Starts `app serve` (one process) on the bench database with an upload limit above the
file, uploads a file of random bytes (200 MB by default) three times with curl (a C
client, so the client is not what is measured), and prints, median of three:

- `cp` of the same file on the same disk (the issue's yardstick);
- the transport ceiling: the same upload into a raw ASGI app that only counts the bytes
  (same uvicorn flags), i.e. what any Python handler starts from;
- the upload through the API (multipart parsing, SHA-256, writing to storage);
- the API process's peak RSS growth while uploading.

    uv run python -m bench.upload [--megabytes 200]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from bench.common import (
    bench_env,
    free_port,
    fresh_database,
    load_average,
    rss_mib,
    settings_from,
    spawn,
    stop,
    wait_for_http,
)

ROUNDS = 5


def _timed(action: Callable[[], object]) -> float:
    os.sync()  # every run starts with no dirty pages waiting to be written back
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def _interleaved(actions: dict[str, Callable[[], object]]) -> dict[str, float]:
    """The median time of each action over ROUNDS rounds that run them in turn, so the
    machine's state (page cache, writeback) treats them alike."""
    times: dict[str, list[float]] = {name: [] for name in actions}
    for _ in range(ROUNDS):
        for name, action in actions.items():
            times[name].append(_timed(action))
    return {name: statistics.median(runs) for name, runs in times.items()}


class PeakRss:
    """Samples a process's RSS every 10 ms in a thread."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = rss_mib(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, rss_mib(self.pid))

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _curl(url: str, path: Path, token: str | None = None) -> None:
    """POST `path` as the multipart field `files`; fail unless the answer is a 2xx."""
    command = ["curl", "-sS", "--fail-with-body", "-o", "/dev/null", "-H", "Expect:"]
    if token:
        command += ["-H", f"Authorization: Bearer {token}"]
    command += ["-F", f"files=@{path};type=application/octet-stream", url]
    subprocess.run(command, check=True, timeout=300)  # noqa: S603 - our own arguments


def _cp(source: Path, directory: Path) -> None:
    """Copy to a new name each time, as every upload is a new file (the page cache and
    the disk then see the same kind of writes)."""
    target = directory / f"copy-{len(list(directory.iterdir()))}.bin"
    subprocess.run(["cp", source, target], check=True)  # noqa: S603, S607 - plain cp


def _account(base: str) -> str:
    credentials = {"email": "uploader@example.com", "password": "bench-password-1"}
    httpx.post(f"{base}/api/v1/auth/register", json=credentials, timeout=30).raise_for_status()
    form = {"username": credentials["email"], "password": credentials["password"]}
    response = httpx.post(f"{base}/api/v1/auth/token", data=form, timeout=30)
    response.raise_for_status()
    token: str = response.json()["access_token"]
    return token


def _serve_sink(env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = spawn(
        ["-m", "uvicorn", "bench.sink:app", "--port", str(port), "--no-access-log",
         "--loop", "uvloop", "--http", "httptools", "--log-level", "warning"],
        env,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait_for_http(url)
    return process, url


def _write_random(path: Path, megabytes: int) -> None:
    with path.open("wb") as handle:
        for _ in range(megabytes):
            handle.write(os.urandom(1_000_000))


def _warm_page_cache(directory: Path, source: Path, copies: int) -> None:
    """Write and delete `copies` copies of `source`. On a virtual machine the first use of
    a page of memory is slow (the host backs it then), so without this whichever run
    comes first pays for it, and cp's and the API's figures swing by 5x between runs."""
    data = source.read_bytes()
    for number in range(copies):
        (directory / f"warm-{number}.bin").write_bytes(data)
    for number in range(copies):
        (directory / f"warm-{number}.bin").unlink()


def measure(megabytes: int) -> None:
    if shutil.which("curl") is None:
        raise SystemExit("curl is needed (apt install curl)")
    size = megabytes * 1_000_000
    env = bench_env(
        FILES_MAX_FILE_BYTES=str(size + 1),
        FILES_MAX_REQUEST_BYTES=str(size + 1_000_000),
        FILES_ALLOWED_TYPES="application/octet-stream",
    )
    settings = settings_from(env)
    asyncio.run(fresh_database(settings))
    settings.storage_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=settings.storage_dir.parent))
    source, copies = work / "upload.bin", work / "copies"
    copies.mkdir()
    _write_random(source, megabytes)
    _warm_page_cache(work, source, copies=3 * ROUNDS)
    print(f"load average {load_average():.2f}; file {megabytes} MB in {work}")  # noqa: T201

    sink, sink_url = _serve_sink(env)
    port = free_port()
    server = spawn(["serve", "--port", str(port)], env)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{base}/health/live")
        token = _account(base)
        url = f"{base}/api/v1/files"
        _write_random(work / "small.bin", 1)
        _curl(url, work / "small.bin", token)  # warm up
        before = rss_mib(server.pid)
        with PeakRss(server.pid) as rss:
            seconds = _interleaved(
                {
                    "cp": lambda: _cp(source, copies),
                    "sink": lambda: _curl(sink_url, source),
                    "api": lambda: _curl(url, source, token),
                }
            )
        growth = rss.peak - before
    finally:
        stop(server)
        stop(sink)
        shutil.rmtree(work)
        shutil.rmtree(settings.storage_dir / "files", ignore_errors=True)

    def rate(name: str) -> str:
        return f"{megabytes / seconds[name]:7.0f} MB/s ({seconds[name]:.3f} s)"

    print(f"cp                          {rate('cp')}")  # noqa: T201
    print(f"upload into a counting sink {rate('sink')}")  # noqa: T201
    print(f"upload through the API      {rate('api')}")  # noqa: T201
    print(  # noqa: T201
        f"API throughput = 1/{seconds['api'] / seconds['cp']:.1f} of cp, "
        f"{seconds['sink'] / seconds['api']:.0%} of the sink; API RSS {before:.1f} MiB "
        f"before, peak growth {growth:.1f} MiB over {ROUNDS} uploads"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=200)
    measure(parser.parse_args().megabytes)


if __name__ == "__main__":
    main()
