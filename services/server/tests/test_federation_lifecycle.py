"""The leader's federation routines follow leadership changes, even quick ones.

``WanFederation`` over a stand-in host whose every RPC to the primary waits
forever, so the routines stay parked and only the lifecycle decides whether
they run. No sockets, no clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TypeVar

import msgspec
import pytest

from wanfed_fsm import Consensus, Fsm, LocalConsensus, StateStore
from wanfed_server.runtime._wanfed import FederationOptions, WanFederation

T = TypeVar("T")


class ParkedHost:
    """Leader of dc2 whose calls to dc1 never come back."""

    def __init__(self) -> None:
        self._fsm = Fsm()
        self._consensus = LocalConsensus(fsm=self._fsm)

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
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def wait_for_datacenter(self, datacenter: str, within: float) -> bool:
        return True

    def known_datacenters(self) -> list[str]:
        return ["dc1", "dc2"]


@pytest.fixture
async def federation() -> AsyncIterator[WanFederation]:
    host = ParkedHost()
    fed = WanFederation(
        host,
        datacenter="dc2",
        primary_datacenter="dc1",
        primary_gateways=[],
        primary_gateways_interval=1.0,
        registry=host,
        options=FederationOptions(),
        clock_now=0.0,
    )
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
