"""WAN federation via mesh gateways, wired into one server.

Runs on every server when ``connect.enable_mesh_gateway_wan_federation`` is on:

* the gateway locator's refresh loop, over this server's own store;
* in a secondary, primary-gateway discovery (``primary_gateways``) feeding the
  locator's fallback list; the WAN join through ``*.<primary>`` runs whenever
  the locator knows a gateway to the primary (local or fallback), and is
  nudged by the events that give it one (:meth:`WanFederation.on_route_to_primary`);

and, while this server leads its datacenter (the leadership lifecycle):

* anti-entropy of this datacenter's federation state into the primary;
* in a secondary, federation-state replication from the primary, whose every
  fetch is reported to the locator (``set_use_replication_signal`` brackets
  it, so followers and ex-leaders trust their local gateways); once failures
  sent the leader to the primary's gateways directly, the locator service
  probes the local path with :class:`PrimaryPingProbe` until it works again;
  a change of path restarts the replication round in flight (its long-poll
  was sent along the old path, perhaps the broken one);
* in the primary, pruning of datacenters that left the WAN pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Final, Protocol, TypeVar

import msgspec

from wanfed_agent.discover import PrimaryGatewayDiscovery
from wanfed_agent.rpc import RpcPool, blocking_call_timeout
from wanfed_fsm import (
    MESH_GATEWAY_KIND,
    CheckServiceNode,
    Consensus,
    DCSpecificRequest,
    FederationState,
    FederationStateRequest,
    FederationStateWrite,
    IndexedFederationStates,
    ReadTxn,
    RetryPolicy,
    StateStore,
    blocking_query,
)
from wanfed_gateway_locator import GatewayLocator, LocatorService, Path
from wanfed_proto import RemoteError
from wanfed_replication import (
    AntiEntropy,
    FederationStateReplication,
    IndexReplicator,
    Pruner,
    ReplicationNotReady,
    ReplicationPolicy,
)

from ._router import NoPathToDatacenterError

__all__ = ["FederationHost", "FederationOptions", "PrimaryPingProbe", "WanFederation"]

logger = logging.getLogger("wanfed_server.wanfed")

T = TypeVar("T")

EMPTY_STORE_RECHECK: Final = 10.0
"""Seconds a secondary with no stored federation state waits for the primary in
the WAN pool before looking at its store again. A restarted leader may start
replication before its log replay restored the states: it must notice that it
is a restart (whose rounds try at once) in seconds, not after the long-poll."""

PROBE_TIMEOUT: Final = 5.0
"""Seconds one probe of the local path may take (dial, handshake and ping)."""


class FederationOptions(msgspec.Struct, frozen=True, kw_only=True):
    """Timings; the defaults are the reference's, tests shorten them."""

    replication_wait: float = 300.0
    """``MaxQueryTime`` of the blocking ``FederationState.List`` against the primary."""
    replication_rate: float = 1.0
    replication_burst: int = 5
    replication_max_retry_wait: float = 120.0
    """Cap of the doubling wait between failed replication rounds."""
    ae_sync_interval: float = 5.0
    ae_wait: float = 300.0
    prune_interval: float = 3600.0
    locator_rate: float = 0.2
    locator_burst: int = 5
    leader_loop_backoff_cap: float = 256.0
    locator_wait: float = 300.0


class FederationHost(Protocol):
    """What the federation routines need from the server they run in."""

    @property
    def store(self) -> StateStore: ...

    @property
    def consensus(self) -> Consensus: ...

    def is_leader(self) -> bool: ...

    def leader_rpc_address(self) -> str | None: ...

    async def rpc(self, method: str, args: msgspec.Struct, reply_type: type[T]) -> T: ...

    async def rpc_any_server(
        self,
        datacenter: str,
        method: str,
        args: msgspec.Struct,
        reply_type: type[T],
        *,
        timeout: float,  # noqa: ASYNC109 (the call's deadline)
    ) -> T:
        """``method`` on any server of ``datacenter``, through the current gateway path,
        whether or not the WAN pool knows one of its servers."""
        ...

    async def wait_for_datacenter(self, datacenter: str, within: float) -> bool:
        """Until a server of ``datacenter`` was seen in the WAN pool; False after ``within`` s."""
        ...

    def lists_live_server(self, datacenter: str) -> bool:
        """The WAN pool lists a live server of ``datacenter``: a forwarded call would dial it."""
        ...


class DatacenterRegistry(Protocol):
    def known_datacenters(self) -> list[str]: ...


