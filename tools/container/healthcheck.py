"""The image's HEALTHCHECK: healthy while the agent's HTTP API reports a leader.

A server that answers HTTP but has no Raft leader cannot serve writes or
consistent reads, so "no leader" counts as unhealthy, not just "no answer".
The image runs this with its own Python (no curl in the image); it uses only
the standard library and reads the address from ``WANFED_HTTP_ADDR``, the
same variable the ``wanfed`` CLI and ``wanfed gateway`` read (``host:port``
or ``http://host:port``, comma-separated fallbacks, default
``127.0.0.1:8500``): a gateway container is healthy while a server it
registers with has a leader. Exit status 0 is healthy, 1 unhealthy,
as container engines expect; the one line printed says why.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request

DEFAULT_ADDR = "127.0.0.1:8500"


def leader_urls(addrs: str) -> list[str]:
    """Status URLs for a comma-separated ``[http[s]://]host:port`` list (as the CLI reads it)."""
    urls: list[str] = []
    for raw in addrs.split(","):
        addr = raw.strip()
        if "://" not in addr:
            addr = "http://" + addr
        parsed = urllib.parse.urlsplit(addr)
        try:
            port = parsed.port
        except ValueError:
            port = None
        if parsed.scheme not in ("http", "https") or not parsed.hostname or port is None:
            raise ValueError(f"WANFED_HTTP_ADDR must be [http[s]://]host:port, got {raw!r}")
        urls.append(f"{parsed.scheme}://{parsed.netloc}/v1/status/leader")
    return urls


def check_one(url: str, timeout: float) -> tuple[bool, str]:
    """Ask one agent for its leader; return (healthy, reason)."""
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
    return True, f"{url}: leader {leader}"


def check(addrs: str, timeout: float = 4.0) -> tuple[bool, str]:
    """Healthy when any listed agent reports a leader (a gateway may list fallbacks)."""
    try:
        urls = leader_urls(addrs)
    except ValueError as exc:
        return False, str(exc)
    reasons: list[str] = []
    for url in urls:
        healthy, reason = check_one(url, timeout)
        if healthy:
            return True, reason
        reasons.append(reason)
    return False, "; ".join(reasons)


def main() -> int:
    healthy, reason = check(os.environ.get("WANFED_HTTP_ADDR") or DEFAULT_ADDR)
    print(("healthy: " if healthy else "unhealthy: ") + reason)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
