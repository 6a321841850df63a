"""The local agent: definitions, the sans-I/O state and its catalog anti-entropy."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import msgspec
import pytest

from wanfed_fsm import (
    DeregisterRequest,
    HealthCheck,
    Node,
    RegisterRequest,
    Service,
    StateStore,
    Table,
)
from wanfed_server.interfaces import RpcDispatcher
from wanfed_server.local_agent import (
    CatalogView,
    CheckNotTtlError,
    DefinitionError,
    LocalAgent,
    LocalState,
    ServiceFile,
    UnknownCheckError,
    UnknownServiceError,
    parse_service_definition,
    tcp_probe,
)
from wanfed_server.runtime import IndexedHealthChecks, NodeSpecificRequest

if TYPE_CHECKING:
    from conftest import FakeServer

T = TypeVar("T")
NODE = Node(node="s1", address="127.0.0.1", datacenter="dc1")
TWO_CHECKS: dict[str, object] = {
    "Name": "web",
    "Checks": [{"ID": "a", "TTL": "9s"}, {"ID": "b", "TTL": "9s"}],
}
TTL_WEB: dict[str, object] = {"Name": "web", "Check": {"TTL": "30s"}}
ONLY_A: dict[str, object] = {"Name": "web", "Check": {"ID": "a", "TTL": "9s"}}


# --- definitions -----------------------------------------------------------------------


def test_single_check_gets_the_service_check_id() -> None:
    definition = parse_service_definition({"Name": "web", "Check": {"TTL": "10s"}})
    assert definition.service.service_id == "web"
    [check] = definition.checks
    assert (check.check_id, check.name, check.ttl, check.status) == (
        "service:web",
        "Service 'web' check",
        10.0,
        "critical",
    )
    assert check.definition.ttl == "10s"


def test_several_checks_are_numbered_from_one() -> None:
    definition = parse_service_definition(
        {
            "ID": "web-1",
            "Name": "web",
            "Check": {"TTL": "10s"},
            "Checks": [
                {"TCP": "127.0.0.1:80", "Interval": "5s", "Timeout": "1s"},
                {"CheckID": "mine", "TTL": "1m", "Status": "passing"},
            ],
        }
    )
    assert [c.check_id for c in definition.checks] == ["service:web-1:1", "service:web-1:2", "mine"]
    tcp = definition.checks[1]
    assert (tcp.tcp, tcp.interval, tcp.timeout) == ("127.0.0.1:80", 5.0, 1.0)
    assert definition.checks[2].status == "passing"


def test_snake_case_and_lower_case_keys_like_consul() -> None:
    definition = parse_service_definition(
        {
            "name": "gw",
            "kind": "mesh-gateway",
            "port": 8443,
            "meta": {"consul-wan-federation": "1"},
            "tagged_addresses": {"wan": {"address": "198.18.0.1", "port": 8443}},
            "checks": [
                {
                    "tcp": "127.0.0.1:8443",
                    "interval": "10s",
                    "deregister_critical_service_after": "1m",
                }
            ],
        }
    )
    service = definition.service
    assert service.kind == "mesh-gateway"
    assert service.meta == {"consul-wan-federation": "1"}
    assert service.tagged_addresses["wan"].address == "198.18.0.1"
    assert definition.checks[0].deregister_critical_after == 60.0


def test_duplicate_check_ids_are_rejected() -> None:
    with pytest.raises(DefinitionError, match="Duplicate check ids"):
        parse_service_definition(
            {"Name": "x", "Checks": [{"ID": "a", "TTL": "1s"}, {"ID": "a", "TTL": "2s"}]}
        )


# --- the state core ------------------------------------------------------------------------


def _state_with(body: dict[str, object], now: float = 0.0) -> LocalState:
    state = LocalState(node=NODE, datacenter="dc1")
    state.add_service(parse_service_definition(body), now)
    return state


def test_ttl_expires_to_critical_at_its_deadline() -> None:
    state = _state_with({"Name": "web", "Check": {"TTL": "10s"}})
    assert state.update_ttl("service:web", "passing", "ok", now=1.0)
    assert state.next_deadline() == 11.0
    assert not state.expire(10.9)
    assert state.checks()["service:web"].status == "passing"
    assert state.expire(11.0)
    check = state.checks()["service:web"]
    assert (check.status, check.output) == ("critical", "TTL expired")
    assert state.next_deadline() is None
    assert not state.update_ttl("service:web", "critical", "TTL expired", now=12.0)


def test_ttl_update_errors() -> None:
    state = _state_with({"Name": "web", "Check": {"TCP": "127.0.0.1:1", "Interval": "1s"}})
    with pytest.raises(UnknownCheckError):
        state.update_ttl("nope", "passing", "", 0.0)
    with pytest.raises(CheckNotTtlError):
        state.update_ttl("service:web", "passing", "", 0.0)
    with pytest.raises(UnknownServiceError):
        state.remove_service("nope")


def test_critical_for_too_long_reaps_the_service() -> None:
    state = _state_with(
        {"Name": "web", "Check": {"TTL": "10s", "DeregisterCriticalServiceAfter": "30s"}}
    )
    assert state.next_deadline() == 10.0
    assert state.services_to_reap(29.9) == []
    assert state.services_to_reap(30.0) == ["web"]
    state.update_ttl("service:web", "passing", "", now=20.0)
    assert state.services_to_reap(100.0) == []


def test_reregistering_keeps_a_checks_status_and_replace_drops_others() -> None:
    state = _state_with(TWO_CHECKS)
    state.update_ttl("a", "passing", "fine", 1.0)
    state.add_service(parse_service_definition(ONLY_A), 2.0)
    assert set(state.checks()) == {"a", "b"}
    assert state.checks()["a"].status == "passing"
    state.add_service(
        parse_service_definition(ONLY_A),
        3.0,
        replace_existing_checks=True,
    )
    assert set(state.checks()) == {"a"}


def test_plan_registers_everything_into_an_empty_catalog() -> None:
    state = _state_with({"Name": "web", "Port": 80, "Check": {"TTL": "10s"}})
    plan = state.plan(CatalogView(node_registered=False))
    [register] = plan.register
    assert register.node == NODE
    assert not register.skip_node_update
    assert register.service is not None
    assert register.service.service_id == "web"
    assert [c.check_id for c in register.checks] == ["service:web"]
    assert plan.deregister == []
    assert state.plan(CatalogView(node_registered=True)).register[0].skip_node_update


def _catalog_after(register: RegisterRequest) -> CatalogView:
    """What the catalog would show after applying ``register`` (with raft indexes)."""
    store = StateStore()
    store.ensure_registration(7, register)
    with store.read() as txn:
        _, entries = txn.service_nodes("web")
        _, checks = txn.node_checks("s1")
    return CatalogView(
        node_registered=True,
        services={e.service.service_id: e.service for e in entries},
        checks={c.check_id: c for c in checks},
    )


def test_plan_is_empty_when_the_catalog_matches_and_notices_a_status_change() -> None:
    state = _state_with({"Name": "web", "Check": {"TTL": "10s"}})
    [register] = state.plan(CatalogView(node_registered=False)).register
    catalog = _catalog_after(register)
    assert state.plan(catalog).empty
    state.update_ttl("service:web", "passing", "", 1.0)
    [again] = state.plan(catalog).register
    assert [c.status for c in again.checks] == ["passing"]


def test_plan_deregisters_removed_services_until_the_catalog_forgets_them() -> None:
    state = _state_with({"Name": "web", "Check": {"TTL": "10s"}})
    [register] = state.plan(CatalogView(node_registered=False)).register
    catalog = _catalog_after(register)
    state.remove_service("web")
    assert state.watched_service_names() == {"web"}
    plan = state.plan(catalog)
    assert plan.register == []
    assert plan.deregister == [DeregisterRequest(datacenter="dc1", node="s1", service_id="web")]
    state.synced(catalog, plan)
    assert state.watched_service_names() == set()
    assert state.plan(catalog).empty


def test_plan_deregisters_checks_dropped_by_replace_existing_checks() -> None:
    state = _state_with(TWO_CHECKS)
    [register] = state.plan(CatalogView(node_registered=False)).register
    catalog = _catalog_after(register)
    state.add_service(
        parse_service_definition(ONLY_A),
        1.0,
        replace_existing_checks=True,
    )
    plan = state.plan(catalog)
    assert plan.deregister == [DeregisterRequest(datacenter="dc1", node="s1", check_id="b")]


def test_plan_leaves_other_services_and_node_checks_alone() -> None:
    state = _state_with({"Name": "web", "Check": {"TTL": "10s"}})
    [register] = state.plan(CatalogView(node_registered=False)).register
    catalog = _catalog_after(register)
    foreign = msgspec.structs.replace(
        catalog,
        services={**catalog.services, "consul": Service(service="consul", port=8300)},
        checks={**catalog.checks, "serfHealth": HealthCheck(node="s1", check_id="serfHealth")},
    )
    assert state.plan(foreign).empty


# --- the asyncio adapter against an in-memory dispatcher -------------------------------------


@pytest.fixture
async def running(fake_server: FakeServer) -> AsyncIterator[FakeServer]:
    await fake_server.agent.start()
    yield fake_server
    await fake_server.agent.stop()


async def _catalog_checks(server: FakeServer) -> dict[str, HealthCheck]:
    reply = await server.dispatcher.rpc(
        "Health.NodeChecks", NodeSpecificRequest(datacenter="dc1", node="s1"), IndexedHealthChecks
    )
    return {check.check_id: check for check in reply.health_checks}


async def _watch_checks(server: FakeServer, done: Callable[[dict[str, HealthCheck]], bool]) -> None:
    """Block on the node's checks until ``done`` holds (blocking queries, no polling)."""
    index = 0
    while True:
        request = NodeSpecificRequest(
            datacenter="dc1", node="s1", min_query_index=index, max_query_time=5
        )
        reply = await server.dispatcher.rpc("Health.NodeChecks", request, IndexedHealthChecks)
        if done({check.check_id: check for check in reply.health_checks}):
            return
        index = reply.index if reply.index > index else 0


