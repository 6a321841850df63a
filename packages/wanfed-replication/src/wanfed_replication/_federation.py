"""Federation states flowing both ways: replication, anti-entropy and pruning.

* Replication (secondary leaders): pull every federation state from the
  primary with the index replicator. Every fetch outcome is reported to a
  :class:`ReplicationFeedback` — the gateway locator — because the fetch was
  dialled through the gateway the locator picked: its success or failure is
  the health signal of the path in use.
* Anti-entropy (every leader): compare this datacenter's stored record with
  the mesh gateways in the local catalog; when they differ, write the current
  list (the primary writes through its own Raft log, a secondary forwards
  ``FederationState.Apply`` to the primary). The stored copy in a secondary
  is the one replicated back from the primary, so a secondary keeps trying
  until its own record has made the round trip. Syncs are debounced, so a
  flapping gateway check cannot turn into a write storm.
* Pruning (primary leader): delete the records of datacenters that left the
  WAN pool.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection, Sequence
from datetime import UTC, datetime
from typing import Final, Protocol

import msgspec

from wanfed_fsm import (
    CheckServiceNode,
    Consensus,
    FederationState,
    FederationStateRequest,
    FederationStateWrite,
    IndexedFederationStates,
    RetryPolicy,
    retry_loop,
)

from ._replicator import (
    Diff,
    IndexReplicator,
    ReplicationNotReady,
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

log = logging.getLogger("wanfed.replication")

AE_SYNC_INTERVAL: Final = 5.0
PRUNE_INTERVAL: Final = 3600.0


class ReplicationFeedback(Protocol):
    """Told about every remote fetch: the gateway locator implements it."""

    def on_replication_result(
        self, error: str | None, *, from_replication: bool = True
    ) -> None: ...


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
        try:
            reply = await self._primary.list_federation_states(last_remote_index)
        except (asyncio.CancelledError, ReplicationNotReady):
            raise
        except Exception as exc:
            self._feedback.on_replication_result(str(exc) or type(exc).__name__)
            raise
        self._feedback.on_replication_result(None)
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
        return IndexReplicator(self, policy=policy)


# --- anti-entropy -----------------------------------------------------------------


def federation_state_to_sync(
    datacenter: str,
    stored: FederationState | None,
    gateways: Sequence[CheckServiceNode],
    now: datetime,
) -> FederationState | None:
    """The record to write, or ``None`` when the stored one already says the same.

    Check outputs are left out: a gateway refreshes its TTL check by writing a
    new output every few seconds, and carrying that text would turn every
    refresh into a federation-state write replicated to every datacenter.
    The record says which gateways exist and whether they are healthy.
    """
    current = FederationState(
        datacenter=datacenter, mesh_gateways=[_without_output(g) for g in gateways]
    )
    if stored is not None and stored.is_same(current):
        return None
    return msgspec.structs.replace(current, updated_at=now)


def _without_output(gateway: CheckServiceNode) -> CheckServiceNode:
    if all(not check.output for check in gateway.checks):
        return gateway
    checks = [msgspec.structs.replace(check, output="") for check in gateway.checks]
    return msgspec.structs.replace(gateway, checks=checks)


def _usable(state: FederationState | None) -> bool:
    return state is not None and any(not g.has_critical_check() for g in state.mesh_gateways)


def _restores_a_path(stored: FederationState | None, current: FederationState) -> bool:
    """The stored record names no gateway other datacenters could use, the new one does.

    Such a write is not debounced: until it lands every other datacenter's path
    to this one is broken (a bootstrap, every gateway replaced), and it cannot
    repeat faster than the debounced writes that take the gateways away again.
    """
    return not _usable(stored) and _usable(current)


class LocalGatewayView(Protocol):
    """Consistent blocking read of this DC's stored record and its mesh-gateway dump."""

    async def local_federation_view(
        self, min_index: int
    ) -> tuple[int, FederationState | None, Sequence[CheckServiceNode]]: ...


class FederationStateApplier(Protocol):
    """Writes this DC's record into the primary (locally when this is the primary)."""

    async def apply_federation_state(self, state: FederationState) -> None: ...


class AntiEntropy:
    """Keeps this datacenter's federation state in the primary equal to its catalog."""

    def __init__(
        self,
        *,
        datacenter: str,
        view: LocalGatewayView,
        applier: FederationStateApplier,
        sync_interval: float = AE_SYNC_INTERVAL,
        policy: RetryPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._datacenter = datacenter
        self._view = view
        self._applier = applier
        self._sync_interval = sync_interval
        self._policy = policy
        self._clock = clock
        self._index = 0
        self._last_sync: float | None = None
        self.syncs = 0

    async def sync_once(self) -> bool:
        """Wait for a change, then write if needed; True when a write happened."""
        index, stored, gateways = await self._view.local_federation_view(self._index)
        state = federation_state_to_sync(self._datacenter, stored, gateways, datetime.now(UTC))
        if state is None:
            self._index = index
            return False
        if self._last_sync is not None and not _restores_a_path(stored, state):
            wait = self._last_sync + self._sync_interval - self._clock()
            if wait > 0:
                await asyncio.sleep(wait)
                # The catalog may have moved while we waited: sync what is current.
                index, stored, gateways = await self._view.local_federation_view(0)
                state = federation_state_to_sync(
                    self._datacenter, stored, gateways, datetime.now(UTC)
                )
                if state is None:
                    self._index = index
                    return False
        await self._applier.apply_federation_state(state)
        self._last_sync = self._clock()
        self._index = index
        self.syncs += 1
        log.info(
            "federation state anti-entropy synced",
            extra={"datacenter": self._datacenter, "gateways": len(state.mesh_gateways)},
        )
        return True

    async def _body(self) -> None:
        await self.sync_once()

    async def run(self) -> None:
        """Sync until cancelled (leadership lost)."""
        await retry_loop("federation state anti-entropy", self._body, policy=self._policy)


# --- pruning ------------------------------------------------------------------------


def stale_datacenters(
    states: Sequence[FederationState], known: Collection[str], primary: str
) -> list[str]:
    """Datacenters whose record should go: not in the WAN pool, never the primary."""
    known_lower = {dc.lower() for dc in known} | {primary.lower()}
    return sorted(
        state.datacenter for state in states if state.datacenter.lower() not in known_lower
    )


class DatacenterRegistry(Protocol):
    """The datacenters the WAN pool currently knows."""

    def known_datacenters(self) -> Collection[str]: ...


class Pruner:
    """On the primary's leader: delete federation states of departed datacenters."""

    def __init__(
        self,
        *,
        primary: str,
        consensus: Consensus,
        registry: DatacenterRegistry,
        interval: float = PRUNE_INTERVAL,
    ) -> None:
        self._primary = primary
        self._consensus = consensus
        self._registry = registry
        self._interval = interval

    async def prune_once(self) -> list[str]:
        with self._consensus.store.read() as txn:
            states = txn.federation_states()[1]
        stale = stale_datacenters(states, self._registry.known_datacenters(), self._primary)
        for datacenter in stale:
            log.info("pruning stale federation state", extra={"datacenter": datacenter})
            await self._consensus.apply(
                FederationStateWrite(
                    request=FederationStateRequest(
                        datacenter=self._primary,
                        op="delete",
                        state=FederationState(datacenter=datacenter),
                    )
                )
            )
        return stale

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.prune_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "pruning federation states failed; will retry in %.0f s: %s",
                    self._interval,
                    exc,
                )
