"""The outsider probe tells an open door from a shut one (loopback, no root).

``test_security_netns.py`` trusts each probe's verdict; here every attempt
kind meets a door that opens and one that stays shut, so a probe that could
only ever say "refused" (a typo, a wrong codec, a deadline too short) fails
here instead of passing the scenario.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import wanfed_proto as wp
from wanfed_agent.gossip import GossipAgent, PlainTransport, encode_tags, wan_profile
from wanfed_agent.tls import create_ca, create_client_cert, create_server_cert

PROBE = Path(__file__).with_name("outsider_probe.py")
HOST = "127.0.0.1"


async def probe(attempt: str, **args: Any) -> dict[str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(PROBE),
        attempt,
        json.dumps(args),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    answer: dict[str, str] = json.loads(out.decode().strip().splitlines()[-1])
    return answer


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, str]:
    """A CA, a server certificate of dc1/s1 and a client certificate of dc2, as files."""
    ca = create_ca()
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem)
    paths = {"ca": str(tmp_path / "ca.pem")}
    pairs = {
        "server": create_server_cert(ca, "dc1", node="s1"),
        "client": create_client_cert(ca, "dc2"),
    }
    for name, pair in pairs.items():
        (tmp_path / f"{name}.pem").write_bytes(pair.cert_pem)
        (tmp_path / f"{name}-key.pem").write_bytes(pair.key_pem)
        paths[name] = str(tmp_path / f"{name}.pem")
        paths[f"{name}-key"] = str(tmp_path / f"{name}-key.pem")
    return paths


async def ping(_: wp.RpcCall) -> bool:
    return True


async def serve(connection: wp.Connection) -> None:
    await wp.serve_rpc(connection, {"Status.Ping": ping})


async def hold_open(connection: wp.Connection) -> None:
    await connection.wait_closed()


async def shut(connection: wp.Connection) -> None:
    connection.abort()


@pytest.fixture
async def rpc_port(pki: dict[str, str]) -> AsyncIterator[str]:
    """A server's RPC port: plain RPC, TLS RPC, raft held open, gossip packets shut."""
    server = await wp.serve_rpc_port(
        HOST,
        0,
        plain_handlers={wp.RpcType.MULTIPLEX_V2: serve},
        alpn_handlers={
            wp.Alpn.RPC_MULTI: serve,
            wp.Alpn.RAFT: hold_open,
            wp.Alpn.WAN_GOSSIP_PACKET: shut,
        },
        ssl_context=wp.server_context(pki["ca"], pki["server"], pki["server-key"]),
    )
    try:
        yield f"{HOST}:{server.address[1]}"
    finally:
        await server.close()


