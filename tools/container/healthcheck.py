"""The image's HEALTHCHECK: healthy while the agent's HTTP API reports a leader.

A server that answers HTTP but has no Raft leader cannot serve writes or
consistent reads, so "no leader" counts as unhealthy, not just "no answer".
The image runs this with its own Python (no curl in the image); it uses only
the standard library and reads the address from ``WANFED_HTTP_ADDR``
(``host:port``, default ``127.0.0.1:8500``), which operators change when the
agent's HTTP API listens elsewhere. Exit status 0 is healthy, 1 unhealthy,
as container engines expect; the one line printed says why.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request

DEFAULT_ADDR = "127.0.0.1:8500"


def leader_url(addr: str) -> str:
    """Build the status URL, refusing an address that is not ``host:port``."""
    host, sep, port = addr.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"WANFED_HTTP_ADDR must be host:port, got {addr!r}")
    return f"http://{host}:{port}/v1/status/leader"


def check(addr: str, timeout: float = 4.0) -> tuple[bool, str]:
    """Ask the agent for its leader; return (healthy, reason)."""
    try:
        url = leader_url(addr)
    except ValueError as exc:
        return False, str(exc)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body = response.read()
    except (urllib.error.URLError, OSError) as exc:
        return False, f"no answer from {url}: {exc}"
    try:
        leader = json.loads(body)
    except ValueError:
        return False, f"{url} answered {body[:80]!r}, not a JSON string"
    if not isinstance(leader, str) or not leader:
        return False, f"{url}: no leader yet ({leader!r})"
    return True, f"leader {leader}"


def main() -> int:
    healthy, reason = check(os.environ.get("WANFED_HTTP_ADDR", DEFAULT_ADDR))
    print(("healthy: " if healthy else "unhealthy: ") + reason)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
