"""The RPC endpoints of a dev server, driven through its RPC port with a real client."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgspec
import pytest

from wanfed_fsm import (
    MESH_GATEWAY_KIND,
    CheckServiceNode,
    DatacenterIndexedCheckServiceNodes,
    DCSpecificRequest,
    DeregisterRequest,
    FederationState,
    FederationStateQuery,
    FederationStateRequest,
    FederationStateResponse,
    HealthCheck,
    IndexedCheckServiceNodes,
    IndexedFederationStates,
    IndexedNodes,
    IndexedServiceNodes,
    IndexedServices,
    Node,
    RegisterRequest,
    Service,
    ServiceSpecificRequest,
    Table,
)
from wanfed_proto import RemoteError, RpcClient, RpcType, dial_plain
from wanfed_server.runtime import (
    MISSING_FEDERATION_STATE_DATACENTER,
    NO_PATH_TO_DATACENTER,
    NO_SERVER_REACHABLE,
    IndexedHealthChecks,
    NodeSpecificRequest,
    RemoteServer,
    Server,
    StaticRouter,
)

if TYPE_CHECKING:
    from .conftest import RuntimePki  # type: ignore[import-not-found]

StartServer = Callable[..., Awaitable[Server]]


@pytest.fixture
async def connect() -> AsyncIterator[Callable[[Server], Awaitable[RpcClient]]]:
    clients: list[RpcClient] = []

    async def open_client(server: Server) -> RpcClient:
        client = RpcClient(await dial_plain(server.rpc_bind_address, RpcType.MULTIPLEX_V2))
        clients.append(client)
        return client

    yield open_client
    for client in clients:
        await client.close()


def _web(node: str, status: str = "passing", port: int = 80) -> RegisterRequest:
    return RegisterRequest(
        node=Node(node=node, address="198.18.0.10"),
        service=Service(id="web1", service="web", port=port, tags=["v1"]),
        checks=[
            HealthCheck(node=node, check_id="service:web1", service_id="web1", status=status)  # type: ignore[arg-type]
        ],
    )


def _gateway(node: str, dc: str = "dc1") -> CheckServiceNode:
    return CheckServiceNode(
        node=Node(node=node, address="198.18.0.20", datacenter=dc),
        service=Service(
            kind=MESH_GATEWAY_KIND,
            id="mesh-gateway",
            service="mesh-gateway",
            port=8443,
            meta={"consul-wan-federation": "1"},
        ),
    )


async def test_status_endpoints_name_the_dev_server(
    start_dev_server: StartServer, connect: Callable[[Server], Awaitable[RpcClient]]
) -> None:
    server = await start_dev_server()
    client = await connect(server)
    assert await client.call("Status.Leader", None, type=str, timeout=5) == server.rpc_address
    assert await client.call("Status.Peers", None, type=list[str], timeout=5) == [
        server.rpc_address
    ]
    assert await client.call("Status.Ping", None, type=bool, timeout=5) is True
    with pytest.raises(RemoteError, match=r"can.t find method Status\.Nope"):
        await client.call("Status.Nope", None, timeout=5)


async def test_register_then_read_back_through_every_catalog_and_health_endpoint(
    start_dev_server: StartServer, connect: Callable[[Server], Awaitable[RpcClient]]
) -> None:
    server = await start_dev_server()
    client = await connect(server)
    assert await client.call("Catalog.Register", _web("n1"), type=bool, timeout=5)
    assert await client.call("Catalog.Register", _web("n2", "critical"), type=bool, timeout=5)

    nodes = await client.call("Catalog.ListNodes", DCSpecificRequest(), type=IndexedNodes)
    assert {"n1", "n2", "s1"} <= {n.node for n in nodes.nodes}
    assert nodes.known_leader
    assert nodes.index >= 2
    n1 = next(n for n in nodes.nodes if n.node == "n1")
    assert n1.datacenter == "dc1", "a registration without a datacenter gets the local one"

    services = await client.call("Catalog.ListServices", DCSpecificRequest(), type=IndexedServices)
    assert services.services["web"] == ["v1"]
    assert "consul" in services.services

    by_name = ServiceSpecificRequest(service_name="web")
    catalog = await client.call("Catalog.ServiceNodes", by_name, type=IndexedServiceNodes)
    assert sorted(sn.node.node for sn in catalog.service_nodes) == ["n1", "n2"]

    health = await client.call("Health.ServiceNodes", by_name, type=IndexedCheckServiceNodes)
    assert sorted(e.node.node for e in health.nodes) == ["n1", "n2"]
    passing = msgspec.structs.replace(by_name, passing_only=True)
    healthy = await client.call("Health.ServiceNodes", passing, type=IndexedCheckServiceNodes)
    assert [e.node.node for e in healthy.nodes] == ["n1"]

    checks = await client.call(
        "Health.NodeChecks", NodeSpecificRequest(node="n2"), type=IndexedHealthChecks
    )
    assert [(c.check_id, c.status) for c in checks.health_checks] == [("service:web1", "critical")]

    assert await client.call(
        "Catalog.Deregister", DeregisterRequest(node="n2"), type=bool, timeout=5
    )
    after = await client.call("Catalog.ServiceNodes", by_name, type=IndexedServiceNodes)
    assert [sn.node.node for sn in after.service_nodes] == ["n1"]


async def test_health_and_service_dump_by_kind(
    start_dev_server: StartServer, connect: Callable[[Server], Awaitable[RpcClient]]
) -> None:
    server = await start_dev_server()
    client = await connect(server)
    gateway = _gateway("gw1")
    await client.call(
        "Catalog.Register",
        RegisterRequest(node=gateway.node, service=gateway.service),
        type=bool,
    )
    await client.call("Catalog.Register", _web("n1"), type=bool)
    by_kind = ServiceSpecificRequest(service_kind=MESH_GATEWAY_KIND)
    health = await client.call("Health.ServiceNodes", by_kind, type=IndexedCheckServiceNodes)
    assert [e.node.node for e in health.nodes] == ["gw1"]
    dump = await client.call("Internal.ServiceDump", by_kind, type=IndexedCheckServiceNodes)
    assert [e.service.kind for e in dump.nodes] == [MESH_GATEWAY_KIND]


async def test_bad_requests_get_clear_remote_errors(
    start_dev_server: StartServer, connect: Callable[[Server], Awaitable[RpcClient]]
) -> None:
    server = await start_dev_server()
    client = await connect(server)
    with pytest.raises(RemoteError, match="invalid request body"):
        await client.call("Catalog.Register", {"Node": 5}, timeout=5)
    with pytest.raises(RemoteError, match="Must provide service name or service kind"):
        await client.call("Health.ServiceNodes", ServiceSpecificRequest(), timeout=5)
    orphan_check = RegisterRequest(
        node=Node(node="n1"),
        checks=[HealthCheck(node="n1", check_id="c1", service_id="missing")],
    )
    with pytest.raises(RemoteError, match="Missing service registration"):
        await client.call("Catalog.Register", orphan_check, timeout=5)
    nameless = FederationStateRequest(op="upsert", state=FederationState(datacenter=""))
    with pytest.raises(RemoteError) as error:  # only servers write federation states
        await server.rpc("FederationState.Apply", nameless, bool)
    assert str(error.value) == MISSING_FEDERATION_STATE_DATACENTER


async def test_federation_state_apply_get_list_and_mesh_gateways(
    start_dev_server: StartServer, connect: Callable[[Server], Awaitable[RpcClient]]
) -> None:
    server = await start_dev_server()
    client = await connect(server)
    before = time.time()
    state = FederationState(datacenter="dc2", mesh_gateways=[_gateway("gw2", "dc2")])
    request = FederationStateRequest(datacenter="dc9", op="upsert", state=state)
    # "dc9" is unknown, but Apply targets the primary (here, this dc1 server) whatever it says;
    # only servers write federation states: this server's own code here
    assert await server.rpc("FederationState.Apply", request, bool)

    got = await client.call(
        "FederationState.Get",
        FederationStateQuery(datacenter="dc2"),
        type=FederationStateResponse,
    )
    assert got.state is not None
    assert got.state.mesh_gateways[0].node.node == "gw2"
    assert got.state.updated_at.timestamp() >= before - 1, "UpdatedAt is set on upsert"
    assert got.index == got.state.modify_index
    missing = await client.call(
        "FederationState.Get", FederationStateQuery(datacenter="dc7"), type=FederationStateResponse
    )
    assert missing.state is None
    assert missing.index >= 1

    listed = await client.call(
        "FederationState.List", DCSpecificRequest(), type=IndexedFederationStates
    )
    assert [s.datacenter for s in listed.states] == ["dc2"]
    gateways = await client.call(
        "FederationState.ListMeshGateways",
        DCSpecificRequest(),
        type=DatacenterIndexedCheckServiceNodes,
    )
    assert list(gateways.datacenter_nodes) == ["dc2"]

    delete = FederationStateRequest(op="delete", state=FederationState(datacenter="dc2"))
    await server.rpc("FederationState.Apply", delete, bool)
    empty = await client.call(
        "FederationState.List", DCSpecificRequest(), type=IndexedFederationStates
    )
    assert empty.states == []


async def test_blocking_query_waits_until_a_write_and_times_out_unchanged(
    start_dev_server: StartServer, connect: Callable[[Server], Awaitable[RpcClient]]
) -> None:
    server = await start_dev_server()
    client = await connect(server)
    first = await client.call("Catalog.ListNodes", DCSpecificRequest(), type=IndexedNodes)

    started = time.monotonic()
    unchanged = await client.call(
        "Catalog.ListNodes",
        DCSpecificRequest(min_query_index=first.index, max_query_time=0.3),
        type=IndexedNodes,
    )
    # A lower bound only: a loaded machine can delay the answer, never hasten it.
    assert time.monotonic() - started >= 0.3
    assert unchanged.index == first.index

    parked = server.store.watch_count(Table.NODES)
    blocked = asyncio.ensure_future(
        client.call(
            "Catalog.ListNodes",
            DCSpecificRequest(min_query_index=first.index, max_query_time=600),
            type=IndexedNodes,
        )
    )
    # Write only once the read is parked on the store's watch: a write that
    # lands first would be answered without any wake-up at all.
    await _until(lambda: server.store.watch_count(Table.NODES) > parked, "the read is parked")
    assert not blocked.done()
    await client.call("Catalog.Register", _web("n9"), type=bool)
    woken = await asyncio.wait_for(blocked, 15)  # a deadline, not a measurement (wait: 600 s)
    assert woken.index > first.index
    assert "n9" in {n.node for n in woken.nodes}


async def _until(condition: Callable[[], bool], what: str, within: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"not within {within:.0f} s: {what}")
        await asyncio.sleep(0.01)


async def test_stale_and_consistent_reads_report_a_known_leader(
    start_dev_server: StartServer, connect: Callable[[Server], Awaitable[RpcClient]]
) -> None:
    server = await start_dev_server()
    client = await connect(server)
    for options in (
        DCSpecificRequest(allow_stale=True),
        DCSpecificRequest(require_consistent=True),
    ):
        reply = await client.call("Catalog.ListNodes", options, type=IndexedNodes)
        assert reply.known_leader
        assert reply.last_contact == 0.0
    with pytest.raises(RemoteError, match="both stale and consistent"):
        await client.call(
            "Catalog.ListNodes", {"AllowStale": True, "RequireConsistent": True}, timeout=5
        )


async def test_other_datacenters_go_through_the_router(
    start_dev_server: StartServer,
    connect: Callable[[Server], Awaitable[RpcClient]],
    free_port: Callable[[], int],
) -> None:
    remote = await start_dev_server("r1", datacenter="dc2", primary_datacenter="dc1")
    await remote.rpc("Catalog.Register", _web("far"), bool)
    router = StaticRouter(
        "dc1",
        {
            "dc2": [RemoteServer(node="r1", datacenter="dc2", address=remote.rpc_address)],
            "dc3": [RemoteServer(node="x1", datacenter="dc3", address=f"127.0.0.1:{free_port()}")],
            "dc4": [],
        },
    )
    server = await start_dev_server("s1", router=router)
    client = await connect(server)

    far = await client.call(
        "Health.ServiceNodes",
        ServiceSpecificRequest(datacenter="dc2", service_name="web"),
        type=IndexedCheckServiceNodes,
    )
    assert [e.node.node for e in far.nodes] == ["far"]
    assert await client.call("Catalog.ListDatacenters", DCSpecificRequest(), type=list[str]) == [
        "dc1",
        "dc2",
        "dc3",
        "dc4",
    ]

    for dc, message in (
        ("dc9", NO_PATH_TO_DATACENTER),
        ("dc3", NO_SERVER_REACHABLE),
        ("dc4", NO_SERVER_REACHABLE),
    ):
        with pytest.raises(RemoteError) as error:
            await client.call("Catalog.ListNodes", DCSpecificRequest(datacenter=dc), timeout=15)
        assert str(error.value) == message
    # the same rules hold for in-process callers (the HTTP API's path)
    with pytest.raises(RemoteError, match=f"^{NO_PATH_TO_DATACENTER}$"):
        await server.rpc("Catalog.ListNodes", DCSpecificRequest(datacenter="dc9"), IndexedNodes)


async def test_federation_state_apply_in_a_secondary_lands_in_the_primary(
    start_dev_server: StartServer, runtime_pki: RuntimePki
) -> None:
    # the primary checks that a server of dc2 writes dc2's state: both speak TLS
    primary = await start_dev_server("s1", datacenter="dc1", tls=runtime_pki.mutual_tls("s1"))
    router = StaticRouter(
        "dc2", {"dc1": [RemoteServer(node="s1", datacenter="dc1", address=primary.rpc_address)]}
    )
    secondary = await start_dev_server(
        "r1",
        router=router,
        datacenter="dc2",
        primary_datacenter="dc1",
        tls=runtime_pki.mutual_tls("r1"),
    )
    state = FederationState(datacenter="dc2", mesh_gateways=[_gateway("gw2", "dc2")])
    await secondary.rpc(  # as the secondary leader's anti-entropy does
        "FederationState.Apply",
        FederationStateRequest(datacenter="dc2", op="upsert", state=state),
        bool,
    )
    in_primary = await primary.rpc(
        "FederationState.List", DCSpecificRequest(), IndexedFederationStates
    )
    assert [s.datacenter for s in in_primary.states] == ["dc2"]
    in_secondary = await secondary.rpc(
        "FederationState.List", DCSpecificRequest(), IndexedFederationStates
    )
    assert in_secondary.states == [], "secondaries only get states by replication"


async def test_server_view_describes_the_dev_server(start_dev_server: StartServer) -> None:
    server = await start_dev_server("s1")
    assert server.is_leader()
    assert server.leader_rpc_address() == server.rpc_address
    [member] = server.members(wan=False)
    assert (member.name, member.tags["role"], member.status) == ("s1", "consul", 1)
    assert [m.name for m in server.members(wan=True)] == ["s1.dc1"]
    info = server.self_info()
    assert info["Config"] == {
        "Datacenter": "dc1",
        "PrimaryDatacenter": "dc1",
        "NodeName": "s1",
        "Server": True,
        "Domain": "consul",
        "Revision": "",
        "Version": "wanfed",
    }
    reply = await server.rpc("Catalog.ListNodes", DCSpecificRequest(), dict[str, Any])
    assert "Nodes" in reply, "a caller may ask for another reply type (converted)"
