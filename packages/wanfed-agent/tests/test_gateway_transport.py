"""WAN gossip through gateways: the packet pool, and real members across two DCs.

The "gateway" here is the receiving server's RPC port itself (the picker
returns it): what is under test is the TLS + SNI + ALPN framing, pooling and
ingestion; the SNI-routing proxy has its own tests in the server package.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from wanfed_agent.gateway_transport import (
    POOL_CLOSED_MESSAGE,
    GatewayTransport,
    PacketConnectionPool,
    PoolClosedError,
)
from wanfed_agent.gossip import GossipAgent, MemberState, PlainTransport, fast_profile
from wanfed_agent.tls import PemPair, create_server_cert
from wanfed_proto import Alpn, RpcPortServer, client_context, serve_rpc_port, server_context

# --- the pool -----------------------------------------------------------------------


class FakeWriter:
    def __init__(self) -> None:
        self.closed = False

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


async def test_pool_reuses_last_in_first_out_and_reaps_idle() -> None:
    now = [0.0]
    dialled: list[FakeWriter] = []

    async def dial(key: str) -> asyncio.StreamWriter:
        writer = FakeWriter()
        dialled.append(writer)
        return writer  # type: ignore[return-value]

    pool = PacketConnectionPool(dial, idle_limit=120.0, clock=lambda: now[0])
    a = await pool.acquire("s1.dc2")
    b = await pool.acquire("s1.dc2")  # concurrent senders hold their own
    assert pool.dials == 2
    pool.release(a)
    now[0] = 10.0
    pool.release(b)
    again = await pool.acquire("s1.dc2")
    assert again is b  # the most recently used comes back first
    pool.release(again)
    failed = await pool.acquire("s1.dc2")
    failed.failed = True
    pool.release(failed)
    assert failed.writer.is_closing()  # a failed conn is closed, not pooled
    assert pool.idle_count("s1.dc2") == 1
    now[0] = 119.0  # ``a`` has idled since t=0
    assert pool.reap() == 0
    now[0] = 120.0
    assert pool.reap() == 1
    assert pool.idle_count() == 0
    await pool.close()
    with pytest.raises(PoolClosedError, match=POOL_CLOSED_MESSAGE):
        await pool.acquire("s1.dc2")


async def test_retired_connections_are_closed_idle_now_and_in_use_on_release() -> None:
    async def dial(key: str) -> asyncio.StreamWriter:
        return FakeWriter()  # type: ignore[return-value]

    pool = PacketConnectionPool(dial)
    idle_dc1, busy_dc1, other = (
        await pool.acquire("s1.dc1"),
        await pool.acquire("s1.dc1"),
        await pool.acquire("s1.dc3"),
    )
    pool.release(idle_dc1)
    pool.release(other)
    assert pool.retire(lambda key: key.endswith(".dc1")) == 2
    assert idle_dc1.writer.is_closing()
    assert not busy_dc1.writer.is_closing()  # its packet is still being written
    pool.release(busy_dc1)
    assert busy_dc1.writer.is_closing()
    assert pool.idle_count("s1.dc1") == 0
    assert pool.idle_count("s1.dc3") == 1  # another datacenter's path did not change
    fresh = await pool.acquire("s1.dc1")
    assert fresh not in (idle_dc1, busy_dc1)
    assert pool.dials == 4
    await pool.close()


async def test_a_dial_in_flight_when_retired_carries_one_packet_then_closes() -> None:
    """Its gateway was picked along the old path; pooled, it would keep it for good."""
    go, started = asyncio.Event(), asyncio.Event()
    dialled: list[FakeWriter] = []

    async def dial(key: str) -> asyncio.StreamWriter:
        writer = FakeWriter()
        dialled.append(writer)
        if len(dialled) == 1:
            started.set()
            await go.wait()
        return writer  # type: ignore[return-value]

    pool = PacketConnectionPool(dial)
    acquiring = asyncio.create_task(pool.acquire("s1.dc1"))
    await started.wait()
    assert pool.retire(lambda key: key.endswith(".dc1")) == 1
    go.set()
    old_path = await acquiring
    assert not old_path.writer.is_closing()  # its packet still goes out
    pool.release(old_path)
    assert old_path.writer.is_closing()
    assert pool.idle_count("s1.dc1") == 0
    fresh = await pool.acquire("s1.dc1")
    assert pool.dials == 2
    pool.release(fresh)
    assert pool.idle_count("s1.dc1") == 1  # dialled after the retirement: kept
    await pool.close()


# --- two datacenters ----------------------------------------------------------------


@dataclass
class Server:
    name: str
    dc: str
    files: tuple[Path, Path, Path]


def write_server(tmp: Path, ca: PemPair, node: str, dc: str) -> Server:
    pair = create_server_cert(ca, dc, "consul", node)
    folder = tmp / f"{node}.{dc}"
    folder.mkdir()
    paths = (folder / "ca.pem", folder / "cert.pem", folder / "key.pem")
    paths[0].write_bytes(ca.cert_pem)
    paths[1].write_bytes(pair.cert_pem)
    paths[2].write_bytes(pair.key_pem)
    return Server(node, dc, paths)


class Picker:
    def __init__(self) -> None:
        self.gateways: dict[str, str] = {}
        self.asked: list[str] = []

    def pick_gateway(self, datacenter: str) -> str:
        self.asked.append(datacenter)
        return self.gateways.get(datacenter, "")


@dataclass
class Member:
    agent: GossipAgent
    transport: GatewayTransport
    rpc: RpcPortServer
    picker: Picker


async def start_member(server: Server) -> Member:
    picker = Picker()
    ca, cert, key = server.files
    transport = GatewayTransport(
        local=PlainTransport("127.0.0.1"),
        datacenter=server.dc,
        domain="consul",
        picker=picker,
        packet_context=client_context(ca, cert, key, alpn=[Alpn.WAN_GOSSIP_PACKET]),
        stream_context=client_context(ca, cert, key, alpn=[Alpn.WAN_GOSSIP_STREAM]),
    )
    rpc = await serve_rpc_port(
        "127.0.0.1",
        0,
        plain_handlers={},
        alpn_handlers={
            Alpn.WAN_GOSSIP_PACKET: transport.serve_packets,
            Alpn.WAN_GOSSIP_STREAM: transport.serve_stream,
        },
        ssl_context=server_context(ca, cert, key),
    )
    config = fast_profile(f"{server.name}.{server.dc}", "127.0.0.1", 0)
    local_dc = server.dc

    def tcp_ping_allowed(name: str) -> bool:
        return name.rpartition(".")[2] == local_dc

    agent = GossipAgent(config, transport, tcp_ping_allowed=tcp_ping_allowed, seed=1)
    await agent.start()
    return Member(agent, transport, rpc, picker)


@pytest.fixture
async def two_dcs(tmp_path: Path, ca_pair: PemPair) -> AsyncIterator[tuple[Member, Member]]:
    first = await start_member(write_server(tmp_path, ca_pair, "s1", "dc1"))
    second = await start_member(write_server(tmp_path, ca_pair, "s1", "dc2"))
    try:
        yield first, second
    finally:
        for member in (first, second):
            await member.agent.close()
            await member.rpc.close()


def alive(member: Member) -> set[str]:
    return {m.name for m in member.agent.members() if m.state == MemberState.ALIVE}


async def test_join_through_placeholder_and_gossip_over_tls(two_dcs: tuple[Member, Member]) -> None:
    primary, secondary = two_dcs
    host, port = primary.rpc.address
    secondary.picker.gateways["dc1"] = f"{host}:{port}"
    host, port = secondary.rpc.address
    primary.picker.gateways["dc2"] = f"{host}:{port}"
    # The secondary joins "*.dc1" at a placeholder address it never dials.
    assert await secondary.agent.join("*.dc1/192.0.2.2:8302") == 1
    both = {"s1.dc1", "s1.dc2"}
    assert await primary.agent.wait_until(lambda: alive(primary) == both, 5)
    assert await secondary.agent.wait_until(lambda: alive(secondary) == both, 5)
    # Probes flow over pooled packet connections in both directions.
    assert await primary.agent.wait_until(lambda: primary.transport._pool.dials >= 1, 5)
    assert await secondary.agent.wait_until(lambda: secondary.transport._pool.dials >= 1, 5)
    assert primary.picker.asked.count("dc2") >= 1
    # Stopping the secondary is detected by the primary through the gateway path.
    await secondary.agent.close()
    await secondary.rpc.close()

    def failed() -> bool:
        state = primary.agent.core.state_of("s1.dc2")
        return state in (MemberState.SUSPECT, MemberState.DEAD)

    assert await primary.agent.wait_until(failed, 10)


async def test_no_gateway_drops_the_packet_and_logs_once(
    two_dcs: tuple[Member, Member], caplog: pytest.LogCaptureFixture
) -> None:
    primary, _ = two_dcs
    caplog.set_level("WARNING", logger="wanfed.gossip.gateway")
    for _ in range(5):
        primary.transport.send_packet("s9.dc7", ("192.0.2.2", 8302), b"\x00ping")
    await asyncio.gather(*primary.transport._tasks)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1
    assert "Remote DC has no server currently reachable" in lines[0]


async def test_a_packet_handed_over_after_close_is_dropped_quietly(
    two_dcs: tuple[Member, Member],
) -> None:
    """A probe may fire while the agent shuts down: no error escapes as an
    unretrieved task exception."""
    primary, secondary = two_dcs
    host, port = secondary.rpc.address
    primary.picker.gateways["dc2"] = f"{host}:{port}"
    await primary.transport.close()
    primary.transport.send_packet("s1.dc2", ("192.0.2.2", 8302), b"\x00ping")
    tasks = list(primary.transport._tasks)
    assert tasks
    await asyncio.gather(*tasks)
    assert all(task.exception() is None for task in tasks)
    assert primary.picker.asked == []  # nothing was dialled


async def test_failed_sends_are_reported_once_per_interval_with_a_count(
    two_dcs: tuple[Member, Member], caplog: pytest.LogCaptureFixture
) -> None:
    """A dead gateway fails every probe; the log says so once per 10 s per
    datacenter, with how many failures the line stands for."""
    primary, _ = two_dcs
    caplog.set_level("WARNING", logger="wanfed.gossip.gateway")
    refused = socket.socket()
    refused.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    try:
        primary.picker.gateways["dc2"] = f"127.0.0.1:{refused.getsockname()[1]}"
        for _ in range(4):
            primary.transport.send_packet("s1.dc2", ("192.0.2.2", 8302), b"\x00ping")
            await asyncio.gather(*primary.transport._tasks)
        lines = [r.getMessage() for r in caplog.records]
        assert len(lines) == 1, lines
        assert lines[0].startswith("Failed to send gossip to s1.dc2: dial 127.0.0.1:")
        assert lines[0].endswith("; the next packet dials again")
        caplog.clear()
        primary.transport._failures_logged["dc2"] = (-1e9, 3)  # the interval has passed
        primary.transport.send_packet("s1.dc2", ("192.0.2.2", 8302), b"\x00ping")
        await asyncio.gather(*primary.transport._tasks)
        (line,) = [r.getMessage() for r in caplog.records]
        assert line.endswith("(3 more to dc dc2 since the last report)")
    finally:
        refused.close()


async def test_unparsable_member_names_are_refused(two_dcs: tuple[Member, Member]) -> None:
    primary, _ = two_dcs
    with pytest.raises(Exception, match="node name does not encode a datacenter: s1"):
        await primary.transport.open_stream("s1", ("127.0.0.1", 1))


async def test_oversized_and_garbage_frames_close_the_packet_connection(
    two_dcs: tuple[Member, Member], tmp_path: Path
) -> None:
    primary, _ = two_dcs
    ca, cert, key = (tmp_path / "s1.dc2" / n for n in ("ca.pem", "cert.pem", "key.pem"))
    context = client_context(ca, cert, key, alpn=[Alpn.WAN_GOSSIP_PACKET])
    host, port = primary.rpc.address
    reader, writer = await asyncio.open_connection(
        host, port, ssl=context, server_hostname="s1.server.dc1.consul"
    )
    ssl_object = writer.get_extra_info("ssl_object")
    assert isinstance(ssl_object, ssl.SSLObject)
    assert ssl_object.selected_alpn_protocol() == Alpn.WAN_GOSSIP_PACKET
    writer.write((4 * 1024 * 1024 + 1).to_bytes(4, "big"))
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the server
    writer.close()


# --- only servers gossip over the gateway ALPNs ---------------------------------------


@dataclass
class Inbox:
    """What a transport handed to the membership core."""

    packets: list[bytes]
    streams: int
    arrived: asyncio.Event


async def serve_inbox(server: Server) -> tuple[GatewayTransport, RpcPortServer, Inbox]:
    ca, cert, key = server.files
    inbox = Inbox([], 0, asyncio.Event())

    def on_packet(packet: bytes, _peer: tuple[str, int]) -> None:
        inbox.packets.append(packet)
        inbox.arrived.set()

    async def on_stream(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        inbox.streams += 1
        inbox.arrived.set()
        writer.close()

    transport = GatewayTransport(
        local=PlainTransport("127.0.0.1"),
        datacenter=server.dc,
        domain="consul",
        picker=Picker(),
        packet_context=client_context(ca, cert, key, alpn=[Alpn.WAN_GOSSIP_PACKET]),
        stream_context=client_context(ca, cert, key, alpn=[Alpn.WAN_GOSSIP_STREAM]),
    )
    await transport.start(on_packet, on_stream)
    rpc = await serve_rpc_port(
        "127.0.0.1",
        0,
        plain_handlers={},
        alpn_handlers={
            Alpn.WAN_GOSSIP_PACKET: transport.serve_packets,
            Alpn.WAN_GOSSIP_STREAM: transport.serve_stream,
        },
        ssl_context=server_context(ca, cert, key),
    )
    return transport, rpc, inbox


async def gossip_as(
    rpc: RpcPortServer, files: tuple[Path, Path, Path], alpn: Alpn, until: asyncio.Event | None
) -> None:
    """Send one framed packet (or open a stream and write to it); return once
    ``until`` is set, or (without it) once the server has closed the connection."""
    ca, cert, key = files
    context = client_context(ca, cert, key, alpn=[alpn])
    host, port = rpc.address
    reader, writer = await asyncio.open_connection(
        host, port, ssl=context, server_hostname="server.dc1.consul"
    )
    # A refused connection may end in a reset rather than a close: either is the refusal.
    try:
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            packet = b"\x01fake member"  # what a join would carry
            writer.write(len(packet).to_bytes(4, "big") + packet)
            await writer.drain()
            async with asyncio.timeout(10):  # a deadline for a hang, not a measured threshold
                if until is not None:
                    await until.wait()
                else:
                    await reader.read()
    finally:
        writer.transport.abort()


def client_files(tmp: Path, ca: PemPair) -> tuple[Path, Path, Path]:
    from wanfed_agent.tls import create_client_cert

    pair = create_client_cert(ca, "dc1")
    folder = tmp / "client"
    folder.mkdir()
    paths = (folder / "ca.pem", folder / "cert.pem", folder / "key.pem")
    paths[0].write_bytes(ca.cert_pem)
    paths[1].write_bytes(pair.cert_pem)
    paths[2].write_bytes(pair.key_pem)
    return paths


@pytest.mark.parametrize("alpn", [Alpn.WAN_GOSSIP_PACKET, Alpn.WAN_GOSSIP_STREAM])
async def test_a_client_certificate_cannot_gossip_over_the_gateway_alpns(
    tmp_path: Path, ca_pair: PemPair, alpn: Alpn, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("WARNING", logger="wanfed_agent.tls.identity")
    transport, rpc, inbox = await serve_inbox(write_server(tmp_path, ca_pair, "s1", "dc1"))
    try:
        intruder = client_files(tmp_path, ca_pair)
        for _ in range(3):
            await gossip_as(rpc, intruder, alpn, until=None)
        assert inbox.packets == []
        assert inbox.streams == 0
        # refused, and said so once for the three attempts (rate-limited)
        (line,) = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
        assert "needs a server certificate (server.<dc>.consul)" in line
        assert "client.dc1.consul" in line
        # a server of another datacenter still gets through afterwards
        member = write_server(tmp_path, ca_pair, "r1", "dc2")
        await gossip_as(rpc, member.files, alpn, until=inbox.arrived)
        assert inbox.packets == [b"\x01fake member"] or inbox.streams == 1
    finally:
        await rpc.close()
        await transport.close()
