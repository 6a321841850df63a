"""The RPC dialer: direct inside the datacenter, through a picked gateway across."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from wanfed_agent.dialer import DC_NOT_AVAILABLE, GATEWAY_ATTEMPTS, NO_OUTGOING_TLS, GatewayDialer
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


class Direct:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []

    async def dial(self, node: str, datacenter: str, address: str) -> Connection:
        self.calls.append((node, datacenter, address))
        raise ConnectionRefusedError("direct dial in this test")


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


async def test_other_datacenter_goes_through_the_gateway_with_node_sni(
    tmp_path: Path, ca_pair: PemPair
) -> None:
    remote = files(tmp_path, ca_pair, "s2", "dc2")
    local = files(tmp_path, ca_pair, "s1", "dc1")
    seen: list[str | None] = []
    server = await pong_server(remote, seen)
    try:
        host, port = server.address
        picker = Picker(f"{host}:{port}")
        direct = Direct()
        dialer = GatewayDialer(
            datacenter="dc1",
            domain="consul",
            picker=picker,
            direct=direct,
            context=client_context(*local, alpn=[Alpn.RPC_MULTI]),
        )
        connection = await dialer.dial("s2", "dc2", "198.18.2.10:8300")
        async with RpcClient(connection) as client:
            assert await client.call("Status.Ping", None, type=str) == "pong"
        assert seen == ["s2.server.dc2.consul"]
        assert picker.asked == ["dc2"]
        assert direct.calls == []
        # A name the far certificate does not carry is refused by verification.
        with pytest.raises(Exception, match="certificate"):
            await dialer.dial("s9", "dc3", "198.18.3.10:8300")
        with pytest.raises(ConnectionRefusedError):
            await dialer.dial("s1", "DC1", "127.0.0.1:8300")
        assert direct.calls == [("s1", "DC1", "127.0.0.1:8300")]
        picker.gateway = ""
        with pytest.raises(Exception, match=DC_NOT_AVAILABLE):
            await dialer.dial("s2", "dc2", "198.18.2.10:8300")
    finally:
        await server.close()


def test_gateway_dialing_needs_verified_tls(tmp_path: Path, ca_pair: PemPair) -> None:
    with pytest.raises(ValueError, match=NO_OUTGOING_TLS):
        GatewayDialer(
            datacenter="dc1", domain="consul", picker=Picker(""), direct=Direct(), context=None
        )
    local = files(tmp_path, ca_pair, "s1", "dc1")
    lax = client_context(*local, alpn=[Alpn.RPC_MULTI])
    lax.check_hostname = False
    with pytest.raises(ValueError, match="hostname verification"):
        GatewayDialer(
            datacenter="dc1", domain="consul", picker=Picker(""), direct=Direct(), context=lax
        )


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
    try:
        host, port = server.address
        dead = dead_address()
        picker = Rotating([dead, f"{host}:{port}"])
        dialer = GatewayDialer(
            datacenter="dc1",
            domain="consul",
            picker=picker,
            direct=Direct(),
            context=client_context(*local, alpn=[Alpn.RPC_MULTI]),
        )
        connection = await dialer.dial("s2", "dc2", "198.18.2.10:8300")
        async with RpcClient(connection) as client:
            assert await client.call("Status.Ping", None, type=str) == "pong"
        assert picker.asked == 2
        # Only dead candidates: each is tried once, then the last error is raised.
        others = [dead_address(), dead_address(), dead_address(), dead_address()]
        picker = Rotating(others)
        dialer = GatewayDialer(
            datacenter="dc1",
            domain="consul",
            picker=picker,
            direct=Direct(),
            context=client_context(*local, alpn=[Alpn.RPC_MULTI]),
        )
        with pytest.raises(TransportError, match=others[GATEWAY_ATTEMPTS - 1].split(":")[1]):
            await dialer.dial("s2", "dc2", "198.18.2.10:8300")
        assert picker.asked == GATEWAY_ATTEMPTS
    finally:
        await server.close()
