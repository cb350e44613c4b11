"""Run wrk (https://github.com/wg/wrk) and read its report.

wrk drives HTTP/1.1 with keep-alive from C threads, so on a two-core machine it costs
the server much less than a Python load generator would. Requests are described by a
small Lua script: headers (a bearer token) and, for writes, a method and body.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


@dataclass(frozen=True, slots=True)
class WrkResult:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    socket_errors: int
    statuses: dict[int, int] = field(default_factory=dict)  # non-2xx/3xx, by status


def require_wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise SystemExit("wrk is needed: apt-get install wrk (Debian/Ubuntu) or brew install wrk")
    return path


def lua_script(
    *,
    headers: dict[str, str] | None = None,
    method: str = "GET",
    body: object | None = None,
    form: dict[str, str] | None = None,
    forms: list[dict[str, str]] | None = None,
    paths: list[str] | None = None,
) -> Path:
    """A wrk script: fixed headers, an optional JSON (`body`) or form body, and
    optionally a list of paths, or of form bodies (`forms`), that requests go through
    in turn (each wrk thread starts at its own place in the list)."""
    lines = [f"wrk.method = {json.dumps(method)}"]
    for name, value in (headers or {}).items():
        lines.append(f"wrk.headers[{json.dumps(name)}] = {json.dumps(value)}")
    if body is not None:
        lines.append('wrk.headers["Content-Type"] = "application/json"')
        lines.append(f"wrk.body = {json.dumps(json.dumps(body))}")
    if form is not None:
        lines.append('wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"')
        lines.append(f"wrk.body = {json.dumps(urlencode(form))}")
    if paths:
        listed = ", ".join(json.dumps(path) for path in paths)
        lines += _rotation(listed, "wrk.format(nil, values[(n % #values) + 1])")
    if forms:
        lines.append('wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"')
        listed = ", ".join(json.dumps(urlencode(form)) for form in forms)
        lines += _rotation(listed, "wrk.format(nil, nil, nil, values[(n % #values) + 1])")
    lines += _STATUS_COUNTS
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write("\n".join(lines) + "\n")
        return Path(handle.name)


# Every script counts its responses by status outside 2xx/3xx and prints the counts
# at the end ("status 503: 12"), so a report says what its errors were.
_STATUS_COUNTS = [
    "local threads = {}",
    "offset = 0",
    "counts = {}",
    "setup = function(thread)",
    "  thread:set('offset', math.random(1, 100000))",
    "  table.insert(threads, thread)",
    "end",
    "response = function(status, headers, body)",
    "  if status >= 400 then counts[status] = (counts[status] or 0) + 1 end",
    "end",
    "done = function(summary, latency, requests)",
    "  local total = {}",
    "  for _, thread in ipairs(threads) do",
    "    for status, count in pairs(thread:get('counts')) do",
    "      total[status] = (total[status] or 0) + count",
    "    end",
    "  end",
    "  for status, count in pairs(total) do",
    "    io.write(string.format('status %d: %d\\n', status, count))",
    "  end",
    "end",
]


def _rotation(listed: str, request: str) -> list[str]:
    return [
        f"local values = {{{listed}}}",
        "local n = 0",
        "init = function() n = offset end",
        "request = function()",
        "  n = n + 1",
        f"  return {request}",
        "end",
    ]


def _milliseconds(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if match is None:
        msg = f"unexpected wrk latency {text!r}"
        raise ValueError(msg)
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse(report: str) -> WrkResult:
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", report).group(1))  # type: ignore[union-attr]
    p50 = re.search(r"^\s+50%\s+(\S+)", report, re.MULTILINE)
    p99 = re.search(r"^\s+99%\s+(\S+)", report, re.MULTILINE)
    total = re.search(r"(\d+) requests in", report)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", report)
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", report
    )
    return WrkResult(
        requests_per_second=rps,
        p50_ms=_milliseconds(p50.group(1)) if p50 else float("nan"),
        p99_ms=_milliseconds(p99.group(1)) if p99 else float("nan"),
        requests=int(total.group(1)) if total else 0,
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(n) for n in errors.groups()) if errors else 0,
        statuses={
            int(status): int(count)
            for status, count in re.findall(r"^status (\d+): (\d+)$", report, re.MULTILINE)
        },
    )


def run(url: str, script: Path, *, connections: int, seconds: int, threads: int = 2) -> WrkResult:
    command = [
        require_wrk(),
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--latency",
        "-s",
        str(script),
        url,
    ]
    report = subprocess.run(  # noqa: S603 - wrk with our own arguments
        command, capture_output=True, text=True, check=True, timeout=seconds + 60
    ).stdout
    return parse(report)
