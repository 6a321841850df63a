"""A 3-server datacenter of real ``wanfed agent`` processes, from config files, mTLS on.

``kill -9`` of the leader: the survivors elect a new leader and a write through
a surviving server succeeds again (``nox -s bench -- liveness`` measures how
soon). The killed server, restarted with the same config and data dir,
rejoins and catches up.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from wanfed_fsm import DCSpecificRequest, IndexedNodes, Node, RegisterRequest
from wanfed_proto import Alpn, ProtoError, RpcClient, client_context, dial_alpn

if TYPE_CHECKING:
    from .conftest import AgentProcess, RuntimePki  # type: ignore[import-not-found]


T = TypeVar("T")

NODES = ("s1", "s2", "s3")


class Clients:
    """One mTLS RPC client per agent, redialled after a failure."""

    def __init__(self, pki: RuntimePki) -> None:
        files = pki.certs["client"]
        self._context = client_context(pki.ca, files.cert, files.key, alpn=[Alpn.RPC_MULTI])
        self._clients: dict[int, RpcClient] = {}

    async def call(self, port: int, method: str, body: object, reply: type[T], limit: float) -> T:
        client = self._clients.get(port)
        if client is None or client.is_closed:
            connection = await dial_alpn(
                ("127.0.0.1", port), "server.dc1.consul", Alpn.RPC_MULTI, self._context, limit
            )
            client = self._clients[port] = RpcClient(connection)
        return await client.call(method, body, type=reply, timeout=limit)

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()


async def _until(deadline: float, attempt: Callable[[], Awaitable[T | None]]) -> T:
    """Retry ``attempt()`` every 50 ms until it returns a value (processes have no events
    we could wait on from here)."""
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = await attempt()
        except (ProtoError, OSError) as exc:
            last = exc
        else:
            if result is not None:
                return result
        await asyncio.sleep(0.05)
    raise AssertionError(f"gave up waiting; last error: {last!r}")


async def test_kill_the_leader_writes_resume_and_it_rejoins(
    agents: dict[str, AgentProcess], runtime_pki: RuntimePki
) -> None:
    clients = Clients(runtime_pki)
    try:
        port_of = {f"127.0.0.1:{a.rpc_port}": a for a in agents.values()}

        async def leader() -> AgentProcess | None:
            answer = await clients.call(agents["s1"].rpc_port, "Status.Leader", None, str, 2)
            return port_of.get(answer)

        old = await _until(time.monotonic() + 30, leader)
        survivor = next(a for a in agents.values() if a is not old)

        async def write(name: str, port: int) -> bool | None:
            request = RegisterRequest(node=Node(node=name, address="198.18.0.9"))
            return await clients.call(port, "Catalog.Register", request, bool, 1.0)

        assert await _until(time.monotonic() + 15, lambda: write("before", survivor.rpc_port))

        old.kill()
        # Liveness, not speed (``nox -s bench -- liveness`` measures the time): the
        # survivors elect one of themselves and a write through a survivor succeeds.
        assert await _until(time.monotonic() + 30, lambda: write("after", survivor.rpc_port))

        async def new_leader() -> AgentProcess | None:
            answer = await clients.call(survivor.rpc_port, "Status.Leader", None, str, 2)
            return port_of.get(answer)

        assert await _until(time.monotonic() + 30, new_leader) is not old

        old.start()

        async def caught_up() -> bool | None:
            nodes = await clients.call(
                old.rpc_port,
                "Catalog.ListNodes",
                DCSpecificRequest(allow_stale=True),
                IndexedNodes,
                2,
            )
            assert isinstance(nodes, IndexedNodes)
            return True if "after" in {n.node for n in nodes.nodes} else None

        assert await _until(time.monotonic() + 20, caught_up)
        peers = await clients.call(old.rpc_port, "Status.Peers", None, list[str], 2)
        assert sorted(peers) == sorted(port_of)
        # and it takes part again: a write through it succeeds
        assert await _until(time.monotonic() + 10, lambda: write("rejoined", old.rpc_port))
    finally:
        await clients.close()
