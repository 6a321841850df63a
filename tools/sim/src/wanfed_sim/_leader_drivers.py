"""The leader's other duties: anti-entropy (every leader) and pruning (the primary's).

Each driver owns one core for one term and carries out its actions for its
server: anti-entropy reads its datacenter's store and catalog as a blocking
view, and writes its record into the primary (locally on the primary, over a
call through the locator's path elsewhere); pruning takes its inventory from
the primary's store and the WAN registry, and deletes. Every answer goes
through :meth:`SimServer.guard`, so one from an older term is dropped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from wanfed_replication import (
    AntiEntropyAction,
    AntiEntropyCore,
    Inventory,
    Prune,
    Pruned,
    PruneFailed,
    PruningAction,
    PruningCore,
    ReadView,
    StateWritten,
    SyncFailed,
    TakeInventory,
    ViewRead,
    WriteState,
)

from ._timing import BLOCKING_WAIT, RPC_SLACK

if TYPE_CHECKING:
    from ._server import SimServer

__all__ = ["PRUNE_INTERVAL", "AntiEntropyDriver", "PruningDriver"]

PRUNE_INTERVAL: Final = 120.0
"""Hourly in production; every two minutes here so that runs see several passes."""


class AntiEntropyDriver:
    """One term of a leader's anti-entropy."""

    def __init__(self, server: SimServer, now: float) -> None:
        self.server = server
        self.core = AntiEntropyCore(datacenter=server.datacenter, now=now)

    def timer(self, now: float) -> None:
        self._carry_out(self.core.handle_timer(now))

    def _carry_out(self, actions: list[AntiEntropyAction]) -> None:
        for action in actions:
            if isinstance(action, ReadView):
                self._read_view(action.min_index)
            else:
                self._write_state(action)

    def _feed(self, event: ViewRead | StateWritten | SyncFailed) -> None:
        self._carry_out(self.core.feed(event, self.server.world.scheduler.now))

    def _read_view(self, min_index: int) -> None:
        server = self.server
        datacenter = server.world.datacenters[server.datacenter]

        def answer(_: object, __: str | None) -> None:
            self._feed(
                ViewRead(
                    index=datacenter.index,
                    stored=datacenter.states.get(server.datacenter.lower()),
                    gateways=datacenter.catalog(),
                    wall=server.world.wall(server.datacenter),
                )
            )

        guarded = server.guard(answer)
        datacenter.watch(min_index, BLOCKING_WAIT, lambda: guarded(None, None))

    def _write_state(self, action: WriteState) -> None:
        server = self.server
        world = server.world

        def written(_: object, error: str | None) -> None:
            self._feed(StateWritten() if error is None else SyncFailed(error=error))

        if server.is_primary:
            world.primary_side.apply(action.state, server.guard(written))
            return
        call = server.dial_primary(
            "anti-entropy",
            world.primary_side.apply_handler(action.state),
            world.scheduler.now + RPC_SLACK,
            written,
        )
        if call is None:
            self._feed(SyncFailed(error="no route to the primary datacenter"))


class PruningDriver:
    """One term of the primary leader's pruning."""

    def __init__(self, server: SimServer, now: float) -> None:
        self.server = server
        self.core = PruningCore(primary=server.datacenter, now=now, interval=PRUNE_INTERVAL)

    def timer(self, now: float) -> None:
        self._carry_out(self.core.handle_timer(now))

    def _carry_out(self, actions: list[PruningAction]) -> None:
        world = self.server.world
        for action in actions:
            if isinstance(action, TakeInventory):
                primary = world.datacenters[self.server.datacenter]
                known = frozenset(world.known_datacenters(self.server.name))
                self._feed(Inventory(states=primary.sorted_states(), known=known))
            else:
                self._prune(action)

    def _feed(self, event: Inventory | Pruned | PruneFailed) -> None:
        self._carry_out(self.core.feed(event, self.server.world.scheduler.now))

    def _prune(self, action: Prune) -> None:
        world = self.server.world
        world.check_prune(action.datacenter)

        def pruned(_: object, error: str | None) -> None:
            if error is None:
                self._feed(Pruned(datacenter=action.datacenter))
            else:
                self._feed(PruneFailed(error=error))

        world.primary_side.delete(action.datacenter, self.server.guard(pruned))
