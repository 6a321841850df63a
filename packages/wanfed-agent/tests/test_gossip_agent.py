"""The asyncio adapter on loopback: real UDP and TCP sockets, in one process."""

from __future__ import annotations

import asyncio
import base64
import gc
from collections.abc import AsyncIterator, Callable

import pytest

from wanfed_agent.gossip import (
    ErrorResponse,
    GossipAgent,
    MemberEventKind,
    MemberState,
    PlainTransport,
    encode_tags,
    fast_profile,
    read_stream_message,
)
from wanfed_proto import TransportError

KEY = base64.b64encode(bytes(range(32))).decode()


class Cluster:
    def __init__(self) -> None:
        self.agents: dict[str, GossipAgent] = {}

    async def start(self, name: str, encrypt: str | None = None) -> GossipAgent:
        config = fast_profile(
            name, "127.0.0.1", 0, meta=encode_tags({"dc": name.split(".")[1]}), encrypt=encrypt
        )
        agent = GossipAgent(config, PlainTransport("127.0.0.1", 0), seed=len(self.agents))
        await agent.start()
        self.agents[name] = agent
        return agent

    def target(self, name: str) -> str:
        host, port = self.agents[name].address
        return f"{name}/{host}:{port}"

    def sees(self, observer: str, subject: str, state: MemberState) -> Callable[[], bool]:
        return lambda: self.agents[observer].core.state_of(subject) is state

    async def kill(self, name: str) -> None:
        """Stop without a word: what peers see of a ``kill -9``."""
        await self.agents.pop(name).close()


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    c = Cluster()
    yield c
    for agent in c.agents.values():
        await agent.close()


async def test_agents_join_gossip_tags_detect_failure_and_leave(cluster: Cluster) -> None:
    a = await cluster.start("a.dc1")
    b = await cluster.start("b.dc2")
    c = await cluster.start("c.dc1")
    assert await b.join(cluster.target("a.dc1")) == 1
    assert await c.join(cluster.target("b.dc2")) == 1
    for observer in ("a.dc1", "b.dc2", "c.dc1"):
        for subject in ("a.dc1", "b.dc2", "c.dc1"):
            assert await cluster.agents[observer].wait_until(
                cluster.sees(observer, subject, MemberState.ALIVE), 10.0
            ), (observer, subject)
    seen_b = a.core.member("b.dc2")
    assert seen_b is not None
    assert seen_b.tags == {"dc": "dc2"}

    await cluster.kill("b.dc2")
    assert await a.wait_until(cluster.sees("a.dc1", "b.dc2", MemberState.DEAD), 15.0)
    assert await c.wait_until(cluster.sees("c.dc1", "b.dc2", MemberState.DEAD), 15.0)

    assert await c.leave(5.0)
    assert await a.wait_until(cluster.sees("a.dc1", "c.dc1", MemberState.LEFT), 5.0)
    kinds = [(e.kind, e.member.name) for e in a.events]
    assert (MemberEventKind.FAILED, "b.dc2") in kinds
    assert (MemberEventKind.LEAVE, "c.dc1") in kinds


async def test_encrypted_agents_interoperate_and_reject_strangers(cluster: Cluster) -> None:
    a = await cluster.start("a.dc1", encrypt=KEY)
    b = await cluster.start("b.dc1", encrypt=KEY)
    stranger = await cluster.start("x.dc1")
    assert await b.join(cluster.target("a.dc1")) == 1
    assert await a.wait_until(cluster.sees("a.dc1", "b.dc1", MemberState.ALIVE), 5.0)
    # A member without the key is refused: its push/pull is answered with an error.
    assert await stranger.join(cluster.target("a.dc1")) == 0
    assert a.core.state_of("x.dc1") is None


async def test_join_to_nobody_reports_zero(cluster: Cluster) -> None:
    a = await cluster.start("a.dc1")
    lonely = await cluster.start("b.dc1")
    target = cluster.target("b.dc1")
    await cluster.kill("b.dc1")
    del lonely
    assert await a.join(target) == 0
    with pytest.raises(ValueError, match="name/address"):
        await a.join("127.0.0.1:1")


async def test_garbage_on_a_stream_is_answered_with_an_error(cluster: Cluster) -> None:
    a = await cluster.start("a.dc1")
    host, port = a.address
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(b"\x63 not gossip")
        await writer.drain()
        reply = await asyncio.wait_for(reader.read(), 5.0)
    finally:
        writer.close()
        await writer.wait_closed()
    msg, _ = read_stream_message(reply)
    assert isinstance(msg, ErrorResponse)
    assert "unexpected stream message type 99" in msg.error


class RefusingStreams(PlainTransport):
    """Every stream dial fails the way a gateway dial does: a wanfed_proto error."""

    async def open_stream(
        self, name: str, addr: tuple[str, int]
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        raise TransportError(f"no gateway answered for {name}")


async def test_a_stream_dial_failing_with_a_proto_error_is_a_stream_failure() -> None:
    """Gateway dials raise TransportError (not OSError): the exchange must end as a
    failed stream, not as a task dying with an exception nobody retrieves."""
    loop = asyncio.get_running_loop()
    reported: list[dict[str, object]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    agent = GossipAgent(
        fast_profile("a.dc1", "127.0.0.1", 0, meta=encode_tags({"dc": "dc1"})),
        RefusingStreams("127.0.0.1", 0),
        seed=1,
    )
    await agent.start()
    try:
        assert await agent.join("b.dc2/127.0.0.1:9") == 0
        await asyncio.sleep(0)  # let the exchange task finish and be dropped
        gc.collect()
    finally:
        await agent.close()
        loop.set_exception_handler(previous)
    assert reported == []
