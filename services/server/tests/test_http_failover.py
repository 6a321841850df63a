"""The HTTP API of a 3-server datacenter (real processes, config files, mTLS) across a
leader crash: writes through a surviving server's HTTP API succeed again within 2 s,
and an agent service registered on a follower reaches the catalog.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import aiohttp
import pytest

if TYPE_CHECKING:
    from conftest import RuntimePki

T = TypeVar("T")
NODES = ("s1", "s2", "s3")
FAILOVER_BUDGET = 2.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Agent:
    node: str
    config_file: Path
    rpc_port: int
    http_port: int
    log: Path
    process: subprocess.Popen[bytes] | None = field(default=None)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "wanfed_server.cli",
                    "agent",
                    "-config-file",
                    str(self.config_file),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def agents(runtime_pki: RuntimePki, tmp_path: Path) -> Iterator[dict[str, Agent]]:
    rpc_ports = {node: _free_port() for node in NODES}
    key = base64.b64encode(os.urandom(32)).decode()
    agents: dict[str, Agent] = {}
    for node in NODES:
        files = runtime_pki.certs[node]
        http_port = _free_port()
        config = {
            "node_name": node,
            "datacenter": "dc1",
            "server": True,
            "bootstrap_expect": 3,
            "data_dir": str(tmp_path / node),
            "bind_addr": "127.0.0.1",
            "ports": {
                "server": rpc_ports[node],
                "raft": _free_port(),
                "http": http_port,
                "serf_wan": _free_port(),
            },
            "retry_join": [f"127.0.0.1:{p}" for n, p in rpc_ports.items() if n != node],
            "encrypt": key,
            "tls": {
                "defaults": {
                    "ca_file": str(runtime_pki.ca),
                    "cert_file": str(files.cert),
                    "key_file": str(files.key),
                    "verify_incoming": True,
                    "verify_outgoing": True,
                },
                "internal_rpc": {"verify_server_hostname": True},
            },
        }
        config_file = tmp_path / f"{node}.json"
        config_file.write_text(json.dumps(config))
        agents[node] = Agent(
            node, config_file, rpc_ports[node], http_port, tmp_path / f"{node}.log"
        )
    for agent in agents.values():
        agent.start()
    try:
        yield agents
    finally:
        for agent in agents.values():
            agent.stop()


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
async def test_http_writes_resume_within_two_seconds_of_a_leader_kill(
    agents: dict[str, Agent],
) -> None:
    by_rpc = {f"127.0.0.1:{a.rpc_port}": a for a in agents.values()}
    timeout = aiohttp.ClientTimeout(total=1.0)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def get(agent: Agent, path: str) -> Any:
            async with session.get(agent.base + path) as response:
                return json.loads(await response.text()) if response.status == 200 else None

        async def leader() -> Agent | None:
            answer = await get(agents["s1"], "/v1/status/leader")
            return by_rpc.get(answer) if isinstance(answer, str) else None

        async def write(agent: Agent, name: str) -> bool | None:
            body = {"Node": name, "Address": "198.18.0.9"}
            async with session.put(agent.base + "/v1/catalog/register", json=body) as response:
                return True if response.status == 200 and await response.json() is True else None

        old = await _until(time.monotonic() + 30, leader)
        follower = next(a for a in agents.values() if a is not old)
        other = next(a for a in agents.values() if a not in (old, follower))
        assert await _until(time.monotonic() + 15, lambda: write(follower, "before"))

        old.kill()
        killed_at = time.monotonic()
        await _until(killed_at + 15, lambda: write(follower, "after"))
        failover = time.monotonic() - killed_at
        print(f"HTTP writes resumed {failover:.2f}s after kill -9 of the leader")
        assert failover < FAILOVER_BUDGET, f"HTTP writes resumed after {failover:.2f}s"

        # an agent service registered on one survivor shows up, healthy, through the other
        definition = {"Name": "web", "Check": {"TTL": "1h", "Status": "passing"}}
        async with session.put(follower.base + "/v1/agent/service/register", json=definition) as r:
            assert r.status == 200, await r.text()

        async def visible() -> bool | None:
            entries = await get(other, "/v1/health/service/web?passing")
            return True if entries and entries[0]["Node"]["Node"] == follower.node else None

        assert await _until(time.monotonic() + 15, visible)
