"""The probe of the local path: only a primary server answering through the gateway counts.

A leader that went direct returns to its local gateways only on a working
probe. A probe that "succeeds" without proving the path would send it back
onto a black-holed gateway, where replication fails three times and sends it
direct again: it flaps. The gateway here is silent (it accepts and never
answers), the way a WAN fault usually is.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING

import pytest

from wanfed_agent.rpc import DialError, RouteTable, RpcPool, TlsDialer
from wanfed_fsm import CheckServiceNode, FederationState, Node, RetryPolicy, Service
from wanfed_gateway_locator import GatewayLocator, LocatorService
from wanfed_proto import Alpn, client_context
from wanfed_server.runtime._wanfed import PrimaryPingProbe

if TYPE_CHECKING:
    from .conftest import RuntimePki  # type: ignore[import-not-found]

PROBE_TIMEOUT = 0.2


class BlackHole(asyncio.Protocol):
    """A TCP listener that accepts and never sends a byte; counts the connections."""

    def __init__(self) -> None:
        self.accepted = 0
        self._transports: list[asyncio.BaseTransport] = []
        self.server: asyncio.Server | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.accepted += 1
        self._transports.append(transport)  # kept open, silent, until close()

    @property
    def address(self) -> str:
        assert self.server is not None
        host, port = self.server.sockets[0].getsockname()[:2]
        return f"{host}:{port}"

    async def close(self) -> None:
        for transport in self._transports:
            transport.close()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@pytest.fixture
async def black_hole() -> AsyncIterator[BlackHole]:
    hole = BlackHole()
    loop = asyncio.get_running_loop()
    hole.server = await loop.create_server(lambda: hole, "127.0.0.1", 0)
    yield hole
    await hole.close()


class _NoPaths:
    """The probe never asks for a path: it dials the gateway it is given."""

    def path_to(self, datacenter: str) -> tuple[str, int]:
        raise AssertionError(f"a probe asked for the path to {datacenter}")

    def pick_gateway(self, datacenter: str) -> str:
        raise AssertionError(f"a probe picked a gateway of {datacenter}")


def _probe(pki: RuntimePki) -> PrimaryPingProbe:
    """The probe a dc2 server runs: through its RPC client, as every other call."""
    files = pki.certs["r1"]  # a dc2 server probes the way to dc1
    context = client_context(pki.ca, files.cert, files.key, alpn=[Alpn.RPC_MULTI])
    paths = _NoPaths()
    dialer = TlsDialer(context, "consul", gateways=paths, attempt_timeout=PROBE_TIMEOUT)
    pool = RpcPool(dialer, RouteTable("dc2", paths))
    return PrimaryPingProbe(primary="dc1", client=pool, timeout=PROBE_TIMEOUT)


async def test_a_probe_through_a_black_holed_gateway_fails(
    black_hole: BlackHole, runtime_pki: RuntimePki
) -> None:
    with pytest.raises(DialError, match="timed out"):
        await _probe(runtime_pki).probe(black_hole.address)
    assert black_hole.accepted == 1, "the probe must dial the gateway it was given"


def _gateway_state(datacenter: str, address: str) -> FederationState:
    host, port = address.rsplit(":", 1)
    return FederationState(
        datacenter=datacenter,
        mesh_gateways=[
            CheckServiceNode(
                node=Node(node=f"{datacenter}-gw", address=host),
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


class _States:
    """The store's federation states: given once, then no change."""

    def __init__(self, states: list[FederationState]) -> None:
        self._states = states

    def local_state_initialized(self) -> bool:
        return True

    async def federation_states(self, min_index: int) -> tuple[int, Sequence[FederationState]]:
        if min_index >= 1:
            await asyncio.Event().wait()  # nothing changes
        return 1, self._states


class _CountingProbe:
    """Delegates to the real probe; a probe's start proves every earlier one was recorded."""

    def __init__(self, inner: PrimaryPingProbe) -> None:
        self._inner = inner
        self.started = 0
        self._changed = asyncio.Condition()

    async def probe(self, gateway: str) -> None:
        async with self._changed:
            self.started += 1
            self._changed.notify_all()
        await self._inner.probe(gateway)

    async def until_started(self, count: int) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self.started >= count)


async def test_a_black_holed_local_gateway_keeps_the_leader_direct(
    black_hole: BlackHole, runtime_pki: RuntimePki
) -> None:
    locator = GatewayLocator(
        datacenter="dc2", primary_datacenter="dc1", now=0.0, local_probe_interval=0.01
    )
    states = _States(
        [_gateway_state("dc1", "127.0.0.1:9"), _gateway_state("dc2", black_hole.address)]
    )
    probe = _CountingProbe(_probe(runtime_pki))
    fast = RetryPolicy(rate=1000.0, burst=5, backoff_base=0.001, backoff_cap=0.01)
    service = LocatorService(locator, states, policy=fast, probe=probe)
    back_home = asyncio.Event()
    service.start()
    try:
        await asyncio.wait_for(service.wait_refreshed(0), 30)
        service.set_use_replication_signal(True)  # the leader
        for _ in range(3):
            service.on_replication_result("i/o timeout")
        assert not service.dial_primary_through_local_gateway()
        service.on_primary_path_change(lambda path: back_home.set())
        # The third probe starts only after the first two were judged.
        third = asyncio.ensure_future(probe.until_started(3))
        home = asyncio.ensure_future(back_home.wait())
        done, pending = await asyncio.wait({third, home}, timeout=60, return_when="FIRST_COMPLETED")
        for task in pending:
            task.cancel()
        assert not back_home.is_set(), "a probe through a black-holed gateway brought it home"
        assert third in done, "no third probe within 60 s"
        assert not service.dial_primary_through_local_gateway()
        status = service.status().local_probe
        assert status is not None
        assert status.consecutive_failures >= 2
        assert black_hole.accepted >= 2
    finally:
        await service.stop()
