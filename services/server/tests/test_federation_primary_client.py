"""Replication's call to the primary: a round that would dial nothing asks any server.

``_PrimaryClient`` over a stand-in host whose WAN pool lists live primary
servers or not; no sockets. A forwarded call with no live server listed
fails with "Remote DC has no server currently reachable" without dialling,
which says nothing about the path, so the round must go to any primary
server through the gateways instead (and only then count).
"""

from __future__ import annotations

from typing import TypeVar, cast

import msgspec
import pytest

from wanfed_fsm import Fsm, IndexedFederationStates, StateStore
from wanfed_gateway_locator import GatewayLocator
from wanfed_proto import RemoteError
from wanfed_server.runtime._router import NO_SERVER_REACHABLE
from wanfed_server.runtime._wanfed import _PrimaryClient

T = TypeVar("T")

ANSWER = IndexedFederationStates(index=7)


class PoolHost:
    """dc2's leader; ``live`` is whether its WAN pool lists a live dc1 server."""

    def __init__(self, *, live: bool, empties_during_call: bool = False) -> None:
        self._fsm = Fsm()
        self.live = live
        self._empties_during_call = empties_during_call
        self.forwarded = 0
        self.any_server_calls = 0

    @property
    def store(self) -> StateStore:
        return self._fsm.store

    async def rpc(self, method: str, args: msgspec.Struct, reply_type: type[T]) -> T:
        self.forwarded += 1
        if self._empties_during_call:
            self.live = False  # every dc1 server failed in gossip just now
        raise RemoteError(NO_SERVER_REACHABLE)

    async def rpc_any_server(
        self,
        datacenter: str,
        method: str,
        args: msgspec.Struct,
        reply_type: type[T],
        *,
        timeout: float,  # noqa: ASYNC109 (the call's deadline)
    ) -> T:
        assert timeout > 0, "every call has a deadline"
        self.any_server_calls += 1
        return cast(T, ANSWER)

    async def wait_for_datacenter(self, datacenter: str, within: float) -> bool:
        return True

    def lists_live_server(self, datacenter: str) -> bool:
        return self.live


def client_of(host: PoolHost) -> _PrimaryClient:
    locator = GatewayLocator(datacenter="dc2", primary_datacenter="dc1", now=0.0)
    locator.update_from_states([])  # as the refresh loop's first read would
    return _PrimaryClient(host, "dc1", 300.0, locator)  # type: ignore[arg-type]


async def test_no_live_primary_server_listed_asks_any_primary_server() -> None:
    host = PoolHost(live=False)
    assert await client_of(host).list_federation_states(0) == ANSWER
    assert (host.forwarded, host.any_server_calls) == (0, 1)


async def test_a_list_that_emptied_during_the_call_asks_any_primary_server() -> None:
    host = PoolHost(live=True, empties_during_call=True)
    assert await client_of(host).list_federation_states(0) == ANSWER
    assert (host.forwarded, host.any_server_calls) == (1, 1)


async def test_live_servers_that_all_failed_to_answer_fail_the_round() -> None:
    host = PoolHost(live=True)
    with pytest.raises(RemoteError, match=NO_SERVER_REACHABLE):
        await client_of(host).list_federation_states(0)
    assert host.any_server_calls == 0
