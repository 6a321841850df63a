"""Catalog-registered checks are data; the leader only expires their TTLs.

A check written through ``Catalog.Register`` (or ``/v1/catalog/register``) is
a record, as in Consul: its status is whatever the writer last wrote, and no
server runs it. A server that dialled the TCP address of a catalog check
would probe any host and port for anyone who can write the catalog (a port
scanner, and a CPU sink at 1 ms intervals); only a server's own agent runs
checks, the ones registered through ``/v1/agent/service/register``
(:mod:`wanfed_server.local_agent`), with a minimum interval and a cap.

Two things remain for the leader, because they dial nothing:

* TTL expiry: a catalog check with a ``TTL`` whose record has not changed
  for that long turns critical with output ``TTL expired``. This is how a
  catalog-only node without an agent (the mesh gateway) says it is alive:
  it re-writes its check before the TTL passes. The clock restarts whenever
  the check's record changes; a new leader starts every clock afresh, so an
  election can delay an expiry but never hasten it. Each expiry is one Raft
  write, at most once per write of the check, so a writer cannot make the
  leader write faster than it writes itself.
* ``DeregisterCriticalServiceAfter`` reaping (:mod:`._reaper`): removing a
  service that asked to be removed once critical long enough deletes only
  data any writer could delete.

Theory of operation: :class:`CheckSchedule` is the sans-I/O core. It is fed
the catalog's current checks (``sync``) with the current time, and says
which TTLs expired (``due``) and when to look again (``next_deadline``).
:class:`CheckRunner` is the asyncio adapter: it follows the checks table
with blocking queries and writes expiries through Raft. The same follower
feeds :class:`~._reaper.CriticalServiceReaper`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any, Final

from wanfed_agent.config import parse_duration
from wanfed_fsm import (
    CheckStatusUpdate,
    Consensus,
    ConsensusError,
    Deregister,
    DeregisterRequest,
    FsmError,
    HealthCheck,
    HealthStatus,
    QueryOptions,
    ReadTxn,
    StateStore,
    blocking_query,
)

from ._reaper import DEREGISTER_CRITICAL_MINIMUM, CriticalServiceReaper, Reap

__all__ = ["CheckRunner", "CheckSchedule", "Expire", "StatusChange"]

logger = logging.getLogger("wanfed_server.runtime.checks")

DEFAULT_TTL: Final = 10.0
"""The TTL of a check whose ``TTL`` text cannot be read (the catalog refuses
none of them today)."""
TTL_EXPIRED: Final = "TTL expired"
WRITE_RETRY_AFTER: Final = 5.0
"""Seconds before an expiry that did not commit is written again."""

CheckKey = tuple[str, str]
"""(node, check id)"""


@dataclass(frozen=True)
class Expire:
    key: CheckKey


@dataclass(frozen=True)
class StatusChange:
    key: CheckKey
    status: HealthStatus
    output: str


@dataclass
class _Tracked:
    check: HealthCheck
    ttl: float
    expires_at: float
    writing: bool = False
    """An expiry was handed out; nothing more until the write shows up in sync()."""


def _seconds(text: str, default: float) -> float:
    if not text:
        return default
    try:
        value = parse_duration(text)
    except ValueError:
        return default
    return value if value > 0 else default


class CheckSchedule:
    """Which catalog TTL checks expired, as a pure function of checks and time.

    Checks without a TTL (TCP definitions included) are not tracked: they
    are data, and nothing here ever dials an address.
    """

    def __init__(self) -> None:
        self._tracked: dict[CheckKey, _Tracked] = {}

    def sync(self, checks: Iterable[HealthCheck], now: float) -> None:
        """Adopt the catalog's current checks: new or changed TTLs (re)start, removed
        ones stop."""
        seen: set[CheckKey] = set()
        for check in checks:
            if not check.definition.ttl:
                continue
            key = (check.node.lower(), check.check_id)
            seen.add(key)
            tracked = self._tracked.get(key)
            if tracked is None or tracked.check.modify_index != check.modify_index:
                ttl = _seconds(check.definition.ttl, DEFAULT_TTL)
                self._tracked[key] = _Tracked(check, ttl, now + ttl)
        for key in list(self._tracked):
            if key not in seen:
                del self._tracked[key]

    def due(self, now: float) -> list[Expire]:
        actions: list[Expire] = []
        for key, tracked in self._tracked.items():
            if tracked.writing or tracked.expires_at > now:
                continue
            if tracked.check.status != "critical":
                tracked.writing = True
                actions.append(Expire(key))
        return actions

    def expired(self, key: CheckKey) -> StatusChange | None:
        tracked = self._tracked.get(key)
        if tracked is None or tracked.check.status == "critical":
            return None
        return StatusChange(key, "critical", TTL_EXPIRED)

    def write_failed(self, key: CheckKey, retry_at: float) -> None:
        """The expiry did not commit: hand it out again at ``retry_at``."""
        tracked = self._tracked.get(key)
        if tracked is not None:
            tracked.writing = False
            tracked.expires_at = retry_at

    def next_deadline(self) -> float | None:
        pending = [
            t.expires_at
            for t in self._tracked.values()
            if not t.writing and t.check.status != "critical"
        ]
        return min(pending, default=None)

    def tracked(self) -> int:
        """How many TTL checks are being timed."""
        return len(self._tracked)

    def node_name(self, key: CheckKey) -> str:
        tracked = self._tracked.get(key)
        return tracked.check.node if tracked is not None else key[0]


class CheckRunner:
    """Runs :class:`CheckSchedule` against the live catalog while this server leads."""

    def __init__(
        self,
        consensus: Consensus,
        store: StateStore,
        *,
        clock: Callable[[], float] | None = None,
        has_agent: Callable[[str], bool] = lambda node: False,
        deregister_minimum: float = DEREGISTER_CRITICAL_MINIMUM,
    ) -> None:
        """``has_agent(node)`` says a node's checks are timed (and its services
        reaped) by its own agent (the servers' nodes): the leader handles only
        catalog-only nodes. ``deregister_minimum`` is the shortest
        ``DeregisterCriticalServiceAfter`` honoured; only tests lower it."""
        self._consensus = consensus
        self._store = store
        self._has_agent = has_agent
        self._schedule = CheckSchedule()
        self._reaper = CriticalServiceReaper(minimum=deregister_minimum)
        self._clock = clock
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    def _now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    async def run(self) -> None:
        follower = asyncio.get_running_loop().create_task(self._follow_checks())
        try:
            while True:
                for action in self._schedule.due(self._now()):
                    change = self._schedule.expired(action.key)
                    if change is not None:
                        self._spawn(self._write(change))
                for reap in self._reaper.due(self._now()):
                    self._spawn(self._reap(reap))
                deadlines = [self._schedule.next_deadline(), self._reaper.next_deadline()]
                deadline = min((d for d in deadlines if d is not None), default=None)
                self._wake.clear()
                timeout = None if deadline is None else max(deadline - self._now(), 0.0)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await self._wake.wait()
        finally:
            follower.cancel()
            for task in [follower, *self._tasks]:
                task.cancel()
            await asyncio.gather(follower, *self._tasks, return_exceptions=True)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _follow_checks(self) -> None:
        index = 0
        while True:
            meta, checks = await blocking_query(
                self._store,
                QueryOptions(min_query_index=index, max_query_time=60.0),
                _all_checks,
            )
            index = meta.index if meta.index >= index else 0
            ours = [check for check in checks if not self._has_agent(check.node)]
            now = self._now()
            self._schedule.sync(ours, now)
            self._reaper.sync(ours, now)
            self._wake.set()

    async def _write(self, change: StatusChange) -> None:
        node = self._schedule.node_name(change.key)
        try:
            await self._consensus.apply(
                CheckStatusUpdate(
                    node=node, check_id=change.key[1], status=change.status, output=change.output
                )
            )
        except ConsensusError as exc:
            self._schedule.write_failed(change.key, self._now() + WRITE_RETRY_AFTER)
            self._wake.set()
            logger.warning(
                "check status write failed node=%s check=%s error=%s; retrying in %.0fs",
                node,
                change.key[1],
                exc,
                WRITE_RETRY_AFTER,
            )
            return
        logger.info(
            "check status changed node=%s check=%s status=%s output=%s",
            node,
            change.key[1],
            change.status,
            change.output,
        )

    async def _reap(self, action: Reap) -> None:
        try:
            await self._consensus.apply(
                Deregister(
                    request=DeregisterRequest(node=action.node, service_id=action.service_id)
                )
            )
        except FsmError as exc:  # not committed (or refused): the service is still there
            self._reaper.failed(action, self._now())
            self._wake.set()
            logger.warning(
                "reaping critical service failed node=%s service=%s error=%s; retrying in %.0fs",
                action.node,
                action.service_id,
                exc,
                self._reaper.retry_after,
            )
            return
        logger.info(
            "critical service deregistered node=%s service=%s check=%s critical_for=%.1fs "
            "limit=%.1fs declared=%s raised_to_minimum=%s",
            action.node,
            action.service_id,
            action.check_id,
            action.critical_for,
            action.limit,
            action.declared,
            action.raised_to_minimum,
        )


def _all_checks(txn: ReadTxn) -> tuple[int, list[HealthCheck]]:
    index, nodes = txn.nodes()
    checks: list[HealthCheck] = []
    for node in nodes:
        check_index, node_checks = txn.node_checks(node.node)
        index = max(index, check_index)
        checks.extend(node_checks)
    return index, checks
