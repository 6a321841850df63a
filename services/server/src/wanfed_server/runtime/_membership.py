"""A server's place in its datacenter's Raft cluster: forming it, joining it, keeping it.

Formation itself (who starts Raft with whom) is decided in ``_cluster``; this
object carries it out for one server and then keeps the cluster's member list
true: the hellos that follow formation refresh the directory and pick up
member-list changes the leader made, and a leader adds a server that asks
(``Raft.Join``) by answering at once and committing the change meanwhile —
the change commits only once the new server runs Raft, which it starts on
that answer. The member list is written to ``cluster.json`` at every change,
so a restart rejoins without asking anyone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from wanfed_agent.config import AgentConfig
from wanfed_agent.rpc import RpcPool
from wanfed_fsm import (
    Consensus,
    ConsensusError,
    Fsm,
    NotLeaderError,
    RaftConfig,
    RaftConsensus,
    RaftLink,
)
from wanfed_proto import ProtoError, RemoteError

from ._cluster import ClusterFile, ServerDirectory, form_cluster, hello_round, write_cluster_file
from ._messages import ClusterInfo, ServerInfo

__all__ = ["RaftMembership"]

logger = logging.getLogger("wanfed_server.runtime")

Spawn = Callable[[Coroutine[Any, Any, None], str], None]


class RaftMembership:
    """This server's view of its datacenter's Raft members, and the calls that change it."""

    def __init__(
        self,
        *,
        config: AgentConfig,
        directory: ServerDirectory,
        pool: RpcPool,
        spawn: Spawn,
        hello_interval: float,
        formation_retry: float,
    ) -> None:
        self._config = config
        self._directory = directory
        self._pool = pool
        self._spawn = spawn
        self._hello_interval = hello_interval
        self._formation_retry = formation_retry
        self._members: list[str] = []
        self._consensus: Consensus | None = None

    @property
    def members(self) -> list[str]:
        """The Raft addresses of the cluster's members, sorted."""
        return self._members

    def adopt(self, consensus: Consensus, members: list[str]) -> None:
        """``consensus`` runs now, with ``members``."""
        self._consensus = consensus
        self._members = sorted(members)

    async def form_and_keep(
        self,
        fsm: Fsm,
        link: RaftLink | None,
        use: Callable[[Consensus, list[str]], None],
    ) -> None:
        """Form (or rejoin) the cluster, start Raft, then say hello every ``hello_interval``."""
        config = self._config
        assert config.data_dir is not None
        data_dir = Path(config.data_dir)
        retry_join = [f"{h}:{p}" for h, p in config.retry_join_addresses()]
        members = await form_cluster(
            pool=self._pool,
            directory=self._directory,
            retry_join=retry_join,
            bootstrap=config.bootstrap,
            bootstrap_expect=config.bootstrap_expect,
            data_dir=data_dir,
            retry_interval=self._formation_retry,
        )
        me = self._directory.me.raft_address
        consensus = RaftConsensus(
            RaftConfig(
                address=me,
                peers=[m for m in members if m != me],
                data_dir=str(data_dir / "raft"),
            ).scaled(config.performance.raft_multiplier),
            fsm=fsm,
            link=link,
        )
        use(consensus, members)
        while True:
            await self.hello_once(retry_join)
            await asyncio.sleep(self._hello_interval)

    async def hello_once(self, retry_join: list[str]) -> None:
        """One round of hellos; follow the leader's member list, ask again if it lost ours."""
        directory = self._directory
        answers = await hello_round(self._pool, directory, retry_join)
        leader = self._consensus.leader_address() if self._consensus is not None else None
        me = directory.me
        for answer in answers:
            if leader is None or answer.server.raft_address != leader or not answer.raft_members:
                continue
            if me.raft_address not in answer.raft_members:
                # the leader dropped a join it could not commit: ask again
                with contextlib.suppress(ProtoError, OSError):
                    await self._pool.call(
                        "", me.datacenter, answer.server.rpc_address, "Raft.Join", me, ClusterInfo
                    )
            elif sorted(answer.raft_members) != self._members:
                self._set_members(answer.raft_members)

    def _set_members(self, members: list[str]) -> None:
        self._members = sorted(members)
        if self._config.data_dir and not self._config.dev_mode:
            write_cluster_file(
                Path(self._config.data_dir),
                ClusterFile(raft_members=self._members, servers=self._directory.servers()),
            )

    def peer_rpc_addresses(self) -> list[str]:
        """The members' RPC addresses (their Raft address where the directory lacks one)."""
        addresses = []
        for member in self._members:
            server = self._directory.by_raft_address(member)
            addresses.append(server.rpc_address if server is not None else member)
        return sorted(addresses)

    def cluster_info(self) -> ClusterInfo:
        directory = self._directory
        consensus = self._consensus
        leader = consensus.leader_address() if consensus is not None else None
        return ClusterInfo(
            server=directory.me,
            known=directory.peers(),
            raft_started=consensus is not None,
            raft_members=list(self._members),
            leader_raft_address=leader or "",
        )

    def learn_server(self, server: ServerInfo) -> None:
        self._directory.learn([server])
        self._directory.seen(server.node)

    async def add_raft_server(self, consensus: Consensus, server: ServerInfo) -> ClusterInfo:
        """``Raft.Join`` on the leader: answer at once, commit the change meanwhile."""
        datacenter = self._config.datacenter
        if server.datacenter.lower() != datacenter.lower():
            raise RemoteError(
                f"server {server.node} is in datacenter {server.datacenter}, not {datacenter}"
            )
        self.learn_server(server)
        if not consensus.is_leader():
            raise NotLeaderError(consensus.leader_address())
        if server.raft_address not in self._members:
            self._set_members([*self._members, server.raft_address])
            self._spawn(self._commit_join(consensus, server), f"raft-join-{server.node}")
        return self.cluster_info()

    async def _commit_join(self, consensus: Consensus, server: ServerInfo) -> None:
        try:
            await consensus.add_server(server.raft_address)
        except (ConsensusError, TimeoutError) as exc:
            self._set_members([m for m in self._members if m != server.raft_address])
            logger.warning(
                "raft join failed node=%s raft=%s error=%s; it will ask again",
                server.node,
                server.raft_address,
                exc,
            )
            return
        logger.info(
            "server joined the raft cluster node=%s raft=%s", server.node, server.raft_address
        )