def _status_is(status: str) -> Callable[[dict[str, HealthCheck]], bool]:
    def done(checks: dict[str, HealthCheck]) -> bool:
        check = checks.get("service:db")
        return check is not None and check.status == status and check.output != ""

    return done


async def _in_sync(server: FakeServer) -> None:
    await asyncio.wait_for(server.agent.wait_in_sync(), 5)


async def test_agent_registers_and_syncs_ttl_status(running: FakeServer) -> None:
    agent = running.agent
    agent.register_service(parse_service_definition(TTL_WEB))
    await _in_sync(running)
    checks = await _catalog_checks(running)
    assert checks["service:web"].status == "critical"
    assert checks["service:web"].service_name == "web"
    agent.update_ttl("service:web", "passing", "up")
    await _in_sync(running)
    check = (await _catalog_checks(running))["service:web"]
    assert (check.status, check.output) == ("passing", "up")


async def test_agent_reregisters_what_the_catalog_lost(running: FakeServer) -> None:
    agent, dispatcher = running.agent, running.dispatcher
    agent.register_service(parse_service_definition(TTL_WEB))
    await _in_sync(running)
    # someone deregisters it behind the agent's back: the node watch wakes a sync
    await dispatcher.rpc(
        "Catalog.Deregister", DeregisterRequest(datacenter="dc1", node="s1", service_id="web"), bool
    )
    await asyncio.wait_for(_watch_checks(running, lambda c: "service:web" in c), 5)
    # a snapshot restore of an empty store: the abandoned watch wakes a sync
    dispatcher.store.restore(StateStore().snapshot())
    await asyncio.wait_for(_watch_checks(running, lambda c: "service:web" in c), 5)


