"""Routines that run on the leader only: servers in the catalog, catalog checks
and reaping services whose check stayed critical too long.

Every server of the datacenter appears in the catalog as a node with service
``consul`` (ID ``consul``, port = its RPC port, ``lan``/``wan`` tagged
addresses) and a node check ``serfHealth``. The check says whether that
server is a live member of the cluster: passing while it is a Raft voter
and answered a hello within ``failure_timeout``, critical otherwise. The
reconcile loop runs every ``interval`` and whenever the server directory
changes, and writes only registrations whose content differs from the store.

:class:`LeaderRoutines` starts its tasks when leadership is gained and
cancels them when it is lost or the server stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Collection
from typing import Final, TypeVar

import msgspec

from wanfed_fsm import (
    Consensus,
    ConsensusError,
    HealthCheck,
    HealthStatus,
    Node,
    Register,
    RegisterRequest,
    Service,
    ServiceAddress,
    StateStore,
)
from wanfed_proto import parse_address

from ._checks import CheckRunner
from ._cluster import ServerDirectory
from ._messages import ServerInfo
from ._reaper import DEREGISTER_CRITICAL_MINIMUM

__all__ = ["SERF_CHECK_ID", "SERVER_SERVICE", "LeaderRoutines", "server_registration"]

logger = logging.getLogger("wanfed_server.runtime.leader")

SERVER_SERVICE: Final = "consul"
SERF_CHECK_ID: Final = "serfHealth"
SERF_CHECK_NAME: Final = "Serf Health Status"

_Record = TypeVar("_Record", Node, Service, HealthCheck)


def server_registration(server: ServerInfo, alive: bool) -> RegisterRequest:
    """The catalog entry of one server, as the leader keeps it."""
    host, port = parse_address(server.rpc_address)
    wan = server.wan_address or host
    status: HealthStatus = "passing" if alive else "critical"
    return RegisterRequest(
        datacenter=server.datacenter,
        node=Node(
            node=server.node,
            address=host,
            datacenter=server.datacenter,
            tagged_addresses={"lan": host, "wan": wan},
        ),
        service=Service(
            id=SERVER_SERVICE,
            service=SERVER_SERVICE,
            port=port,
            tagged_addresses={
                "lan": ServiceAddress(address=host, port=port),
                "wan": ServiceAddress(address=wan, port=port),
            },
        ),
        checks=[
            HealthCheck(
                node=server.node,
                check_id=SERF_CHECK_ID,
                name=SERF_CHECK_NAME,
                status=status,
                output="Agent alive and reachable" if alive else "Agent not live or unreachable",
            )
        ],
    )


def _registered(store: StateStore, request: RegisterRequest) -> bool:
    """True when the store already holds exactly this registration."""
    with store.read() as txn:
        _, node = txn.node(request.node.node)
        _, services = txn.service_nodes(SERVER_SERVICE)
        _, checks = txn.node_checks(request.node.node)
    if node is None or request.service is None:
        return False
    if _bare(node) != request.node:
        return False
    service = next(
        (sn.service for sn in services if sn.node.node.lower() == node.node.lower()), None
    )
    if service is None or _bare(service) != request.service:
        return False
    wanted = request.checks[0]
    existing = next((c for c in checks if c.check_id == wanted.check_id), None)
    return existing is not None and _bare(existing) == wanted


def _bare(record: _Record) -> _Record:
    return msgspec.structs.replace(record, create_index=0, modify_index=0)


class LeaderRoutines:
    """Starts on leadership gained, stops on leadership lost."""

    def __init__(
        self,
        consensus: Consensus,
        directory: ServerDirectory,
        *,
        clock: Callable[[], float],
        interval: float = 1.0,
        failure_timeout: float = 3.0,
        raft_members: Callable[[], Collection[str]] | None = None,
        deregister_minimum: float = DEREGISTER_CRITICAL_MINIMUM,
    ) -> None:
        """``raft_members()`` lists the Raft addresses of the cluster's voters; a
        server outside it is not a live member, however well it answers.
        ``deregister_minimum`` is the shortest critical time before a service is
        reaped (see :mod:`._reaper`)."""
        self._deregister_minimum = deregister_minimum
        self._raft_members = raft_members
        self._consensus = consensus
        self._directory = directory
        self._clock = clock
        self._interval = interval
        self._failure_timeout = failure_timeout
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def running(self) -> bool:
        return bool(self._tasks)

    def on_leadership(self, leader: bool) -> None:
        if leader and not self._tasks:
            loop = asyncio.get_running_loop()
            runner = CheckRunner(
                self._consensus,
                self._consensus.store,
                has_agent=self._directory.is_server,
                deregister_minimum=self._deregister_minimum,
            )
            self._tasks = [
                loop.create_task(self._reconcile_loop(), name="leader-reconcile"),
                loop.create_task(runner.run(), name="leader-checks"),
            ]
            logger.info(
                "leader routines started: server catalog reconcile, catalog checks, "
                "critical service reaping"
            )
        elif not leader and self._tasks:
            self._cancel()
            logger.info("leadership lost; leader routines stopped")

    def _cancel(self) -> list[asyncio.Task[None]]:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        return tasks

    async def stop(self) -> None:
        tasks = self._cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def alive(self, server: ServerInfo) -> bool:
        """Answered a hello within ``failure_timeout`` and is a Raft voter."""
        members = self._raft_members
        if members is not None and server.raft_address and server.raft_address not in members():
            return False
        seen = self._directory.last_seen(server.node)
        return seen is not None and self._clock() - seen <= self._failure_timeout

    async def reconcile_once(self) -> int:
        """Write every server registration that differs from the store; return how many."""
        written = 0
        store = self._consensus.store
        for server in self._directory.servers():
            request = server_registration(server, self.alive(server))
            if _registered(store, request):
                continue
            await self._consensus.apply(Register(request=request))
            written += 1
            logger.info(
                "server registered in catalog node=%s serfHealth=%s",
                server.node,
                request.checks[0].status,
            )
        return written

    async def _reconcile_loop(self) -> None:
        changed = self._directory.changed
        while True:
            changed.clear()
            try:
                await self.reconcile_once()
            except ConsensusError as exc:
                logger.warning("server catalog reconcile failed: %s; retrying", exc)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval):
                    await changed.wait()
