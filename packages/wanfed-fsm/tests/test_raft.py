"""RaftConsensus in one process: security gate, leadership, persistence, snapshot files."""

from __future__ import annotations

import asyncio
import random
import secrets
import socket
import threading
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path

import msgspec
import pytest

from wanfed_fsm import (
    Consensus,
    FederationState,
    FederationStateRequest,
    FederationStateWrite,
    LocalConsensus,
    NotLeaderError,
    OutcomeUnknownError,
    QueryOptions,
    RaftConfig,
    RaftConsensus,
    RaftSecurityError,
    ReadTxn,
    SnapshotFormatError,
    blocking_query,
    raft_password,
)
from wanfed_fsm._raft import _resolve_apply

KEY = secrets.token_bytes(32)


def _port() -> int:
    """A port free now on 127.0.0.1, below Linux's ephemeral range (32768-60999): a
    ``bind(0)`` port is an ephemeral one, which another test's outgoing connection
    may take before the server binds it."""
    for _ in range(200):
        port = random.randrange(20000, 32768)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free TCP port below the ephemeral range on 127.0.0.1")


def _upsert(dc: str) -> FederationStateWrite:
    return FederationStateWrite(
        request=FederationStateRequest(op="upsert", state=FederationState(datacenter=dc))
    )


def _states(txn: ReadTxn) -> tuple[int, list[FederationState]]:
    return txn.federation_states()


async def _until_leader(consensus: RaftConsensus) -> None:
    elected = asyncio.Event()

    def note(leader: bool) -> None:
        if leader:
            elected.set()

    unsubscribe = consensus.on_leadership_change(note)
    try:
        await asyncio.wait_for(elected.wait(), 30)
    finally:
        unsubscribe()


def test_unauthenticated_raft_refuses_to_start(tmp_path: Path) -> None:
    config = RaftConfig(address=f"127.0.0.1:{_port()}", data_dir=str(tmp_path))

    async def start() -> None:
        RaftConsensus(config)

    with pytest.raises(RaftSecurityError, match="set the `encrypt` key"):
        asyncio.run(start())


def test_password_is_derived_deterministically_from_the_key() -> None:
    assert raft_password(KEY) == raft_password(KEY)
    assert raft_password(KEY) != raft_password(secrets.token_bytes(32))
    assert KEY.hex() not in raft_password(KEY)
    with pytest.raises(RaftSecurityError, match="too short"):
        raft_password(b"short")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"address": "nohost", "data_dir": "d"}, "not host:port"),
        ({"address": "127.0.0.1:1", "peers": ["127.0.0.1:1"], "data_dir": "d"}, "must not include"),
        (
            {"address": "127.0.0.1:1", "data_dir": "d", "election_timeout_min": 0.05},
            "three heartbeat",
        ),
    ],
)
def test_config_is_validated(fields: dict[str, object], message: str) -> None:
    with pytest.raises(msgspec.ValidationError, match=message):
        msgspec.convert(fields, RaftConfig)


def test_scaled_lengthens_every_failure_detection_time_only() -> None:
    base = RaftConfig(address="127.0.0.1:1", data_dir="d")
    slow = base.scaled(4)
    assert (slow.election_timeout_min, slow.election_timeout_max) == (
        base.election_timeout_min * 4,
        base.election_timeout_max * 4,
    )
    assert slow.heartbeat_interval == base.heartbeat_interval * 4
    assert slow.leader_lease_timeout == base.leader_lease_timeout * 4
    assert (slow.address, slow.apply_timeout) == (base.address, base.apply_timeout)
    assert base.scaled(1) == base
    with pytest.raises(ValueError, match=r"at least 1, got 0\.5"):
        base.scaled(0.5)


async def test_single_server_applies_persists_and_restores_from_its_snapshot(
    tmp_path: Path,
) -> None:
    address = f"127.0.0.1:{_port()}"
    config = RaftConfig(
        address=address,
        data_dir=str(tmp_path),
        encrypt_key=KEY,
        compaction_min_entries=10,
    )
    consensus = RaftConsensus(config)
    try:
        await _until_leader(consensus)
        seen: list[tuple[bool, bool]] = []
        on_loop = threading.current_thread()
        got = asyncio.Event()

        def record(leader: bool) -> None:
            seen.append((leader, threading.current_thread() is on_loop))
            got.set()

        consensus.on_leadership_change(record)
        await asyncio.wait_for(got.wait(), 30)
        assert seen == [(True, True)]
        assert consensus.leader_address() == address

        # a blocking query on federation states wakes on a raft write
        query = asyncio.ensure_future(
            blocking_query(
                consensus.store,
                QueryOptions(min_query_index=1, max_query_time=5),
                _states,
                leadership=consensus,
            )
        )
        for _ in range(30_000):  # write only once the query is parked on its watch
            if consensus.store.watch_count():
                break
            await asyncio.sleep(0.001)
        assert consensus.store.watch_count() == 1
        index = await consensus.apply(_upsert("dc0"))
        meta, states = await asyncio.wait_for(query, 30)
        assert meta.index == index
        assert [s.datacenter for s in states] == ["dc0"]

        for i in range(1, 60):
            await consensus.apply(_upsert(f"dc{i}"))
        await consensus.verify_leader()
        await _poll(lambda: consensus.log_size() <= 20)
        before = consensus.store.contents()
    finally:
        await consensus.shutdown()
    assert (tmp_path / "raft.snapshot").exists()

    restarted = RaftConsensus(config)
    try:
        await _until_leader(restarted)
        await restarted.verify_leader()
        assert restarted.store.contents() == before
    finally:
        await restarted.shutdown()