async def test_agent_retries_until_the_catalog_accepts_writes(running: FakeServer) -> None:
    running.dispatcher.fail_methods.add("Catalog.Register")
    running.agent.register_service(parse_service_definition(TTL_WEB))
    # the first attempt and at least one retry fail
    await asyncio.wait_for(running.dispatcher.wait_for_calls("Catalog.Register", 2), 5)
    assert "service:web" not in await _catalog_checks(running)
    running.dispatcher.fail_methods.clear()
    await _in_sync(running)
    assert "service:web" in await _catalog_checks(running)


async def test_agent_deregisters_from_the_catalog(running: FakeServer) -> None:
    agent = running.agent
    agent.register_service(parse_service_definition(TTL_WEB))
    await _in_sync(running)
    agent.deregister_service("web")
    await _in_sync(running)
    assert await _catalog_checks(running) == {}
    with pytest.raises(UnknownServiceError):
        agent.deregister_service("web")


async def test_ttl_expiry_reaches_the_catalog(running: FakeServer) -> None:
    agent = running.agent
    agent.register_service(parse_service_definition({"Name": "web", "Check": {"TTL": "150ms"}}))
    agent.update_ttl("service:web", "passing", "")
    await _in_sync(running)
    assert (await _catalog_checks(running))["service:web"].status == "passing"
    index = running.dispatcher.store.index(Table.CHECKS)
    reply = await running.dispatcher.rpc(
        "Health.NodeChecks",
        NodeSpecificRequest(datacenter="dc1", node="s1", min_query_index=index, max_query_time=5),
        IndexedHealthChecks,
    )
    [check] = reply.health_checks
    assert (check.status, check.output) == ("critical", "TTL expired")


