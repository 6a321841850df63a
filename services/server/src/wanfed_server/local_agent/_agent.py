"""The local agent's asyncio adapter: timers, TCP probes and catalog sync.

:class:`LocalState` decides; this module only waits and does I/O. Three
kinds of tasks run while the agent is started:

* one timer task that sleeps until the state's next deadline (TTL expiry,
  ``DeregisterCriticalServiceAfter``) and applies it;
* one task per TCP check that connects every ``Interval`` and records the
  result;
* the sync task: whenever something changed locally, whenever a blocking
  query on this node's checks sees the catalog move (a restore, another
  writer), and at least every ``sync_interval``, it reads the catalog's view of
  this node, asks the state for a plan and writes it through
  ``Catalog.Register`` / ``Catalog.Deregister``. A failed sync is retried
  after ``retry_interval``, doubling up to ``sync_interval`` while failures
  last: that is how the catalog heals after a leader change, when writes
  fail until the new leader is ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path

from wanfed_fsm import (
    DCSpecificRequest,
    HealthCheck,
    HealthStatus,
    IndexedNodes,
    IndexedServiceNodes,
    Node,
    Service,
    ServiceSpecificRequest,
)
from wanfed_proto import ProtoError
from wanfed_server.interfaces import RpcDispatcher
from wanfed_server.runtime import IndexedHealthChecks, NodeSpecificRequest

from ._definitions import CheckDefinition, ServiceDefinition
from ._persist import ServiceFile
from ._state import DEFAULT_MAX_CHECKS, CatalogView, LocalState, SyncPlan, TooManyChecksError

__all__ = ["LocalAgent"]

logger = logging.getLogger(__name__)

DEFAULT_SYNC_INTERVAL = 60.0
DEFAULT_RETRY_INTERVAL = 1.0
NODE_WATCH_WAIT = 300.0


class LocalAgent:
    """Services and checks registered on this server's agent, kept in the catalog."""

    def __init__(
        self,
        dispatcher: RpcDispatcher,
        *,
        node: Node,
        datacenter: str,
        sync_interval: float = DEFAULT_SYNC_INTERVAL,
        retry_interval: float = DEFAULT_RETRY_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
        services_file: Path | None = None,
        max_checks: int = DEFAULT_MAX_CHECKS,
    ) -> None:
        """``services_file``: where registrations survive a restart (None: memory only).
        ``max_checks``: how many checks this agent runs at most."""
        self._dispatcher = dispatcher
        self._state = LocalState(node=node, datacenter=datacenter, max_checks=max_checks)
        self._file = ServiceFile(services_file) if services_file is not None else None
        if self._file is not None:
            restored = self._file.load()
            for definition in restored:
                try:
                    self._state.add_service(definition, clock())
                except TooManyChecksError as error:
                    logger.error(
                        "saved service not restored service_id=%s error=%s; "
                        "register it again once there is room",
                        definition.service.service_id,
                        error,
                    )
            if restored:
                logger.info(
                    "agent services restored count=%d path=%s; syncing them on start",
                    len(restored),
                    services_file,
                )
        self._sync_interval = sync_interval
        self._retry_interval = retry_interval
        self._clock = clock
        self._sync_wanted = asyncio.Event()
        self._timer_changed = asyncio.Event()
        self._in_sync = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._probes: dict[str, asyncio.Task[None]] = {}
        self._running = False

    @property
    def node_name(self) -> str:
        return self._state.node.node

    @property
    def datacenter(self) -> str:
        return self._state.datacenter

    # --- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        if self._running:
            return
        self._running = True
        self._tasks = [
            asyncio.create_task(self._sync_loop(), name="local-agent-sync"),
            asyncio.create_task(self._timer_loop(), name="local-agent-timers"),
            asyncio.create_task(self._watch_loop(), name="local-agent-watch"),
        ]
        for definition in self._state.check_definitions():
            self._start_probe(definition)
        self._changed()
        logger.info("local agent started node=%s; syncing with the catalog", self.node_name)

    async def stop(self) -> None:
        self._running = False
        tasks = [*self._tasks, *self._probes.values()]
        self._tasks, self._probes = [], {}
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        logger.info("local agent stopped node=%s", self.node_name)

    # --- the agent API -------------------------------------------------------

    def register_service(
        self, definition: ServiceDefinition, *, replace_existing_checks: bool = False
    ) -> None:
        before = {d.check_id: d for d in self._state.check_definitions()}
        self._state.add_service(
            definition, self._clock(), replace_existing_checks=replace_existing_checks
        )
        after = {d.check_id: d for d in self._state.check_definitions()}
        for check_id, old in before.items():
            if after.get(check_id) != old:
                self._stop_probe(check_id)
        for check_id, new in after.items():
            if before.get(check_id) != new:
                self._start_probe(new)
        self._save()
        logger.info(
            "service registered on agent service_id=%s checks=%d; syncing to catalog",
            definition.service.service_id,
            len(definition.checks),
        )
        self._changed()

    def deregister_service(self, service_id: str) -> None:
        """Raises :class:`UnknownServiceError` if the agent has no such service."""
        before = {d.check_id for d in self._state.check_definitions()}
        self._state.remove_service(service_id)
        after = {d.check_id for d in self._state.check_definitions()}
        for check_id in before - after:
            self._stop_probe(check_id)
        self._save()
        logger.info("service deregistered on agent service_id=%s; syncing", service_id)
        self._changed()

    def update_ttl(self, check_id: str, status: HealthStatus, output: str) -> None:
        """Raises :class:`UnknownCheckError` or :class:`CheckNotTtlError`."""
        if self._state.update_ttl(check_id, status, output, self._clock()):
            logger.info("check status changed check_id=%s status=%s; syncing", check_id, status)
            self._sync_wanted.set()
            self._in_sync.clear()
        self._timer_changed.set()

    def services(self) -> dict[str, Service]:
        return self._state.services()

    def checks(self) -> dict[str, HealthCheck]:
        return self._state.checks()

    async def wait_in_sync(self) -> None:
        """Return once a sync found nothing left to write (tests and tools)."""
        await self._in_sync.wait()

    def _save(self) -> None:
        if self._file is not None:
            self._file.save(self._state.definitions())

    def _changed(self) -> None:
        self._in_sync.clear()
        self._sync_wanted.set()
        self._timer_changed.set()

    # --- sync ----------------------------------------------------------------

    async def sync_once(self) -> SyncPlan:
        """Compare with the catalog once and write the differences; returns what was written."""
        view = await self._catalog_view()
        plan = self._state.plan(view)
        for register in plan.register:
            await self._dispatcher.rpc("Catalog.Register", register, bool)
        for deregister in plan.deregister:
            await self._dispatcher.rpc("Catalog.Deregister", deregister, bool)
        self._state.synced(view, plan)
        if not plan.empty:
            logger.info(
                "catalog synced node=%s registered=%d deregistered=%d",
                self.node_name,
                len(plan.register),
                len(plan.deregister),
            )
        return plan

    async def _catalog_view(self) -> CatalogView:
        dc = self.datacenter
        node_key = self.node_name.lower()
        nodes = await self._dispatcher.rpc(
            "Catalog.ListNodes", DCSpecificRequest(datacenter=dc), IndexedNodes
        )
        services: dict[str, Service] = {}
        for name in sorted(self._state.watched_service_names()):
            reply = await self._dispatcher.rpc(
                "Catalog.ServiceNodes",
                ServiceSpecificRequest(datacenter=dc, service_name=name),
                IndexedServiceNodes,
            )
            for entry in reply.service_nodes:
                if entry.node.node.lower() == node_key:
                    services[entry.service.service_id] = entry.service
        checks = await self._dispatcher.rpc(
            "Health.NodeChecks",
            NodeSpecificRequest(datacenter=dc, node=self.node_name),
            IndexedHealthChecks,
        )
        return CatalogView(
            node_registered=any(n.node.lower() == node_key for n in nodes.nodes),
            services=services,
            checks={check.check_id: check for check in checks.health_checks},
        )

    async def _sync_loop(self) -> None:
        failures = 0
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._sync_interval):
                    await self._sync_wanted.wait()
            self._sync_wanted.clear()
            try:
                plan = await self.sync_once()
            except Exception as error:
                # Retry soon (a new leader is usually ready within seconds), then
                # back off to the sync interval so a write the servers keep
                # rejecting does not flood them or the log.
                delay = min(self._retry_interval * 2**failures, self._sync_interval)
                failures += 1
                if isinstance(error, ProtoError | OSError):
                    logger.warning(
                        "catalog sync failed node=%s error=%s; retrying in %.1fs",
                        self.node_name,
                        error,
                        delay,
                    )
                else:  # a bug must not silently end anti-entropy for good
                    logger.exception(
                        "catalog sync crashed node=%s; retrying in %.1fs", self.node_name, delay
                    )
                await asyncio.sleep(delay)
                self._sync_wanted.set()
                continue
            failures = 0
            if plan.empty and not self._sync_wanted.is_set():
                self._in_sync.set()
            elif not plan.empty:
                self._sync_wanted.set()  # confirm on the next pass that nothing is left

    async def _watch_loop(self) -> None:
        """Wake a sync whenever the catalog's checks of this node move (restore, other writers)."""
        index = 0
        while True:
            request = NodeSpecificRequest(
                datacenter=self.datacenter,
                node=self.node_name,
                min_query_index=index,
                max_query_time=NODE_WATCH_WAIT,
                allow_stale=True,  # this server's own replica: a restore here is what we watch for
            )
            try:
                reply = await self._dispatcher.rpc(
                    "Health.NodeChecks", request, IndexedHealthChecks
                )
            except (ProtoError, OSError) as error:
                logger.debug("node watch failed error=%s; retrying", error)
                await asyncio.sleep(self._retry_interval)
                index = 0
                continue
            except Exception:
                logger.exception("node watch crashed; retrying in %.1fs", self._retry_interval)
                await asyncio.sleep(self._retry_interval)
                index = 0
                continue
            if reply.index != index:
                if index != 0:
                    self._sync_wanted.set()
                index = reply.index if reply.index > index or index == 0 else 0

    # --- timers and probes ---------------------------------------------------

    async def _timer_loop(self) -> None:
        while True:
            self._timer_changed.clear()
            now = self._clock()
            if self._state.expire(now):
                logger.info("TTL check expired node=%s; now critical, syncing", self.node_name)
                self._changed()
            for service_id in self._state.services_to_reap(now):
                logger.info("service critical too long service_id=%s; deregistering it", service_id)
                self.deregister_service(service_id)
            deadline = self._state.next_deadline()
            timeout = None if deadline is None else max(deadline - self._clock(), 0.0) + 0.001
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._timer_changed.wait()

    def _start_probe(self, definition: CheckDefinition) -> None:
        if not self._running or not definition.tcp:
            return
        self._probes[definition.check_id] = asyncio.create_task(
            self._probe_loop(definition), name=f"tcp-check-{definition.check_id}"
        )

    def _stop_probe(self, check_id: str) -> None:
        task = self._probes.pop(check_id, None)
        if task is not None:
            task.cancel()

    async def _probe_loop(self, definition: CheckDefinition) -> None:
        while True:
            status, output = await tcp_probe(definition.tcp, definition.timeout)
            if self._state.record_result(definition.check_id, status, output, self._clock()):
                logger.info(
                    "check status changed check_id=%s status=%s; syncing",
                    definition.check_id,
                    status,
                )
                self._changed()
            await asyncio.sleep(definition.interval)


async def tcp_probe(target: str, within: float) -> tuple[HealthStatus, str]:
    """One TCP check run: passing when a connection opens within ``within`` seconds."""
    host, _, port = target.rpartition(":")
    host = host.strip("[]")
    try:
        async with asyncio.timeout(within):
            _, writer = await asyncio.open_connection(host, int(port))
    except TimeoutError:
        return "critical", f"dial tcp {target}: i/o timeout"
    except OSError as error:
        return "critical", f"dial tcp {target}: {error.strerror or error}"
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return "passing", f"TCP connect {target}: Success"
