"""A server started after the cluster formed joins through the leader (``Raft.Join``)."""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from wanfed_agent.config import load_config
from wanfed_fsm import DCSpecificRequest, IndexedNodes, Node, RegisterRequest
from wanfed_proto import RemoteError
from wanfed_server.runtime import (
    CLUSTER_FILE,
    NO_CLUSTER_LEADER,
    ClusterFile,
    Server,
    ServerOptions,
)

if TYPE_CHECKING:
    from .conftest import RuntimePki  # type: ignore[import-not-found]

StartServer = Callable[..., Awaitable[Server]]


@pytest.fixture
async def start_server(
    runtime_pki: RuntimePki, tmp_path: Path, free_port: Callable[[], int]
) -> AsyncIterator[StartServer]:
    key = base64.b64encode(os.urandom(32)).decode()
    started: list[Server] = []

    async def start(node: str, options: ServerOptions | None = None, **overrides: Any) -> Server:
        config = load_config(
            overrides={
                "node_name": node,
                "server": True,
                "data_dir": str(tmp_path / node),
                "bind_addr": "127.0.0.1",
                "ports": {"server": 0, "serf_wan": free_port()},
                "encrypt": key,
                "tls": runtime_pki.mutual_tls(node),
                **overrides,
            }
        )
        server = Server(config, options=options or ServerOptions(formation_retry=0.1))
        await server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        await server.stop()


async def _leading(server: Server) -> None:
    await server.wait_ready()
    elected: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on_change(leader: bool) -> None:
        if leader and not elected.done():
            elected.set_result(None)

    server.consensus.on_leadership_change(on_change)
    await asyncio.wait_for(elected, 15)


async def test_a_late_server_joins_through_the_leader_and_forwards_writes(
    start_server: StartServer, tmp_path: Path
) -> None:
    first = await start_server("s1", bootstrap_expect=1)
    await _leading(first)
    second = await start_server("s2", retry_join=[first.rpc_address], bootstrap_expect=3)
    await asyncio.wait_for(second.wait_ready(), 15)

    import msgspec

    saved = msgspec.json.decode((tmp_path / "s2" / CLUSTER_FILE).read_bytes(), type=ClusterFile)
    assert sorted(saved.raft_members) == sorted([first.raft_address, second.raft_address])
    assert sorted(await first.rpc("Status.Peers", DCSpecificRequest(), list[str])) == sorted(
        [first.rpc_address, second.rpc_address]
    )

    request = RegisterRequest(node=Node(node="late-write", address="198.18.0.7"))
    assert await second.rpc("Catalog.Register", request, bool)
    nodes = await first.rpc("Catalog.ListNodes", DCSpecificRequest(), IndexedNodes)
    assert "late-write" in {n.node for n in nodes.nodes}


async def test_without_a_leader_requests_wait_the_hold_timeout_then_fail(
    start_server: StartServer,
) -> None:
    lonely = await start_server(
        "s1", ServerOptions(hold_timeout=0.3, formation_retry=0.1), bootstrap_expect=3
    )
    request = RegisterRequest(node=Node(node="n1"))
    started = asyncio.get_running_loop().time()
    with pytest.raises(RemoteError, match=f"^{NO_CLUSTER_LEADER}$"):
        await lonely.rpc("Catalog.Register", request, bool)
    assert asyncio.get_running_loop().time() - started >= 0.3
    stale = await lonely.rpc("Catalog.ListNodes", DCSpecificRequest(allow_stale=True), IndexedNodes)
    assert not stale.known_leader, "a stale read is served, and says no leader is known"
