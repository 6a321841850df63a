"""Asking a running federation from inside its namespaces, as an operator would.

Requests are made by short-lived processes inside a host's namespace (the
test process itself has no route into the topology), each with a timeout, so
a wedged server makes a probe fail, never hang.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

from ._federation import HTTP_PORT, wanfed_executable
from ._plan import Host
from ._processes import Supervisor

__all__ = [
    "TCP_REFUSED",
    "TCP_SILENT",
    "http_json",
    "run_in",
    "start_tcp_listeners",
    "tcp_dial",
    "wait_until",
    "wanfed_cli",
]

_HTTP = """
import json, sys, urllib.request
body = sys.argv[3].encode() if len(sys.argv) > 3 else None
req = urllib.request.Request(sys.argv[2], data=body, method=sys.argv[1])
try:
    with urllib.request.urlopen(req, timeout=5) as r:
        print(json.dumps({"status": r.status, "body": json.loads(r.read() or b"null")}))
except urllib.error.HTTPError as exc:
    print(json.dumps({"status": exc.code, "error": exc.read().decode(errors="replace")}))
except Exception as exc:
    print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
"""


_TCP_LISTENER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen()
print("listening", flush=True)
while True:
    c, _ = s.accept(); c.sendall(b"ok"); c.close()
"""
_TCP_DIAL = """
import socket, sys
try:
    c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)
    print(c.recv(2).decode())
except OSError as exc:
    print(type(exc).__name__, exc.errno)
"""
TCP_REFUSED = "ConnectionRefusedError 111"
"""What :func:`tcp_dial` prints when the firewall rejects the connection."""
TCP_SILENT = "TimeoutError None"
"""What :func:`tcp_dial` prints when nothing answers at all (a black hole, a vanished host)."""


def run_in(host: Host, *argv: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """``argv`` inside ``host``'s namespace; output captured, never raises on exit codes."""
    return subprocess.run(
        ["ip", "netns", "exec", host.netns, *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def http_json(host: Host, path: str, *, method: str = "GET", body: Any = None) -> dict[str, Any]:
    """One HTTP request to ``host``'s own API: ``{"status", "body"}`` or ``{"error"}``."""
    url = f"http://{host.lan_ip}:{HTTP_PORT}{path}"
    argv = [sys.executable, "-c", _HTTP, method, url]
    if body is not None:
        argv.append(json.dumps(body))
    out = run_in(host, *argv).stdout.strip()
    try:
        answer: dict[str, Any] = json.loads(out)
    except json.JSONDecodeError:
        return {"error": f"probe printed {out!r}"}
    return answer


def wanfed_cli(host: Host, *args: str) -> str:
    """``wanfed <args> -http-addr <host's API>`` inside ``host``; stdout, or stderr on failure."""
    result = run_in(host, wanfed_executable(), *args, "-http-addr", f"{host.lan_ip}:{HTTP_PORT}")
    return result.stdout if result.returncode == 0 else f"exit {result.returncode}: {result.stderr}"


def wait_until(
    what: str, timeout: float, probe: Callable[[], object], interval: float = 0.5
) -> float:
    """Poll ``probe`` until it returns ``True``; the seconds it took.

    The processes being watched are in other namespaces and give no event to
    wait on, so this polls with a deadline. Anything but ``True`` is kept as
    the last observation and shown if the deadline passes.
    """
    started = time.monotonic()
    last: object = None
    while True:
        last = probe()
        took = time.monotonic() - started
        if last is True:
            print(f"{what}: {took:.1f} s")
            return took
        if took > timeout:
            raise AssertionError(f"{what}: not within {timeout:.0f} s (last: {last})")
        time.sleep(interval)


def start_tcp_listeners(supervisor: Supervisor, hosts: Iterable[Host], port: int) -> None:
    """A listener on ``port`` in every host's namespace that answers ``ok`` and hangs up:
    the firewall tests dial these to see which paths are open."""
    started = [
        supervisor.start(f"listen-{h.netns}", h, [sys.executable, "-c", _TCP_LISTENER, str(port)])
        for h in hosts
    ]
    for process in started:
        process.wait_for_output("listening")


def tcp_dial(source: Host, address: str, port: int) -> str:
    """From ``source``'s namespace: ``ok`` when a listener answered, else the error
    (:data:`TCP_REFUSED` for a firewall reject, :data:`TCP_SILENT` when nothing
    answered within 3 s)."""
    result = run_in(source, sys.executable, "-c", _TCP_DIAL, address, str(port), timeout=10)
    if result.returncode != 0:
        raise RuntimeError(f"tcp probe in {source.netns} failed: {result.stderr.strip()}")
    return result.stdout.strip()
