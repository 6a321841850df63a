"""The RPC dialer: direct to a server's address, or through a picked gateway."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from wanfed_agent.rpc import (
    DC_NOT_AVAILABLE,
    DIRECT,
    GATEWAY_ATTEMPTS,
    NO_OUTGOING_TLS,
    NoGatewayKnownError,
    Route,
    TlsDialer,
    dial_through_gateway,
)
from wanfed_agent.tls import PemPair, create_server_cert
from wanfed_proto import (
    Alpn,
    Connection,
    RpcClient,
    RpcPortServer,
    TransportError,
    client_context,
    serve_rpc,
    serve_rpc_port,
    server_context,
)


class Picker:
    def __init__(self, gateway: str) -> None:
        self.gateway = gateway
        self.asked: list[str] = []

    def pick_gateway(self, datacenter: str) -> str:
        self.asked.append(datacenter)
        return self.gateway


def files(tmp: Path, ca: PemPair, node: str, dc: str) -> tuple[Path, Path, Path]:
    pair = create_server_cert(ca, dc, "consul", node)
    folder = tmp / f"{node}-{dc}"
    folder.mkdir()
    out = (folder / "ca.pem", folder / "cert.pem", folder / "key.pem")
    for path, data in zip(out, (ca.cert_pem, pair.cert_pem, pair.key_pem), strict=True):
        path.write_bytes(data)
    return out


async def pong_server(
    cert: tuple[Path, Path, Path], seen: list[str | None] | None = None
) -> RpcPortServer:
    """The far server: ``Status.Ping`` over ``wanfed/rpc-multi``; records each SNI in ``seen``."""

    async def pong(call: object) -> str:
        return "pong"

    async def handle(connection: Connection) -> None:
        if seen is not None:
            seen.append(connection.info.sni)
        await serve_rpc(connection, {"Status.Ping": pong})

    return await serve_rpc_port(
        "127.0.0.1",
        0,
        plain_handlers={},
        alpn_handlers={Alpn.RPC_MULTI: handle},
        ssl_context=server_context(*cert),
    )


def via_gateways(datacenter: str, node: str | None) -> Route:
    return Route(datacenter=datacenter, node=node, path="local-gateways", address=None)


async def test_a_gateway_route_goes_through_the_gateway_with_node_sni(
    tmp_path: Path, ca_pair: PemPair
) -> None:
    remote = files(tmp_path, ca_pair, "s2", "dc2")
    local = files(tmp_path, ca_pair, "s1", "dc1")
    seen: list[str | None] = []
    server = await pong_server(remote, seen)
    try:
        host, port = server.address
        picker = Picker(f"{host}:{port}")
        dialer = TlsDialer(client_context(*local, alpn=[Alpn.RPC_MULTI]), "consul", gateways=picker)
        connection = await dialer.dial(via_gateways("dc2", "s2"))
        async with RpcClient(connection) as client:
            assert await client.call("Status.Ping", None, type=str) == "pong"
        assert seen == ["s2.server.dc2.consul"]
        assert picker.asked == ["dc2"]
        # A name the far certificate does not carry is refused by verification.
        with pytest.raises(TransportError, match="certificate"):
            await dialer.dial(via_gateways("dc3", "s9"))
        # A direct route dials the server's own address, asking no gateway.
        asked = len(picker.asked)
        direct = Route(datacenter="dc2", node="s2", path=DIRECT, address=f"{host}:{port}")
        connection = await dialer.dial(direct)
        connection.abort()
        assert len(picker.asked) == asked
        picker.gateway = ""
        with pytest.raises(NoGatewayKnownError, match=DC_NOT_AVAILABLE):
            await dialer.dial(via_gateways("dc2", "s2"))
    finally:
        await server.close()


def test_gateway_dialing_needs_verified_tls(tmp_path: Path, ca_pair: PemPair) -> None:
    with pytest.raises(ValueError, match=NO_OUTGOING_TLS):
        TlsDialer(None, "consul", gateways=Picker(""))
    local = files(tmp_path, ca_pair, "s1", "dc1")
    lax = client_context(*local, alpn=[Alpn.RPC_MULTI])
    lax.check_hostname = False
    with pytest.raises(ValueError, match="hostname verification"):
        TlsDialer(lax, "consul", gateways=Picker(""))


class Rotating:
    """Hands out its gateways in turn, as a random pick eventually would."""

    def __init__(self, gateways: list[str]) -> None:
        self.gateways = gateways
        self.asked = 0

    def pick_gateway(self, datacenter: str) -> str:
        self.asked += 1
        return self.gateways[(self.asked - 1) % len(self.gateways)]


def dead_address() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


async def test_a_dead_gateway_among_the_candidates_is_skipped(
    tmp_path: Path, ca_pair: PemPair
) -> None:
    remote = files(tmp_path, ca_pair, "s2", "dc2")
    local = files(tmp_path, ca_pair, "s1", "dc1")
    server = await pong_server(remote)
    context = client_context(*local, alpn=[Alpn.RPC_MULTI])
    try:
        host, port = server.address
        picker = Rotating([dead_address(), f"{host}:{port}"])
        dialer = TlsDialer(context, "consul", gateways=picker)
        connection = await dialer.dial(via_gateways("dc2", "s2"))
        async with RpcClient(connection) as client:
            assert await client.call("Status.Ping", None, type=str) == "pong"
        assert picker.asked == 2
        # Only dead candidates: each is tried once, then the last error is raised.
        others = [dead_address(), dead_address(), dead_address(), dead_address()]
        picker = Rotating(others)
        dialer = TlsDialer(context, "consul", gateways=picker)
        with pytest.raises(TransportError, match=others[GATEWAY_ATTEMPTS - 1].split(":")[1]):
            await dialer.dial(via_gateways("dc2", "s2"))
        assert picker.asked == GATEWAY_ATTEMPTS
    finally:
        await server.close()


class SilentListener(asyncio.Protocol):
    """Accepts TCP and never says a word: a black-holed gateway (no reset, no handshake)."""

    def __init__(self) -> None:
        self.accepted = 0
        self.transports: list[asyncio.BaseTransport] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.accepted += 1
        self.transports.append(transport)


@pytest.fixture
async def black_hole() -> AsyncIterator[tuple[SilentListener, str]]:
    hole = SilentListener()
    server = await asyncio.get_running_loop().create_server(lambda: hole, "127.0.0.1", 0)
    host, port = server.sockets[0].getsockname()[:2]
    yield hole, f"{host}:{port}"
    for transport in hole.transports:
        transport.close()
    server.close()
    await server.wait_closed()


async def test_a_black_holed_candidate_costs_one_attempt_then_the_next_is_tried(
    tmp_path: Path, ca_pair: PemPair, black_hole: tuple[SilentListener, str]
) -> None:
    """Each candidate has its own connect-and-handshake timeout: a gateway that
    accepts and never answers gives up on its own and leaves the next candidate
    a whole attempt (a timeout shared by all attempts was used up by the first)."""
    hole, hole_address = black_hole
    remote = files(tmp_path, ca_pair, "s2", "dc2")
    local = files(tmp_path, ca_pair, "s1", "dc1")
    server = await pong_server(remote)
    try:
        host, port = server.address
        picker = Rotating([hole_address, f"{host}:{port}"])
        connection = await dial_through_gateway(
            picker,
            "dc2",
            "s2.server.dc2.consul",
            Alpn.RPC_MULTI,
            client_context(*local, alpn=[Alpn.RPC_MULTI]),
            0.5,
        )
        async with RpcClient(connection) as client:
            assert await client.call("Status.Ping", None, type=str) == "pong"
        assert hole.accepted == 1, "the black-holed candidate was tried first"
        assert picker.asked == 2
    finally:
        await server.close()
