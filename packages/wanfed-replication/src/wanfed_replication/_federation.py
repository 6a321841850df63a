"""Federation states flowing both ways: the asyncio adapters over the cores.

* Replication (secondary leaders): :class:`FederationStateReplication` is the
  I/O of the federation-state table for the index replicator. Every fetch
  that dialled is reported to a :class:`ReplicationFeedback` — the gateway
  locator — because it went through the gateway the locator picked: its
  success or failure is the health signal of the path in use.
* Anti-entropy (every leader): :class:`AntiEntropy` carries out
  :class:`AntiEntropyCore`'s reads and writes (the primary writes through its
  own Raft log, a secondary forwards ``FederationState.Apply`` to the
  primary). The stored copy in a secondary is the one replicated back from
  the primary, so a secondary keeps trying until its own record has made the
  round trip.
* Pruning (primary leader): :class:`Pruner` carries out
  :class:`PruningCore`'s inventories and deletes.

Each adapter owns its clock reads and sleeps (through :func:`._driving.drive`);
the decisions are the cores'.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Collection, Sequence
from datetime import UTC, datetime
from typing import Protocol

import msgspec

from wanfed_fsm import (
    CheckServiceNode,
    Consensus,
    FederationState,
    FederationStateRequest,
    FederationStateWrite,
    IndexedFederationStates,
    RetryPolicy,
)

from ._anti_entropy_core import (
    AE_SYNC_INTERVAL,
    AntiEntropyAction,
    AntiEntropyCore,
    AntiEntropyEvent,
    ReadView,
    StateWritten,
    SyncFailed,
    ViewRead,
    federation_state_to_sync,
)
from ._driving import drive
from ._pruning_core import (
    PRUNE_INTERVAL,
    Inventory,
    Prune,
    Pruned,
    PruneFailed,
    PruningAction,
    PruningCore,
    PruningEvent,
    TakeInventory,
    stale_datacenters,
)
from ._replicator import (
    Diff,
    IndexReplicator,
    ReplicationFeedback,
    ReplicationPolicy,
    diff_by_key,
)

__all__ = [
    "AE_SYNC_INTERVAL",
    "PRUNE_INTERVAL",
    "AntiEntropy",
    "DatacenterRegistry",
    "FederationStateApplier",
    "FederationStateReplication",
    "LocalGatewayView",
    "PrimaryFederationStates",
    "Pruner",
    "ReplicationFeedback",
    "federation_state_to_sync",
    "stale_datacenters",
]


class PrimaryFederationStates(Protocol):
    """``FederationState.List`` against the primary (stale allowed, replication token)."""

    async def list_federation_states(self, min_index: int) -> IndexedFederationStates: ...


class FederationStateReplication:
    """The delegate that replicates the primary's federation states into this DC."""

    name = "federation states"

    def __init__(
        self,
        *,
        datacenter: str,
        primary: PrimaryFederationStates,
        consensus: Consensus,
        feedback: ReplicationFeedback,
    ) -> None:
        self._datacenter = datacenter
        self._primary = primary
        self._consensus = consensus
        self._feedback = feedback

    async def fetch_remote(self, last_remote_index: int) -> tuple[int, Sequence[FederationState]]:
        """``FederationState.List``; the replicator reports how it went to the feedback."""
        reply = await self._primary.list_federation_states(last_remote_index)
        return reply.index, reply.states

    async def fetch_local(self) -> Sequence[FederationState]:
        with self._consensus.store.read() as txn:
            return txn.federation_states()[1]

    def diff(
        self,
        local: Sequence[FederationState],
        remote: Sequence[FederationState],
        last_remote_index: int,
    ) -> Diff[FederationState]:
        return diff_by_key(
            local,
            remote,
            last_remote_index,
            key=lambda state: state.datacenter.lower(),
            modify_index=lambda state: state.modify_index,
        )

    async def delete(self, key: str) -> None:
        await self._consensus.apply(
            FederationStateWrite(
                request=FederationStateRequest(
                    datacenter=self._datacenter,
                    op="delete",
                    state=FederationState(datacenter=key),
                )
            )
        )

    async def update(self, record: FederationState) -> None:
        copy = msgspec.structs.replace(record, primary_modify_index=record.modify_index)
        await self._consensus.apply(
            FederationStateWrite(
                request=FederationStateRequest(datacenter=self._datacenter, op="upsert", state=copy)
            )
        )

    def replicator(
        self, policy: ReplicationPolicy | None = None
    ) -> IndexReplicator[FederationState]:
        """The replicator over this table, reporting every dialled fetch to the feedback."""
        return IndexReplicator(self, policy=policy, feedback=self._feedback)


# --- anti-entropy -----------------------------------------------------------------


class LocalGatewayView(Protocol):
    """Consistent blocking read of this DC's stored record and its mesh-gateway dump."""

    async def local_federation_view(
        self, min_index: int
    ) -> tuple[int, FederationState | None, Sequence[CheckServiceNode]]: ...


