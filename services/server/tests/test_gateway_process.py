"""``wanfed gateway`` against a real server: a one-server DC with mutual TLS on its
RPC port and its HTTP API, both on loopback, and the gateway process in the same
loop (one test runs the real command as a child process).

What must hold: the gateway registers itself as an opted-in mesh gateway with a
TTL check it keeps passing itself (no server dials it), and a gateway that
vanishes turns critical once the TTL passes; a TLS client naming a server
reaches that server's RPC handler through it with mutual TLS end to end; local
names route only to the servers' own directory, never to a catalog row of
service ``consul``; a federation-state write for another DC adds a route to
that DC's gateway; losing the HTTP server it watches moves it to the next one;
shutdown deregisters.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import msgspec
import pytest

from wanfed_agent.config import load_config
from wanfed_fsm import (
    CheckServiceNode,
    FederationState,
    FederationStateRequest,
    Node,
    Register,
    RegisterRequest,
    Service,
    ServiceAddress,
    gateway_wan_address,
)
from wanfed_proto import Alpn, RpcClient, client_context, dial_alpn
from wanfed_server.gateway import GatewayProcess, GatewaySettings
from wanfed_server.http import HttpApi, start_http_api
from wanfed_server.runtime import Server

if TYPE_CHECKING:
    from .conftest import RuntimePki  # type: ignore[import-not-found]

_GATEWAY = [
    sys.executable,
    "-c",
    "import sys; from wanfed_server.cli import main; sys.exit(main())",
]


@dataclass
class Datacenter:
    server: Server
    http: HttpApi

    @property
    def url(self) -> str:
        return f"http://{self.http.address}"


async def _start_datacenter(
    runtime_pki: RuntimePki, directory: Path, free_port: Callable[[], int], node: str, dc: str
) -> Datacenter:
    """A one-server datacenter (its own primary) with mTLS on RPC, and its HTTP API."""
    config = load_config(
        overrides={
            "node_name": node,
            "datacenter": dc,
            "server": True,
            "bootstrap": True,
            "data_dir": str(directory / node),
            "bind_addr": "127.0.0.1",
            "ports": {"server": 0, "http": 0, "raft": free_port(), "serf_wan": free_port()},
            "encrypt": base64.b64encode(os.urandom(32)).decode(),
            "tls": runtime_pki.mutual_tls(node),
        }
    )
    server = Server(config)
    await server.start()
    await server.wait_ready()
    return Datacenter(server, await start_http_api(server))


@pytest.fixture
async def dc1(
    runtime_pki: RuntimePki, tmp_path: Path, free_port: Callable[[], int]
) -> AsyncIterator[Datacenter]:
    dc = await _start_datacenter(runtime_pki, tmp_path, free_port, "s1", "dc1")
    yield dc
    await dc.http.close()
    await dc.server.stop()


@pytest.fixture
async def dc2(
    runtime_pki: RuntimePki, tmp_path: Path, free_port: Callable[[], int]
) -> AsyncIterator[Datacenter]:
    dc = await _start_datacenter(runtime_pki, tmp_path, free_port, "r1", "dc2")
    yield dc
    await dc.http.close()
    await dc.server.stop()


def _settings(*urls: str, **changes: Any) -> GatewaySettings:
    settings = GatewaySettings(
        http_urls=urls,
        bind_host="127.0.0.1",
        bind_port=0,
        lan_host="127.0.0.1",
        lan_port=0,
        wan_host="127.0.0.1",
        wan_port=0,
        node="gw1",
        wait=5.0,
        datacenters_interval=0.2,
        backoff_initial=0.05,
        backoff_cap=0.2,
    )
    return msgspec.structs.replace(settings, **changes)


@pytest.fixture
async def start_gateway() -> AsyncIterator[Callable[[GatewaySettings], Awaitable[GatewayProcess]]]:
    started: list[GatewayProcess] = []

    async def start(settings: GatewaySettings) -> GatewayProcess:
        process = GatewayProcess(settings)
        started.append(process)
        await asyncio.wait_for(process.start(), 10)
        return process

    yield start
    for process in started:
        await process.stop()


async def _get(url: str, path: str, **params: str) -> tuple[Any, int]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(url + path, params=params) as response,
    ):
        assert response.status == 200, await response.text()
        return await response.json(), int(response.headers.get("X-Consul-Index", "0"))


async def _until(url: str, path: str, done: Callable[[Any], bool]) -> Any:
    """Follow ``path`` with blocking queries until ``done(answer)``."""
    index = 0
    async with asyncio.timeout(20):
        while True:
            params = {"index": str(index), "wait": "5s"} if index else {}
            body, index = await _get(url, path, **params)
            if done(body):
                return body


async def _until_route(process: GatewayProcess, sni: str, present: bool = True) -> None:
    async with asyncio.timeout(20):
        while (process.gateway.routes.lookup(sni) is not None) != present:
            process.routes_changed.clear()
            await process.routes_changed.wait()


async def test_registers_itself_as_an_opted_in_gateway_with_a_passing_ttl_check(
    dc1: Datacenter,
    start_gateway: Callable[[GatewaySettings], Awaitable[GatewayProcess]],
) -> None:
    process = await start_gateway(_settings(dc1.url, wan_host="198.18.0.9", wan_port=443))
    port = process.address[1]
    entries = await _until(dc1.url, "/v1/catalog/service/mesh-gateway", bool)
    (entry,) = entries
    assert entry["Node"] == "gw1"
    assert entry["Datacenter"] == "dc1"
    assert entry["ServiceKind"] == "mesh-gateway"
    assert entry["ServiceID"] == "mesh-gateway"
    assert entry["ServiceMeta"] == {"consul-wan-federation": "1"}
    assert entry["ServicePort"] == port
    assert entry["ServiceTaggedAddresses"] == {
        "lan": {"Address": "127.0.0.1", "Port": port},
        "wan": {"Address": "198.18.0.9", "Port": 443},
    }
    assert entry["TaggedAddresses"] == {"lan": "127.0.0.1", "wan": "198.18.0.9"}

    def check_passing(health: list[dict[str, Any]]) -> bool:
        checks = [c for e in health for c in e["Checks"] if c["CheckID"] == "service:mesh-gateway"]
        return bool(checks) and checks[0]["Status"] == "passing"

    dump, _ = await _get(dc1.url, "/v1/internal/service-dump", kind="mesh-gateway")
    assert [(e["Node"]["Node"], e["Service"]["Kind"]) for e in dump] == [("gw1", "mesh-gateway")]
    async with (
        aiohttp.ClientSession() as session,
        session.get(dc1.url + "/v1/internal/service-dump", params={"kind": "web"}) as bad,
    ):
        assert bad.status == 400
        assert "Invalid kind 'web'" in await bad.text()

    health = await _until(dc1.url, "/v1/health/service/mesh-gateway", check_passing)
    (check,) = [c for c in health[0]["Checks"] if c["CheckID"] == "service:mesh-gateway"]
    assert check["Name"] == "Mesh Gateway Alive"
    assert check["Definition"]["TTL"] == "30s"
    assert check["Definition"]["TCP"] == "", "no server ever dials the gateway"
    assert check["Definition"]["DeregisterCriticalServiceAfter"] == "6h"
    assert re.match(r"mesh gateway process alive; refresh \d+ at \d{4}-", check["Output"])


def _gateway_check(health: list[dict[str, Any]]) -> dict[str, Any] | None:
    checks = [c for e in health for c in e["Checks"] if c["CheckID"] == "service:mesh-gateway"]
    return checks[0] if checks else None


async def test_refreshes_keep_the_check_passing_and_a_vanished_gateway_turns_critical(
    dc1: Datacenter,
    start_gateway: Callable[[GatewaySettings], Awaitable[GatewayProcess]],
) -> None:
    process = await start_gateway(_settings(dc1.url, check_ttl="2s"))

    def refreshed(health: list[dict[str, Any]]) -> bool:
        check = _gateway_check(health)
        return check is not None and "; refresh 4 at " in check["Output"]

    # Four writes, 2/3 s apart: the catalog saw the gateway past its first TTL.
    check = _gateway_check(await _until(dc1.url, "/v1/health/service/mesh-gateway", refreshed))
    assert check is not None
    assert check["Status"] == "passing"

    # A crash: no deregistration, no more refreshes. Nothing dials the gateway;
    # the leader's TTL expiry alone turns it critical.
    await process.stop(deregister=False)

    def critical(health: list[dict[str, Any]]) -> bool:
        check = _gateway_check(health)
        return check is not None and check["Status"] == "critical"

    check = _gateway_check(await _until(dc1.url, "/v1/health/service/mesh-gateway", critical))
    assert check is not None
    assert check["Output"] == "TTL expired"


async def test_a_catalog_row_of_service_consul_on_a_foreign_address_is_never_routed(
    dc1: Datacenter,
    start_gateway: Callable[[GatewaySettings], Awaitable[GatewayProcess]],
    runtime_pki: RuntimePki,
) -> None:
    accepted = 0
    counted = asyncio.Event()

    def count(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        counted.set()
        writer.close()

    ghost = await asyncio.start_server(count, "127.0.0.1", 0)
    try:
        ghost_port = ghost.sockets[0].getsockname()[1]
        # Written through Raft itself: whether the catalog endpoints refuse such
        # a row or not, the gateway must not depend on it. (Once the leader
        # registered the real server, this server leads.)
        await _until(dc1.url, "/v1/health/service/consul", bool)
        await dc1.server.consensus.apply(
            Register(
                request=RegisterRequest(
                    node=Node(node="ghost", address="127.0.0.1", datacenter="dc1"),
                    service=Service(id="consul", service="consul", port=ghost_port),
                )
            )
        )
        await _until(
            dc1.url,
            "/v1/health/service/consul",
            lambda entries: any(e["Node"]["Node"] == "ghost" for e in entries),
        )
        process = await start_gateway(_settings(dc1.url))
        await _until_route(process, "server.dc1.consul")
        route = process.gateway.routes.lookup("server.dc1.consul")
        assert route is not None
        assert [str(u) for u in route.upstreams] == [dc1.server.rpc_address]
        assert process.gateway.routes.lookup("ghost.server.dc1.consul") is None

        host, port = process.address
        client = runtime_pki.certs["client"]
        context = client_context(runtime_pki.ca, client.cert, client.key, alpn=[Alpn.RPC_MULTI])
        for _ in range(10):  # the catalog-fed gateway sent every other one to the ghost
            connection = await dial_alpn(
                f"{host}:{port}", "server.dc1.consul", Alpn.RPC_MULTI, context
            )
            async with RpcClient(connection) as rpc:
                assert await rpc.call("Status.Ping", None, type=bool, timeout=5)
        # One connection of our own: the listener accepts in order, so once it is
        # counted any connection the gateway made before it would have been too.
        _, writer = await asyncio.open_connection("127.0.0.1", ghost_port)
        writer.close()
        await asyncio.wait_for(counted.wait(), 10)
        assert accepted == 1, "the gateway connected to the address of a catalog row"
    finally:
        ghost.close()
        await ghost.wait_closed()


async def test_without_expose_servers_there_is_no_federation_meta(
    dc1: Datacenter,
    start_gateway: Callable[[GatewaySettings], Awaitable[GatewayProcess]],
) -> None:
    await start_gateway(_settings(dc1.url, expose_servers=False))
    (entry,) = await _until(dc1.url, "/v1/catalog/service/mesh-gateway", bool)
    assert entry["ServiceMeta"] == {}


async def test_named_server_is_reached_through_the_gateway_with_mutual_tls(
    dc1: Datacenter,
    start_gateway: Callable[[GatewaySettings], Awaitable[GatewayProcess]],
    runtime_pki: RuntimePki,
) -> None:
    process = await start_gateway(_settings(dc1.url, status_host="127.0.0.1"))
    await _until_route(process, "s1.server.dc1.consul")
    await _until_route(process, "server.dc1.consul")
    host, port = process.address
    client = runtime_pki.certs["client"]
    context = client_context(runtime_pki.ca, client.cert, client.key, alpn=[Alpn.RPC_MULTI])
    for sni in ("s1.server.dc1.consul", "server.dc1.consul"):
        connection = await dial_alpn(f"{host}:{port}", sni, Alpn.RPC_MULTI, context)
        async with RpcClient(connection) as rpc:
            assert await rpc.call("Status.Ping", None, type=bool, timeout=5)
    assert process.status_address is not None
    status_url = "http://{}:{}".format(*process.status_address)
    status, _ = await _get(status_url, "/v1/gateway/status")
    assert {"local-server:s1", "local-any"} <= set(status["routes"]), status


async def test_federation_state_write_for_a_remote_dc_adds_its_route(
    dc1: Datacenter,
    start_gateway: Callable[[GatewaySettings], Awaitable[GatewayProcess]],
) -> None:
    process = await start_gateway(_settings(dc1.url))
    remote_gateway = CheckServiceNode(
        node=Node(node="dc2-gw", address="198.18.1.1", datacenter="dc2"),
        service=Service(
            kind="mesh-gateway",
            id="mesh-gateway",
            service="mesh-gateway",
            address="198.18.1.1",
            port=8443,
            tagged_addresses={"wan": ServiceAddress(address="198.18.1.2", port=443)},
            meta={"consul-wan-federation": "1"},
        ),
    )
    request = FederationStateRequest(
        op="upsert", state=FederationState(datacenter="dc2", mesh_gateways=[remote_gateway])
    )
    assert await dc1.server.rpc("FederationState.Apply", request, bool)
    await _until_route(process, "server.dc2.consul")
    route = process.gateway.routes.lookup("r1.server.dc2.consul")
    assert route is not None
    assert [str(u) for u in route.upstreams] == ["198.18.1.2:443"]

    request = FederationStateRequest(op="delete", state=FederationState(datacenter="dc2"))
    assert await dc1.server.rpc("FederationState.Apply", request, bool)
    await _until_route(process, "server.dc2.consul", present=False)


async def test_a_remote_server_is_reached_through_both_datacenters_gateways(
    dc1: Datacenter,
    dc2: Datacenter,
    start_gateway: Callable[[GatewaySettings], Awaitable[GatewayProcess]],
    runtime_pki: RuntimePki,
) -> None:
    gw2 = await start_gateway(_settings(dc2.url, node="gw2"))
    await _until_route(gw2, "r1.server.dc2.consul")
    host2, port2 = gw2.address
    # dc1 learns dc2's gateway the way replication would deliver it
    # (a critical gateway is never routed to: wait for its passing registration)
    (gw2_entry,) = await _until(
        dc2.url,
        "/v1/health/service/mesh-gateway",
        lambda entries: bool(entries) and entries[0]["Checks"][0]["Status"] == "passing",
    )
    record = msgspec.convert(gw2_entry, CheckServiceNode)
    assert gateway_wan_address(record) == (host2, port2)
    request = FederationStateRequest(
        op="upsert", state=FederationState(datacenter="dc2", mesh_gateways=[record])
    )
    assert await dc1.server.rpc("FederationState.Apply", request, bool)
    gw1 = await start_gateway(_settings(dc1.url, node="gw1"))
    await _until_route(gw1, "server.dc2.consul")

    client = runtime_pki.certs["client"]
    context = client_context(runtime_pki.ca, client.cert, client.key, alpn=[Alpn.RPC_MULTI])
    host1, port1 = gw1.address
    connection = await dial_alpn(
        f"{host1}:{port1}", "r1.server.dc2.consul", Alpn.RPC_MULTI, context
    )
    async with RpcClient(connection) as rpc:
        assert await rpc.call("Status.Ping", None, type=bool, timeout=5)
    assert "remote:dc2" in gw1.gateway.stats().routes
    assert "local-server:r1" in gw2.gateway.stats().routes


async def test_registration_is_restored_after_an_operator_deregisters_it(
    dc1: Datacenter,
    start_gateway: Callable[[GatewaySettings], Awaitable[GatewayProcess]],
) -> None:
    process = await start_gateway(_settings(dc1.url))
    await _until(dc1.url, "/v1/catalog/service/mesh-gateway", bool)
    process.registered.clear()
    async with aiohttp.ClientSession() as session:
        response = await session.put(dc1.url + "/v1/catalog/deregister", json={"Node": "gw1"})
        assert response.status == 200
    await asyncio.wait_for(process.registered.wait(), 20)
    (entry,) = await _until(dc1.url, "/v1/catalog/service/mesh-gateway", bool)
    assert entry["Node"] == "gw1"


async def test_clean_stop_deregisters(
    dc1: Datacenter,
    start_gateway: Callable[[GatewaySettings], Awaitable[GatewayProcess]],
) -> None:
    process = await start_gateway(_settings(dc1.url))
    await _until(dc1.url, "/v1/catalog/service/mesh-gateway", bool)
    await process.stop()
    body, _ = await _get(dc1.url, "/v1/catalog/service/mesh-gateway")
    assert body == []
    nodes, _ = await _get(dc1.url, "/v1/catalog/nodes")
    assert "gw1" not in {n["Node"] for n in nodes}


async def test_losing_the_watched_http_server_switches_to_the_next_address(
    dc1: Datacenter,
    start_gateway: Callable[[GatewaySettings], Awaitable[GatewayProcess]],
) -> None:
    second = await start_http_api(dc1.server)
    try:
        process = await start_gateway(_settings(dc1.url, f"http://{second.address}"))
        await _until_route(process, "s1.server.dc1.consul")
        assert process.pool.current == dc1.url
        await dc1.http.close()
        # a change made after the loss still arrives: the watches moved on
        remote = CheckServiceNode(
            node=Node(node="dc3-gw", address="198.18.3.1", datacenter="dc3"),
            service=Service(
                kind="mesh-gateway",
                service="mesh-gateway",
                address="198.18.3.1",
                port=8443,
                meta={"consul-wan-federation": "1"},
            ),
        )
        request = FederationStateRequest(
            op="upsert", state=FederationState(datacenter="dc3", mesh_gateways=[remote])
        )
        assert await dc1.server.rpc("FederationState.Apply", request, bool)
        await _until_route(process, "server.dc3.consul")
        assert process.pool.current == f"http://{second.address}"
    finally:
        await second.close()


async def test_the_command_registers_serves_and_deregisters_on_sigterm(
    dc1: Datacenter, free_port: Callable[[], int]
) -> None:
    port = free_port()
    child = await asyncio.create_subprocess_exec(
        *_GATEWAY,
        "gateway",
        "-register",
        "-expose-servers",
        "-node",
        "gw-cli",
        "-address",
        f"127.0.0.1:{port}",
        "-wan-address",
        "198.18.0.7",
        "-http-addr",
        f"127.0.0.1:1,{dc1.http.address}",
        stderr=asyncio.subprocess.PIPE,
    )
    assert child.stderr is not None
    try:
        async with asyncio.timeout(20):
            while True:
                line = (await child.stderr.readline()).decode()
                assert line, "the gateway exited before it was running"
                if re.search(r"gateway running listen=127\.0\.0\.1:\d+ dc=dc1", line):
                    break
        (entry,) = await _until(dc1.url, "/v1/catalog/service/mesh-gateway", bool)
        assert entry["Node"] == "gw-cli"
        assert entry["ServicePort"] == port
        assert entry["ServiceTaggedAddresses"]["wan"] == {"Address": "198.18.0.7", "Port": 8443}
        child.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(child.wait(), 15) == 0
        body, _ = await _get(dc1.url, "/v1/catalog/service/mesh-gateway")
        assert body == []
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
