"""The data plane end to end on loopback: real TLS endpoints, real sockets.

Every test runs on both asyncio and uvloop (see ``conftest.py``). Servers are
mTLS stand-ins whose greeting names themselves and the client certificate
they verified, so "reached s1 and completed mutual TLS" is one assertion.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import shutil
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TYPE_CHECKING

import aiohttp
import msgspec
import pytest

from wanfed_fsm import CheckServiceNode, Node, Service, ServiceAddress
from wanfed_server.gateway import (
    DirectoryServer,
    GatewayConfig,
    MeshGateway,
    Route,
    RouteInputs,
    RouteTable,
    StatusServer,
    Upstream,
    build_route_table,
)

if TYPE_CHECKING:
    from conftest import Pki, TlsServer

StartServer = Callable[[str], Awaitable["TlsServer"]]
StartGateway = Callable[..., Awaitable[MeshGateway]]

SAFETY = 10.0
"""Upper bound for any single wait, so a broken build fails instead of hanging."""


def _server(node: str, port: int, dc: str) -> DirectoryServer:
    return DirectoryServer(node=node, datacenter=dc, address="127.0.0.1", port=port, alive=True)


def _gateway(dc: str, port: int) -> CheckServiceNode:
    return CheckServiceNode(
        node=Node(node=f"gw-{dc}", address="127.0.0.1", datacenter=dc),
        service=Service(
            kind="mesh-gateway",
            service="mesh-gateway",
            port=port,
            tagged_addresses={"wan": ServiceAddress(address="127.0.0.1", port=port)},
            meta={"consul-wan-federation": "1"},
        ),
    )


def routes(
    local_dc: str = "dc1",
    servers: dict[str, int] | None = None,
    remote_gateways: dict[str, int] | None = None,
) -> RouteTable:
    return build_route_table(
        RouteInputs(
            local_dc=local_dc,
            server_directory=[
                _server(name, port, local_dc) for name, port in (servers or {}).items()
            ],
            fed_state_gateways={dc: [_gateway(dc, p)] for dc, p in (remote_gateways or {}).items()},
        )
    )


@pytest.fixture
async def start_gateway() -> AsyncIterator[StartGateway]:
    started: list[MeshGateway] = []

    async def start(table: RouteTable, **config: float) -> MeshGateway:
        settings = msgspec.structs.replace(GatewayConfig(stats_log_interval=0), **config)
        gateway = MeshGateway(table, settings)
        await gateway.start("127.0.0.1", 0)
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        await gateway.close()


async def tls_session(
    pki: Pki, port: int, sni: str
) -> tuple[str, asyncio.StreamReader, asyncio.StreamWriter]:
    """Open mTLS through ``port`` with ``sni`` (verified as hostname); return the greeting."""
    async with asyncio.timeout(SAFETY):
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=pki.client_context(), server_hostname=sni
        )
        greeting = (await reader.readline()).decode().strip()
    return greeting, reader, writer


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, line: bytes) -> bytes:
    async with asyncio.timeout(SAFETY):
        writer.write(line)
        await writer.drain()
        return await reader.readline()


async def close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError, ssl.SSLError):
        await writer.wait_closed()


async def until_closed(reader: asyncio.StreamReader) -> bytes:
    """Read to EOF; a reset counts as closed too."""
    async with asyncio.timeout(SAFETY):
        try:
            return await reader.read()
        except (ConnectionError, ssl.SSLError):
            return b""


def client_hello(sni: str) -> bytes:
    """A real ClientHello from the stdlib, as bytes."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ssl.create_default_context().wrap_bio(incoming, outgoing, server_hostname=sni)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


# --- routing to the right place ------------------------------------------------------


async def test_named_server_completes_mtls_through_gateway(
    pki: Pki, tls_servers: StartServer, start_gateway: StartGateway
) -> None:
    s1, s2 = await tls_servers("s1"), await tls_servers("s2")
    gateway = await start_gateway(routes(servers={"s1": s1.port, "s2": s2.port}))
    port = gateway.address[1]
    for name in ("s1", "s2", "s1"):
        greeting, reader, writer = await tls_session(pki, port, f"{name}.server.dc1.consul")
        assert greeting == f"{name} client=c1.server.dc1.consul"
        assert await echo(reader, writer, b"ping\n") == b"ping\n"
        await close(writer)
    assert (s1.accepted, s2.accepted) == (2, 1)


