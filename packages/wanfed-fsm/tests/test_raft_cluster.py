"""Three Raft servers as real processes on loopback: replication, failover, durability.

Each server is ``raft_node.py`` (a line protocol over 127.0.0.1); servers are
killed with SIGKILL, never asked to stop, because that is the failure the
durability story is about.
"""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import BinaryIO

import pytest

pytestmark = pytest.mark.slow

_NODE_SCRIPT = Path(__file__).with_name("raft_node.py")
_KEY = secrets.token_hex(32)


def _free_port() -> int:
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


async def eventually(check: Callable[[], Awaitable[bool]], within: float) -> bool:
    """Poll ``check`` until it holds or ``within`` seconds pass (state lives in other processes)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await check():
            return True
        await asyncio.sleep(0.02)
    return await check()


class Server:
    """One raft_node.py process and a control connection to it."""

    def __init__(self, address: str, peers: list[str], data_dir: Path, *extra: str) -> None:
        self.address = address
        self.peers = peers
        self.data_dir = data_dir
        self.extra = extra
        self.process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def start(self) -> None:
        with self._log() as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                str(_NODE_SCRIPT),
                "--address",
                self.address,
                "--peers",
                ",".join(self.peers),
                "--data-dir",
                str(self.data_dir),
                "--encrypt-key",
                _KEY,
                *self.extra,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
            )
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), 10)
        assert line.startswith(b"READY "), line
        port = int(line.split()[1])
        self._reader, self._writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 22)

    def _log(self) -> BinaryIO:
        self.data_dir.mkdir(exist_ok=True)
        return open(self.data_dir / "stderr.log", "ab")

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def request(self, line: str, within: float = 30.0) -> str:
        assert self._reader is not None
        assert self._writer is not None
        self._writer.write(line.encode() + b"\n")
        await self._writer.drain()
        answer = await asyncio.wait_for(self._reader.readline(), within)
        if not answer:
            raise ConnectionError(f"{self.address} closed the control connection")
        return answer.decode().strip()

    async def status(self) -> tuple[bool, str, int, int, int]:
        _, leader, address, index, records, log = (await self.request("STATUS")).split()
        return leader == "1", address, int(index), int(records), int(log)

    async def ids(self) -> set[int]:
        answer = await self.request("IDS")
        body = answer.removeprefix("IDS").strip()
        return {int(i) for i in body.split(",")} if body else set()

    async def kill(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self.process is not None and self.process.returncode is None:
            os.kill(self.process.pid, signal.SIGKILL)
            await self.process.wait()


class Cluster:
    def __init__(self, root: Path, size: int = 3, *extra: str) -> None:
        addresses = [f"127.0.0.1:{_free_port()}" for _ in range(size)]
        self.servers = [
            Server(a, [p for p in addresses if p != a], root / f"s{i}", *extra)
            for i, a in enumerate(addresses)
        ]

    async def start(self) -> None:
        await asyncio.gather(*(s.start() for s in self.servers))

    async def leader(self, within: float = 30.0) -> Server:
        found: list[Server] = []

        async def elected() -> bool:
            for server in self.servers:
                if server.alive:
                    try:
                        if (await server.status())[0]:
                            found.append(server)
                            return True
                    except ConnectionError:
                        pass
            return False

        assert await eventually(elected, within), "no leader elected"
        return found[0]

    async def converged(self, records: int, within: float = 10.0) -> None:
        """Wait until every live server holds ``records`` records."""
        counts: list[int] = []

        async def same() -> bool:
            counts[:] = [(await s.status())[3] for s in self.servers if s.alive]
            return all(c == records for c in counts)

        assert await eventually(same, within), f"no convergence on {records} records: {counts}"

    async def stop(self) -> None:
        await asyncio.gather(*(s.kill() for s in self.servers))


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    cluster = Cluster(tmp_path)
    await cluster.start()
    try:
        yield cluster
    finally:
        await cluster.stop()


class Writer:
    """A client writing ids 0, 1, 2... to whoever leads, recording what was acknowledged."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.acknowledged: list[int] = []
        self.next_id = 0
        self.stop = asyncio.Event()
        self._acked = asyncio.Condition()

    async def wait_acknowledged(self, count: int, within: float) -> None:
        async with asyncio.timeout(within), self._acked:
            await self._acked.wait_for(lambda: len(self.acknowledged) >= count)

    async def run(self) -> None:
        leader = await self.cluster.leader()
        while not self.stop.is_set():
            record_id = self.next_id
            self.next_id += 1
            try:
                answer = await leader.request(f"WRITE {record_id}")
            except (ConnectionError, OSError):
                answer = "DEAD"
            if answer.startswith("OK"):
                self.acknowledged.append(record_id)
                async with self._acked:
                    self._acked.notify_all()
            else:
                leader = await self.cluster.leader()


