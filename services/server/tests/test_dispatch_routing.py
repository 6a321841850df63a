"""Which server answers a read: the leader, unless the caller allows stale results.

A follower's store may be behind the leader's, so a default or consistent
read it answered itself could miss an acknowledged write. Tests that read
after Raft has replicated cannot see the difference; these count where the
handler ran and what crossed to the leader.
"""

from __future__ import annotations

from typing import Any, cast

from wanfed_agent.rpc import RpcPool
from wanfed_fsm import DCSpecificRequest
from wanfed_server.runtime import (
    Dispatcher,
    Endpoint,
    EndpointKind,
    ServerInfo,
    StaticRouter,
)

LEADER = ServerInfo(node="s2", datacenter="dc1", rpc_address="127.0.0.1:1")


class _LeaderPool:
    """Stands for the pooled connection to the leader: records what was forwarded."""

    def __init__(self) -> None:
        self.forwarded: list[tuple[str, str, object]] = []

    async def call(
        self,
        node: str,
        datacenter: str,
        address: str,
        method: str,
        request: object,
        reply_type: object,
        **kwargs: Any,
    ) -> object:
        self.forwarded.append((address, method, request))
        return "answered by the leader"


class _Here:
    """The read handler: counts how often it ran on this server."""

    def __init__(self) -> None:
        self.runs = 0

    async def __call__(self, request: DCSpecificRequest) -> str:
        self.runs += 1
        return "answered here"


def _server(*, leader: bool) -> tuple[Dispatcher, _Here, _LeaderPool]:
    here, pool = _Here(), _LeaderPool()
    dispatcher = Dispatcher(
        datacenter="dc1",
        endpoints=[Endpoint("Test.Read", DCSpecificRequest, str, EndpointKind.READ, here)],
        is_leader=lambda: leader,
        leader=lambda: LEADER,
        router=StaticRouter("dc1", {}),
        pool=cast(RpcPool, pool),
        hold_timeout=1.0,
    )
    return dispatcher, here, pool


async def _read(dispatcher: Dispatcher, request: DCSpecificRequest) -> object:
    return await dispatcher.dispatch(dispatcher.endpoint("Test.Read"), request)


async def test_a_follower_sends_a_default_read_to_the_leader() -> None:
    follower, here, pool = _server(leader=False)
    request = DCSpecificRequest()
    assert await _read(follower, request) == "answered by the leader"
    assert here.runs == 0, "the follower answered a default read from its own store"
    assert pool.forwarded == [(LEADER.rpc_address, "Test.Read", request)]


async def test_a_follower_sends_a_consistent_read_to_the_leader() -> None:
    follower, here, pool = _server(leader=False)
    assert await _read(follower, DCSpecificRequest(require_consistent=True)) == (
        "answered by the leader"
    )
    assert (here.runs, len(pool.forwarded)) == (0, 1)


async def test_a_follower_answers_a_stale_read_itself() -> None:
    follower, here, pool = _server(leader=False)
    assert await _read(follower, DCSpecificRequest(allow_stale=True)) == "answered here"
    assert (here.runs, pool.forwarded) == (1, [])


async def test_the_leader_answers_a_default_read_itself() -> None:
    leader, here, pool = _server(leader=True)
    assert await _read(leader, DCSpecificRequest()) == "answered here"
    assert (here.runs, pool.forwarded) == (1, [])
