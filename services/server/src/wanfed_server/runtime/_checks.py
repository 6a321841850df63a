"""Catalog-registered TCP and TTL checks, executed by the datacenter's leader.

A gateway registers itself through the catalog with a check definition; no
agent runs that check, so the leader does. Checks of nodes that have their
own agent (the servers, whose local agents sync their checks into the
catalog with the definitions) are left to that agent. Theory of operation:
:class:`CheckSchedule` is the sans-I/O core. It is fed the catalog's current
checks (``sync``) and probe results (``tcp_result``) with the current time,
and says what is due (``due``: TCP probes to run, TTLs that expired) and when
to look again (``next_deadline``). :class:`CheckRunner` is the asyncio
adapter: it follows the checks table with blocking queries, runs probes, and
writes status changes through Raft (only changes: an unchanged status costs
nothing).

TCP: the first probe runs as soon as a check is seen, then every
``Interval`` (default 10 s); the connect timeout is ``Timeout`` (default
10 s) but never longer than the interval, so an unreachable address turns
critical within one interval. TTL: the clock restarts whenever the check's
record changes (a status update or re-registration); when ``TTL`` passes
without one, the check turns critical with output ``TTL expired``.

The same follower feeds :class:`~._reaper.CriticalServiceReaper`: a service
whose check stayed critical past its ``DeregisterCriticalServiceAfter`` is
deregistered through Raft.
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

__all__ = ["CheckRunner", "CheckSchedule", "Expire", "ProbeTcp", "StatusChange"]

logger = logging.getLogger("wanfed_server.runtime.checks")

DEFAULT_INTERVAL: Final = 10.0
DEFAULT_TIMEOUT: Final = 10.0
TTL_EXPIRED: Final = "TTL expired"

CheckKey = tuple[str, str]
"""(node, check id)"""


@dataclass(frozen=True)
class ProbeTcp:
    key: CheckKey
    address: str
    timeout: float


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
    kind: str  # "tcp" | "ttl"
    period: float
    timeout: float
    next_at: float
    probing: bool = False


def _seconds(text: str, default: float) -> float:
    if not text:
        return default
    try:
        value = parse_duration(text)
    except ValueError:
        return default
    return value if value > 0 else default


class CheckSchedule:
    """Which catalog checks are due, as a pure function of checks, results and time."""

    def __init__(self) -> None:
        self._tracked: dict[CheckKey, _Tracked] = {}

    def sync(self, checks: Iterable[HealthCheck], now: float) -> None:
        """Adopt the catalog's current checks: new ones start, removed ones stop."""
        seen: set[CheckKey] = set()
        for check in checks:
            definition = check.definition
            if definition.tcp:
                kind = "tcp"
            elif definition.ttl:
                kind = "ttl"
            else:
                continue
            key = (check.node.lower(), check.check_id)
            seen.add(key)
            tracked = self._tracked.get(key)
            if kind == "tcp":
                period = _seconds(definition.interval, DEFAULT_INTERVAL)
                timeout = min(_seconds(definition.timeout, DEFAULT_TIMEOUT), period)
                if tracked is None or tracked.kind != "tcp" or tracked.period != period:
                    self._tracked[key] = _Tracked(check, "tcp", period, timeout, now)
                else:
                    tracked.check = check
            else:
                ttl = _seconds(definition.ttl, DEFAULT_INTERVAL)
                changed = tracked is None or tracked.check.modify_index != check.modify_index
                if tracked is None or tracked.kind != "ttl" or changed:
                    self._tracked[key] = _Tracked(check, "ttl", ttl, 0.0, now + ttl)
        for key in list(self._tracked):
            if key not in seen:
                del self._tracked[key]

    def due(self, now: float) -> list[ProbeTcp | Expire]:
        actions: list[ProbeTcp | Expire] = []
        for key, tracked in self._tracked.items():
            if tracked.probing or tracked.next_at > now:
                continue
            if tracked.kind == "tcp":
                tracked.probing = True
                actions.append(ProbeTcp(key, tracked.check.definition.tcp, tracked.timeout))
            elif tracked.check.status != "critical":
                tracked.probing = True  # until the write shows up in sync()
                actions.append(Expire(key))
        return actions

    def tcp_result(self, key: CheckKey, ok: bool, output: str, now: float) -> StatusChange | None:
        tracked = self._tracked.get(key)
        if tracked is None:
            return None
        tracked.probing = False
        tracked.next_at = now + tracked.period
        status: HealthStatus = "passing" if ok else "critical"
        if tracked.check.status == status and tracked.check.output == output:
            return None
        return StatusChange(key, status, output)

    def expired(self, key: CheckKey) -> StatusChange | None:
        tracked = self._tracked.get(key)
        if tracked is None or tracked.check.status == "critical":
            return None
        return StatusChange(key, "critical", TTL_EXPIRED)

    def next_deadline(self) -> float | None:
        pending = [t.next_at for t in self._tracked.values() if not t.probing]
        return min(pending, default=None)

    def node_name(self, key: CheckKey) -> str:
        tracked = self._tracked.get(key)
        return tracked.check.node if tracked is not None else key[0]


async def probe_tcp(address: str, timeout: float) -> tuple[bool, str]:  # noqa: ASYNC109
    """Consul's TCP check: a connect that succeeds within the timeout is passing."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(host, int(port))
    except TimeoutError:
        return False, f"dial tcp {address}: i/o timeout"
    except (OSError, ValueError) as exc:
        return False, f"dial tcp {address}: {exc}"
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True, f"TCP connect {address}: Success"


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
        """``has_agent(node)`` says a node's checks are run (and its services
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
                    if isinstance(action, ProbeTcp):
                        self._spawn(self._probe(action))
                    else:
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

    async def _probe(self, action: ProbeTcp) -> None:
        ok, output = await probe_tcp(action.address, action.timeout)
        change = self._schedule.tcp_result(action.key, ok, output, self._now())
        self._wake.set()
        if change is not None:
            await self._write(change)

    async def _write(self, change: StatusChange) -> None:
        node = self._schedule.node_name(change.key)
        try:
            await self._consensus.apply(
                CheckStatusUpdate(
                    node=node, check_id=change.key[1], status=change.status, output=change.output
                )
            )
        except ConsensusError as exc:
            logger.warning(
                "check status write failed node=%s check=%s error=%s; retried at next run",
                node,
                change.key[1],
                exc,
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