async def _poll(condition: Callable[[], bool], within: float = 30.0) -> None:
    """Wait for state that lives on pysyncobj's thread and has no event of its own."""
    async with asyncio.timeout(within):
        while True:
            if condition():
                return
            await asyncio.sleep(0.01)


async def test_unreadable_snapshot_file_stops_startup_with_a_clear_message(
    tmp_path: Path,
) -> None:
    (tmp_path / "raft.snapshot").write_bytes(b"\x00garbage")
    config = RaftConfig(address=f"127.0.0.1:{_port()}", data_dir=str(tmp_path), encrypt_key=KEY)
    with pytest.raises(SnapshotFormatError, match="unreadable"):
        RaftConsensus(config)
    future_format = msgspec.msgpack.encode(
        {
            "version": 9,
            "store": b"",
            "last_entry": [b"", 2, 1],
            "previous_entry": [b"", 1, 1],
            "cluster": [],
        }
    )
    (tmp_path / "raft.snapshot").write_bytes(future_format)
    with pytest.raises(SnapshotFormatError, match="format version 9; this build reads version 1"):
        RaftConsensus(config)


@pytest.fixture
async def trio(tmp_path: Path) -> AsyncIterator[list[RaftConsensus]]:
    addresses = [f"127.0.0.1:{_port()}" for _ in range(3)]
    servers = [
        RaftConsensus(
            RaftConfig(
                address=a,
                peers=[p for p in addresses if p != a],
                data_dir=str(tmp_path / str(i)),
                encrypt_key=KEY,
            )
        )
        for i, a in enumerate(addresses)
    ]
    try:
        yield servers
    finally:
        await asyncio.gather(*(s.shutdown() for s in servers))


async def test_followers_refuse_writes_naming_the_leader(trio: list[RaftConsensus]) -> None:
    await asyncio.wait_for(_any_leader(trio), 30)
    await _poll(lambda: all(s.leader_address() for s in trio))
    leader = next(s for s in trio if s.is_leader())
    follower = next(s for s in trio if not s.is_leader())
    with pytest.raises(NotLeaderError, match=f"the leader is {leader.leader_address()}") as info:
        await follower.apply(_upsert("dc1"))
    assert info.value.leader == leader.leader_address()
    index = await leader.apply(_upsert("dc1"))
    for server in trio:
        await _poll(partial(_has_applied, server, index))
        with server.store.read() as txn:
            assert [s.datacenter for s in txn.federation_states()[1]] == ["dc1"]


async def test_membership_changes_through_the_leader(
    trio: list[RaftConsensus], tmp_path: Path
) -> None:
    await asyncio.wait_for(_any_leader(trio), 30)
    leader = next(s for s in trio if s.is_leader())
    address = f"127.0.0.1:{_port()}"
    await leader.add_server(address)
    await leader.remove_server(address)
    assert (await leader.apply(_upsert("dc1"))) > 0


def _has_applied(server: RaftConsensus, index: int) -> bool:
    return server.raft_index() >= index


async def _any_leader(servers: list[RaftConsensus]) -> None:
    await _poll(lambda: any(s.is_leader() for s in servers))


@pytest.mark.parametrize(
    ("error", "outcome"), [(3, "DISCARDED"), (5, "LEADER_CHANGED"), (7, "UNKNOWN_OUTCOME")]
)
async def test_leader_changes_surface_as_outcome_unknown(error: int, outcome: str) -> None:
    future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
    _resolve_apply(future, None, error)  # type: ignore[arg-type]
    with pytest.raises(OutcomeUnknownError, match=outcome):
        await future


def _both_implement_consensus(raft: RaftConsensus, local: LocalConsensus) -> list[Consensus]:
    """Never called: mypy (strict, over this folder) fails here if either
    implementation stops satisfying the Consensus protocol."""
    return [raft, local]
