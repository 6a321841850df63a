"""Services whose check stayed critical past ``DeregisterCriticalServiceAfter``.

The reaper is tested as a pure object with an explicit clock; the leader's
loop against a dev server whose minimum is lowered through ``ServerOptions``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from wanfed_agent.config import load_config
from wanfed_fsm import (
    HealthCheck,
    HealthCheckDefinition,
    IndexedServiceNodes,
    Node,
    RegisterRequest,
    Service,
    ServiceSpecificRequest,
)
from wanfed_proto import RemoteError
from wanfed_server.runtime import (
    DEREGISTER_CRITICAL_MINIMUM,
    CriticalServiceReaper,
    Reap,
    Server,
    ServerOptions,
    deregister_critical_after,
)


def _check(
    check_id: str = "gw-check",
    *,
    service_id: str = "gw",
    after: str = "6h",
    status: str = "critical",
    node: str = "gw1",
    create_index: int = 1,
) -> HealthCheck:
    return HealthCheck(
        node=node,
        check_id=check_id,
        status=status,  # type: ignore[arg-type]
        service_id=service_id,
        definition=HealthCheckDefinition(deregister_critical_service_after=after),
        create_index=create_index,
        modify_index=create_index,
    )


def test_a_service_is_reaped_once_its_check_was_critical_for_the_limit() -> None:
    reaper = CriticalServiceReaper()
    reaper.sync([_check(after="2m")], now=1000.0)
    assert reaper.next_deadline() == 1120.0
    assert reaper.due(1119.9) == []
    assert reaper.due(1120.0) == [
        Reap(
            node="gw1",
            service_id="gw",
            check_id="gw-check",
            critical_for=120.0,
            limit=120.0,
            declared="2m",
            raised_to_minimum=False,
        )
    ]
    assert reaper.due(2000.0) == [], "one deregistration in flight at a time"
    assert reaper.next_deadline() is None


def test_the_clock_starts_when_this_leader_first_sees_the_check_critical() -> None:
    reaper = CriticalServiceReaper()
    reaper.sync([_check(after="2m", status="passing")], now=0.0)
    assert reaper.next_deadline() is None, "a passing check is not counting"
    reaper.sync([_check(after="2m")], now=50.0)
    reaper.sync([_check(after="2m")], now=100.0)  # still critical: the clock keeps running
    assert reaper.critical_since("GW1", "gw-check") == 50.0
    assert reaper.due(169.0) == []
    assert [a.service_id for a in reaper.due(170.0)] == ["gw"]


def test_recovering_stops_the_clock_and_a_new_critical_spell_starts_over() -> None:
    reaper = CriticalServiceReaper()
    reaper.sync([_check(after="2m")], now=0.0)
    reaper.sync([_check(after="2m", status="warning")], now=100.0)
    assert reaper.due(500.0) == []
    reaper.sync([_check(after="2m")], now=500.0)
    assert reaper.due(619.0) == []
    assert len(reaper.due(620.0)) == 1


def test_a_limit_below_the_minimum_is_raised_to_it() -> None:
    reaper = CriticalServiceReaper()
    reaper.sync([_check(after="10s")], now=0.0)
    assert reaper.due(59.0) == []
    [action] = reaper.due(DEREGISTER_CRITICAL_MINIMUM)
    assert action.limit == DEREGISTER_CRITICAL_MINIMUM
    assert action.declared == "10s"
    assert action.raised_to_minimum


def test_checks_without_a_limit_or_a_service_are_never_reaped() -> None:
    reaper = CriticalServiceReaper(minimum=1.0)
    reaper.sync(
        [
            _check("no-limit", after=""),
            _check("zero", after="0"),
            _check("node-level", service_id="", after="1s"),
            _check("garbage", after="soon"),
        ],
        now=0.0,
    )
    assert reaper.next_deadline() is None
    assert reaper.due(1e9) == []


def test_one_action_per_service_whichever_check_expired() -> None:
    reaper = CriticalServiceReaper(minimum=1.0)
    reaper.sync([_check("a", after="5s"), _check("b", after="5s")], now=0.0)
    assert [(a.node, a.service_id) for a in reaper.due(5.0)] == [("gw1", "gw")]
    assert reaper.due(10.0) == [], "the other check of the same service is not a second reap"


def test_the_same_service_id_on_two_nodes_is_two_services() -> None:
    reaper = CriticalServiceReaper(minimum=1.0)
    reaper.sync([_check(node="gw1", after="5s"), _check(node="gw2", after="5s")], now=0.0)
    assert sorted(a.node for a in reaper.due(5.0)) == ["gw1", "gw2"]


def test_a_failed_deregistration_is_retried_after_a_pause() -> None:
    reaper = CriticalServiceReaper(minimum=1.0, retry_after=5.0)
    reaper.sync([_check(after="5s")], now=0.0)
    [action] = reaper.due(5.0)
    reaper.failed(action, now=6.0)
    assert reaper.next_deadline() == 11.0
    assert reaper.due(10.9) == []
    [retried] = reaper.due(11.0)
    assert (retried.service_id, retried.critical_for) == ("gw", 11.0)


def test_a_reaped_service_that_comes_back_gets_a_new_clock() -> None:
    reaper = CriticalServiceReaper(minimum=1.0)
    reaper.sync([_check(after="5s", create_index=1)], now=0.0)
    assert len(reaper.due(5.0)) == 1
    # deregistered and registered again before the checks' disappearance was seen
    reaper.sync([_check(after="5s", create_index=9)], now=6.0)
    assert reaper.due(10.9) == []
    assert len(reaper.due(11.0)) == 1


def test_a_check_that_vanished_is_forgotten() -> None:
    reaper = CriticalServiceReaper(minimum=1.0)
    reaper.sync([_check(after="5s")], now=0.0)
    reaper.due(5.0)
    reaper.sync([], now=5.5)
    assert reaper.critical_since("gw1", "gw-check") is None
    assert reaper.next_deadline() is None


def test_bad_limits_and_settings_are_refused_with_a_reason() -> None:
    with pytest.raises(ValueError, match="DeregisterCriticalServiceAfter: expected a duration"):
        deregister_critical_after(_check(after="6 hours"))
    with pytest.raises(ValueError, match="got '-1m'"):
        deregister_critical_after(_check(after="-1m"))
    assert deregister_critical_after(_check(after="6h")) == 6 * 3600
    assert deregister_critical_after(_check(after="0")) is None
    with pytest.raises(ValueError, match="greater than zero"):
        CriticalServiceReaper(minimum=0)
    with pytest.raises(ValueError, match="deregister_critical_minimum must be greater than zero"):
        ServerOptions(deregister_critical_minimum=0.0)
    assert ServerOptions().deregister_critical_minimum == 60.0


@pytest.fixture
async def dev_server() -> AsyncIterator[Server]:
    config = load_config(overrides={"node_name": "s1", "ports": {"server": 0}}, dev=True)
    server = Server(config, options=ServerOptions(deregister_critical_minimum=0.5))
    await server.start()
    yield server
    await server.stop()


def _register(service: str, after: str) -> RegisterRequest:
    return RegisterRequest(
        node=Node(node="gw1", address="127.0.0.1"),
        service=Service(id=service, service=service, port=8443),
        checks=[_check(f"{service}-check", service_id=service, after=after)],
    )


async def _wait_until_gone(server: Server, service: str) -> None:
    index = 0
    while True:
        reply = await server.rpc(
            "Catalog.ServiceNodes",
            ServiceSpecificRequest(service_name=service, min_query_index=index, max_query_time=10),
            IndexedServiceNodes,
        )
        if not reply.service_nodes:
            return
        index = reply.index


async def test_the_leader_deregisters_a_service_critical_past_its_limit(
    dev_server: Server,
) -> None:
    started = time.monotonic()
    await dev_server.rpc("Catalog.Register", _register("short", "100ms"), bool)
    await dev_server.rpc("Catalog.Register", _register("long", "1h"), bool)
    await asyncio.wait_for(_wait_until_gone(dev_server, "short"), 10)
    assert time.monotonic() - started >= 0.5, "a limit below the minimum waits the minimum"
    long = await dev_server.rpc(
        "Catalog.ServiceNodes", ServiceSpecificRequest(service_name="long"), IndexedServiceNodes
    )
    assert [sn.node.node for sn in long.service_nodes] == ["gw1"], (
        "the node and its other service stay"
    )


async def test_the_catalog_refuses_a_limit_that_is_not_a_duration(dev_server: Server) -> None:
    with pytest.raises(RemoteError, match="DeregisterCriticalServiceAfter"):
        await dev_server.rpc("Catalog.Register", _register("web", "forever"), bool)
