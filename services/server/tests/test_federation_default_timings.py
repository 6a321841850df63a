"""A federation with the production timings forms in seconds, not retry intervals.

The other in-process federation tests shorten every interval (WAN join retry
0.2 s, replication and locator rates of 50/s), which hides anything that only
works on its *second* try: with the defaults, a second try of the WAN join
comes ``retry_interval_wan`` (30 s) later. Here every server and agent timing
is the default one, so a secondary joins the primary when its first chance
comes: once its locator knows a gateway to dial.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from wanfed_server.runtime import Server, ServerOptions

if TYPE_CHECKING:
    from .conftest import Federation  # type: ignore[import-not-found]

    MakeFederation = Callable[..., Awaitable[Federation]]

FEDERATED_WITHIN = 10.0
"""Seconds from the first process starting to every datacenter holding every state."""

DEFAULT_AGENT_TIMINGS = {"retry_interval_wan": "30s", "primary_gateways_interval": "30s"}


def federation_states(server: Server) -> set[str]:
    with server.store.read() as txn:
        return {state.datacenter for state in txn.federation_states()[1]}


async def test_two_datacenters_with_default_timings_federate_within_seconds(
    make_federation: MakeFederation,
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + FEDERATED_WITHIN
    federation = await make_federation(
        {"dc1": 1, "dc2": 1}, options=ServerOptions(), agent_timings=DEFAULT_AGENT_TIMINGS
    )
    servers = [federation["dc1"].require_server(), federation["dc2"].require_server()]

    def federated() -> bool:
        return all(federation_states(s) == {"dc1", "dc2"} for s in servers)

    while not federated():
        if loop.time() > deadline:
            held = {s.datacenter: sorted(federation_states(s)) for s in servers}
            raise AssertionError(
                f"not federated {FEDERATED_WITHIN:.0f} s after the processes started "
                f"(a WAN join waiting for its retry interval?): each holds {held}"
            )
        await asyncio.sleep(0.05)
