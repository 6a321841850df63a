"""Catalog-registered checks are data: the leader only expires TTLs, never dials.

The schedule is tested as a pure object with an explicit clock; the runner
against a dev server whose catalog gets a gateway-like registration.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

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


def test_tcp_checks_are_data_and_never_scheduled() -> None:
    schedule = CheckSchedule()
    schedule.sync(
        [_check(tcp="198.18.0.1:443", interval="1ms"), _check("plain", status="critical")],
        now=0.0,
    )
    assert schedule.tracked() == 0
    assert schedule.due(1e9) == []
    assert schedule.next_deadline() is None


def test_ttl_expires_unless_the_record_changes() -> None:
    schedule = CheckSchedule()
    schedule.sync([_check("ttl", ttl="10s")], now=0.0)
    assert schedule.due(9.9) == []
    schedule.sync([_check("ttl", ttl="10s", modify_index=2)], now=5.0)  # refreshed at t=5
    assert schedule.next_deadline() == 15.0
    assert schedule.due(14.9) == []
    assert schedule.due(15.0) == [Expire(("gw1", "ttl"))]
    assert schedule.due(15.0) == [], "handed out once until the write shows up"
    assert schedule.expired(("gw1", "ttl")) == StatusChange(
        ("gw1", "ttl"), "critical", "TTL expired"
    )
    schedule.sync([_check("ttl", ttl="10s", status="critical", modify_index=3)], now=15.1)
    assert schedule.due(100.0) == [], "an expired check is not expired again"
    assert schedule.next_deadline() is None


def test_an_expiry_that_did_not_commit_is_handed_out_again() -> None:
    schedule = CheckSchedule()
    schedule.sync([_check("ttl", ttl="1s")], now=0.0)
    assert schedule.due(1.0) == [Expire(("gw1", "ttl"))]
    schedule.write_failed(("gw1", "ttl"), retry_at=6.0)
    assert schedule.next_deadline() == 6.0
    assert schedule.due(5.9) == []
    assert schedule.due(6.0) == [Expire(("gw1", "ttl"))]


def test_a_ttl_check_registered_critical_is_not_expired() -> None:
    schedule = CheckSchedule()
    schedule.sync([_check("ttl", ttl="1s", status="critical")], now=0.0)
    assert schedule.due(10.0) == []
    assert schedule.next_deadline() is None


def test_removed_checks_are_forgotten() -> None:
    schedule = CheckSchedule()
    schedule.sync([_check("ttl", ttl="1s")], now=0.0)
    schedule.sync([], now=0.5)
    assert schedule.tracked() == 0
    assert schedule.expired(("gw1", "ttl")) is None


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


async def test_the_leader_never_connects_to_the_address_of_a_catalog_tcp_check(
    dev_server: Server,
) -> None:
    """A catalog-registered check is data: registering a TCP check on a listener
    (at the 1 ms interval that once kept the leader at 95 % CPU) makes no server
    connect to it."""
    accepted = 0
    counted = asyncio.Event()

    def count(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        counted.set()
        writer.close()

    listener = await asyncio.start_server(count, "127.0.0.1", 0)
    try:
        port = listener.sockets[0].getsockname()[1]
        tcp = _check("tcp", tcp=f"127.0.0.1:{port}", interval="1ms", status="critical")
        ttl = _check("ttl", ttl="100ms")
        # One write holds both checks: once the leader expired the TTL it has
        # processed the write that named the TCP address.
        await dev_server.rpc(
            "Catalog.Register",
            RegisterRequest(node=Node(node="gw1", address="127.0.0.1"), checks=[tcp, ttl]),
            bool,
        )
        await asyncio.wait_for(_wait_for_status(dev_server, "ttl", "critical"), 10)
        # The listener accepts in order: once our own connection is counted, any
        # probe made before it would have been counted too.
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.close()
        await asyncio.wait_for(counted.wait(), 10)
        assert accepted == 1, "a server connected to a catalog check's address"
        reply = await dev_server.rpc(
            "Health.NodeChecks", NodeSpecificRequest(node="gw1"), IndexedHealthChecks
        )
        statuses = {c.check_id: (c.status, c.output) for c in reply.health_checks}
        assert statuses["tcp"] == ("critical", ""), "its status stays what was written"
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
