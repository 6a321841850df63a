"""Three in-process servers with mTLS form a Raft cluster through ``retry_join``.

Then: followers forward writes to the leader, every server agrees on the
leader and peers, and the leader keeps all three in the catalog as ``consul``
with a passing ``serfHealth`` check.
"""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from wanfed_agent.config import load_config
from wanfed_fsm import (
    DCSpecificRequest,
    IndexedCheckServiceNodes,
    IndexedNodes,
    Node,
    RegisterRequest,
    ServiceSpecificRequest,
)
from wanfed_proto import Alpn, RpcClient, client_context, dial_alpn
from wanfed_server.runtime import SERF_CHECK_ID, SERVER_SERVICE, Server, ServerOptions

if TYPE_CHECKING:
    from .conftest import RuntimePki  # type: ignore[import-not-found]

NODES = ("s1", "s2", "s3")


@pytest.fixture
async def cluster(
    runtime_pki: RuntimePki, tmp_path: Path, free_port: Callable[[], int]
) -> AsyncIterator[dict[str, Server]]:
    rpc_ports = {node: free_port() for node in NODES}
    key = base64.b64encode(os.urandom(32)).decode()
    servers: dict[str, Server] = {}
    for node in NODES:
        config = load_config(
            overrides={
                "node_name": node,
                "server": True,
                "bootstrap_expect": 3,
                "data_dir": str(tmp_path / node),
                "bind_addr": "127.0.0.1",
                "ports": {
                    "server": rpc_ports[node],
                    "raft": free_port(),
                    "serf_wan": free_port(),
                },
                "retry_join": [f"127.0.0.1:{p}" for n, p in rpc_ports.items() if n != node],
                "encrypt": key,
                "tls": runtime_pki.mutual_tls(node),
            }
        )
        servers[node] = Server(config, options=ServerOptions(formation_retry=0.1))
    for server in servers.values():
        await server.start()
    try:
        yield servers
    finally:
        for server in servers.values():
            await server.stop()


async def _leader(servers: dict[str, Server]) -> Server:
    """Wait (on leadership events, not sleeps) until one server leads."""
    elected: asyncio.Future[Server] = asyncio.get_running_loop().create_future()
    for server in servers.values():
        await server.wait_ready()

        def on_change(leader: bool, server: Server = server) -> None:
            if leader and not elected.done():
                elected.set_result(server)

        server.consensus.on_leadership_change(on_change)
    return await asyncio.wait_for(elected, 15)


async def test_three_servers_form_one_cluster_and_followers_forward_writes(
    cluster: dict[str, Server], runtime_pki: RuntimePki
) -> None:
    leader = await _leader(cluster)
    follower = next(s for s in cluster.values() if s is not leader)
    client_files = runtime_pki.certs["client"]
    context = client_context(
        runtime_pki.ca, client_files.cert, client_files.key, alpn=[Alpn.RPC_MULTI]
    )
    connection = await dial_alpn(
        follower.rpc_bind_address, "server.dc1.consul", Alpn.RPC_MULTI, context
    )
    async with RpcClient(connection) as client:
        request = RegisterRequest(node=Node(node="web-1", address="198.18.0.5"))
        assert await client.call("Catalog.Register", request, type=bool, timeout=10)
        # a default (non-stale) read is answered by the leader, so it sees the write
        nodes = await client.call(
            "Catalog.ListNodes", DCSpecificRequest(), type=IndexedNodes, timeout=10
        )
        assert "web-1" in {n.node for n in nodes.nodes}
        assert nodes.known_leader
        assert await client.call("Status.Leader", None, type=str) == leader.rpc_address
        peers = await client.call("Status.Peers", None, type=list[str])
        assert sorted(peers) == sorted(s.rpc_address for s in cluster.values())

    # the leader registers every server as "consul" with a passing serfHealth check
    index = 0
    while True:
        reply = await leader.rpc(
            "Health.ServiceNodes",
            ServiceSpecificRequest(
                service_name=SERVER_SERVICE, passing_only=True, min_query_index=index
            ),
            IndexedCheckServiceNodes,
        )
        if len(reply.nodes) == 3:
            break
        index = reply.index
    entry = reply.nodes[0]
    assert entry.service.id == SERVER_SERVICE
    assert entry.service.port == int(cluster[entry.node.node].rpc_address.rsplit(":", 1)[1])
    assert set(entry.service.tagged_addresses) == {"lan", "wan"}
    assert [c.check_id for c in entry.checks] == [SERF_CHECK_ID]


async def test_a_stopped_server_turns_critical_in_serf_health(
    cluster: dict[str, Server],
) -> None:
    leader = await _leader(cluster)
    victim = next(s for s in cluster.values() if s is not leader)
    await victim.stop()
    index = 0
    while True:
        reply = await leader.rpc(
            "Health.ServiceNodes",
            ServiceSpecificRequest(service_name=SERVER_SERVICE, min_query_index=index),
            IndexedCheckServiceNodes,
        )
        statuses = {e.node.node: e.checks[0].status for e in reply.nodes if e.checks}
        if statuses.get(victim.node_name) == "critical":
            break
        index = reply.index
    assert statuses[leader.node_name] == "passing"


async def test_raft_multiplier_slows_failure_detection(
    runtime_pki: RuntimePki,
    tmp_path: Path,
    free_port: Callable[[], int],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO", logger="wanfed_fsm._raft")
    config = load_config(
        overrides={
            "node_name": "s1",
            "server": True,
            "bootstrap_expect": 1,
            "data_dir": str(tmp_path / "s1"),
            "bind_addr": "127.0.0.1",
            "ports": {"server": free_port(), "raft": free_port(), "serf_wan": free_port()},
            "encrypt": base64.b64encode(os.urandom(32)).decode(),
            "performance": {"raft_multiplier": 3},
            "tls": runtime_pki.mutual_tls("s1"),
        }
    )
    server = Server(config, options=ServerOptions(formation_retry=0.1))
    await server.start()
    try:
        await asyncio.wait_for(server.wait_ready(), 30)
        started = [r.getMessage() for r in caplog.records if "raft started" in r.getMessage()]
        assert started, caplog.text
        assert "election_timeout=0.45-0.9s" in started[0], started[0]
    finally:
        await server.stop()
