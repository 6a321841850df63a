"""The refresh loop: it reads the local store, waits for initialisation, feeds the core."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from wanfed_fsm import CheckServiceNode, FederationState, Node, RetryPolicy, Service
from wanfed_gateway_locator import GatewayLocator, LocatorService


def primary_state(address: str) -> FederationState:
    host, port = address.split(":")
    return FederationState(
        datacenter="dc1",
        mesh_gateways=[
            CheckServiceNode(
                node=Node(node="gw", address=host),
                service=Service(
                    kind="mesh-gateway",
                    service="mesh-gateway",
                    address=host,
                    port=int(port),
                    meta={"consul-wan-federation": "1"},
                ),
            )
        ],
    )


class FakeSource:
    """A store stand-in: a list of states behind a blocking read."""

    def __init__(self) -> None:
        self.initialized = False
        self.index = 1
        self.states: list[FederationState] = []
        self.changed = asyncio.Condition()
        self.reads: list[int] = []

    def local_state_initialized(self) -> bool:
        return self.initialized

    async def federation_states(self, min_index: int) -> tuple[int, Sequence[FederationState]]:
        self.reads.append(min_index)
        async with self.changed:
            await self.changed.wait_for(lambda: self.index > min_index)
        return self.index, list(self.states)

    async def write(self, states: list[FederationState]) -> None:
        async with self.changed:
            self.states = states
            self.index += 1
            self.changed.notify_all()


FAST = RetryPolicy(rate=1000.0, burst=5, backoff_base=0.001, backoff_cap=0.01)


async def test_refresh_waits_for_initialisation_then_follows_writes() -> None:
    source = FakeSource()
    locator = GatewayLocator(datacenter="dc2", primary_datacenter="dc1", now=0.0)
    service = LocatorService(locator, source, policy=FAST)
    service.start()
    try:
        await asyncio.sleep(0.01)  # let several not-initialised rounds pass
        assert source.reads == []
        assert not locator.status(0.0).populated
        before = service.refreshes
        source.initialized = True
        await asyncio.wait_for(service.wait_refreshed(before), 10)
        assert locator.populated
        assert source.reads[0] == 0
        await source.write([primary_state("198.18.1.20:8443")])
        await asyncio.wait_for(service.primary_gateways_ready.wait(), 10)
        assert locator._primary == ["198.18.1.20:8443"]
    finally:
        await service.stop()


async def test_feedback_is_stamped_with_the_clock() -> None:
    now = [100.0]
    source = FakeSource()
    locator = GatewayLocator(datacenter="dc2", primary_datacenter="dc1", now=now[0])
    service = LocatorService(locator, source, clock=lambda: now[0], policy=FAST)
    service.set_use_replication_signal(True)
    for _ in range(3):
        now[0] += 5
        service.on_replication_result("no route")
    assert not service.dial_primary_through_local_gateway()
    now[0] += 5
    status = service.status()
    assert status.replication.last_failure_age == 5.0
    assert status.replication.consecutive_failures == 3
    service.on_replication_result(None)
    assert service.dial_primary_through_local_gateway()
