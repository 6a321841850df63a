"""Raft over the RPC port: three servers whose raft rides mutual TLS with ALPN wanfed/raft."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path

import pytest

from wanfed_fsm import (
    FederationState,
    FederationStateRequest,
    FederationStateWrite,
    NotLeaderError,
    RaftConfig,
    RaftConsensus,
    RaftLink,
)
from wanfed_proto import (
    Alpn,
    Connection,
    RpcPortServer,
    TransportError,
    client_context,
    dial_alpn,
    serve_rpc_port,
    server_context,
)

SERVER_NAME = "server.dc1.consul"


def _upsert(dc: str) -> FederationStateWrite:
    return FederationStateWrite(
        request=FederationStateRequest(op="upsert", state=FederationState(datacenter=dc))
    )


async def _poll(condition: Callable[[], bool], within: float = 5.0) -> None:
    """Wait for state that lives on pysyncobj's thread and has no event of its own."""
    async with asyncio.timeout(within):
        while True:
            if condition():
                return
            await asyncio.sleep(0.01)


def _has_applied(consensus: RaftConsensus, index: int) -> bool:
    return consensus.raft_index() >= index


class LinkedServer:
    """An RPC port serving wanfed/raft plus a RaftConsensus that uses it."""

    def __init__(self, rpc: RpcPortServer, link: RaftLink) -> None:
        self.rpc = rpc
        self.link = link
        self.address = f"{rpc.address[0]}:{rpc.address[1]}"
        self.consensus: RaftConsensus | None = None

    @property
    def raft(self) -> RaftConsensus:
        assert self.consensus is not None
        return self.consensus

    async def stop(self) -> None:
        if self.consensus is not None:
            await self.consensus.shutdown()
        await self.rpc.close()


@pytest.fixture
async def linked(pki: dict[str, Path], tmp_path: Path) -> AsyncIterator[list[LinkedServer]]:
    async with _linked_servers(pki, tmp_path, idle_timeout=None) as servers:
        yield servers


@contextlib.asynccontextmanager
async def _linked_servers(
    pki: dict[str, Path], tmp_path: Path, idle_timeout: float | None
) -> AsyncIterator[list[LinkedServer]]:
    """Three RPC ports serving wanfed/raft, each with a RaftConsensus on it."""
    dial_context = client_context(pki["ca"], pki["cert"], pki["key"], alpn=[Alpn.RAFT])
    listen_context = server_context(pki["ca"], pki["cert"], pki["key"])

    async def dial(address: str) -> Connection:
        return await dial_alpn(address, SERVER_NAME, Alpn.RAFT, dial_context, timeout=2)

    servers: list[LinkedServer] = []
    for _ in range(3):
        link = RaftLink(dial)
        rpc = await serve_rpc_port(
            "127.0.0.1",
            0,
            plain_handlers={},
            alpn_handlers={Alpn.RAFT: link.serve},
            ssl_context=listen_context,
            idle_timeout=idle_timeout,
        )
        servers.append(LinkedServer(rpc, link))
    for i, server in enumerate(servers):
        server.consensus = RaftConsensus(
            RaftConfig(
                address=server.address,
                peers=[s.address for s in servers if s is not server],
                data_dir=str(tmp_path / f"s{i}"),
            ),
            link=server.link,
        )
    try:
        yield servers
    finally:
        await asyncio.gather(*(s.stop() for s in servers))


async def test_quiet_raft_links_are_not_closed_by_the_idle_timeout(
    pki: dict[str, Path], tmp_path: Path
) -> None:
    """Followers rarely send each other anything; their links must stay up anyway.

    A connection that never says hello is idle-closed; two of those in a row
    on every server mean well over an idle timeout passed for every raft link.
    """
    context = client_context(pki["ca"], pki["cert"], pki["key"], alpn=[Alpn.RAFT])
    async with _linked_servers(pki, tmp_path, idle_timeout=0.2) as servers:
        await _poll(lambda: any(s.raft.is_leader() for s in servers))
        await _poll(lambda: all(s.raft.leader_address() for s in servers))
        for server in servers:
            for _ in range(2):
                silent = await dial_alpn(server.address, SERVER_NAME, Alpn.RAFT, context, 2)
                reader, _ = silent.open_streams()
                assert await asyncio.wait_for(reader.read(), 10) == b""
        assert [s.rpc.stats.idle_closed for s in servers] == [2, 2, 2]
        leader = next(s for s in servers if s.raft.is_leader())
        await leader.raft.apply(_upsert("dc1"))


async def test_raft_over_mutual_tls_replicates_and_fails_over(
    linked: list[LinkedServer],
) -> None:
    await _poll(lambda: any(s.raft.is_leader() for s in linked))
    await _poll(lambda: all(s.raft.leader_address() for s in linked))
    leader = next(s for s in linked if s.raft.is_leader())
    follower = next(s for s in linked if s is not leader)
    with pytest.raises(NotLeaderError, match=leader.address):
        await follower.raft.apply(_upsert("dc1"))
    index = await leader.raft.apply(_upsert("dc1"))
    for server in linked:
        await _poll(partial(_has_applied, server.raft, index))
        with server.raft.store.read() as txn:
            assert [s.datacenter for s in txn.federation_states()[1]] == ["dc1"]

    await leader.stop()
    survivors = [s for s in linked if s is not leader]
    await _poll(lambda: any(s.raft.is_leader() for s in survivors), within=3)
    new_leader = next(s for s in survivors if s.raft.is_leader())
    await new_leader.raft.apply(_upsert("dc2"))
    await new_leader.raft.verify_leader()


async def _admitted(address: str, context: ssl.SSLContext) -> bool:
    """True when the server keeps a wanfed/raft connection open (waiting for a hello)."""
    try:
        connection = await dial_alpn(address, SERVER_NAME, Alpn.RAFT, context, timeout=2)
    except TransportError:
        return False
    reader, _ = connection.open_streams()
    try:
        async with asyncio.timeout(0.5):
            # TLS 1.3 reports a rejected client certificate only on the first read
            data = await reader.read(1)
    except TimeoutError:
        return True
    except (ConnectionError, ssl.SSLError):
        return False
    finally:
        connection.abort()
    return bool(data)


async def test_a_certificate_from_another_ca_gets_no_raft_connection(
    linked: list[LinkedServer], pki: dict[str, Path]
) -> None:
    ours = client_context(pki["ca"], pki["cert"], pki["key"], alpn=[Alpn.RAFT])
    rogue = client_context(pki["ca"], pki["rogue_cert"], pki["rogue_key"], alpn=[Alpn.RAFT])
    assert await _admitted(linked[0].address, ours)
    assert not await _admitted(linked[0].address, rogue)


async def test_link_mode_needs_no_encrypt_key(linked: list[LinkedServer]) -> None:
    await _poll(lambda: any(s.raft.is_leader() for s in linked))
    assert all(s.consensus is not None for s in linked)
