"""Every door of a server that only servers may use, tried as an attacker on the network.

One non-dev server (single-node Raft, bootstrapped) configured for TLS the way
an operator might leave it: ``verify_incoming`` off. The attacker holds a
client certificate of the same CA, or a server certificate of another
datacenter, or of another node; each attempt is refused with a message naming
what was expected, and afterwards the server still leads, still has only its
own Raft member and server directory entry, and still accepts writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

import wanfed_fsm._raft_link as raft_link
from wanfed_agent.config import load_config
from wanfed_agent.keygen import generate_gossip_key
from wanfed_fsm import (
    DCSpecificRequest,
    FederationState,
    FederationStateRequest,
    IndexedFederationStates,
    IndexedNodes,
    Node,
    RegisterRequest,
)
from wanfed_proto import (
    Alpn,
    Connection,
    ProtoError,
    RemoteError,
    RpcClient,
    RpcType,
    client_context,
    dial_alpn,
    dial_plain,
    encode_frame,
)
from wanfed_server.runtime import ClusterInfo, Server, ServerInfo

if TYPE_CHECKING:
    from .conftest import RuntimePki  # type: ignore[import-not-found]

SNI = "server.dc1.consul"


@pytest.fixture
async def server(start_tls_server: Callable[..., Awaitable[Server]]) -> Server:
    return await start_tls_server(verify_incoming=False)  # TLS must still be demanded


def _context(pki: RuntimePki, leaf: str, alpn: str = Alpn.RPC_MULTI) -> ssl.SSLContext:
    files = pki.certs[leaf]
    return client_context(pki.ca, files.cert, files.key, alpn=[alpn])


async def _client(server: Server, pki: RuntimePki, leaf: str) -> RpcClient:
    context = _context(pki, leaf)
    return RpcClient(await dial_alpn(server.rpc_bind_address, SNI, Alpn.RPC_MULTI, context))


async def _still_healthy(server: Server, pki: RuntimePki, node: str = "after-attack") -> None:
    """A client can write and read (the write waits for the election), and then the
    server leads alone and knows no other server."""
    async with await _client(server, pki, "client") as client:
        request = RegisterRequest(node=Node(node=node, address="198.18.0.9"))
        assert await client.call("Catalog.Register", request, type=bool, timeout=10)
        nodes = await client.call("Catalog.ListNodes", DCSpecificRequest(), type=IndexedNodes)
    assert node in {n.node for n in nodes.nodes}
    assert server.is_leader()
    assert server.peer_rpc_addresses() == [server.rpc_address]
    assert [s.node for s in server.cluster_info().known] == []


GHOST = ServerInfo(
    node="ghost",
    datacenter="dc1",
    rpc_address="198.18.0.66:8300",
    raft_address="198.18.0.66:8300",
)


# --- transport ------------------------------------------------------------------------


async def test_plain_rpc_is_refused_by_a_tls_server_even_with_verify_incoming_off(
    server: Server, runtime_pki: RuntimePki
) -> None:
    assert not server.config.tls.defaults.verify_incoming
    for rpc_type in (RpcType.MULTIPLEX_V2, RpcType.CONSUL):

        async def ping(rpc_type: RpcType = rpc_type) -> None:
            connection = await dial_plain(server.rpc_bind_address, rpc_type)
            async with RpcClient(connection) as client:
                await client.call("Status.Ping", None, type=bool, timeout=5)

        # The connection itself is refused: not even the one call anyone may make
        # is answered (a method's own refusal would be a RemoteError).
        with pytest.raises(ProtoError) as refused:
            await ping()
        assert not isinstance(refused.value, RemoteError), refused.value
    await _still_healthy(server, runtime_pki)


async def test_a_tls_connection_without_a_client_certificate_is_refused(
    server: Server, runtime_pki: RuntimePki
) -> None:
    context = client_context(runtime_pki.ca, None, None, alpn=[Alpn.RPC_MULTI])

    async def ping() -> None:
        connection = await dial_alpn(server.rpc_bind_address, SNI, Alpn.RPC_MULTI, context)
        async with RpcClient(connection) as client:
            await client.call("Status.Ping", None, type=bool, timeout=5)

    with pytest.raises(ProtoError):
        await ping()
    await _still_healthy(server, runtime_pki)


# --- servers-only methods ---------------------------------------------------------------


@pytest.mark.parametrize("method", ["Raft.Join", "Status.Hello"])
async def test_a_client_certificate_cannot_join_raft_or_pose_as_a_server(
    server: Server, runtime_pki: RuntimePki, method: str
) -> None:
    async with await _client(server, runtime_pki, "client") as client:
        with pytest.raises(RemoteError) as refused:
            await client.call(method, GHOST, type=ClusterInfo, timeout=5)
    message = str(refused.value)
    assert message.startswith(f"Permission denied: {method} needs a server certificate")
    assert "(server.dc1.consul)" in message
    assert "client.dc1.consul" in message, "the message says what the peer presented"
    await _still_healthy(server, runtime_pki)


@pytest.mark.parametrize("method", ["Raft.Join", "Status.Hello"])
async def test_a_server_certificate_cannot_claim_another_node(
    server: Server, runtime_pki: RuntimePki, method: str
) -> None:
    # s2's certificate, but the request speaks for s3 (and would overwrite its entry)
    s3 = ServerInfo(node="s3", datacenter="dc1", rpc_address="198.18.0.3:8300")
    async with await _client(server, runtime_pki, "s2") as client:
        with pytest.raises(RemoteError) as refused:
            await client.call(method, s3, type=ClusterInfo, timeout=5)
    assert str(refused.value).startswith(
        f"Permission denied: {method} for node 's3' needs that node's server certificate "
        "(s3.server.dc1.consul)"
    )
    await _still_healthy(server, runtime_pki)


async def test_a_server_of_another_datacenter_cannot_join_this_raft(
    server: Server, runtime_pki: RuntimePki
) -> None:
    r1 = ServerInfo(node="r1", datacenter="dc1", rpc_address="198.18.0.4:8300")
    async with await _client(server, runtime_pki, "r1") as client:
        for method in ("Raft.Join", "Status.Hello"):
            with pytest.raises(RemoteError, match=r"needs a server certificate \(server\.dc1"):
                await client.call(method, r1, type=ClusterInfo, timeout=5)
    await _still_healthy(server, runtime_pki)


async def test_a_server_hello_for_itself_is_answered(
    server: Server, runtime_pki: RuntimePki
) -> None:
    """The positive control: the check lets the real thing through."""
    s2 = ServerInfo(node="s2", datacenter="dc1", rpc_address="127.0.0.1:1")
    async with await _client(server, runtime_pki, "s2") as client:
        info = await client.call("Status.Hello", s2, type=ClusterInfo, timeout=5)
    assert info.server.node == "s1"
    assert [s.node for s in server.cluster_info().known] == ["s2"]


def _state(dc: str) -> FederationStateRequest:
    return FederationStateRequest(op="upsert", state=FederationState(datacenter=dc))


async def _states(server: Server) -> list[str]:
    reply = await server.rpc("FederationState.List", DCSpecificRequest(), IndexedFederationStates)
    return [s.datacenter for s in reply.states]


async def test_federation_states_are_written_only_by_servers_of_that_datacenter(
    server: Server, runtime_pki: RuntimePki
) -> None:
    async with await _client(server, runtime_pki, "client") as client:
        with pytest.raises(RemoteError) as refused:
            await client.call("FederationState.Apply", _state("dc2"), type=bool, timeout=5)
    assert str(refused.value).startswith(
        "Permission denied: FederationState.Apply needs a server certificate "
        "(server.dc2.consul or server.dc1.consul)"
    )
    async with await _client(server, runtime_pki, "r1") as client:  # a dc2 server
        with pytest.raises(RemoteError, match=r"^Permission denied: .*server\.dc3\.consul"):
            await client.call("FederationState.Apply", _state("dc3"), type=bool, timeout=5)
        assert await _states(server) == []
        # its own datacenter's state is what a dc2 leader's anti-entropy writes
        assert await client.call("FederationState.Apply", _state("dc2"), type=bool, timeout=10)
    assert await _states(server) == ["dc2"]
    await _still_healthy(server, runtime_pki)


async def test_the_http_api_cannot_make_server_to_server_calls(server: Server) -> None:
    with pytest.raises(RemoteError, match=r"^Permission denied: Raft\.Join is a server-to-server"):
        await server.http_dispatcher.rpc("Raft.Join", GHOST, ClusterInfo)
    with pytest.raises(RemoteError, match=r"^Permission denied: FederationState\.Apply is a"):
        await server.http_dispatcher.rpc("FederationState.Apply", _state("dc1"), bool)


# --- the raft link: nothing but a server of this datacenter reaches the decoder -----------


@pytest.fixture
def raft_bytes_received(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every chunk of bytes that reached the raft link's inbound decoder (spy)."""
    seen: list[bytes] = []
    original = raft_link._Inbound.data_received

    def spy(self: Any, data: bytes) -> None:
        seen.append(data)
        original(self, data)

    monkeypatch.setattr(raft_link._Inbound, "data_received", spy)
    return seen