async def test_critical_service_is_deregistered_after_the_limit(running: FakeServer) -> None:
    agent = running.agent
    agent.register_service(
        parse_service_definition(
            {"Name": "web", "Check": {"TTL": "1h", "DeregisterCriticalServiceAfter": "100ms"}}
        )
    )
    await _in_sync(running)
    assert "service:web" in await _catalog_checks(running)
    await asyncio.wait_for(_watch_checks(running, lambda c: not c), 5)  # reaped after 100 ms
    assert agent.services() == {}


async def test_tcp_probe_passing_and_critical() -> None:
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    status, output = await tcp_probe(f"127.0.0.1:{port}", 1.0)
    assert (status, output) == ("passing", f"TCP connect 127.0.0.1:{port}: Success")
    server.close()
    await server.wait_closed()
    status, output = await tcp_probe(f"127.0.0.1:{port}", 1.0)
    assert status == "critical"
    assert output.startswith(f"dial tcp 127.0.0.1:{port}: ")


async def test_agent_runs_tcp_checks(running: FakeServer) -> None:
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        running.agent.register_service(
            parse_service_definition(
                {"Name": "db", "Check": {"TCP": f"127.0.0.1:{port}", "Interval": "50ms"}}
            )
        )
        await asyncio.wait_for(_watch_checks(running, _status_is("passing")), 5)
    finally:
        server.close()
        await server.wait_closed()
    await asyncio.wait_for(_watch_checks(running, _status_is("critical")), 5)


class _CrashOnce:
    """Delegates to the fake dispatcher, but the first ``Catalog.ListNodes`` hits a bug."""

    def __init__(self, inner: RpcDispatcher) -> None:
        self.inner = inner
        self.crashed = False

    async def rpc(self, method: str, args: msgspec.Struct, reply_type: type[T]) -> T:
        if method == "Catalog.ListNodes" and not self.crashed:
            self.crashed = True
            raise RuntimeError("a bug in the dispatcher")
        return await self.inner.rpc(method, args, reply_type)


async def test_a_crashing_sync_is_logged_and_retried(
    fake_server: FakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    crashing = _CrashOnce(fake_server.dispatcher)
    agent = LocalAgent(crashing, node=NODE, datacenter="dc1", retry_interval=0.01)
    await agent.start()
    try:
        agent.register_service(parse_service_definition(TTL_WEB))
        await asyncio.wait_for(agent.wait_in_sync(), 5)
    finally:
        await agent.stop()
    assert crashing.crashed
    assert "catalog sync crashed node=s1" in caplog.text
    assert "service:web" in await _catalog_checks(fake_server)


# --- persistence ---------------------------------------------------------------------------


def test_services_file_round_trip_and_corruption(tmp_path: Path) -> None:
    path = tmp_path / "agent" / "services.json"
    services = ServiceFile(path)
    assert services.load() == []
    definitions = [parse_service_definition(TWO_CHECKS), parse_service_definition({"Name": "db"})]
    services.save(definitions)
    assert services.load() == definitions
    path.write_bytes(b"{half a file")
    assert services.load() == []
    assert (tmp_path / "agent" / "services.json.corrupt").read_bytes() == b"{half a file"
    path.write_bytes(b'{"version": 99, "services": []}')
    assert services.load() == []


async def test_agent_services_survive_a_restart(fake_server: FakeServer, tmp_path: Path) -> None:
    path = tmp_path / "services.json"
    first = LocalAgent(fake_server.dispatcher, node=NODE, datacenter="dc1", services_file=path)
    first.register_service(parse_service_definition(TWO_CHECKS))
    first.register_service(parse_service_definition({"Name": "db"}))
    first.deregister_service("db")
    # the server restarts: a new agent reads the file and syncs what the old one owned
    second = LocalAgent(fake_server.dispatcher, node=NODE, datacenter="dc1", services_file=path)
    assert list(second.services()) == ["web"]
    assert set(second.checks()) == {"a", "b"}
    await second.start()
    try:
        await asyncio.wait_for(second.wait_in_sync(), 5)
    finally:
        await second.stop()
    assert set(await _catalog_checks(fake_server)) == {"a", "b"}
