"""The leader's federation routines: leadership changes, and the first rounds.

``WanFederation`` over a stand-in host whose every RPC to the primary waits
forever (or fails at once), so the routines stay parked and only the
lifecycle decides whether they run. No sockets.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

import msgspec
import pytest

from wanfed_fsm import (
    Consensus,
    FederationState,
    FederationStateRequest,
    FederationStateWrite,
    Fsm,
    LocalConsensus,
    StateStore,
)
from wanfed_proto import TransportError
from wanfed_server.runtime import NoPathToDatacenterError
from wanfed_server.runtime._wanfed import EMPTY_STORE_RECHECK, FederationOptions, WanFederation

T = TypeVar("T")


class ParkedHost:
    """Leader of dc2 whose calls to dc1 never come back (or fail with ``rpc_error``)."""

    def __init__(self) -> None:
        self._fsm = Fsm()
        self._consensus = LocalConsensus(fsm=self._fsm)
        self.primary_seen = True
        self.rpc_error: Exception | None = None
        self.waits: list[float] = []
        self.any_server_calls = 0
        self.any_server_error: Exception | None = None

    @property
    def store(self) -> StateStore:
        return self._fsm.store

    @property
    def consensus(self) -> Consensus:
        return self._consensus

    def is_leader(self) -> bool:
        return True

    def leader_rpc_address(self) -> str | None:
        return "127.0.0.1:8300"

    async def rpc(self, method: str, args: msgspec.Struct, reply_type: type[T]) -> T:
        if self.rpc_error is not None and method == "FederationState.List":
            raise self.rpc_error
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def rpc_any_server(
        self,
        datacenter: str,
        method: str,
        args: msgspec.Struct,
        reply_type: type[T],
        *,
        timeout: float,  # noqa: ASYNC109
    ) -> T:
        self.any_server_calls += 1
        if self.any_server_error is not None:
            raise self.any_server_error
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def wait_for_datacenter(self, datacenter: str, within: float) -> bool:
        if datacenter == "dc1":
            self.waits.append(within)
        if not self.primary_seen:
            await asyncio.sleep(0.01)  # stands for ``within`` seconds of waiting in vain
        return self.primary_seen

    def lists_live_server(self, datacenter: str) -> bool:
        return self.primary_seen

    def known_datacenters(self) -> list[str]:
        return ["dc1", "dc2"]


@pytest.fixture
def host() -> ParkedHost:
    return ParkedHost()


def secondary_federation(host: ParkedHost) -> WanFederation:
    """dc2's federation routines over the parked host, production timings."""
    return WanFederation(
        host,
        datacenter="dc2",
        primary_datacenter="dc1",
        primary_gateways=[],
        primary_gateways_interval=1.0,
        registry=host,
        options=FederationOptions(),
        clock_now=0.0,
    )


@pytest.fixture
async def federation(host: ParkedHost) -> AsyncIterator[WanFederation]:
    fed = secondary_federation(host)
    fed.locator.update_from_states([])  # as the refresh loop's first read would
    yield fed
    await fed.stop()


def replication_tasks() -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks() if t.get_name() == "fed-state-replication"]


async def settle() -> None:
    """Let every ready callback run; nothing here waits on I/O or time."""
    for _ in range(20):
        await asyncio.sleep(0)


async def test_leadership_lost_and_regained_at_once_runs_fresh_routines(
    federation: WanFederation,
) -> None:
    federation.on_leadership(True)
    await settle()
    [first] = replication_tasks()
    federation.on_leadership(False)
    federation.on_leadership(True)  # before the loop ran anything
    await settle()
    assert first.done()
    [second] = replication_tasks()
    assert not second.done()
    assert federation.locator_service.status().replication.use_replication_signal


async def test_leadership_lost_stops_replication_and_its_signal(
    federation: WanFederation,
) -> None:
    federation.on_leadership(True)
    await settle()
    assert replication_tasks()
    assert federation.locator_service.status().replication.use_replication_signal
    federation.on_leadership(False)
    assert not federation.locator_service.status().replication.use_replication_signal
    await settle()
    assert not replication_tasks()


