"""Three servers of a cluster whose domain is not ``consul`` form one datacenter over
mutual TLS: every servers-only door reads certificates of the configured domain."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from wanfed_agent.config import load_config
from wanfed_agent.keygen import generate_gossip_key
from wanfed_fsm import DCSpecificRequest, IndexedNodes, Node, RegisterRequest, Service
from wanfed_proto import RemoteError
from wanfed_server.runtime import Server, ServerOptions

NODES = ("s1", "s2", "s3")


@pytest.fixture
async def cluster(tmp_path: Path, free_port: Callable[[], int]) -> AsyncIterator[dict[str, Server]]:
    from wanfed_agent.tls import create_ca, create_server_cert

    ca = create_ca()
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem)
    rpc_ports = {node: free_port() for node in NODES}
    key = generate_gossip_key()
    servers: dict[str, Server] = {}
    for node in NODES:
        pair = create_server_cert(ca, "dc1", "example", node)
        (tmp_path / f"{node}.pem").write_bytes(pair.cert_pem)
        (tmp_path / f"{node}-key.pem").write_bytes(pair.key_pem)
        config = load_config(
            overrides={
                "node_name": node,
                "domain": "example",
                "server": True,
                "bootstrap_expect": 3,
                "data_dir": str(tmp_path / node),
                "bind_addr": "127.0.0.1",
                "ports": {"server": rpc_ports[node], "serf_wan": free_port()},
                "retry_join": [f"127.0.0.1:{p}" for n, p in rpc_ports.items() if n != node],
                "encrypt": key,
                "tls": {
                    "defaults": {
                        "ca_file": str(tmp_path / "ca.pem"),
                        "cert_file": str(tmp_path / f"{node}.pem"),
                        "key_file": str(tmp_path / f"{node}-key.pem"),
                        "verify_incoming": True,
                        "verify_outgoing": True,
                    },
                    "internal_rpc": {"verify_server_hostname": True},
                },
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


async def _a_follower(cluster: dict[str, Server]) -> Server:
    """Once a leader is elected (a write waits for it), a server that does not lead."""
    for server in cluster.values():
        await server.wait_ready()
    probe = RegisterRequest(node=Node(node="probe", address="198.18.0.6"))
    await cluster["s1"].rpc("Catalog.Register", probe, bool)
    return next(s for s in cluster.values() if not s.is_leader())


async def test_a_datacenter_with_domain_example_forms_over_mutual_tls(
    cluster: dict[str, Server],
) -> None:
    async with asyncio.timeout(60):  # a deadline for a hang, not a measured threshold
        for server in cluster.values():
            await server.wait_ready()
        follower = await _a_follower(cluster)
        # a follower's write reaches the leader (forwarded over TLS with example names)
        request = RegisterRequest(node=Node(node="web-1", address="198.18.0.5"))
        assert await follower.rpc("Catalog.Register", request, bool)
        nodes = await follower.rpc("Catalog.ListNodes", DCSpecificRequest(), IndexedNodes)
    assert "web-1" in {n.node for n in nodes.nodes}
    leaders = [s for s in cluster.values() if s.is_leader()]
    assert len(leaders) == 1
    # three raft members, each server knows the two others (hellos got through)
    for server in cluster.values():
        assert len(server.peer_rpc_addresses()) == 3
        assert sorted(s.node for s in server.cluster_info().known) == sorted(
            set(NODES) - {server.node_name}
        )


async def test_followers_check_reserved_entries_and_the_leader_trusts_their_forwards(
    cluster: dict[str, Server],
) -> None:
    async with asyncio.timeout(60):  # a deadline for a hang, not a measured threshold
        follower = await _a_follower(cluster)
        # the follower's local agent writes its own node: forwarded, the leader trusts
        # the follower's server certificate (it checked the write already)
        own = RegisterRequest(
            node=Node(node=follower.node_name, address="127.0.0.1"),
            service=Service(id="web", service="web", port=80),
        )
        assert await follower.rpc("Catalog.Register", own, bool)
        # the HTTP API's request is refused by the follower before it is forwarded
        fake = RegisterRequest(
            node=Node(node="evil", address="198.18.0.77"),
            service=Service(service="consul", port=8300),
        )
        with pytest.raises(RemoteError, match=r"^Permission denied: cannot register service"):
            await follower.http_dispatcher.rpc("Catalog.Register", fake, bool)
        other = next(n for n in NODES if n != follower.node_name)
        claim = RegisterRequest(node=Node(node=other, address="198.18.0.77"))
        with pytest.raises(
            RemoteError, match=rf"^Permission denied: cannot register node '{other}'"
        ):
            await follower.http_dispatcher.rpc("Catalog.Register", claim, bool)
        nodes = await follower.rpc("Catalog.ListNodes", DCSpecificRequest(), IndexedNodes)
    assert "evil" not in {n.node for n in nodes.nodes}
