"""Who leads this datacenter, as this server sees it.

Raft knows the leader by its Raft address; forwarding, ``/v1/status/leader``
and ``last_contact`` need the leader's RPC address and when it was last
heard from, which the server directory holds (hellos keep it fresh). Before
consensus runs, nobody leads and reads see :class:`FormingConsensus`.
"""

from __future__ import annotations

import time

from wanfed_fsm import Consensus, StateStore

from ._cluster import FormingConsensus, ServerDirectory
from ._messages import ServerInfo

__all__ = ["Leadership"]


class Leadership:
    """The consensus of this server (once it runs) read through its directory."""

    def __init__(self, store: StateStore) -> None:
        self._store = store
        self.running: Consensus | None = None
        """The consensus, once cluster formation started it."""
        self.directory: ServerDirectory | None = None

    @property
    def consensus(self) -> Consensus:
        if self.running is None:
            return FormingConsensus(self._store)
        return self.running

    def is_leader(self) -> bool:
        return self.running is not None and self.running.is_leader()

    def leader(self) -> ServerInfo | None:
        consensus, directory = self.running, self.directory
        if consensus is None or directory is None:
            return None
        if consensus.is_leader():
            return directory.me
        leader = consensus.leader_address()
        return None if leader is None else directory.by_raft_address(leader)

    def leader_rpc_address(self) -> str | None:
        leader = self.leader()
        return None if leader is None else leader.rpc_address

    def last_contact(self) -> float:
        """Seconds since the leader was last heard from (0 on the leader, or if unknown)."""
        if self.is_leader():
            return 0.0
        leader = self.leader()
        if leader is None or self.directory is None:
            return 0.0
        seen = self.directory.last_seen(leader.node)
        return 0.0 if seen is None else max(time.monotonic() - seen, 0.0)