async def _speak_raft(server: Server, context: ssl.SSLContext) -> None:
    """Send a raft hello and a pickled message, then wait until the server hangs up."""
    connection: Connection = await dial_alpn(server.rpc_bind_address, SNI, Alpn.RAFT, context)
    reader, writer = connection.open_streams()
    # The server ends the connection either way: a reset is as good as a close.
    try:
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            writer.write(encode_frame(b"127.0.0.1:1") + encode_frame(b"\x80\x05N."))  # None
            async with asyncio.timeout(10):  # a deadline for a hang, not a measured threshold
                while await reader.read(4096):
                    continue
    finally:
        writer.transport.abort()


@pytest.mark.parametrize("leaf", ["client", "r1"], ids=["same-ca-client", "other-dc-server"])
async def test_the_raft_link_refuses_a_non_server_before_any_byte_is_decoded(
    server: Server, runtime_pki: RuntimePki, raft_bytes_received: list[bytes], leaf: str
) -> None:
    await _speak_raft(server, _context(runtime_pki, leaf, Alpn.RAFT))
    assert raft_bytes_received == []
    await _still_healthy(server, runtime_pki)


async def test_the_raft_link_spy_sees_a_real_server(
    server: Server, runtime_pki: RuntimePki, raft_bytes_received: list[bytes]
) -> None:
    """The control for the test above: a dc1 server's bytes do reach the link (which
    then drops the unknown raft member), so an empty spy means "refused", not "unseen"."""
    await _speak_raft(server, _context(runtime_pki, "s2", Alpn.RAFT))
    assert raft_bytes_received != []
    await _still_healthy(server, runtime_pki)