@pytest.fixture
async def closing_port() -> AsyncIterator[str]:
    """A TCP port that hangs up on every connection at once."""

    async def hang_up(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(hang_up, HOST, 0)
    try:
        yield f"{HOST}:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        await server.wait_closed()


@contextlib.asynccontextmanager
async def gossip_agent(encrypt: str | None = None) -> AsyncIterator[str]:
    config = wan_profile("s1.dc2", HOST, 0, meta=encode_tags({"dc": "dc2"}), encrypt=encrypt)
    agent = GossipAgent(config, PlainTransport(HOST))
    await agent.start()
    try:
        yield f"{HOST}:{agent.address[1]}"
    finally:
        await agent.close()


@pytest.fixture
async def gossip() -> AsyncIterator[str]:
    async with gossip_agent() as address:
        yield address


def unused_port(kind: socket.SocketKind) -> str:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((HOST, 0))
        return f"{HOST}:{s.getsockname()[1]}"


async def test_rpc_doors(rpc_port: str, pki: dict[str, str]) -> None:
    leaked = {"ca": pki["ca"], "cert": pki["client"], "key": pki["client-key"]}
    call = {"address": rpc_port, "sni": "server.dc1.consul", "method": "Status.Ping"}
    assert (await probe("plain-rpc", address=rpc_port))["outcome"] == "accepted"
    assert (await probe("tls-rpc", **leaked, **call))["outcome"] == "accepted"
    no_cert = await probe("tls-rpc", ca=pki["ca"], **call)
    assert no_cert["outcome"] == "refused", no_cert
    unknown = await probe("tls-rpc", **leaked, **{**call, "method": "Raft.Join"})
    assert unknown == {
        "outcome": "refused",
        "detail": "Raft.Join: server said rpc: can't find method Raft.Join",
    }


async def test_held_open_is_admission_and_a_close_is_refusal(
    rpc_port: str, pki: dict[str, str]
) -> None:
    leaked = {"ca": pki["ca"], "cert": pki["client"], "key": pki["client-key"]}
    target = {"address": rpc_port, "sni": "s1.server.dc1.consul"}
    raft = await probe("raft-alpn", **leaked, **target, peer="127.0.0.2:8300")
    assert raft["outcome"] == "accepted", raft
    packet = await probe(
        "gossip-packet-alpn", **leaked, **target, me=HOST, fake_dc="fakedc", node="evil"
    )
    assert packet["outcome"] == "refused", packet


async def test_tls_doors_at_the_byte_level(rpc_port: str, closing_port: str) -> None:
    # A TLS server answers any SNI: to the probe, that is a route.
    assert (await probe("unrouted-sni", address=rpc_port, sni="www.example.com"))[
        "outcome"
    ] == "accepted"
    assert (await probe("unrouted-sni", address=closing_port, sni="www.example.com"))[
        "outcome"
    ] == "refused"
    # A TLS server answers a ClientHello followed by plain bytes in TLS only.
    tls_only = await probe("hello-then-plain", address=rpc_port, sni="server.dc1.consul")
    assert tls_only["outcome"] == "refused", tls_only


async def test_a_plain_answer_after_a_client_hello_is_an_open_door() -> None:
    async def answer_plain(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)
        writer.write(b"\x00\x00\x00\x05plain")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer_plain, HOST, 0)
    try:
        port = server.sockets[0].getsockname()[1]
        answer = await probe("hello-then-plain", address=f"{HOST}:{port}", sni="server.dc1.consul")
    finally:
        server.close()
        await server.wait_closed()
    assert answer["outcome"] == "accepted", answer


async def test_gossip_doors(gossip: str) -> None:
    fake = {"me": HOST, "fake_dc": "fakedc"}
    udp = await probe("udp-gossip", address=gossip, node="evil-udp", **fake)
    assert udp["outcome"] == "accepted", udp
    tcp = await probe("tcp-gossip", address=gossip, node="evil-tcp", **fake)
    assert tcp["outcome"] == "accepted", tcp
    silent = await probe("udp-gossip", address=unused_port(socket.SOCK_DGRAM), **fake)
    assert silent["outcome"] == "refused", silent


async def test_a_gossip_key_shuts_the_gossip_doors() -> None:
    fake = {"me": HOST, "fake_dc": "fakedc"}
    async with gossip_agent(encrypt=base64.b64encode(os.urandom(32)).decode()) as address:
        tcp = await probe("tcp-gossip", address=address, node="evil-tcp", **fake)
        udp = await probe("udp-gossip", address=address, node="evil-udp", **fake)
    assert tcp == {
        "outcome": "refused",
        "detail": "push/pull: the server answered sealed (it has a gossip key)",
    }
    assert udp["outcome"] == "refused", udp


async def test_closed_ports_are_refused() -> None:
    closed = unused_port(socket.SOCK_STREAM)
    for attempt in ("tcp-connect", "http", "plain-rpc", "tcp-gossip"):
        answer = await probe(attempt, address=closed, me=HOST, fake_dc="fakedc")
        assert answer["outcome"] == "refused", (attempt, answer)


async def test_bad_usage_is_refused_with_a_message() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(PROBE), "no-such-attempt", "{}", stderr=asyncio.subprocess.PIPE
    )
    _, err = await process.communicate()
    assert process.returncode == 2
    assert b"usage: outsider_probe.py {plain-rpc|" in err
