"""Services whose check stayed critical too long, deregistered by the leader.

A service instance that registers a check with ``DeregisterCriticalServiceAfter``
asks to be removed from the catalog once that check has been critical for
longer than the limit (a mesh gateway asks for 6 h). Nodes with their own agent
(the servers) have it done by that agent; catalog-only nodes have no agent, so
the datacenter's leader does it. This dials nothing: a catalog check is data
(its status is what its writer or a TTL expiry last wrote, see :mod:`._checks`),
and reaping deletes only a service that asked for it, which any writer of the
catalog could delete anyway.

Theory of operation: :class:`CriticalServiceReaper` is the sans-I/O core. It is
fed the catalog's checks (``sync``) with the current time and answers which
services are due (``due``) and when to look again (``next_deadline``). The
store keeps a check's status, not since when it holds, so "critical since" is
the time *this leader* first saw the check critical. A new leader starts
counting again: a leadership change can delay a reap but never hasten it, so a
service is never removed before its check has been critical for the full
limit (Consul's agent, which keeps the same clock locally, behaves alike
across restarts). A limit below the minimum (1 minute, as Consul's agent) is
raised to the minimum. A deregistration that failed is retried after
``retry_after``; one that succeeded is recognised when the checks vanish.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from wanfed_agent.config import parse_duration
from wanfed_fsm import HealthCheck

__all__ = [
    "DEREGISTER_CRITICAL_MINIMUM",
    "CriticalServiceReaper",
    "Reap",
    "deregister_critical_after",
]

DEREGISTER_CRITICAL_MINIMUM: Final = 60.0
"""Consul's agent never reaps sooner than one minute after a check turned critical."""

DEFAULT_RETRY_AFTER: Final = 5.0

CheckKey = tuple[str, str]
"""(node, check id); the node lower-cased, as the catalog compares node names."""


@dataclass(frozen=True)
class Reap:
    """Deregister ``service_id`` of ``node``: ``check_id`` was critical for ``critical_for`` s."""

    node: str
    service_id: str
    check_id: str
    critical_for: float
    limit: float
    declared: str
    """The check's own ``DeregisterCriticalServiceAfter``, before the minimum applied."""
    raised_to_minimum: bool


@dataclass
class _Critical:
    check: HealthCheck
    since: float
    limit: float
    raised: bool
    retry_at: float = 0.0
    reaping: bool = False

    @property
    def not_before(self) -> float:
        return max(self.since + self.limit, self.retry_at)


def deregister_critical_after(check: HealthCheck) -> float | None:
    """The check's limit in seconds; None when it has none (absent or ``0``).

    Raises ValueError for text that is not a (non-negative) duration: the
    catalog refuses such a registration rather than never reaping it.
    """
    text = check.definition.deregister_critical_service_after
    if not text:
        return None
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise ValueError(
            f"check {check.check_id!r}: DeregisterCriticalServiceAfter: {exc}"
        ) from None
    return seconds or None


class CriticalServiceReaper:
    """Which services are due for removal, as a pure function of checks and time."""

    def __init__(
        self,
        *,
        minimum: float = DEREGISTER_CRITICAL_MINIMUM,
        retry_after: float = DEFAULT_RETRY_AFTER,
    ) -> None:
        if minimum <= 0:
            raise ValueError(f"the reap minimum must be greater than zero, got {minimum}")
        if retry_after <= 0:
            raise ValueError(f"retry_after must be greater than zero, got {retry_after}")
        self._minimum = minimum
        self._retry_after = retry_after
        self._critical: dict[CheckKey, _Critical] = {}

    def sync(self, checks: Iterable[HealthCheck], now: float) -> None:
        """Adopt the catalog's current checks: newly critical ones start their clock,
        any other status (or removal) stops it."""
        seen: set[CheckKey] = set()
        for check in checks:
            if check.status != "critical" or not check.service_id:
                continue
            try:
                declared = deregister_critical_after(check)
            except ValueError:
                continue  # refused at registration; an older record is simply never reaped
            if declared is None:
                continue
            key = (check.node.lower(), check.check_id)
            seen.add(key)
            limit = max(declared, self._minimum)
            raised = declared < self._minimum
            tracked = self._critical.get(key)
            if tracked is None or tracked.check.create_index != check.create_index:
                # first seen critical, or deregistered and registered anew: a new clock
                self._critical[key] = _Critical(check, now, limit, raised)
            else:
                tracked.check = check
                tracked.limit = limit
                tracked.raised = raised
        for key in list(self._critical):
            if key not in seen:
                del self._critical[key]

    def due(self, now: float) -> list[Reap]:
        """Services to deregister now, one action per service however many checks agree."""
        actions: list[Reap] = []
        services: set[tuple[str, str]] = set()
        for key, tracked in self._critical.items():
            if tracked.reaping or tracked.not_before > now:
                continue
            check = tracked.check
            tracked.reaping = True  # until the checks vanish, or failed() re-arms it
            service = (key[0], check.service_id)
            if service in services:
                continue
            services.add(service)
            actions.append(
                Reap(
                    node=check.node,
                    service_id=check.service_id,
                    check_id=check.check_id,
                    critical_for=now - tracked.since,
                    limit=tracked.limit,
                    declared=check.definition.deregister_critical_service_after,
                    raised_to_minimum=tracked.raised,
                )
            )
        return actions

    def failed(self, action: Reap, now: float) -> None:
        """The deregistration did not commit: try again after ``retry_after``."""
        for key, tracked in self._critical.items():
            if key[0] == action.node.lower() and tracked.check.service_id == action.service_id:
                tracked.reaping = False
                tracked.retry_at = now + self._retry_after

    @property
    def retry_after(self) -> float:
        return self._retry_after

    def next_deadline(self) -> float | None:
        pending = [t.not_before for t in self._critical.values() if not t.reaping]
        return min(pending, default=None)

    def critical_since(self, node: str, check_id: str) -> float | None:
        """When this leader first saw the check critical (None: not counting)."""
        tracked = self._critical.get((node.lower(), check_id))
        return tracked.since if tracked is not None else None
