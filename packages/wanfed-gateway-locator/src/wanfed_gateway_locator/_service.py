"""The asyncio side of the locator: the refresh loop and the feedback entry points.

:class:`LocatorService` owns a :class:`GatewayLocator` and keeps it fed: a
long-running task re-reads the federation states with a blocking query over
the local store (every server runs it, leader or not), and the replicator,
the leader lifecycle and primary-gateway discovery call in through small
methods that stamp the current time. While the leader dials the primary
directly, a second task runs the core's local-path probes through a
:class:`LocalPathProbe` when the core says one is due. Everything that
decides lives in the core; this module only waits, and tells the listeners
registered with :meth:`LocatorService.on_primary_path_change` when an input
moved the path to the primary (the core's epoch).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Final, Protocol

from wanfed_fsm import FederationState, RetryPolicy, retry_loop

from ._locator import GatewayLocator, LocatorStatus, Path

__all__ = [
    "FederationStateSource",
    "LocalPathProbe",
    "LocalStateNotInitialized",
    "LocatorService",
]

log = logging.getLogger("wanfed.gateway_locator")

INITIALIZED_POLL: Final = 0.1
"""Seconds between looks at whether this server has heard from a leader yet.
Raft announces a follower's leader to nobody, so this is polled; the look is
an attribute read."""


class LocalStateNotInitialized(Exception):
    """This server has never heard from a leader: its store may be empty for no reason.

    Not a failure: the refresh loop waits for a leader, spending no retry token.
    """

    def __init__(self) -> None:
        super().__init__("local state not initialized")


class FederationStateSource(Protocol):
    """Where the locator reads federation states: the server's own store."""

    def local_state_initialized(self) -> bool:
        """True once this server is leader or has heard from one."""
        ...

    async def federation_states(self, min_index: int) -> tuple[int, Sequence[FederationState]]:
        """Every federation state; blocks while the table index is ``<= min_index``.

        Returns an index of at least 1 (the blocking-query contract).
        """
        ...


class LocalPathProbe(Protocol):
    """Proves the local path to the primary end to end, through one given gateway."""

    async def probe(self, gateway: str) -> None:
        """Return once a primary server answered through ``gateway``; raise otherwise.

        Must give up on its own within a few seconds (a dial timeout).
        """
        ...


