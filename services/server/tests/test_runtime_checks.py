"""Catalog-registered TCP and TTL checks, run by the leader.

The schedule is tested as a pure object with an explicit clock; the runner
against a dev server whose catalog gets a gateway-like registration.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import msgspec
import pytest

from wanfed_agent.config import load_config
from wanfed_fsm import (
    HealthCheck,
    HealthCheckDefinition,
    IndexedCheckServiceNodes,
    Node,
    RegisterRequest,
    ServiceSpecificRequest,
)
from wanfed_server.runtime import (
    CheckSchedule,
    Expire,
    IndexedHealthChecks,
    NodeSpecificRequest,
    ProbeTcp,
    Server,
    StatusChange,
)


def _check(
    check_id: str = "tcp",
    *,
    tcp: str = "",
    ttl: str = "",
    interval: str = "",
    timeout: str = "",
    status: str = "passing",
    modify_index: int = 1,
) -> HealthCheck:
    return HealthCheck(
        node="gw1",
        check_id=check_id,
        status=status,  # type: ignore[arg-type]
        definition=HealthCheckDefinition(tcp=tcp, ttl=ttl, interval=interval, timeout=timeout),
        modify_index=modify_index,
    )


def test_a_new_tcp_check_is_probed_at_once_then_every_interval() -> None:
    schedule = CheckSchedule()
    schedule.sync([_check(tcp="198.18.0.1:443", interval="5s", timeout="30s")], now=100.0)
    assert schedule.due(100.0) == [ProbeTcp(("gw1", "tcp"), "198.18.0.1:443", 5.0)], (
        "the timeout is capped at the interval"
    )
    assert schedule.due(100.0) == [], "not probed twice while a probe runs"
    change = schedule.tcp_result(("gw1", "tcp"), False, "refused", now=100.5)
    assert change == StatusChange(("gw1", "tcp"), "critical", "refused")
    assert schedule.next_deadline() == 105.5
    assert schedule.due(105.0) == []
    assert len(schedule.due(105.5)) == 1


def test_an_unchanged_result_writes_nothing() -> None:
    schedule = CheckSchedule()
    schedule.sync([_check(tcp="198.18.0.1:443")], now=0.0)
    schedule.due(0.0)
    assert schedule.tcp_result(("gw1", "tcp"), True, "", now=0.1) is None


def test_ttl_expires_unless_the_record_changes() -> None:
    schedule = CheckSchedule()
    schedule.sync([_check("ttl", ttl="10s")], now=0.0)
    assert schedule.due(9.9) == []
    schedule.sync([_check("ttl", ttl="10s", modify_index=2)], now=5.0)  # refreshed at t=5
    assert schedule.due(14.9) == []
    assert schedule.due(15.0) == [Expire(("gw1", "ttl"))]
    assert schedule.expired(("gw1", "ttl")) == StatusChange(
        ("gw1", "ttl"), "critical", "TTL expired"
    )
    schedule.sync([_check("ttl", ttl="10s", status="critical", modify_index=3)], now=15.1)
    assert schedule.due(100.0) == [], "an expired check is not expired again"


def test_checks_without_a_definition_or_removed_are_not_run() -> None:
    schedule = CheckSchedule()
    schedule.sync([_check("plain"), _check(tcp="198.18.0.1:1")], now=0.0)
    assert [a.key for a in schedule.due(0.0)] == [("gw1", "tcp")]
    schedule.sync([], now=1.0)
    assert schedule.next_deadline() is None
    assert schedule.tcp_result(("gw1", "tcp"), False, "x", now=1.0) is None


@pytest.fixture
async def dev_server() -> AsyncIterator[Server]:
    config = load_config(overrides={"node_name": "s1", "ports": {"server": 0}}, dev=True)
    server = Server(config)
    await server.start()
    yield server
    await server.stop()


async def _wait_for_status(server: Server, check_id: str, status: str) -> HealthCheck:
    """Blocking queries on the node's checks until ``check_id`` has ``status``."""
    index = 0
    while True:
        reply = await server.rpc(
            "Health.NodeChecks",
            NodeSpecificRequest(node="gw1", min_query_index=index, max_query_time=10),
            IndexedHealthChecks,
        )
        check = next(c for c in reply.health_checks if c.check_id == check_id)
        if check.status == status:
            return check
        index = reply.index


