"""The hello round that keeps the server directory fresh tolerates a black-holed peer."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest

from wanfed_agent.config import load_config
from wanfed_agent.rpc import RouteTable, RpcPool, TlsDialer
from wanfed_proto import Alpn, client_context
from wanfed_server.runtime import (
    HELLO_TIMEOUT,
    Server,
    ServerDirectory,
    ServerInfo,
    hello_round,
)

if TYPE_CHECKING:
    from .conftest import RuntimePki  # type: ignore[import-not-found]


@pytest.fixture
async def peer(runtime_pki: RuntimePki) -> AsyncIterator[Server]:
    # hellos are servers-only: the peer checks the caller's server certificate
    config = load_config(
        overrides={"node_name": "s2", "ports": {"server": 0}, "tls": runtime_pki.mutual_tls("s2")},
        dev=True,
    )
    server = Server(config)
    await server.start()
    yield server
    await server.stop()


async def test_a_black_holed_peer_does_not_hold_up_the_others(
    peer: Server, runtime_pki: RuntimePki
) -> None:
    files = runtime_pki.certs["s1"]
    context = client_context(runtime_pki.ca, files.cert, files.key, alpn=[Alpn.RPC_MULTI])
    with socket.socket() as black_hole:  # listens, never accepts, never answers
        black_hole.bind(("127.0.0.1", 0))
        black_hole.listen(8)
        silent = f"127.0.0.1:{black_hole.getsockname()[1]}"
        me = ServerInfo(node="s1", datacenter="dc1", rpc_address="127.0.0.1:1")
        directory = ServerDirectory(me)
        pool = RpcPool(TlsDialer(context, "consul"), RouteTable("dc1"))
        try:
            # The black hole never answers: the round ends at all only because every
            # hello (dial included) has its own deadline, HELLO_TIMEOUT; this outer
            # one is many times longer and fails the test instead of hanging it.
            round_ = hello_round(pool, directory, [silent, peer.rpc_address])
            answers = await asyncio.wait_for(round_, 15 * HELLO_TIMEOUT)
        finally:
            await pool.close()
    assert [a.server.node for a in answers] == ["s2"]
    assert directory.last_seen("s2") is not None
    assert [s.node for s in directory.peers()] == ["s2"]
