"""The RPC port of a server with mutual TLS on (``verify_incoming``): who gets in.

One non-dev server (single-node Raft, bootstrapped) with certificates made by
``wanfed_agent.tls``. Native TLS with ALPN demands a certificate from the
cluster's CA; the plain type-byte path is closed because TLS is configured
(``test_runtime_doors`` shows it closed with ``verify_incoming`` off too).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import msgspec
import pytest

from wanfed_fsm import DCSpecificRequest, IndexedNodes, Node, RegisterRequest
from wanfed_proto import (
    NIL_BODY,
    Alpn,
    Connection,
    FrameDecoder,
    ProtoError,
    RemoteError,
    Request,
    RpcClient,
    RpcType,
    client_context,
    decode_response,
    dial_alpn,
    dial_plain,
    encode_frame,
    encode_request,
)
from wanfed_server.runtime import ClusterInfo, Server, ServerInfo

if TYPE_CHECKING:
    from .conftest import RuntimePki  # type: ignore[import-not-found]

SNI = "server.dc1.consul"


@pytest.fixture
async def tls_server(start_tls_server: Callable[..., Awaitable[Server]]) -> Server:
    return await start_tls_server()


def _client_ssl(
    pki: RuntimePki, leaf: str = "client", alpn: str = Alpn.RPC_MULTI
) -> ssl.SSLContext:
    files = pki.certs[leaf]
    return client_context(pki.ca, files.cert, files.key, alpn=[alpn])


async def test_a_client_with_a_cluster_certificate_reads_and_writes(
    tls_server: Server, runtime_pki: RuntimePki
) -> None:
    connection = await dial_alpn(
        tls_server.rpc_bind_address, SNI, Alpn.RPC_MULTI, _client_ssl(runtime_pki)
    )
    async with RpcClient(connection) as client:
        assert await client.call("Status.Ping", None, type=bool, timeout=5)
        request = RegisterRequest(node=Node(node="n1", address="198.18.0.1"))
        # the write waits (hold timeout) until the single-node raft has elected itself
        assert await client.call("Catalog.Register", request, type=bool, timeout=10)
        nodes = await client.call("Catalog.ListNodes", DCSpecificRequest(), type=IndexedNodes)
        assert "n1" in {n.node for n in nodes.nodes}


async def test_the_single_connection_alpn_is_served_too(
    tls_server: Server, runtime_pki: RuntimePki
) -> None:
    context = _client_ssl(runtime_pki, alpn=Alpn.RPC)
    connection = await dial_alpn(tls_server.rpc_bind_address, SNI, Alpn.RPC, context)
    async with RpcClient(connection) as client:
        assert await client.call("Status.Ping", None, type=bool, timeout=5)


async def _ping(open_connection: Callable[[], Awaitable[Connection]]) -> None:
    connection = await open_connection()
    async with RpcClient(connection) as client:
        await client.call("Status.Ping", None, type=bool, timeout=5)


async def _ping_fails(open_connection: Callable[[], Awaitable[Connection]]) -> None:
    """Refused at the handshake, or the connection is closed before any answer."""
    with pytest.raises(ProtoError):
        await _ping(open_connection)


async def test_plain_rpc_is_refused_when_verify_incoming_is_on(tls_server: Server) -> None:
    await _ping_fails(lambda: dial_plain(tls_server.rpc_bind_address, RpcType.MULTIPLEX_V2))


async def test_a_client_without_a_certificate_is_refused(
    tls_server: Server, runtime_pki: RuntimePki
) -> None:
    context = client_context(runtime_pki.ca, None, None, alpn=[Alpn.RPC_MULTI])
    await _ping_fails(lambda: dial_alpn(tls_server.rpc_bind_address, SNI, Alpn.RPC_MULTI, context))


async def test_a_client_with_a_certificate_from_another_ca_is_refused(
    tls_server: Server, runtime_pki: RuntimePki
) -> None:
    foreign = runtime_pki.certs["foreign"]
    # trusts the server's CA, but presents a certificate the server's CA never signed
    context = client_context(runtime_pki.ca, foreign.cert, foreign.key, alpn=[Alpn.RPC_MULTI])
    await _ping_fails(lambda: dial_alpn(tls_server.rpc_bind_address, SNI, Alpn.RPC_MULTI, context))


# wanfed/raft is served (to servers of this datacenter only): test_runtime_doors proves
# that a client certificate's bytes never reach it, which a failed Ping cannot show.
@pytest.mark.parametrize("alpn", ["wanfed/nope", "wanfed/rpc-tls"])
async def test_an_alpn_the_port_does_not_serve_is_refused(
    tls_server: Server, runtime_pki: RuntimePki, alpn: str
) -> None:
    context = _client_ssl(runtime_pki, alpn=alpn)
    await _ping_fails(lambda: dial_alpn(tls_server.rpc_bind_address, SNI, alpn, context))


async def test_openssl_s_client_with_the_right_certificate_and_alpn_reaches_the_handler(
    tls_server: Server, runtime_pki: RuntimePki
) -> None:
    host, port = tls_server.rpc_bind_address
    client = runtime_pki.certs["client"]
    process = await asyncio.create_subprocess_exec(
        "/usr/bin/openssl",
        "s_client",
        "-quiet",
        "-connect",
        f"{host}:{port}",
        "-servername",
        SNI,
        "-alpn",
        str(Alpn.RPC_MULTI),
        "-cert",
        str(client.cert),
        "-key",
        str(client.key),
        "-CAfile",
        str(runtime_pki.ca),
        "-verify_return_error",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert process.stdin is not None
    assert process.stdout is not None
    try:
        request = Request(Seq=7, Method="Status.Ping", Body=NIL_BODY)
        process.stdin.write(encode_frame(encode_request(request)))
        await process.stdin.drain()
        decoder = FrameDecoder()
        frames: list[bytes] = []
        async with asyncio.timeout(10):
            while not frames:
                chunk = await process.stdout.read(4096)
                assert chunk, "openssl closed the connection without an answer"
                decoder.feed(chunk)
                frames.extend(decoder.frames())
    finally:
        process.kill()
        await process.wait()
    response = decode_response(frames[0])
    assert response.Seq == 7
    assert response.Error == ""
    assert msgspec.msgpack.decode(response.Body, type=bool) is True


async def test_cluster_membership_calls_need_a_server_certificate(
    tls_server: Server, runtime_pki: RuntimePki
) -> None:
    intruder = ServerInfo(node="evil", datacenter="dc1", rpc_address="198.18.0.66:8300")
    context = _client_ssl(runtime_pki, leaf="client")
    connection = await dial_alpn(tls_server.rpc_bind_address, SNI, Alpn.RPC_MULTI, context)
    async with RpcClient(connection) as client:
        for method in ("Raft.Join", "Status.Hello"):
            with pytest.raises(RemoteError, match=f"^Permission denied: {method} needs"):
                await client.call(method, intruder, timeout=5)
    peer = ServerInfo(node="s2", datacenter="dc1", rpc_address="127.0.0.1:1")
    context = _client_ssl(runtime_pki, leaf="s2")
    connection = await dial_alpn(tls_server.rpc_bind_address, SNI, Alpn.RPC_MULTI, context)
    async with RpcClient(connection) as client:
        info = await client.call("Status.Hello", peer, type=ClusterInfo, timeout=5)
    assert info.server.node == "s1"