class LocatorService:
    """Runs the refresh loop of one server's locator and timestamps its inputs."""

    def __init__(
        self,
        locator: GatewayLocator,
        source: FederationStateSource,
        *,
        clock: Callable[[], float] = time.monotonic,
        policy: RetryPolicy | None = None,
        probe: LocalPathProbe | None = None,
        initialized_poll: float = INITIALIZED_POLL,
    ) -> None:
        """Without ``probe`` a leader that went direct stays direct until its term ends."""
        self.locator = locator
        self._initialized_poll = initialized_poll
        self.probe = probe
        self._probe_task: asyncio.Task[None] | None = None
        self._inputs_changed = asyncio.Event()
        self._source = source
        self._clock = clock
        self._policy = policy or RetryPolicy()
        self._index = 0
        self._task: asyncio.Task[None] | None = None
        self.refreshes = 0
        """Completed refreshes; pass a value read earlier to :meth:`wait_refreshed`."""
        self._refreshed = asyncio.Condition()
        self.primary_gateways_ready = asyncio.Event()
        """Set the first time replication names a primary gateway; stops discovery."""
        self._path_listeners: list[Callable[[Path], object]] = []

    # --- lifecycle ------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(
                retry_loop("gateway locator refresh", self._refresh_once, policy=self._policy),
                name="gateway-locator-refresh",
            )
        if self._probe_task is None and self.probe is not None:
            self._probe_task = asyncio.create_task(
                self._probe_when_due(self.probe), name="gateway-locator-local-probe"
            )

    async def stop(self) -> None:
        tasks = [self._task, self._probe_task]
        self._task = self._probe_task = None
        for task in tasks:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _probe_when_due(self, probe: LocalPathProbe) -> None:
        """Probe the local path whenever the core says one is due; sleep otherwise."""
        while True:
            due = self.locator.next_local_probe_at()
            self._inputs_changed.clear()
            if due is None:
                await self._inputs_changed.wait()
                continue
            delay = due - self._clock()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._inputs_changed.wait()
                continue
            gateway = self.locator.pick_local_gateway()
            error: str | None = None
            if not gateway:
                error = "no local mesh gateway is known"
            else:
                try:
                    await probe.probe(gateway)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    error = f"via {gateway}: {str(exc) or type(exc).__name__}"
            if error is None:
                log.info("local path to the primary works again via=%s", gateway)
            else:
                log.debug("local path to the primary still broken: %s", error)
            epoch = self._primary_epoch()
            self.locator.record_local_probe_result(error, self._clock())
            self._tell_path_listeners(epoch)

    async def _refresh_once(self) -> None:
        if not self._source.local_state_initialized():
            await self._wait_initialized()
        index, states = await self._source.federation_states(self._index)
        epoch = self._primary_epoch()
        self.locator.update_from_states(states)
        self._tell_path_listeners(epoch)
        self._index = index
        if self.locator.primary_gateways_ready:
            self.primary_gateways_ready.set()
        async with self._refreshed:
            self.refreshes += 1
            self._refreshed.notify_all()

    async def _wait_initialized(self) -> None:
        """Until this server leads or has heard from a leader, within this round.

        Not a failure and not a round of its own: waiting for the next token
        instead spent the burst during an election and then looked only every
        1/rate seconds (5 s), so a new leader's replication, which waits for
        the locator's first read, started seconds late.
        """
        log.info(
            "gateway locator waiting: %s; reading the federation states once a leader is known",
            LocalStateNotInitialized(),
        )
        # No event to wait on: raft tells nobody when a follower hears its leader.
        while not self._source.local_state_initialized():  # noqa: ASYNC110
            await asyncio.sleep(self._initialized_poll)

    async def wait_refreshed(self, since: int) -> int:
        """Wait until a refresh completed after the count ``since``; return the new count.

        Read :attr:`refreshes` before the event you care about, then wait: a
        refresh finishing in between is not missed.
        """
        async with self._refreshed:
            await self._refreshed.wait_for(lambda: self.refreshes > since)
            return self.refreshes

    # --- inputs from other routines -------------------------------------------

    def on_replication_result(self, error: str | None, *, from_replication: bool = True) -> None:
        """The replicator's feedback after every remote fetch."""
        epoch = self._primary_epoch()
        self.locator.record_replication_result(
            error, self._clock(), from_replication=from_replication
        )
        self._inputs_changed.set()
        self._tell_path_listeners(epoch)

    def set_use_replication_signal(self, enabled: bool) -> None:
        """Called by the leader lifecycle when replication starts or stops."""
        epoch = self._primary_epoch()
        self.locator.set_use_replication_signal(enabled, self._clock())
        self._inputs_changed.set()
        self._tell_path_listeners(epoch)

    def refresh_fallback_addresses(
        self, addresses: Iterable[str], source: str = "configured"
    ) -> bool:
        epoch = self._primary_epoch()
        changed = self.locator.refresh_fallback_addresses(addresses, source)
        self._tell_path_listeners(epoch)
        return changed

    def on_primary_path_change(self, listener: Callable[[Path], object]) -> Callable[[], None]:
        """Call ``listener`` with the new path whenever the path to the primary changes.

        Pooled RPC connections need no telling (their routes carry the epoch,
        see :meth:`path_to`); this is for routines holding on to the old path
        in other ways (a long-poll to restart, another pool). Returns a
        function that removes the listener.
        """
        self._path_listeners.append(listener)
        return lambda: self._path_listeners.remove(listener)

    def _primary_epoch(self) -> int:
        return self.locator.path_to(self.locator.primary_datacenter)[1]

    def _tell_path_listeners(self, epoch_before: int) -> None:
        path, epoch = self.locator.path_to(self.locator.primary_datacenter)
        if epoch == epoch_before:
            return
        for listener in list(self._path_listeners):
            listener(path)

    # --- outputs ----------------------------------------------------------------

    def pick_gateway(self, datacenter: str) -> str:
        return self.locator.pick_gateway(datacenter)

    def path_to(self, datacenter: str) -> tuple[Path, int]:
        """The path to ``datacenter`` and its epoch (see :meth:`GatewayLocator.path_to`)."""
        return self.locator.path_to(datacenter)

    def dial_primary_through_local_gateway(self) -> bool:
        return self.locator.dial_primary_through_local_gateway()

    def status(self) -> LocatorStatus:
        return self.locator.status(self._clock())
