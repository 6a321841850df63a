"""WAN federation via mesh gateways, in one process on loopback.

Three datacenters, one server and one gateway each, every process on its own
127.x address: dc1 (primary) at 127.0.1.x, dc2 at 127.0.2.x, dc3 at 127.0.3.x.
The gateways are the real data plane (``MeshGateway``); what feeds their route
tables here is a small loop over their own server's store, standing in for
the ``wanfed gateway`` watchers. The secondaries know only ``primary_gateways``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import pytest

from wanfed_agent.config import AgentConfig, load_config
from wanfed_agent.tls import PemPair, create_ca, create_server_cert
from wanfed_fsm import (
    DCSpecificRequest,
    IndexedNodes,
    IndexedServices,
    Node,
    ReadTxn,
    RegisterRequest,
    Service,
    ServiceAddress,
    blocking_query,
)
from wanfed_server.gateway import GatewayConfig, MeshGateway, RouteInputs, build_route_table
from wanfed_server.runtime import Server, ServerOptions
from wanfed_server.runtime._wanfed import FederationOptions

DCS = ("dc1", "dc2", "dc3")

FAST = ServerOptions(
    hold_timeout=10.0,
    fast_gossip=True,
    wan_join_interval=0.2,
    federation=FederationOptions(
        replication_wait=1.0,
        replication_rate=50.0,
        replication_burst=10,
        ae_sync_interval=0.1,
        ae_wait=1.0,
        locator_rate=50.0,
        locator_burst=10,
        leader_loop_backoff_cap=0.5,
        locator_wait=1.0,
        prune_interval=3600.0,
    ),
)
PRUNE_FAST = msgspec.structs.replace(
    FAST, federation=msgspec.structs.replace(FAST.federation, prune_interval=0.5)
)


@dataclass
class Datacenter:
    name: str
    index: int
    server: Server | None = None
    config: AgentConfig | None = None
    gateway: MeshGateway | None = None
    feeder: asyncio.Task[None] | None = None
    extra: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def server_ip(self) -> str:
        return f"127.0.{self.index}.1"

    @property
    def gateway_ip(self) -> str:
        return f"127.0.{self.index}.2"

    @property
    def gateway_address(self) -> str:
        assert self.gateway is not None
        host, port = self.gateway.address
        return f"{host}:{port}"

    def require_server(self) -> Server:
        assert self.server is not None
        return self.server


def gateway_inputs(txn: ReadTxn, dc: str) -> tuple[int, RouteInputs]:
    i1, servers = txn.check_service_nodes("consul", passing_only=False)
    i2, gateways = txn.mesh_gateways_by_datacenter()
    return max(i1, i2), RouteInputs(local_dc=dc, local_servers=servers, fed_state_gateways=gateways)


async def feed_gateway(dc: Datacenter) -> None:
    """Keep the gateway's routes equal to what its own server's store says."""
    server, gateway = dc.require_server(), dc.gateway
    assert gateway is not None
    index = 0
    while True:
        meta, inputs = await blocking_query(
            server.store,
            DCSpecificRequest(min_query_index=index, max_query_time=5),
            lambda txn: gateway_inputs(txn, dc.name),
        )
        index = meta.index
        gateway.update_routes(build_route_table(inputs))


def write_certs(tmp: Path, ca: PemPair, dc: str) -> dict[str, str | bool]:
    pair = create_server_cert(ca, dc, "consul", "s1")
    folder = tmp / dc
    folder.mkdir()
    (folder / "ca.pem").write_bytes(ca.cert_pem)
    (folder / "cert.pem").write_bytes(pair.cert_pem)
    (folder / "key.pem").write_bytes(pair.key_pem)
    return {
        "ca_file": str(folder / "ca.pem"),
        "cert_file": str(folder / "cert.pem"),
        "key_file": str(folder / "key.pem"),
        "verify_incoming": True,
        "verify_outgoing": True,
    }


async def register_gateway(dc: Datacenter) -> None:
    host, port = dc.gateway_ip, int(dc.gateway_address.rsplit(":", 1)[1])
    address = ServiceAddress(address=host, port=port)
    await dc.require_server().rpc(
        "Catalog.Register",
        RegisterRequest(
            datacenter=dc.name,
            node=Node(node=f"{dc.name}-gw1", address=host, datacenter=dc.name),
            service=Service(
                kind="mesh-gateway",
                id="mesh-gateway",
                service="mesh-gateway",
                address=host,
                port=port,
                meta={"consul-wan-federation": "1"},
                tagged_addresses={"lan": address, "wan": address},
            ),
        ),
        bool,
    )


async def eventually(condition: Callable[[], bool], within: float, what: str) -> None:
    """Wait for a condition that several independent loops converge to."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"not within {within:.0f} s: {what}")
        await asyncio.sleep(0.05)


