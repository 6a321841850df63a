"""The WAN gossip port of a running server, tried by someone without the gossip key.

A non-dev server needs an ``encrypt`` key, so a packet or stream that is not
sealed with it is refused: one forged ``alive`` for a member of a made-up
datacenter, sent in the clear over UDP, sealed with a wrong key, or pushed over
TCP, adds nothing to the WAN pool or to ``Catalog.ListDatacenters``. Each
refusal is counted, and the test waits on those counts (not on time) before it
looks. The control at the end seals the same packet with the server's own key
and sees it applied: the key, nothing else, keeps the forgery out.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable

import pytest

from wanfed_agent.gossip import (
    Alive,
    Keyring,
    NodeStateKind,
    PushNodeState,
    PushPull,
    RefusalCounts,
    encode_message,
    encode_push_pull,
    encode_tags,
)
from wanfed_fsm import DCSpecificRequest, Node, RegisterRequest
from wanfed_server.runtime import Server

FAKE_DC = "fakedc"
GHOST = f"ghost.{FAKE_DC}"
VSN = bytes((1, 5, 2, 0, 0, 0))
FAKE_TAGS = encode_tags({"role": "consul", "dc": FAKE_DC, "port": "8300"})
FORGED_ALIVE = encode_message(
    Alive(
        incarnation=1,
        node=GHOST,
        addr=bytes((127, 0, 0, 66)),
        port=8302,
        meta=FAKE_TAGS,
        vsn=VSN,
    )
)


@pytest.fixture
async def keyed_server(start_tls_server: Callable[..., Awaitable[Server]]) -> Server:
    return await start_tls_server()


def _wan_port(server: Server) -> int:
    return server.config.ports.serf_wan


def _refusals(server: Server) -> RefusalCounts:
    wan = server.wan_pool
    assert wan is not None
    return wan.agent.core.refusals


async def _datacenters(server: Server) -> list[str]:
    return await server.rpc("Catalog.ListDatacenters", DCSpecificRequest(), list[str])


def _members(server: Server) -> set[str]:
    wan = server.wan_pool
    assert wan is not None
    return {member.name for member in wan.agent.members()}


async def _wait_for(server: Server, condition: Callable[[], bool]) -> None:
    wan = server.wan_pool
    assert wan is not None
    # A generous bound so a hang fails the test instead of blocking it; the wait
    # itself ends on the event the agent sets when a packet or stream is handled.
    assert await wan.agent.wait_until(condition, within=30), _refusals(server)


def _send_udp(port: int, packet: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(packet, ("127.0.0.1", port))


async def _push_pull_in_the_clear(port: int) -> bytes:
    state = PushNodeState(
        name=GHOST,
        addr=bytes((127, 0, 0, 66)),
        port=8302,
        state=NodeStateKind.ALIVE,
        meta=FAKE_TAGS,
        vsn=VSN,
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(encode_push_pull(PushPull(join=True, states=(state,))))
        await writer.drain()
        async with asyncio.timeout(30):
            return await reader.read(65536)
    finally:
        writer.close()
        await writer.wait_closed()


async def test_gossip_without_the_key_adds_no_member_and_no_datacenter(
    keyed_server: Server,
) -> None:
    server = keyed_server
    port = _wan_port(server)
    before = await _datacenters(server)
    assert before == ["dc1"]

    _send_udp(port, FORGED_ALIVE)
    _send_udp(port, Keyring([bytes(32)]).encrypt(FORGED_ALIVE))  # a wrong key
    await _wait_for(server, lambda: _refusals(server).packets >= 2)
    reply = await _push_pull_in_the_clear(port)
    await _wait_for(server, lambda: _refusals(server).streams >= 1)

    assert b"ghost" not in reply  # a sealed error, never the server's member list
    assert _refusals(server) == RefusalCounts(packets=2, streams=1)
    assert GHOST not in _members(server)
    assert await _datacenters(server) == before
    # Still writable (the write waits out the first election), and the leader.
    request = RegisterRequest(node=Node(node="after-gossip", address="198.18.0.9"))
    assert await server.rpc("Catalog.Register", request, bool)
    assert server.is_leader()

    # The control: sealed with the server's own key, the same packet is applied.
    assert server.config.encrypt is not None
    _send_udp(port, Keyring.from_base64(server.config.encrypt).encrypt(FORGED_ALIVE))
    await _wait_for(server, lambda: GHOST in _members(server))
    assert _refusals(server) == RefusalCounts(packets=2, streams=1)