def _register(check: HealthCheck) -> RegisterRequest:
    return RegisterRequest(node=Node(node="gw1", address="127.0.0.1"), checks=[check])


async def test_leader_tcp_check_against_an_unreachable_address_turns_critical_at_once(
    dev_server: Server, free_port: Callable[[], int]
) -> None:
    """A new check is probed when it is registered, not one interval later: with an
    hour's interval, only that first probe can turn it critical within the deadline."""
    closed = f"127.0.0.1:{free_port()}"
    await dev_server.rpc(
        "Catalog.Register", _register(_check(tcp=closed, interval="1h", status="passing")), bool
    )
    check = await asyncio.wait_for(_wait_for_status(dev_server, "tcp", "critical"), 30)
    assert closed in check.output


async def test_leader_tcp_check_against_a_listener_passes(dev_server: Server) -> None:
    listener = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    try:
        port = listener.sockets[0].getsockname()[1]
        await dev_server.rpc(
            "Catalog.Register",
            _register(_check(tcp=f"127.0.0.1:{port}", interval="1s", status="critical")),
            bool,
        )
        check = await asyncio.wait_for(_wait_for_status(dev_server, "tcp", "passing"), 5)
        assert check.output == f"TCP connect 127.0.0.1:{port}: Success"
    finally:
        listener.close()
        await listener.wait_closed()


async def test_leader_ttl_check_expires_to_critical(dev_server: Server) -> None:
    started = time.monotonic()
    await dev_server.rpc("Catalog.Register", _register(_check("ttl", ttl="300ms")), bool)
    check = await asyncio.wait_for(_wait_for_status(dev_server, "ttl", "critical"), 5)
    assert time.monotonic() - started >= 0.3
    assert check.output == "TTL expired"


async def test_the_dev_server_is_in_its_own_catalog(dev_server: Server) -> None:
    reply = await dev_server.rpc(
        "Health.ServiceNodes",
        ServiceSpecificRequest(service_name="consul", passing_only=True),
        IndexedCheckServiceNodes,
    )
    [entry] = reply.nodes
    assert entry.node.node == "s1"
    assert entry.service.port == int(dev_server.rpc_address.rsplit(":", 1)[1])
    assert msgspec.structs.asdict(entry.service.tagged_addresses["lan"]) == {
        "address": "127.0.0.1",
        "port": entry.service.port,
    }
    assert [(c.check_id, c.status) for c in entry.checks] == [("serfHealth", "passing")]


async def test_checks_of_a_server_node_are_left_to_its_own_agent(dev_server: Server) -> None:
    # the same TTL on the server's own node (its local agent runs that) and on a
    # catalog-only node; registered server-first, so by the time the catalog-only
    # check expired, the server's would have too if the leader ran it.
    own = HealthCheck(
        node="s1",
        check_id="agent-ttl",
        status="passing",
        definition=HealthCheckDefinition(ttl="200ms"),
    )
    await dev_server.rpc(
        "Catalog.Register",
        RegisterRequest(node=Node(node="s1"), checks=[own], skip_node_update=True),
        bool,
    )
    await dev_server.rpc("Catalog.Register", _register(_check("ttl", ttl="200ms")), bool)
    await asyncio.wait_for(_wait_for_status(dev_server, "ttl", "critical"), 5)
    reply = await dev_server.rpc(
        "Health.NodeChecks", NodeSpecificRequest(node="s1"), IndexedHealthChecks
    )
    assert {c.check_id: c.status for c in reply.health_checks}["agent-ttl"] == "passing"