async def test_writes_survive_leader_kill_and_full_cluster_restart(cluster: Cluster) -> None:
    await _failover_then_restart_everything(cluster)


async def test_the_same_over_mutual_tls_raft_links(tmp_path: Path, pki: dict[str, Path]) -> None:
    cluster = Cluster(tmp_path, 3, "--pki", str(pki["ca"].parent))
    await cluster.start()
    try:
        await _failover_then_restart_everything(cluster)
    finally:
        await cluster.stop()


async def _failover_then_restart_everything(cluster: Cluster) -> None:
    """Writes through the leader; kill -9 it mid-stream; kill -9 all; nothing acknowledged lost."""
    leader = await cluster.leader()
    follower = next(s for s in cluster.servers if s is not leader)

    async def follower_knows_leader() -> bool:
        return (await follower.status())[1] == leader.address

    assert await eventually(follower_knows_leader, 30)
    assert (await follower.request("WRITE 999999")) == "NOTLEADER " + leader.address

    writer = Writer(cluster)
    task = asyncio.create_task(writer.run())
    await writer.wait_acknowledged(300, within=60)
    await leader.kill()
    acked_before_kill = len(writer.acknowledged)
    try:
        # Liveness, not speed: how soon the new leader takes writes is measured by
        # ``nox -s bench -- liveness``.
        await writer.wait_acknowledged(acked_before_kill + 300, within=60)
    finally:
        writer.stop.set()
    await task
    assert (await cluster.leader()) is not leader, "acknowledged by a new leader"

    acknowledged = set(writer.acknowledged)
    assert len(acknowledged) >= acked_before_kill + 300

    # every acknowledged write is on both survivors (unacknowledged ones may be too)
    survivors = [s for s in cluster.servers if s.alive]
    await cluster.leader()
    for server in survivors:

        async def has_all(server: Server = server) -> bool:
            return acknowledged <= await server.ids()

        assert await eventually(has_all, 30), f"{server.address} lost acknowledged writes"
    records = len(await survivors[0].ids())

    # the killed server comes back from its data_dir and catches up
    await leader.start()
    await cluster.converged(records)

    # kill -9 everything, restart from data_dir: nothing acknowledged is lost
    await cluster.stop()
    await cluster.start()
    await cluster.leader()
    await cluster.converged(records)
    for server in cluster.servers:
        assert acknowledged <= await server.ids()


async def test_compaction_and_a_restarted_follower_catches_up(
    tmp_path: Path, pki: dict[str, Path]
) -> None:
    # over RaftLink: the snapshot the follower needs travels through our transport
    cluster = Cluster(
        tmp_path, 3, "--compaction-min-entries", "1000", "--pki", str(pki["ca"].parent)
    )
    await cluster.start()
    try:
        leader = await cluster.leader()
        follower = next(s for s in cluster.servers if s is not leader)
        await follower.kill()
        # generous bounds: the machine may be shared; on an idle one this takes seconds
        answer = await leader.request("WRITEMANY 0 20000 64", within=120)
        assert answer == "OK 20000 0"
        await cluster.converged(20000, within=30)
        # compaction keeps the journal short on the servers that saw the writes
        for server in cluster.servers:
            if server.alive:
                assert (await server.status())[4] < 2000
        await follower.start()
        await cluster.converged(20000, within=30)
        assert await follower.ids() == set(range(20000))
        assert (await follower.status())[2] >= 20000
    finally:
        await cluster.stop()