async def test_any_server_name_reaches_some_server(
    pki: Pki, tls_servers: StartServer, start_gateway: StartGateway
) -> None:
    s1, s2 = await tls_servers("s1"), await tls_servers("s2")
    gateway = await start_gateway(routes(servers={"s1": s1.port, "s2": s2.port}))
    seen = set()
    for _ in range(4):
        greeting, _, writer = await tls_session(pki, gateway.address[1], "server.dc1.consul")
        seen.add(greeting.split()[0])
        await close(writer)
    assert seen <= {"s1", "s2"}
    assert seen
    assert gateway.stats().routes["local-any"].connections == 4


async def test_openssl_s_client_completes_mtls(
    pki: Pki, tls_servers: StartServer, start_gateway: StartGateway
) -> None:
    assert shutil.which("openssl"), "this test needs the openssl binary (apt-get install openssl)"
    s1 = await tls_servers("s1")
    gateway = await start_gateway(routes(servers={"s1": s1.port}))
    client = pki.leaves["client"]
    proc = await asyncio.create_subprocess_exec(
        "openssl",
        "s_client",
        "-connect",
        f"127.0.0.1:{gateway.address[1]}",
        "-servername",
        "s1.server.dc1.consul",
        "-verify_hostname",
        "s1.server.dc1.consul",
        "-verify_return_error",
        "-CAfile",
        str(pki.ca),
        "-cert",
        str(client.cert),
        "-key",
        str(client.key),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdin is not None
    assert proc.stdout is not None
    output: list[str] = []
    try:
        async with asyncio.timeout(SAFETY):
            while line := await proc.stdout.readline():
                output.append(line.decode(errors="replace").strip())
                # s_client interleaves its own lines with the data, so search.
                if "s1 client=c1.server.dc1.consul" in output[-1]:
                    break
            proc.stdin.close()
            rest = await proc.stdout.read()
            await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    output += rest.decode(errors="replace").splitlines()
    assert any("s1 client=c1.server.dc1.consul" in line for line in output)
    assert any("Verify return code: 0 (ok)" in line for line in output)


async def test_remote_dc_goes_through_that_dcs_gateway(
    pki: Pki, tls_servers: StartServer, start_gateway: StartGateway
) -> None:
    r1 = await tls_servers("r1")
    dc2_gateway = await start_gateway(routes(local_dc="dc2", servers={"r1": r1.port}))
    dc1_gateway = await start_gateway(routes(remote_gateways={"dc2": dc2_gateway.address[1]}))
    for sni in ("r1.server.dc2.consul", "server.dc2.consul"):
        greeting, reader, writer = await tls_session(pki, dc1_gateway.address[1], sni)
        assert greeting == "r1 client=c1.server.dc1.consul"
        assert await echo(reader, writer, b"across\n") == b"across\n"
        await close(writer)
    assert dc1_gateway.stats().routes["remote:dc2"].connections == 2
    assert dc2_gateway.stats().routes["local-server:r1"].connections == 1
    assert dc2_gateway.stats().routes["local-any"].connections == 1


# --- refusing -------------------------------------------------------------------------


@pytest.mark.parametrize("sni", ["evil.example.com", "s9.server.dc1.consul", "server.dc7.consul"])
async def test_unknown_sni_is_closed(
    pki: Pki, tls_servers: StartServer, start_gateway: StartGateway, sni: str
) -> None:
    s1 = await tls_servers("s1")
    gateway = await start_gateway(routes(servers={"s1": s1.port}))
    with pytest.raises((ConnectionError, ssl.SSLError, asyncio.IncompleteReadError)):
        await tls_session(pki, gateway.address[1], sni)
    assert gateway.stats().rejected["unknown-sni"] == 1
    assert s1.accepted == 0


async def test_plain_text_is_closed(tls_servers: StartServer, start_gateway: StartGateway) -> None:
    s1 = await tls_servers("s1")
    gateway = await start_gateway(routes(servers={"s1": s1.port}))
    reader, writer = await asyncio.open_connection(*gateway.address)
    writer.write(b"GET / HTTP/1.1\r\nHost: s1.server.dc1.consul\r\n\r\n")
    assert await until_closed(reader) == b""
    await close(writer)
    assert gateway.stats().rejected["not-tls"] == 1


@pytest.mark.parametrize("first_bytes", [b"", b"\x16\x03\x01"])
async def test_silent_client_is_closed_at_the_deadline(
    tls_servers: StartServer, start_gateway: StartGateway, first_bytes: bytes
) -> None:
    s1 = await tls_servers("s1")
    gateway = await start_gateway(routes(servers={"s1": s1.port}), hello_timeout=0.1)
    reader, writer = await asyncio.open_connection(*gateway.address)
    writer.write(first_bytes)
    assert await until_closed(reader) == b""
    await close(writer)
    assert gateway.stats().rejected["hello-timeout"] == 1
    assert gateway.active_connections == 0


async def test_oversized_hello_is_closed(
    tls_servers: StartServer, start_gateway: StartGateway
) -> None:
    s1 = await tls_servers("s1")
    gateway = await start_gateway(routes(servers={"s1": s1.port}), max_hello_size=64)
    reader, writer = await asyncio.open_connection(*gateway.address)
    writer.write(client_hello("s1.server.dc1.consul"))
    assert await until_closed(reader) == b""
    await close(writer)
    assert gateway.stats().rejected["hello-too-large"] == 1


async def test_connection_limit(tls_servers: StartServer, start_gateway: StartGateway) -> None:
    s1 = await tls_servers("s1")
    gateway = await start_gateway(routes(servers={"s1": s1.port}), max_connections=1)
    _, first_writer = await asyncio.open_connection(*gateway.address)
    second_reader, second_writer = await asyncio.open_connection(*gateway.address)
    assert await until_closed(second_reader) == b""
    assert gateway.stats().rejected["too-many-connections"] == 1
    assert gateway.active_connections == 1
    for writer in (first_writer, second_writer):
        await close(writer)


# --- upstream failures ------------------------------------------------------------------


async def test_killed_upstream_closes_client_and_others_keep_working(
    pki: Pki, tls_servers: StartServer, start_gateway: StartGateway
) -> None:
    s1, s2 = await tls_servers("s1"), await tls_servers("s2")
    gateway = await start_gateway(routes(servers={"s1": s1.port, "s2": s2.port}))
    port = gateway.address[1]
    _, doomed_reader, doomed_writer = await tls_session(pki, port, "s1.server.dc1.consul")
    _, other_reader, other_writer = await tls_session(pki, port, "s2.server.dc1.consul")
    assert await echo(doomed_reader, doomed_writer, b"before\n") == b"before\n"

    await s1.kill()

    assert await until_closed(doomed_reader) == b""
    assert await echo(other_reader, other_writer, b"still here\n") == b"still here\n"
    # The table still lists s1: new "any server" connections fail over to s2.
    for _ in range(4):
        greeting, _, writer = await tls_session(pki, port, "server.dc1.consul")
        assert greeting.startswith("s2 ")
        await close(writer)
    await close(doomed_writer)
    await close(other_writer)


async def test_no_reachable_upstream_closes_client(
    pki: Pki, tls_servers: StartServer, start_gateway: StartGateway
) -> None:
    s1 = await tls_servers("s1")
    dead_port = s1.port
    await s1.kill()
    gateway = await start_gateway(routes(servers={"s1": dead_port}))
    with pytest.raises((ConnectionError, ssl.SSLError, asyncio.IncompleteReadError)):
        await tls_session(pki, gateway.address[1], "s1.server.dc1.consul")
    stats = gateway.stats().routes["local-server:s1"]
    assert (stats.connect_failures, stats.unreachable) == (1, 1)


# --- byte stream fidelity --------------------------------------------------------------


async def test_hello_replayed_exactly_and_half_close_passes_both_ways(
    start_gateway: StartGateway,
) -> None:
    hello = client_hello("s1.server.dc1.consul")
    received: asyncio.Future[tuple[bytes, bytes]] = asyncio.get_running_loop().create_future()

    async def raw_upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        first = await reader.readexactly(len(hello))
        writer.write(b"server done")
        writer.write_eof()  # half-close towards the client, keep reading
        rest = await reader.read()
        received.set_result((first, rest))
        writer.close()

    upstream = await asyncio.start_server(raw_upstream, "127.0.0.1", 0)
    try:
        gateway = await start_gateway(routes(servers={"s1": upstream.sockets[0].getsockname()[1]}))
        reader, writer = await asyncio.open_connection(*gateway.address)
        writer.write(hello)
        assert await until_closed(reader) == b"server done"
        payload = bytes(range(256)) * 64
        writer.write(payload)
        writer.write_eof()
        async with asyncio.timeout(SAFETY):
            first, rest = await received
        assert first == hello
        assert rest == payload
        # Live connections' bytes count too, so no need to wait for the close.
        stats = gateway.stats().routes["local-server:s1"]
        assert stats.bytes_to_upstream == len(hello) + len(payload)
        assert stats.bytes_to_downstream == len(b"server done")
        await close(writer)
    finally:
        upstream.close()
        await upstream.wait_closed()


async def test_bulk_both_directions_with_a_slow_reader(start_gateway: StartGateway) -> None:
    hello = client_hello("s1.server.dc1.consul")
    size = 8 * 1024 * 1024
    blob = hashlib.sha256(b"seed").digest() * (size // 32)
    upstream_saw: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def raw_upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(len(hello))
        writer.write(blob)
        await writer.drain()
        digest = hashlib.sha256(await reader.readexactly(size)).hexdigest()
        upstream_saw.set_result(digest)
        writer.close()

    upstream = await asyncio.start_server(raw_upstream, "127.0.0.1", 0)
    try:
        gateway = await start_gateway(
            routes(servers={"s1": upstream.sockets[0].getsockname()[1]}), write_buffer_limit=4096
        )
        reader, writer = await asyncio.open_connection(*gateway.address, limit=2**16)
        writer.write(hello)
        writer.write(blob)
        got = bytearray()
        async with asyncio.timeout(SAFETY * 3):
            while len(got) < size:
                chunk = await reader.read(65536)
                assert chunk
                got += chunk
                if len(got) % (1024 * 1024) < 65536:
                    await asyncio.sleep(0)  # a reader that yields, so buffers fill
            await writer.drain()
            assert await upstream_saw == hashlib.sha256(blob).hexdigest()
        assert bytes(got) == blob
        await close(writer)
    finally:
        upstream.close()
        await upstream.wait_closed()


async def test_idle_connection_is_closed(
    pki: Pki, tls_servers: StartServer, start_gateway: StartGateway
) -> None:
    s1 = await tls_servers("s1")
    gateway = await start_gateway(routes(servers={"s1": s1.port}), idle_timeout=0.2)
    greeting, reader, writer = await tls_session(pki, gateway.address[1], "s1.server.dc1.consul")
    assert greeting.startswith("s1 ")
    assert await until_closed(reader) == b""
    await close(writer)


# --- runtime changes and status ---------------------------------------------------------


async def test_route_table_swap_applies_to_new_connections(
    pki: Pki, tls_servers: StartServer, start_gateway: StartGateway
) -> None:
    s1, s2 = await tls_servers("s1"), await tls_servers("s2")
    gateway = await start_gateway(routes(servers={"s1": s1.port}))
    port = gateway.address[1]
    _, old_reader, old_writer = await tls_session(pki, port, "s1.server.dc1.consul")
    with pytest.raises((ConnectionError, ssl.SSLError, asyncio.IncompleteReadError)):
        await tls_session(pki, port, "s2.server.dc1.consul")

    gateway.update_routes(routes(servers={"s2": s2.port}))

    greeting, _, new_writer = await tls_session(pki, port, "s2.server.dc1.consul")
    assert greeting.startswith("s2 ")
    assert await echo(old_reader, old_writer, b"old\n") == b"old\n"
    await close(new_writer)
    await close(old_writer)


async def test_status_endpoint_reports_counters_and_routes(
    pki: Pki, tls_servers: StartServer, start_gateway: StartGateway
) -> None:
    s1 = await tls_servers("s1")
    gateway = await start_gateway(routes(servers={"s1": s1.port}))
    _, reader, writer = await tls_session(pki, gateway.address[1], "s1.server.dc1.consul")
    await echo(reader, writer, b"x\n")
    status = StatusServer(gateway)
    host, port = await status.start("127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://{host}:{port}/v1/gateway/status") as response:
                assert response.status == 200
                body = await response.json()
            async with session.get(f"http://{host}:{port}/v1/gateway/routes") as response:
                table = await response.json()
    finally:
        await status.close()
        await close(writer)
    route = body["routes"]["local-server:s1"]
    assert route["connections"] == 1
    assert route["active"] == 1
    assert route["bytes_to_upstream"] > 0
    assert route["bytes_to_downstream"] > 0
    assert body["active_connections"] == 1
    assert body["rejected"]["unknown-sni"] == 0
    assert table["routes"]["s1.server.dc1.consul"]["label"] == "local-server:s1"


def test_config_validates() -> None:
    with pytest.raises(ValueError, match="hello_timeout must be positive"):
        GatewayConfig(hello_timeout=0)
    with pytest.raises(ValueError, match="max_connections must be at least 1"):
        GatewayConfig(max_connections=0)
    with pytest.raises(ValueError, match="write_buffer_limit"):
        GatewayConfig(write_buffer_limit=10)
    with pytest.raises(ValueError, match="max_hello_size must be at least 64 bytes"):
        GatewayConfig(max_hello_size=8)
    with pytest.raises(ValueError, match="upstream_ejection must not be negative"):
        GatewayConfig(upstream_ejection=-1)
    assert GatewayConfig(upstream_ejection=0).upstream_ejection == 0  # 0: never skip


async def test_counters_are_logged_periodically(
    tls_servers: StartServer, start_gateway: StartGateway
) -> None:
    s1 = await tls_servers("s1")
    seen = asyncio.Event()
    records: list[logging.LogRecord] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage() == "gateway counters":
                records.append(record)
                seen.set()

    handler = Capture()
    logger = logging.getLogger("wanfed.gateway")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        gateway = MeshGateway(
            routes(servers={"s1": s1.port}), GatewayConfig(stats_log_interval=0.05)
        )
        await gateway.start("127.0.0.1", 0)
        try:
            async with asyncio.timeout(SAFETY):
                await seen.wait()
        finally:
            await gateway.close()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    stats = records[0].__dict__["stats"]
    assert stats["active_connections"] == 0
    assert "unknown-sni" in stats["rejected"]


async def test_hostname_upstream_is_resolved_at_connect_time(
    pki: Pki, tls_servers: StartServer, start_gateway: StartGateway
) -> None:
    s1 = await tls_servers("s1")
    table = RouteTable(
        local_dc="dc1",
        domain="consul",
        exact={"s1.server.dc1.consul": Route("local-server:s1", (Upstream("localhost", s1.port),))},
    )
    gateway = await start_gateway(table)
    greeting, _, writer = await tls_session(pki, gateway.address[1], "s1.server.dc1.consul")
    assert greeting.startswith("s1 ")
    await close(writer)


async def test_unusable_upstream_name_is_one_failed_candidate(
    pki: Pki, tls_servers: StartServer, start_gateway: StartGateway
) -> None:
    # A 64-character label cannot be encoded for DNS: that candidate fails
    # (not a network error) and the gateway moves on to the next one.
    s1 = await tls_servers("s1")
    bad = Upstream("x" * 64 + ".example", 8300)
    good = Upstream("127.0.0.1", s1.port)
    both = Route("local-server:s1", (bad, good))
    gateway = await start_gateway(
        RouteTable(local_dc="dc1", domain="consul", exact={"s1.server.dc1.consul": both})
    )
    for _ in range(3):
        greeting, _, writer = await tls_session(pki, gateway.address[1], "s1.server.dc1.consul")
        assert greeting.startswith("s1 ")
        await close(writer)

    gateway.update_routes(
        RouteTable(
            local_dc="dc1",
            domain="consul",
            exact={"s1.server.dc1.consul": Route("local-server:s1", (bad,))},
        )
    )
    with pytest.raises((ConnectionError, ssl.SSLError, asyncio.IncompleteReadError)):
        await tls_session(pki, gateway.address[1], "s1.server.dc1.consul")
    assert gateway.stats().routes["local-server:s1"].unreachable == 1


@pytest.fixture
def black_hole() -> Iterator[int]:
    """The port of a listener whose accept queue is full: it drops SYNs, so a
    connect to it hangs until the connector's own timeout, like a vanished host."""
    listener = socket.socket()
    fillers: list[socket.socket] = []
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = int(listener.getsockname()[1])
        for _ in range(3):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        yield port
    finally:
        for sock in (*fillers, listener):
            sock.close()


async def test_upstream_connect_timeout(
    pki: Pki, start_gateway: StartGateway, black_hole: int
) -> None:
    gateway = await start_gateway(routes(servers={"s1": black_hole}), connect_timeout=0.1)
    with pytest.raises((ConnectionError, ssl.SSLError, asyncio.IncompleteReadError)):
        await tls_session(pki, gateway.address[1], "s1.server.dc1.consul")
    stats = gateway.stats().routes["local-server:s1"]
    assert (stats.connect_failures, stats.unreachable) == (1, 1)


async def test_an_upstream_that_timed_out_is_skipped_for_a_while(
    pki: Pki, tls_servers: StartServer, start_gateway: StartGateway, black_hole: int
) -> None:
    """A black-holed upstream (an address that vanished) costs the first client
    the connect timeout; the next ones are closed at once instead of each waiting
    on it again, and a working candidate beside it is used without delay."""
    gateway = await start_gateway(
        routes(servers={"s1": black_hole}), connect_timeout=0.2, upstream_ejection=60.0
    )
    for _ in range(3):
        with pytest.raises((ConnectionError, ssl.SSLError, asyncio.IncompleteReadError)):
            await tls_session(pki, gateway.address[1], "s1.server.dc1.consul")
    stats = gateway.stats().routes["local-server:s1"]
    assert (stats.connect_failures, stats.unreachable) == (1, 3)

    s1 = await tls_servers("s1")
    dead = Upstream("127.0.0.1", black_hole)
    both = Route("local-server:s1", (dead, Upstream("127.0.0.1", s1.port)))
    gateway.update_routes(
        RouteTable(local_dc="dc1", domain="consul", exact={"s1.server.dc1.consul": both})
    )
    for _ in range(5):
        greeting, _, writer = await tls_session(pki, gateway.address[1], "s1.server.dc1.consul")
        assert greeting.startswith("s1 ")
        await close(writer)
    assert gateway.stats().routes["local-server:s1"].connect_failures == 1


async def test_a_pending_candidate_does_not_hold_the_client_when_another_works(
    pki: Pki,
    tls_servers: StartServer,
    start_gateway: StartGateway,
    black_hole: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The black hole is dialled first and never answers; the working candidate
    is dialled beside it after the stagger, long before the connect timeout."""
    monkeypatch.setattr(random, "shuffle", lambda items: None)  # candidates in route order
    s1 = await tls_servers("s1")
    good, dead = Upstream("127.0.0.1", s1.port), Upstream("127.0.0.1", black_hole)
    table = RouteTable(
        local_dc="dc1",
        domain="consul",
        exact={"s1.server.dc1.consul": Route("local-server:s1", (good, dead))},  # pops dead
    )
    gateway = await start_gateway(table, connect_timeout=60.0)
    for _ in range(3):
        greeting, reader, writer = await tls_session(
            pki, gateway.address[1], "s1.server.dc1.consul"
        )
        assert greeting.startswith("s1 ")
        assert await echo(reader, writer, b"still spliced\n") == b"still spliced\n"
        await close(writer)
    stats = gateway.stats().routes["local-server:s1"]
    # The abandoned attempts were neither failures nor leaks.
    assert (stats.connect_failures, stats.unreachable) == (0, 0)
    assert gateway.upstream_health.ejected(0.0) == []


async def test_hello_data_and_eof_sent_at_once_all_arrive(start_gateway: StartGateway) -> None:
    # The client is done before the gateway has even dialed: the bytes and
    # the EOF must both reach the upstream, in order.
    hello = client_hello("s1.server.dc1.consul")
    received: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def raw_upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        everything = await reader.read()
        received.set_result(everything)
        writer.write(b"got %d" % len(everything))
        writer.close()

    upstream = await asyncio.start_server(raw_upstream, "127.0.0.1", 0)
    try:
        gateway = await start_gateway(routes(servers={"s1": upstream.sockets[0].getsockname()[1]}))
        reader, writer = await asyncio.open_connection(*gateway.address)
        writer.write(hello + b"early data")
        writer.write_eof()
        assert await until_closed(reader) == b"got %d" % (len(hello) + 10)
        async with asyncio.timeout(SAFETY):
            assert await received == hello + b"early data"
        await close(writer)
    finally:
        upstream.close()
        await upstream.wait_closed()


async def test_every_connection_is_counted_once_and_nothing_leaks(
    pki: Pki, tls_servers: StartServer, start_gateway: StartGateway
) -> None:
    s1 = await tls_servers("s1")
    gateway = await start_gateway(routes(servers={"s1": s1.port}), hello_timeout=0.2)
    host, port = gateway.address

    async def good() -> None:
        _, reader, writer = await tls_session(pki, port, "s1.server.dc1.consul")
        assert await echo(reader, writer, b"hi\n") == b"hi\n"
        await close(writer)

    async def unknown() -> None:
        with pytest.raises((ConnectionError, ssl.SSLError, asyncio.IncompleteReadError)):
            await tls_session(pki, port, "nobody.example")

    async def raw(first: bytes, *, reset: bool = False) -> None:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(first)
        if reset:
            await writer.drain()
            writer.transport.abort()
            return
        assert await until_closed(reader) == b""
        await close(writer)

    jobs = [good() for _ in range(8)]
    jobs += [unknown() for _ in range(4)]
    jobs += [raw(b"SSH-2.0-hello\r\n") for _ in range(4)]
    jobs += [raw(b"") for _ in range(3)]
    jobs += [raw(b"\x16\x03\x01\x02\x00", reset=True) for _ in range(3)]
    async with asyncio.timeout(SAFETY * 2):
        await asyncio.gather(*jobs)
        await gateway.drain()

    stats = gateway.stats()
    assert stats.active_connections == 0
    assert stats.routes["local-server:s1"].connections == 8
    assert stats.routes["local-server:s1"].active == 0
    rejected = {reason: n for reason, n in stats.rejected.items() if n}
    assert rejected == {
        "unknown-sni": 4,
        "not-tls": 4,
        "hello-timeout": 3,
        "closed-before-hello": 3,
    }
    assert stats.accepted == 8 + sum(rejected.values())


async def test_hello_split_into_tiny_segments_is_replayed_exactly(
    start_gateway: StartGateway,
) -> None:
    hello = client_hello("s1.server.dc1.consul")
    received: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def raw_upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.set_result(await reader.read())
        writer.close()

    upstream = await asyncio.start_server(raw_upstream, "127.0.0.1", 0)
    try:
        gateway = await start_gateway(routes(servers={"s1": upstream.sockets[0].getsockname()[1]}))
        reader, writer = await asyncio.open_connection(*gateway.address)
        for offset in range(0, len(hello), 7):
            writer.write(hello[offset : offset + 7])
            await writer.drain()
        writer.write(b"after")
        writer.write_eof()
        async with asyncio.timeout(SAFETY):
            assert await received == hello + b"after"
        assert await until_closed(reader) == b""
        await close(writer)
    finally:
        upstream.close()
        await upstream.wait_closed()


def _garbage() -> list[bytes]:
    """Seeded random junk plus every kind of broken ClientHello."""
    rng = random.Random(1234)
    hello = client_hello("s1.server.dc1.consul")
    cases = [rng.randbytes(rng.randrange(1, 600)) for _ in range(6)]
    cases += [b"\x16" + rng.randbytes(rng.randrange(8, 300)) for _ in range(4)]
    cases += [hello[:cut] for cut in (1, 5, 9, 100, len(hello) - 1)]
    corrupted = bytearray(hello)
    corrupted[5] = 2  # a ServerHello where the ClientHello should be
    cases.append(bytes(corrupted))
    return cases


async def test_garbage_never_reaches_an_upstream(start_gateway: StartGateway) -> None:
    reached = 0

    async def upstream_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal reached
        reached += 1
        writer.close()

    upstream = await asyncio.start_server(upstream_handler, "127.0.0.1", 0)
    try:
        gateway = await start_gateway(
            routes(servers={"s1": upstream.sockets[0].getsockname()[1]}), hello_timeout=0.2
        )
        cases = _garbage()

        async def send(payload: bytes) -> None:
            reader, writer = await asyncio.open_connection(*gateway.address)
            writer.write(payload)
            assert await until_closed(reader) == b""
            await close(writer)

        async with asyncio.timeout(SAFETY * 2):
            await asyncio.gather(*(send(case) for case in cases))
            await gateway.drain()
        stats = gateway.stats()
        assert reached == 0
        assert stats.routes == {}
        assert sum(stats.rejected.values()) == len(cases) == stats.accepted
    finally:
        upstream.close()
        await upstream.wait_closed()
