"""The :class:`Consensus` interface and its single-node, in-memory implementation.

Everything above this package writes through ``Consensus.apply`` and reads
the :class:`StateStore` it exposes; nothing above it knows which Raft library
sits underneath. What ``apply`` may raise is part of the contract:

* :class:`NotLeaderError` — not submitted (names the leader when known);
* :class:`OutcomeUnknownError` — submitted, fate unknown (leader change,
  timeout): retry only idempotent writes, or read back;
* :class:`CommandRejectedError` — committed and applied, but the FSM
  rejected it; nothing changed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from ._errors import CommandRejectedError, ConsensusError
from ._fsm import Command, Fsm, encode_command
from ._store import StateStore

__all__ = ["Consensus", "LeadershipCallback", "LocalConsensus"]

LeadershipCallback = Callable[[bool], None]


class Consensus(Protocol):
    """A replicated FSM: submit commands, learn about leadership, read the store."""

    @property
    def store(self) -> StateStore:
        """The local replica. Followers' replicas may lag the leader's."""
        ...

    async def apply(self, command: Command) -> int:
        """Commit ``command`` and return its raft index once applied locally.

        There is no per-call timeout: the implementation's own apply timeout
        turns a stuck write into :class:`OutcomeUnknownError`, which a
        caller-side cancellation could not express."""
        ...

    def is_leader(self) -> bool: ...

    def leader_address(self) -> str | None:
        """The current leader's raft address, None while there is none."""
        ...

    def on_leadership_change(self, callback: LeadershipCallback) -> Callable[[], None]:
        """Call ``callback(is_leader)`` on the event loop: once soon with the current
        state, then on every change. Returns a function that unsubscribes."""
        ...

    async def verify_leader(self) -> None:
        """Raise unless this server is leader and has applied everything committed
        before the call (the precondition of a consistent read)."""
        ...

    async def add_server(self, address: str) -> None: ...

    async def remove_server(self, address: str) -> None: ...

    async def shutdown(self) -> None: ...


class LocalConsensus:
    """A one-server "cluster" applying in memory on the event loop: ``-dev`` and tests.

    Nothing is persisted and nothing is replicated; every write is committed
    the moment it is applied, so the semantics match a single-node Raft.
    """

    def __init__(self, *, address: str = "127.0.0.1:0", fsm: Fsm | None = None) -> None:
        self._fsm = fsm if fsm is not None else Fsm()
        self._address = address
        self._index = max(self._fsm.store.contents().indexes.values(), default=0)
        self._closed = False

    @property
    def store(self) -> StateStore:
        return self._fsm.store

    async def apply(self, command: Command) -> int:
        if self._closed:
            raise ConsensusError("consensus is shut down")
        self._index += 1
        result = self._fsm.apply(self._index, encode_command(command))
        if result.error:
            raise CommandRejectedError(result.error)
        return result.index

    def is_leader(self) -> bool:
        return not self._closed

    def leader_address(self) -> str | None:
        return None if self._closed else self._address

    def on_leadership_change(self, callback: LeadershipCallback) -> Callable[[], None]:
        handle = asyncio.get_running_loop().call_soon(callback, self.is_leader())
        return handle.cancel

    async def verify_leader(self) -> None:
        if self._closed:
            raise ConsensusError("consensus is shut down")

    async def add_server(self, address: str) -> None:
        raise ConsensusError("a single-node (dev) server cannot add servers")

    async def remove_server(self, address: str) -> None:
        raise ConsensusError("a single-node (dev) server cannot remove servers")

    async def shutdown(self) -> None:
        self._closed = True
