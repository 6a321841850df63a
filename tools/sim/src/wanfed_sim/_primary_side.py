"""The primary datacenter's side of the federation-state calls, and its cost.

Replication's ``FederationState.List`` is a blocking query on the primary's
store; anti-entropy's ``FederationState.Apply`` is forwarded to the primary's
leader and committed if it still leads when the write lands. Every answer is
counted, with the size of its payload, for the scale measurements.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from wanfed_fsm import FederationState

from ._datacenter import APPLY_LATENCY, Datacenter
from ._network import Host
from ._rpc import Handler, Respond
from ._scheduler import Scheduler
from ._timing import BLOCKING_WAIT

__all__ = ["PrimarySide", "ping_handler"]


def ping_handler(server: Host, respond: Respond) -> None:
    """Any other call: answered at once (what matters is the path it took)."""
    respond((), None)


class PrimarySide:
    """Serves the primary's store to the other datacenters' leaders."""

    def __init__(
        self, scheduler: Scheduler, datacenters: dict[str, Datacenter], primary: str
    ) -> None:
        self._scheduler = scheduler
        self._datacenters = datacenters
        self._primary = primary
        self.work = {"answers": 0, "bytes": 0}
        """Calls the primary's servers answered for the federation states, and their size."""

    def list_handler(self, min_index: int) -> Handler:
        """``FederationState.List`` as a blocking query on the primary's store."""
        primary = self._datacenters[self._primary]

        def handle(server: Host, respond: Respond) -> None:
            def answer() -> None:
                if server.up and not server.gone:
                    states = primary.sorted_states()
                    self.work["answers"] += 1
                    self.work["bytes"] += len(msgspec.msgpack.encode(states))
                    respond((primary.index, states), None)

            primary.watch(min_index, BLOCKING_WAIT, answer)

        return handle

    def apply_handler(self, state: FederationState) -> Handler:
        """``FederationState.Apply``: forwarded to the primary's leader and committed."""

        def handle(server: Host, respond: Respond) -> None:
            self.work["answers"] += 1
            self.work["bytes"] += len(msgspec.msgpack.encode(state))
            self.apply(state, respond)

        return handle

    def apply(self, state: FederationState, done: Callable[[object, str | None], None]) -> None:
        primary = self._datacenters[self._primary]
        leader = primary.leader
        if leader is None:
            self._scheduler.after(APPLY_LATENCY, lambda: done(None, "no cluster leader"))
            return

        def commit() -> None:
            if primary.leader != leader:
                done(None, "leadership lost while committing")
                return
            primary.write_state(state)
            done(None, None)

        self._scheduler.after(APPLY_LATENCY, commit)

    def delete(self, name: str, done: Callable[[object, str | None], None]) -> None:
        primary = self._datacenters[self._primary]
        leader = primary.leader

        def commit() -> None:
            if primary.leader != leader or leader is None:
                done(None, "leadership lost while committing")
                return
            primary.delete_state(name)
            done(None, None)

        self._scheduler.after(APPLY_LATENCY, commit)