class _StoreSource:
    """The locator's view of the local store (no RPC, no token)."""

    def __init__(self, host: FederationHost, wait: float) -> None:
        self._host = host
        self._wait = wait

    def local_state_initialized(self) -> bool:
        return self._host.is_leader() or self._host.leader_rpc_address() is not None

    async def federation_states(self, min_index: int) -> tuple[int, Sequence[FederationState]]:
        meta, states = await blocking_query(
            self._host.store,
            DCSpecificRequest(min_query_index=min_index, max_query_time=self._wait),
            lambda txn: txn.federation_states(),
        )
        return meta.index, states


class _PrimaryClient:
    """``FederationState.List`` in the primary, through the normal forwarding path."""

    def __init__(
        self, host: FederationHost, primary: str, wait: float, locator: GatewayLocator
    ) -> None:
        self._host = host
        self._primary = primary
        self._wait = wait
        self._locator = locator

    def _was_federated(self) -> bool:
        with self._host.store.read() as txn:
            return bool(txn.federation_states()[1])

    async def list_federation_states(self, min_index: int) -> IndexedFederationStates:
        # With stored states (a restart) there is no waiting for the primary to
        # appear in the WAN pool: that wait is what a broken local path looks
        # like (the WAN join through it fails too), so the round tries at once
        # and its failure counts. Three of them, seconds apart, send the leader
        # to the primary's gateways directly, where the next round works (and
        # the retried WAN join through ``*.<primary>`` refills the pool).
        # A fresh secondary has no path to judge yet: it waits, reporting nothing.
        if not self._locator.populated:
            # Every dial would fail for want of a gateway, measuring no path: the
            # refresh loop reads the store as soon as this server knows a leader.
            raise ReplicationNotReady("the gateway locator has not read the local store yet")
        federated = self._was_federated()
        if not federated and not await self._host.wait_for_datacenter(
            self._primary, min(self._wait, EMPTY_STORE_RECHECK)
        ):
            raise ReplicationNotReady(
                f"no server of the primary datacenter {self._primary} is in the WAN pool yet"
            )
        method = "FederationState.List"
        request = DCSpecificRequest(
            datacenter=self._primary,
            min_query_index=min_index,
            max_query_time=self._wait,
            allow_stale=True,
        )
        if self._host.lists_live_server(self._primary):
            try:
                return await self._host.rpc(method, request, IndexedFederationStates)
            except NoPathToDatacenterError:
                pass  # the pool forgot the primary meanwhile: nothing was dialled
            except RemoteError:
                # "Remote DC has no server currently reachable" dialled nothing
                # when the pool's list emptied meanwhile; with live servers still
                # listed, the answer stands.
                if self._host.lists_live_server(self._primary):
                    raise
        # The WAN pool lists no live primary server: none known yet (a restart,
        # its join still pending), or every one failed in gossip (they all
        # restarted). A forwarded call would dial nothing ("Remote DC has no
        # server currently reachable"), and counting that as a failed round
        # sent a healthy leader off its working local path. Ask any primary
        # server through the gateways instead (SNI ``server.<primary>.<domain>``):
        # that dial measures the path in use, so a healthy path stays in use and
        # a broken one fails promptly, three times, and sends the leader direct.
        return await self._host.rpc_any_server(
            self._primary,
            method,
            request,
            IndexedFederationStates,
            timeout=blocking_call_timeout(self._wait),
        )


class PrimaryPingProbe:
    """``Status.Ping`` to any server of the primary through one given (local) gateway.

    It proves the whole local path the leader left — that gateway, its route
    to the primary's gateways (from the replicated states), a primary server
    answering mTLS RPC — and needs nothing from the WAN pool, which a
    restarted secondary may not have refilled: the SNI names any server of
    the primary, ``server.<primary>.<domain>``. It goes through the same RPC
    client and dialer as every other call, on a connection of its own.
    """

    def __init__(self, *, primary: str, client: RpcPool, timeout: float = PROBE_TIMEOUT) -> None:
        self._primary = primary
        self._client = client
        self._timeout = timeout

    async def probe(self, gateway: str) -> None:
        await self._client.probe(self._primary, gateway, "Status.Ping", timeout=self._timeout)


class _LocalView:
    """Anti-entropy's consistent read: this DC's stored record and its gateways."""

    def __init__(self, host: FederationHost, datacenter: str, wait: float) -> None:
        self._host = host
        self._datacenter = datacenter
        self._wait = wait

    async def local_federation_view(
        self, min_index: int
    ) -> tuple[int, FederationState | None, Sequence[CheckServiceNode]]:
        datacenter = self._datacenter

        def query(
            txn: ReadTxn,
        ) -> tuple[int, tuple[FederationState | None, list[CheckServiceNode]]]:
            index_state, state = txn.federation_state(datacenter)
            index_dump, gateways = txn.service_dump(MESH_GATEWAY_KIND)
            return max(index_state, index_dump), (state, gateways)

        meta, (state, gateways) = await blocking_query(
            self._host.store,
            DCSpecificRequest(
                min_query_index=min_index, max_query_time=self._wait, require_consistent=True
            ),
            query,
            leadership=self._host.consensus,
        )
        return meta.index, state, gateways