# --- a server whose own certificate would be refused by its peers does not start --------


@pytest.mark.parametrize("cert_node", [None, "s2"], ids=["no-node-name", "another-node"])
async def test_a_server_refuses_to_start_with_a_certificate_that_does_not_name_it(
    tmp_path: Path, cert_node: str | None
) -> None:
    from wanfed_agent.tls import create_ca, create_server_cert

    ca = create_ca()
    pair = create_server_cert(ca, "dc1", "consul", cert_node)
    for name, pem in (("ca", ca.cert_pem), ("cert", pair.cert_pem), ("key", pair.key_pem)):
        (tmp_path / f"{name}.pem").write_bytes(pem)
    config = load_config(
        overrides={
            "node_name": "s1",
            "server": True,
            "bootstrap": True,
            "data_dir": str(tmp_path / "s1"),
            "bind_addr": "127.0.0.1",
            "ports": {"server": 0},
            "encrypt": generate_gossip_key(),
            "tls": {
                "defaults": {f"{n}_file": str(tmp_path / f"{n}.pem") for n in ("ca", "cert", "key")}
            },
        }
    )
    server = Server(config)
    with pytest.raises(ValueError, match=r"does not name s1\.server\.dc1\.consul") as refused:
        await server.start()
    assert "wanfed tls cert create -server -dc dc1 -domain consul -node s1" in str(refused.value)
    await server.stop()
