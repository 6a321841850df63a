"""The refresh loop: it reads the local store, waits for initialisation, feeds the core."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from wanfed_fsm import CheckServiceNode, FederationState, Node, RetryPolicy, Service
from wanfed_gateway_locator import GatewayLocator, LocatorService


def gateway_state(datacenter: str, node: str, address: str) -> FederationState:
    """``datacenter``'s federation state with one opted-in gateway at ``address``."""
    host, port = address.split(":")
    return FederationState(
        datacenter=datacenter,
        mesh_gateways=[
            CheckServiceNode(
                node=Node(node=node, address=host),
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


def primary_state(address: str) -> FederationState:
    return gateway_state("dc1", "gw", address)


def local_state(address: str) -> FederationState:
    return gateway_state("dc2", "gw2", address)


class FakeSource:
    """A store stand-in: a list of states behind a blocking read."""

    def __init__(self) -> None:
        self.initialized = False
        self.index = 1
        self.states: list[FederationState] = []
        self.changed = asyncio.Condition()
        self.reads: list[int] = []
        self.looks = 0
        """How often the service asked whether the store is initialised."""

    def local_state_initialized(self) -> bool:
        self.looks += 1
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
    # Two tokens for all time, one per read: waiting for a leader must spend
    # none, or the first read would wait for a token that never comes.
    stingy = RetryPolicy(rate=1e-6, burst=2, backoff_base=0.001, backoff_cap=0.01)
    service = LocatorService(locator, source, policy=stingy, initialized_poll=0.001)
    service.start()
    try:
        for _ in range(30_000):  # several looks at the uninitialised store
            if source.looks >= 3:
                break
            await asyncio.sleep(0.001)
        assert source.looks >= 3
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
    service.on_replication_result(None)  # over the direct path: stays direct
    assert not service.dial_primary_through_local_gateway()


class FakeProbe:
    """Fails until ``works`` is set; records the gateways it was asked to dial."""

    def __init__(self) -> None:
        self.works = False
        self.dialled: list[str] = []
        self.called = asyncio.Condition()

    async def probe(self, gateway: str) -> None:
        async with self.called:
            self.dialled.append(gateway)
            self.called.notify_all()
        if not self.works:
            raise ConnectionRefusedError("connection refused")

    async def calls(self, count: int) -> None:
        """Until the ``count``-th probe started: every earlier one has been recorded."""
        async with self.called:
            await self.called.wait_for(lambda: len(self.dialled) >= count)


async def test_probe_task_runs_only_while_direct_and_switches_back_when_it_works() -> None:
    source = FakeSource()
    source.initialized = True
    source.states = [primary_state("198.18.1.20:8443"), local_state("10.0.2.10:8443")]
    locator = GatewayLocator(
        datacenter="dc2", primary_datacenter="dc1", now=0.0, local_probe_interval=0.01
    )
    probe = FakeProbe()
    service = LocatorService(locator, source, policy=FAST, probe=probe)
    service.start()
    try:
        await asyncio.wait_for(service.wait_refreshed(0), 10)
        service.set_use_replication_signal(True)
        # On the local path the core has no probe due, and the probe task
        # probes only when one is due.
        assert locator.next_local_probe_at() is None
        assert probe.dialled == []
        for _ in range(3):
            service.on_replication_result("no route to host")
        await asyncio.wait_for(probe.calls(1), 10)
        assert probe.dialled[0] == "10.0.2.10:8443"
        assert not service.dial_primary_through_local_gateway()
        await asyncio.wait_for(probe.calls(3), 10)
        last = service.status().local_probe
        assert last is not None
        assert last.consecutive_failures >= 2
        assert last.last_error == "via 10.0.2.10:8443: connection refused"
        switched = asyncio.Event()
        paths: list[str] = []

        def changed(path: str) -> None:
            paths.append(path)
            switched.set()

        service.on_primary_path_change(changed)
        probe.works = True
        await asyncio.wait_for(switched.wait(), 10)
        assert service.dial_primary_through_local_gateway()
        assert locator.next_local_probe_at() is None  # back on the local path: no probe due
        assert paths == ["local-gateways"]
        assert service.path_to("dc1")[0] == "local-gateways"
    finally:
        await service.stop()
