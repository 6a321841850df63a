"""How the servers of one datacenter find each other and form the Raft cluster.

Theory of operation. Every server describes itself with a :class:`ServerInfo`
(node name, RPC address, Raft address). ``Status.Hello`` carries the caller's
info to a peer's RPC port and returns the peer's :class:`ClusterInfo`: the
peer itself, every server it knows, and whether it already runs Raft with
which members. Knowledge spreads transitively, so each server ends up knowing
everyone reachable from its ``retry_join`` list.

A fresh server (no ``cluster.json`` in its data dir) repeats a round of hellos
to its ``retry_join`` addresses and known peers until one of these holds:

* a peer already runs Raft and lists this server as a member (it was part of
  the same bootstrap): start Raft with that member list;
* a peer runs Raft and knows a leader: ask the leader to add this server
  (``Raft.Join``, forwarded to the leader like any write) and start Raft with
  the member list it returns;
* ``bootstrap`` is set: start a one-server cluster;
* ``bootstrap_expect`` servers of this datacenter are known (itself
  included): start Raft with exactly those, sorted. Servers started together
  learn the same set, so they agree on the initial configuration.

The chosen member list is written to ``cluster.json`` before Raft starts; a
restarted server (after a crash or ``kill -9``) reads it and rejoins at once,
its Raft journal bringing it up to date. After formation the same hellos run
every second: they refresh the directory (who is alive, which RPC address
belongs to the leader's Raft address) for forwarding and for the leader's
``serfHealth`` checks.

Limitation: if more than ``bootstrap_expect`` fresh servers start at the same
moment, two of them may pick different initial sets; start exactly
``bootstrap_expect`` servers first, as Consul also advises.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Final

import msgspec

from wanfed_agent.rpc import RpcPool
from wanfed_fsm import (
    Command,
    LeadershipCallback,
    NotLeaderError,
    NotReadyError,
    StateStore,
)
from wanfed_proto import ProtoError

from ._messages import ClusterInfo, ServerInfo

__all__ = [
    "CLUSTER_FILE",
    "HELLO_TIMEOUT",
    "ClusterFile",
    "FormingConsensus",
    "ServerDirectory",
    "form_cluster",
    "hello_round",
]

logger = logging.getLogger("wanfed_server.runtime.cluster")

CLUSTER_FILE: Final = "cluster.json"
HELLO_TIMEOUT: Final = 2.0


class ClusterFile(msgspec.Struct, frozen=True, kw_only=True):
    """What a server must remember across restarts to rejoin its Raft cluster."""

    raft_members: list[str]
    servers: list[ServerInfo] = msgspec.field(default_factory=list)


def read_cluster_file(data_dir: Path) -> ClusterFile | None:
    path = data_dir / CLUSTER_FILE
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        return msgspec.json.decode(raw, type=ClusterFile)
    except msgspec.DecodeError as exc:
        raise ValueError(f"{path} is corrupt: {exc}; remove it to re-bootstrap") from None


def write_cluster_file(data_dir: Path, cluster: ClusterFile) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / CLUSTER_FILE
    temporary = path.with_suffix(".tmp")
    with open(temporary, "wb") as file:
        file.write(msgspec.json.encode(cluster))
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)


class ServerDirectory:
    """The servers of this datacenter this server knows of, and when each last answered."""

    def __init__(self, me: ServerInfo, clock: Callable[[], float] = time.monotonic) -> None:
        self._me = me
        self._clock = clock
        self._servers: dict[str, ServerInfo] = {me.node.lower(): me}
        self._last_seen: dict[str, float] = {me.node.lower(): clock()}
        self.changed = asyncio.Event()

    @property
    def me(self) -> ServerInfo:
        return self._me

    def learn(self, servers: Iterable[ServerInfo]) -> None:
        for server in servers:
            if server.datacenter.lower() != self._me.datacenter.lower():
                continue
            key = server.node.lower()
            if key == self._me.node.lower():
                continue
            if self._servers.get(key) != server:
                self._servers[key] = server
                logger.info(
                    "server learned node=%s rpc=%s raft=%s",
                    server.node,
                    server.rpc_address,
                    server.raft_address,
                )
                self.changed.set()

    def seen(self, node: str) -> None:
        self._last_seen[node.lower()] = self._clock()

    def last_seen(self, node: str) -> float | None:
        if node.lower() == self._me.node.lower():
            return self._clock()
        return self._last_seen.get(node.lower())

    def is_server(self, node: str) -> bool:
        return node.lower() in self._servers

    def servers(self) -> list[ServerInfo]:
        return [self._servers[key] for key in sorted(self._servers)]

    def peers(self) -> list[ServerInfo]:
        return [s for s in self.servers() if s.node.lower() != self._me.node.lower()]

    def by_raft_address(self, address: str) -> ServerInfo | None:
        for server in self._servers.values():
            if server.raft_address == address:
                return server
        return None


async def hello_round(
    pool: RpcPool,
    directory: ServerDirectory,
    addresses: Sequence[str],
) -> list[ClusterInfo]:
    """Say hello to every address and known peer at once; return the answers."""
    me = directory.me
    targets = dict.fromkeys(a for a in addresses if a != me.rpc_address)
    for peer in directory.peers():
        targets[peer.rpc_address] = None

    async def one(address: str) -> ClusterInfo | None:
        try:
            # the deadline covers the dial too: one black-holed peer must not hold up
            # the round, or healthy peers would look silent to the leader
            async with asyncio.timeout(HELLO_TIMEOUT):
                info = await pool.call("", me.datacenter, address, "Status.Hello", me, ClusterInfo)
        except (ProtoError, OSError, TimeoutError) as exc:
            logger.debug("hello failed address=%s error=%s", address, exc)
            return None
        directory.learn([info.server, *info.known])
        directory.seen(info.server.node)
        return info

    answers = await asyncio.gather(*(one(address) for address in targets))
    return [answer for answer in answers if answer is not None]


async def form_cluster(
    *,
    pool: RpcPool,
    directory: ServerDirectory,
    retry_join: Sequence[str],
    bootstrap: bool,
    bootstrap_expect: int,
    data_dir: Path,
    retry_interval: float = 0.5,
) -> list[str]:
    """Return the Raft member list to start with (this server included); see above."""
    saved = read_cluster_file(data_dir)
    if saved is not None:
        directory.learn(saved.servers)
        logger.info(
            "cluster file found members=%s; rejoining without bootstrap",
            ",".join(saved.raft_members),
        )
        return saved.raft_members
    me = directory.me
    attempt = 0
    while True:
        attempt += 1
        answers = await hello_round(pool, directory, retry_join)
        members = await _decide(pool, directory, answers, bootstrap, bootstrap_expect)
        if members is not None:
            write_cluster_file(
                data_dir, ClusterFile(raft_members=members, servers=directory.servers())
            )
            logger.info("raft cluster formed members=%s", ",".join(members))
            return members
        if attempt == 1 or attempt % 20 == 0:
            logger.info(
                "waiting for servers known=%d bootstrap_expect=%d retry_join=%s; retrying in %gs",
                len(directory.servers()),
                bootstrap_expect,
                ",".join(retry_join),
                retry_interval,
                extra={"node": me.node},
            )
        await asyncio.sleep(retry_interval)


async def _decide(
    pool: RpcPool,
    directory: ServerDirectory,
    answers: list[ClusterInfo],
    bootstrap: bool,
    bootstrap_expect: int,
) -> list[str] | None:
    me = directory.me
    for answer in answers:
        if answer.raft_started and me.raft_address in answer.raft_members:
            return sorted(answer.raft_members)
    for answer in answers:
        if answer.raft_started and answer.leader_raft_address:
            with contextlib.suppress(ProtoError, OSError):
                joined = await pool.call(
                    "",
                    me.datacenter,
                    answer.server.rpc_address,
                    "Raft.Join",
                    me,
                    ClusterInfo,
                    timeout=10.0,
                )
                directory.learn([joined.server, *joined.known])
                if me.raft_address in joined.raft_members:
                    return sorted(joined.raft_members)
    if bootstrap:
        return [me.raft_address]
    servers = directory.servers()
    if bootstrap_expect and len(servers) >= bootstrap_expect:
        return sorted(server.raft_address for server in servers)
    return None


class FormingConsensus:
    """Stands in for consensus while the cluster forms (no Raft yet).

    Stale reads are served from the (empty or restored) store and say no
    leader is known; writes and consistent reads fail as they would during
    an election, so the routing layer waits for a leader and then forwards.
    """

    def __init__(self, store: StateStore) -> None:
        self._store = store

    @property
    def store(self) -> StateStore:
        return self._store

    async def apply(self, command: Command) -> int:
        raise NotLeaderError(None)

    def is_leader(self) -> bool:
        return False

    def leader_address(self) -> str | None:
        return None

    def on_leadership_change(self, callback: LeadershipCallback) -> Callable[[], None]:
        return lambda: None

    async def verify_leader(self) -> None:
        raise NotReadyError()

    async def add_server(self, address: str) -> None:
        raise NotLeaderError(None)

    async def remove_server(self, address: str) -> None:
        raise NotLeaderError(None)

    async def shutdown(self) -> None:
        return None
