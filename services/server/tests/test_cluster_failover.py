"""A 3-server datacenter of real ``wanfed agent`` processes, from config files, mTLS on.

``kill -9`` of the leader: a write through a surviving server succeeds again
within 2 s. The killed server, restarted with the same config and data dir,
rejoins and catches up.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import pytest

from wanfed_fsm import DCSpecificRequest, IndexedNodes, Node, RegisterRequest
from wanfed_proto import Alpn, ProtoError, RpcClient, client_context, dial_alpn

if TYPE_CHECKING:
    from .conftest import RuntimePki  # type: ignore[import-not-found]

from .conftest import free_tcp_port

T = TypeVar("T")

NODES = ("s1", "s2", "s3")
FAILOVER_BUDGET = 2.0


@dataclass
class Agent:
    node: str
    config_file: Path
    rpc_port: int
    log: Path
    process: subprocess.Popen[bytes] | None = field(default=None)

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    "import sys; from wanfed_server.cli import main; sys.exit(main())",
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
    rpc_ports = {node: free_tcp_port() for node in NODES}
    key = base64.b64encode(os.urandom(32)).decode()
    agents: dict[str, Agent] = {}
    for node in NODES:
        files = runtime_pki.certs[node]
        config = {
            "node_name": node,
            "datacenter": "dc1",
            "server": True,
            "bootstrap_expect": 3,
            "data_dir": str(tmp_path / node),
            "bind_addr": "127.0.0.1",
            "ports": {
                "server": rpc_ports[node],
                "raft": free_tcp_port(),
                "http": free_tcp_port(),
                "serf_wan": free_tcp_port(),
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
        agents[node] = Agent(node, config_file, rpc_ports[node], tmp_path / f"{node}.log")
    for agent in agents.values():
        agent.start()
    try:
        yield agents
    finally:
        for agent in agents.values():
            agent.stop()


class Clients:
    """One mTLS RPC client per agent, redialled after a failure."""

    def __init__(self, pki: RuntimePki) -> None:
        files = pki.certs["client"]
        self._context = client_context(pki.ca, files.cert, files.key, alpn=[Alpn.RPC_MULTI])
        self._clients: dict[int, RpcClient] = {}

    async def call(self, port: int, method: str, body: object, reply: type[T], limit: float) -> T:
        client = self._clients.get(port)
        if client is None or client.is_closed:
            connection = await dial_alpn(
                ("127.0.0.1", port), "server.dc1.consul", Alpn.RPC_MULTI, self._context, limit
            )
            client = self._clients[port] = RpcClient(connection)
        return await client.call(method, body, type=reply, timeout=limit)

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()


async def _until(deadline: float, attempt: Callable[[], Awaitable[T | None]]) -> T:
    """Retry ``attempt()`` every 50 ms until it returns a value (processes have no events
    we could wait on from here)."""
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = await attempt()
        except (ProtoError, OSError) as exc:
            last = exc
        else:
            if result is not None:
                return result
        await asyncio.sleep(0.05)
    raise AssertionError(f"gave up waiting; last error: {last!r}")


async def test_kill_the_leader_writes_resume_within_two_seconds_and_it_rejoins(
    agents: dict[str, Agent], runtime_pki: RuntimePki
) -> None:
    clients = Clients(runtime_pki)
    try:
        port_of = {f"127.0.0.1:{a.rpc_port}": a for a in agents.values()}

        async def leader() -> Agent | None:
            answer = await clients.call(agents["s1"].rpc_port, "Status.Leader", None, str, 2)
            return port_of.get(answer)

        old = await _until(time.monotonic() + 30, leader)
        survivor = next(a for a in agents.values() if a is not old)

        async def write(name: str, port: int) -> bool | None:
            request = RegisterRequest(node=Node(node=name, address="198.18.0.9"))
            return await clients.call(port, "Catalog.Register", request, bool, 1.0)

        assert await _until(time.monotonic() + 15, lambda: write("before", survivor.rpc_port))

        old.kill()
        killed_at = time.monotonic()
        await _until(killed_at + 15, lambda: write("after", survivor.rpc_port))
        failover = time.monotonic() - killed_at
        print(f"writes resumed {failover:.2f}s after kill -9 of the leader")
        assert failover < FAILOVER_BUDGET, f"writes resumed after {failover:.2f}s"

        old.start()

        async def caught_up() -> bool | None:
            nodes = await clients.call(
                old.rpc_port,
                "Catalog.ListNodes",
                DCSpecificRequest(allow_stale=True),
                IndexedNodes,
                2,
            )
            assert isinstance(nodes, IndexedNodes)
            return True if "after" in {n.node for n in nodes.nodes} else None

        assert await _until(time.monotonic() + 20, caught_up)
        peers = await clients.call(old.rpc_port, "Status.Peers", None, list[str], 2)
        assert sorted(peers) == sorted(port_of)
        # and it takes part again: a write through it succeeds
        assert await _until(time.monotonic() + 10, lambda: write("rejoined", old.rpc_port))
    finally:
        await clients.close()