class FederationStateApplier(Protocol):
    """Writes this DC's record into the primary (locally when this is the primary)."""

    async def apply_federation_state(self, state: FederationState) -> None: ...


class AntiEntropy:
    """Keeps this datacenter's federation state in the primary equal to its catalog.

    One driver at a time (:meth:`run` or :meth:`sync_once`); after :meth:`run`
    is cancelled the owner builds a new one, as the server does per term.
    """

    def __init__(
        self,
        *,
        datacenter: str,
        view: LocalGatewayView,
        applier: FederationStateApplier,
        sync_interval: float = AE_SYNC_INTERVAL,
        policy: RetryPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._view = view
        self._applier = applier
        self._clock = clock
        self._wall = wall
        self.core = AntiEntropyCore(
            datacenter=datacenter, now=clock(), sync_interval=sync_interval, policy=policy
        )
        self._pending: deque[AntiEntropyAction] = deque()
        self._error: Exception | None = None

    @property
    def syncs(self) -> int:
        """Writes that landed."""
        return self.core.syncs

    async def sync_once(self) -> bool:
        """One check now (past the rate limit): wait for a change, then write if
        needed, waiting out the debounce; True when a write happened. Raises on failure."""
        ended = self.core.checks_ended
        self._error = None
        self._pending.extend(self.core.start_check(self._clock()))
        await drive(
            self.core,
            self._pending,
            self._carry_out,
            clock=self._clock,
            done=lambda: self.core.checks_ended > ended,
        )
        if self._error is not None:
            raise self._error
        return self.core.wrote_last

    async def run(self) -> None:
        """Checks until cancelled (leadership lost): rate limited, backing off on errors."""
        await drive(self.core, self._pending, self._carry_out, clock=self._clock)

    def _feed(self, event: AntiEntropyEvent) -> None:
        self._pending.extend(self.core.feed(event, self._clock()))

    async def _carry_out(self, action: AntiEntropyAction) -> None:
        try:
            if isinstance(action, ReadView):
                index, stored, gateways = await self._view.local_federation_view(action.min_index)
                view = ViewRead(index=index, stored=stored, gateways=gateways, wall=self._wall())
                self._feed(view)
            else:
                await self._applier.apply_federation_state(action.state)
                self._feed(StateWritten())
        except Exception as exc:
            self._error = exc
            self._feed(SyncFailed(error=str(exc) or type(exc).__name__))


# --- pruning ------------------------------------------------------------------------


class DatacenterRegistry(Protocol):
    """The datacenters the WAN pool currently knows."""

    def known_datacenters(self) -> Collection[str]: ...


class Pruner:
    """On the primary's leader: delete federation states of departed datacenters.

    One driver at a time (:meth:`run` or :meth:`prune_once`), as :class:`AntiEntropy`.
    """

    def __init__(
        self,
        *,
        primary: str,
        consensus: Consensus,
        registry: DatacenterRegistry,
        interval: float = PRUNE_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._consensus = consensus
        self._registry = registry
        self._clock = clock
        self.core = PruningCore(primary=primary, now=clock(), interval=interval)
        self._pending: deque[PruningAction] = deque()
        self._error: Exception | None = None

    async def prune_once(self) -> list[str]:
        """One pass now; the datacenters pruned. Raises when a delete failed."""
        ended = self.core.passes_ended
        self._error = None
        self._pending.extend(self.core.start_pass(self._clock()))
        await drive(
            self.core,
            self._pending,
            self._carry_out,
            clock=self._clock,
            done=lambda: self.core.passes_ended > ended,
        )
        if self._error is not None:
            raise self._error
        return list(self.core.last_pruned)

    async def run(self) -> None:
        """A pass every interval until cancelled; a failed pass is retried an interval later."""
        await drive(self.core, self._pending, self._carry_out, clock=self._clock)

    def _feed(self, event: PruningEvent) -> None:
        self._pending.extend(self.core.feed(event, self._clock()))

    async def _carry_out(self, action: PruningAction) -> None:
        try:
            if isinstance(action, TakeInventory):
                with self._consensus.store.read() as txn:
                    states = txn.federation_states()[1]
                known = frozenset(self._registry.known_datacenters())
                self._feed(Inventory(states=states, known=known))
            else:
                await self._delete(action)
                self._feed(Pruned(datacenter=action.datacenter))
        except Exception as exc:
            self._error = exc
            self._feed(PruneFailed(error=str(exc) or type(exc).__name__))

    async def _delete(self, action: Prune) -> None:
        await self._consensus.apply(
            FederationStateWrite(
                request=FederationStateRequest(
                    datacenter=self.core.primary,
                    op="delete",
                    state=FederationState(datacenter=action.datacenter),
                )
            )
        )