@pytest.fixture
async def federation(
    tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[dict[str, Datacenter]]:
    # Pruning runs hourly; only the pruning test shortens it, so that a DC
    # stopped on purpose elsewhere is not forgotten mid-test.
    options = PRUNE_FAST if request.node.get_closest_marker("fast_pruning") else FAST
    ca = create_ca()
    dcs = {name: Datacenter(name, i) for i, name in enumerate(DCS, start=1)}
    for dc in dcs.values():
        dc.gateway = MeshGateway(build_route_table(RouteInputs(local_dc=dc.name)), GatewayConfig())
        await dc.gateway.start(dc.gateway_ip, 0)
    try:
        for dc in dcs.values():
            overrides: dict[str, object] = {
                "node_name": "s1",
                "datacenter": dc.name,
                "primary_datacenter": "dc1",
                "server": True,
                "bootstrap": True,
                "data_dir": str(tmp_path / f"data-{dc.name}"),
                "bind_addr": dc.server_ip,
                "ports": {"server": 0, "serf_wan": 0},
                "connect": {"enabled": True, "enable_mesh_gateway_wan_federation": True},
                "tls": {"defaults": write_certs(tmp_path, ca, dc.name)},
                "primary_gateways_interval": "1s",
                "retry_interval_wan": "1s",
            }
            if dc.name != "dc1":
                # Discovery through a file: the operator's source of truth (#7339).
                listing = tmp_path / "primary-gateways.txt"
                listing.write_text(dcs["dc1"].gateway_address + "\n")
                overrides["primary_gateways"] = [f"provider=file path={listing}"]
            dc.config = load_config(overrides=overrides)
            dc.server = Server(dc.config, options=options)
            await dc.server.start()
        for dc in dcs.values():
            await dc.require_server().wait_ready()
            dc.feeder = asyncio.create_task(feed_gateway(dc))
            await register_gateway(dc)
        yield dcs
    finally:
        for dc in dcs.values():
            if dc.feeder is not None:
                dc.feeder.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await dc.feeder
            if dc.server is not None:
                await dc.server.stop()
            if dc.gateway is not None:
                await dc.gateway.close()


def wan_alive(server: Server) -> set[str]:
    return {m.name for m in server.members(wan=True) if m.status == 1}


def federation_states(server: Server) -> dict[str, int]:
    with server.store.read() as txn:
        return {s.datacenter: len(s.mesh_gateways) for s in txn.federation_states()[1]}


async def test_secondaries_bootstrap_from_primary_gateways_alone(
    federation: dict[str, Datacenter],
) -> None:
    servers = [dc.require_server() for dc in federation.values()]
    everyone = {"s1.dc1", "s1.dc2", "s1.dc3"}
    await eventually(
        lambda: all(wan_alive(s) == everyone for s in servers), 30, "one WAN pool of 3"
    )
    expected = {"dc1": 1, "dc2": 1, "dc3": 1}
    await eventually(
        lambda: all(federation_states(s) == expected for s in servers),
        30,
        "every DC holds every federation state",
    )
    # Cross-DC RPC, secondary to secondary: dc2 -> dc2-gw -> dc3-gw -> dc3's server.
    dc2, dc3 = federation["dc2"], federation["dc3"]
    reply = await dc2.require_server().rpc(
        "Catalog.ListServices", DCSpecificRequest(datacenter="dc3"), IndexedServices
    )
    assert "mesh-gateway" in reply.services
    assert dc2.gateway is not None
    assert dc3.gateway is not None
    assert dc2.gateway.stats().routes["remote:dc3"].connections >= 1
    assert dc3.gateway.stats().routes["local-server:s1"].connections >= 1
    # In steady state a secondary's leader reaches the primary through its own gateway.
    status = dc2.require_server().federation_status()
    assert status is not None
    route = next(r for r in status.routes if r.datacenter == "dc1")
    assert route.path == "local-gateways"
    assert route.candidates[0].address == dc2.gateway_address
    # ...and the bytes say so: dc2's gateway forwards to dc1's, which hands them to s1.
    dc1 = federation["dc1"]
    assert dc1.gateway is not None
    await dc2.require_server().rpc(
        "Catalog.ListNodes", DCSpecificRequest(datacenter="dc1"), IndexedNodes
    )
    assert dc2.gateway.stats().routes["remote:dc1"].bytes_to_upstream > 0
    assert dc1.gateway.stats().routes["local-server:s1"].bytes_to_upstream > 0


async def test_unknown_datacenter_is_no_path(federation: dict[str, Datacenter]) -> None:
    with pytest.raises(Exception, match="No path to datacenter"):
        await (
            federation["dc2"]
            .require_server()
            .rpc("Catalog.ListServices", DCSpecificRequest(datacenter="dc9"), IndexedServices)
        )


async def converged(federation: dict[str, Datacenter]) -> None:
    servers = [dc.require_server() for dc in federation.values()]
    expected = {"dc1": 1, "dc2": 1, "dc3": 1}
    await eventually(
        lambda: all(federation_states(s) == expected for s in servers),
        30,
        "every DC holds every federation state",
    )


async def replace_gateway(dc: Datacenter, *, new_address: bool) -> None:
    """Stop a DC's gateway and start a new one (same or new port), re-fed and re-registered."""
    assert dc.gateway is not None
    host, port = dc.gateway.address
    if dc.feeder is not None:
        dc.feeder.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await dc.feeder
    await dc.gateway.close()
    dc.gateway = MeshGateway(build_route_table(RouteInputs(local_dc=dc.name)), GatewayConfig())
    await dc.gateway.start(host, 0 if new_address else port)
    dc.feeder = asyncio.create_task(feed_gateway(dc))
    if new_address:
        await register_gateway(dc)


def route_to(server: Server, datacenter: str) -> tuple[str, list[str]]:
    status = server.federation_status()
    assert status is not None
    route = next(r for r in status.routes if r.datacenter == datacenter)
    return route.path, [c.address for c in route.candidates]


async def test_lost_local_gateway_sends_the_leader_to_the_primary_gateways_and_back(
    federation: dict[str, Datacenter], caplog: pytest.LogCaptureFixture
) -> None:
    await converged(federation)
    dc1, dc2 = federation["dc1"], federation["dc2"]
    server = dc2.require_server()
    assert route_to(server, "dc1") == ("local-gateways", [dc2.gateway_address])
    caplog.set_level("INFO", logger="wanfed.gateway_locator")
    assert dc2.gateway is not None
    address = dc2.gateway.address
    await dc2.gateway.close()  # drops every connection through it, refuses new ones

    def switched() -> bool:
        return any(
            "will dial the primary datacenter through its mesh gateways" in r.getMessage()
            for r in caplog.records
        )

    await eventually(switched, 30, "dc2's leader dials the primary's gateways directly")
    record = next(r for r in caplog.records if "through its mesh gateways" in r.getMessage())
    assert "3 consecutive replication failures" in record.__dict__["reason"]
    # While the local gateway is down, replication keeps working over the direct path.
    await (
        federation["dc1"]
        .require_server()
        .rpc(
            "Catalog.Register",
            RegisterRequest(datacenter="dc1", node=Node(node="probe", address="127.0.1.9")),
            bool,
        )
    )
    caplog.clear()
    dc2.gateway = MeshGateway(build_route_table(RouteInputs(local_dc="dc2")), GatewayConfig())
    await dc2.gateway.start(*address)
    if dc2.feeder is not None:
        dc2.feeder.cancel()
    dc2.feeder = asyncio.create_task(feed_gateway(dc2))

    def back_to_local() -> bool:
        path, candidates = route_to(server, "dc1")
        status = server.federation_status()
        assert status is not None
        return (
            path == "local-gateways"
            and candidates == [dc2.gateway_address]
            and status.replication.consecutive_failures == 0
        )

    await eventually(back_to_local, 30, "dc2's leader back on its local gateway")
    assert dc1.gateway is not None


async def test_a_replaced_secondary_gateway_is_learnt_by_the_primary_gateway(
    federation: dict[str, Datacenter],
) -> None:
    await converged(federation)
    dc1, dc2 = federation["dc1"], federation["dc2"]
    old = dc2.gateway_address
    await replace_gateway(dc2, new_address=True)
    new = dc2.gateway_address
    assert new != old
    # The old node keeps its name but now points at the new listener...

    def primary_gateway_routes_to_new() -> bool:
        assert dc1.gateway is not None
        route = dc1.gateway.routes.lookup("s1.server.dc2.consul")
        return route is not None and [f"{u.host}:{u.port}" for u in route.upstreams] == [new]

    # ...and the primary's gateway follows through the federation state alone.
    await eventually(primary_gateway_routes_to_new, 30, "dc1's gateway routes dc2 to the new one")
    reply = await dc1.require_server().rpc(
        "Catalog.ListServices", DCSpecificRequest(datacenter="dc2"), IndexedServices
    )
    assert "mesh-gateway" in reply.services


@pytest.mark.fast_pruning
async def test_a_departed_datacenter_is_pruned(federation: dict[str, Datacenter]) -> None:
    await converged(federation)
    dc1, dc3 = federation["dc1"], federation["dc3"]
    server3 = dc3.require_server()
    await server3.stop()  # leaves the WAN pool gracefully
    dc3.server = None
    await eventually(
        lambda: "dc3" not in federation_states(dc1.require_server()),
        30,
        "dc3's federation state pruned in the primary",
    )
    await eventually(
        lambda: "dc3" not in federation_states(federation["dc2"].require_server()),
        30,
        "the deletion replicated to dc2",
    )


async def test_a_server_that_vanishes_is_seen_failed_everywhere(
    federation: dict[str, Datacenter],
) -> None:
    await converged(federation)
    servers = [dc.require_server() for dc in federation.values()]
    everyone = {"s1.dc1", "s1.dc2", "s1.dc3"}
    await eventually(lambda: all(wan_alive(s) == everyone for s in servers), 30, "WAN pool of 3")
    dc3 = federation["dc3"]
    await dc3.require_server().stop(leave=False)  # as if killed: no goodbye
    dc3.server = None

    seen_failed: set[str] = set()

    def failed_everywhere() -> bool:
        # Failed members are reaped after a while; what matters is that each DC saw it fail.
        for dc in ("dc1", "dc2"):
            statuses = {m.name: m.status for m in federation[dc].require_server().members(wan=True)}
            assert statuses.get("s1.dc3") != 3, "a vanished server must not look like it left"
            if statuses.get("s1.dc3") == 4:
                seen_failed.add(dc)
        return seen_failed == {"dc1", "dc2"}

    await eventually(failed_everywhere, 30, "s1.dc3 failed (status 4) in dc1 and dc2")


async def test_a_stopped_server_is_seen_left_not_failed(
    federation: dict[str, Datacenter],
) -> None:
    await converged(federation)
    servers = [dc.require_server() for dc in federation.values()]
    everyone = {"s1.dc1", "s1.dc2", "s1.dc3"}
    await eventually(lambda: all(wan_alive(s) == everyone for s in servers), 30, "WAN pool of 3")
    dc3 = federation["dc3"]
    await dc3.require_server().stop()  # graceful: announces its departure
    dc3.server = None
    seen_left: set[str] = set()

    def left_everywhere() -> bool:
        for dc in ("dc1", "dc2"):
            statuses = {m.name: m.status for m in federation[dc].require_server().members(wan=True)}
            if statuses.get("s1.dc3") == 3:
                seen_left.add(dc)
        return seen_left == {"dc1", "dc2"}

    await eventually(left_everywhere, 30, "everyone sees s1.dc3 left (status 3), not failed")