class _Applier:
    """Writes this DC's record: through local Raft in the primary, else via the primary."""

    def __init__(self, host: FederationHost, datacenter: str, primary: str) -> None:
        self._host = host
        self._datacenter = datacenter
        self._primary = primary

    async def apply_federation_state(self, state: FederationState) -> None:
        request = FederationStateRequest(datacenter=self._primary, op="upsert", state=state)
        if self._datacenter == self._primary:
            await self._host.consensus.apply(FederationStateWrite(request=request))
            return
        while not await self._host.wait_for_datacenter(self._primary, 60.0):
            logger.info(
                "anti-entropy waiting for a server of the primary datacenter in the WAN pool",
                extra={"primary": self._primary},
            )
        await self._host.rpc("FederationState.Apply", request, bool)


class WanFederation:
    """The locator, discovery and the leader's federation routines of one server."""

    def __init__(
        self,
        host: FederationHost,
        *,
        datacenter: str,
        primary_datacenter: str,
        primary_gateways: Sequence[str],
        primary_gateways_interval: float,
        registry: DatacenterRegistry,
        options: FederationOptions | None = None,
        clock_now: float,
    ) -> None:
        self._host = host
        self._datacenter = datacenter
        self._primary = primary_datacenter
        self._options = options or FederationOptions()
        self._registry = registry
        opts = self._options
        self.locator = GatewayLocator(
            datacenter=datacenter, primary_datacenter=primary_datacenter, now=clock_now
        )
        self.locator_service = LocatorService(
            self.locator,
            _StoreSource(host, opts.locator_wait),
            policy=RetryPolicy(
                rate=opts.locator_rate,
                burst=opts.locator_burst,
                backoff_cap=opts.leader_loop_backoff_cap,
            ),
        )
        self.discovery: PrimaryGatewayDiscovery | None = None
        if primary_gateways and not self.is_primary:
            self.discovery = PrimaryGatewayDiscovery(
                primary_gateways,
                self,
                interval=primary_gateways_interval,
                needs_rediscovery=self._direct_path_failing,
            )
        self._route_watchers: list[Callable[[str], None]] = []
        self._route_seen: list[str] = []
        self.locator_service.on_primary_path_change(self._on_primary_path_change)
        self._tasks: list[asyncio.Task[None]] = []
        self._leader_tasks: list[asyncio.Task[None]] = []
        self._replicator: IndexReplicator[FederationState] | None = None
        self._reaping: set[asyncio.Task[None]] = set()

    @property
    def is_primary(self) -> bool:
        return self._datacenter == self._primary

    def _direct_path_failing(self) -> bool:
        """Leader dialling the primary's gateways directly, and still failing."""
        status = self.locator_service.status()
        return (
            self._host.is_leader()
            and not status.dial_primary_through_local_gateways
            and status.replication.consecutive_failures > 0
        )

    # --- the route to the primary, for the WAN join ---------------------------------

    def route_to_primary_known(self) -> bool:
        """The locator has a gateway to dial for the primary (a local or a primary one)."""
        return bool(self.locator.list_gateways(self._primary))

    def on_route_to_primary(self, watcher: Callable[[str], None]) -> None:
        """Call ``watcher(reason)`` whenever the gateways to the primary change to a
        non-empty list: the locator read the store, a fallback address became
        known, the path changed. The WAN join waits for these, not for a timer."""
        self._route_watchers.append(watcher)

    def _route_may_have_changed(self, reason: str) -> None:
        gateways = self.locator.list_gateways(self._primary)
        if gateways == self._route_seen:
            return
        self._route_seen = gateways
        if gateways:
            for watcher in self._route_watchers:
                watcher(reason)

    def refresh_fallback_addresses(
        self, addresses: Iterable[str], source: str = "configured"
    ) -> bool:
        """Discovery's :class:`~wanfed_agent.discover.FallbackSink`: the locator's, and
        a WAN join that had no gateway to dial may now have one."""
        changed = self.locator_service.refresh_fallback_addresses(addresses, source)
        self._route_may_have_changed("a fallback address of the primary's gateways is known")
        return changed

    async def _follow_locator_refreshes(self) -> None:
        refreshes = self.locator_service.refreshes
        while True:
            refreshes = await self.locator_service.wait_refreshed(refreshes)
            self._route_may_have_changed("the gateway locator read the federation states")

    def pick_gateway(self, datacenter: str) -> str:
        return self.locator_service.pick_gateway(datacenter)

    # --- lifecycle ------------------------------------------------------------

    def start(self) -> None:
        self.locator_service.start()
        if not self.is_primary:
            self._tasks.append(
                asyncio.create_task(self._follow_locator_refreshes(), name="route-to-primary-watch")
            )
        if self.discovery is not None:
            self._tasks.append(
                asyncio.create_task(self.discovery.run(), name="primary-gateway-discovery")
            )

    async def stop(self) -> None:
        await self._stop_leader()
        await self.locator_service.stop()
        await _cancel(self._tasks)
        self._tasks = []

    def on_leadership(self, is_leader: bool) -> None:
        if is_leader:
            self._start_leader()
        else:
            self._release_leader()

    def _start_leader(self) -> None:
        if self._leader_tasks:
            return
        opts = self._options
        logger.info(
            "leadership gained: starting federation-state routines",
            extra={"datacenter": self._datacenter, "primary": self.is_primary},
        )
        ae = AntiEntropy(
            datacenter=self._datacenter,
            view=_LocalView(self._host, self._datacenter, opts.ae_wait),
            applier=_Applier(self._host, self._datacenter, self._primary),
            sync_interval=opts.ae_sync_interval,
            policy=RetryPolicy(
                rate=opts.locator_rate,
                burst=opts.locator_burst,
                backoff_cap=opts.leader_loop_backoff_cap,
            ),
        )
        self._leader_tasks.append(asyncio.create_task(ae.run(), name="federation-state-ae"))
        if self.is_primary:
            pruner = Pruner(
                primary=self._primary,
                consensus=self._host.consensus,
                registry=self._registry,
                interval=opts.prune_interval,
            )
            self._leader_tasks.append(asyncio.create_task(pruner.run(), name="fed-state-prune"))
        else:
            self.locator_service.set_use_replication_signal(True)
            replication = FederationStateReplication(
                datacenter=self._datacenter,
                primary=_PrimaryClient(
                    self._host, self._primary, opts.replication_wait, self.locator
                ),
                consensus=self._host.consensus,
                feedback=self.locator_service,
            )
            replicator = replication.replicator(
                ReplicationPolicy(
                    rate=opts.replication_rate,
                    burst=opts.replication_burst,
                    max_retry_wait=opts.replication_max_retry_wait,
                )
            )
            self._replicator = replicator
            self._leader_tasks.append(
                asyncio.create_task(replicator.run(), name="fed-state-replication")
            )

    def _on_primary_path_change(self, path: Path) -> None:
        """The locator switched the path to the primary (pooled connections on the
        old one retire by their route's epoch): replication and the WAN join try
        the new one."""
        # The path stays the line's last word: operators and tests read it there.
        logger.info("path to the primary datacenter is now %s", path)
        self.restart_replication_round(f"path to the primary is now {path}")
        self._route_may_have_changed(f"path to the primary is now {path}")

    def restart_replication_round(self, reason: str) -> None:
        """The path to the primary changed: a replication long-poll in flight was
        sent along the old one (perhaps the broken one) and would hold the round
        for up to its wait time, and a backoff earned on it would delay the first
        try of the new one (the switch to the primary's gateways comes right
        after a failure); ask again along the new path now."""
        if self._replicator is not None and self._replicator.restart_round(reason):
            logger.info("replication asks the primary again at once: %s", reason)

    def _release_leader(self) -> None:
        """Stop the leader's routines *now*; awaiting them happens in the background.

        Synchronous on purpose: leadership lost and regained in quick succession
        (a flapping first election) must leave the new term with fresh routines.
        Deferring the whole stop to a task let the regain find the old routines
        still listed, keep them, and then watch the late stop cancel them: a
        leader with no replication and no anti-entropy until the next change.
        A cancelled routine gets ``CancelledError`` at its next await and reports
        no later replication result, so the signal can be switched off right away.
        """
        if not self._leader_tasks:
            return
        tasks, self._leader_tasks = self._leader_tasks, []
        self._replicator = None
        for task in tasks:
            task.cancel()
        if not self.is_primary:
            self.locator_service.set_use_replication_signal(False)
        reaper = asyncio.get_running_loop().create_task(_cancel(tasks))
        self._reaping.add(reaper)
        reaper.add_done_callback(self._reaping.discard)
        logger.info(
            "federation-state routines stopped; waiting for them in the background",
            extra={"datacenter": self._datacenter},
        )

    async def _stop_leader(self) -> None:
        self._release_leader()
        await asyncio.gather(*self._reaping, return_exceptions=True)


async def _cancel(tasks: Sequence[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
