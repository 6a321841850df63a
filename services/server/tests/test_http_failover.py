"""The HTTP API of a 3-server datacenter (real processes, config files, mTLS) across a
leader crash: writes through a surviving server's HTTP API succeed again (how soon is
measured by ``nox -s bench -- liveness``),
and an agent service registered on a follower reaches the catalog.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import aiohttp
import pytest

if TYPE_CHECKING:
    from conftest import AgentProcess

T = TypeVar("T")
NODES = ("s1", "s2", "s3")


async def _until(deadline: float, attempt: Callable[[], Awaitable[T | None]]) -> T:
    """Retry every 50 ms until ``attempt`` returns a value (other processes give no events)."""
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = await attempt()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            last = exc
        else:
            if result is not None:
                return result
        await asyncio.sleep(0.05)
    raise AssertionError(f"gave up waiting; last error: {last!r}")


@pytest.mark.slow
async def test_http_writes_resume_after_a_leader_kill(
    agents: dict[str, AgentProcess],
) -> None:
    by_rpc = {f"127.0.0.1:{a.rpc_port}": a for a in agents.values()}
    timeout = aiohttp.ClientTimeout(total=1.0)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def get(agent: AgentProcess, path: str) -> Any:
            async with session.get(agent.base + path) as response:
                return json.loads(await response.text()) if response.status == 200 else None

        async def leader() -> AgentProcess | None:
            answer = await get(agents["s1"], "/v1/status/leader")
            return by_rpc.get(answer) if isinstance(answer, str) else None

        async def write(agent: AgentProcess, name: str) -> bool | None:
            body = {"Node": name, "Address": "198.18.0.9"}
            async with session.put(agent.base + "/v1/catalog/register", json=body) as response:
                return True if response.status == 200 and await response.json() is True else None

        old = await _until(time.monotonic() + 30, leader)
        follower = next(a for a in agents.values() if a is not old)
        other = next(a for a in agents.values() if a not in (old, follower))
        assert await _until(time.monotonic() + 15, lambda: write(follower, "before"))

        old.kill()
        # Liveness, not speed (``nox -s bench -- liveness`` measures the time).
        assert await _until(time.monotonic() + 30, lambda: write(follower, "after"))

        async def new_leader() -> AgentProcess | None:
            answer = await get(follower, "/v1/status/leader")
            return by_rpc.get(answer) if isinstance(answer, str) else None

        assert await _until(time.monotonic() + 30, new_leader) is not old

        # an agent service registered on one survivor shows up, healthy, through the other
        definition = {"Name": "web", "Check": {"TTL": "1h", "Status": "passing"}}
        async with session.put(follower.base + "/v1/agent/service/register", json=definition) as r:
            assert r.status == 200, await r.text()

        async def visible() -> bool | None:
            entries = await get(other, "/v1/health/service/web?passing")
            return True if entries and entries[0]["Node"]["Node"] == follower.node else None

        assert await _until(time.monotonic() + 15, visible)