async def until(condition: Callable[[], bool], within: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not condition():
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


async def store_a_replicated_state(host: ParkedHost) -> None:
    """What a restarted secondary finds in its store: a federation state of the primary."""
    await host.consensus.apply(
        FederationStateWrite(
            request=FederationStateRequest(
                datacenter="dc2", op="upsert", state=FederationState(datacenter="dc1")
            )
        )
    )


async def test_a_restarted_secondary_counts_an_absent_primary_as_a_failure_quickly(
    host: ParkedHost, federation: WanFederation
) -> None:
    # Stored states (a restart) and the primary nowhere in the WAN pool: the round
    # must not sit out the 300 s long-poll before it counts as failed.
    await store_a_replicated_state(host)
    host.primary_seen = False
    host.rpc_error = NoPathToDatacenterError()
    host.any_server_error = TransportError("dial 198.18.2.21:8443 failed: no route to host")
    federation.on_leadership(True)
    status = federation.locator_service.status
    # Production timings: rounds retry after 1, 2 s, so the third failure, which
    # sends the leader to the primary's gateways directly, comes within seconds.
    await until(lambda: not status().dial_primary_through_local_gateways, within=15.0)
    assert status().replication.consecutive_failures >= 3
    # Replication never waited for the WAN pool (anti-entropy does, 60 s at a
    # time, in its own task: its wait is the only one recorded).
    assert set(host.waits) <= {60.0}
    # The pool knowing no primary server, each round asked any primary server
    # through the gateways: the failure measured the path.
    assert host.any_server_calls >= 3
    assert "no route to host" in status().replication.last_error


async def test_no_round_is_judged_before_the_locator_read_the_store(
    host: ParkedHost,
) -> None:
    fed = secondary_federation(host)
    await store_a_replicated_state(host)
    host.rpc_error = NoPathToDatacenterError()
    host.any_server_error = TransportError("Remote DC has no server currently reachable")
    try:
        fed.on_leadership(True)
        # Several rounds ran (the replicator counts them), none judged.
        await until(lambda: fed._replicator is not None and fed._replicator.rounds >= 3)
        assert host.any_server_calls == 0
        assert fed.locator_service.status().replication.consecutive_failures == 0
        fed.locator.update_from_states([])
        await until(lambda: fed.locator_service.status().replication.consecutive_failures >= 1)
    finally:
        await fed.stop()


async def test_a_restart_whose_local_path_works_stays_on_local_gateways(
    host: ParkedHost, federation: WanFederation
) -> None:
    await store_a_replicated_state(host)
    host.primary_seen = False
    host.rpc_error = NoPathToDatacenterError()
    federation.on_leadership(True)  # any-server calls park: a long-poll in progress
    await until(lambda: host.any_server_calls == 1)
    await settle()
    status = federation.locator_service.status()
    assert status.replication.consecutive_failures == 0
    assert status.dial_primary_through_local_gateways


async def test_a_fresh_secondary_waits_for_the_primary_without_reporting_a_failure(
    host: ParkedHost, federation: WanFederation
) -> None:
    host.primary_seen = False
    host.rpc_error = NoPathToDatacenterError()
    federation.on_leadership(True)
    await until(lambda: host.waits.count(EMPTY_STORE_RECHECK) >= 2)
    await settle()
    assert federation.locator_service.status().replication.consecutive_failures == 0


async def test_states_restored_after_leadership_began_make_rounds_try_at_once(
    host: ParkedHost, federation: WanFederation
) -> None:
    # The log replay may restore the states only after replication started: the
    # waiting round looks at the store again and turns into a restart's round.
    host.primary_seen = False
    host.rpc_error = NoPathToDatacenterError()
    host.any_server_error = TransportError("dial 198.18.2.21:8443 failed: connection refused")
    federation.on_leadership(True)
    await until(lambda: EMPTY_STORE_RECHECK in host.waits)
    assert host.any_server_calls == 0  # a fresh secondary only waits
    await store_a_replicated_state(host)
    status = federation.locator_service.status
    await until(lambda: status().replication.consecutive_failures >= 1)
