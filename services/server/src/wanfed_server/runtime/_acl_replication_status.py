"""What ACL replication has done, and whether the replicated tables are stale.

Theory of operation. A secondary's leader replicates two tables from the
primary, policies then tokens, each with its own index replicator. Every
outcome is fed here with the time it happened (``now``, a monotonic clock,
for staleness; ``wall``, for the operator's ``LastSuccess``/``LastError``):

* :meth:`AclReplicationTracker.contact` — a fetch from the primary answered;
* :meth:`AclReplicationTracker.replicated` — a round's writes all landed, the
  table now holds the primary's copy at ``index``;
* :meth:`AclReplicationTracker.failed` — a fetch or a local write failed.

The tables are *stale* when the latest outcome of some table is a failure
and the last time that table heard from the primary (or replication started
this term, if it never did) lies ``ttl`` seconds or more in the past. A
healthy long-poll answers at least once per wait, so silence alone is not
staleness; a failure that follows a long silence is. The core returns the
deadline at which staleness would begin, so the adapter re-arms one timer
instead of polling, and reads no clock itself.

:meth:`AclReplicationTracker.status` is Consul's ``/v1/acl/replication``
answer: never-run values are the zero time and an empty message, never
something made up.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal

import msgspec

from wanfed_fsm import ZERO_TIME

__all__ = ["POLICIES", "TOKENS", "AclReplicationStatus", "AclReplicationTracker", "AclTable"]

AclTable = Literal["policies", "tokens"]
POLICIES: Final[AclTable] = "policies"
TOKENS: Final[AclTable] = "tokens"


class AclReplicationStatus(msgspec.Struct, frozen=True, kw_only=True, rename="pascal"):
    """Consul's ``ACLReplicationStatus`` (``GET /v1/acl/replication``)."""

    enabled: bool = False
    running: bool = False
    source_datacenter: str = ""
    replication_type: str = ""
    replicated_index: int = 0
    """The primary's policy index this datacenter holds."""
    replicated_role_index: int = 0
    """Roles are not supported: always 0."""
    replicated_token_index: int = 0
    last_success: datetime = ZERO_TIME
    last_error: datetime = ZERO_TIME
    last_error_message: str = ""


@dataclass
class _Table:
    failing: bool = False
    contact_at: float | None = None
    index: int = 0


class AclReplicationTracker:
    """Outcomes in, status and staleness out; see the module docstring."""

    def __init__(self, *, source_datacenter: str, enabled: bool, ttl: float) -> None:
        if ttl <= 0:
            raise ValueError(f"the staleness bound must be > 0 seconds, got {ttl}")
        self._source = source_datacenter
        self._enabled = enabled
        self._ttl = ttl
        self._running = False
        self._started_at = 0.0
        self._tables: dict[AclTable, _Table] = {POLICIES: _Table(), TOKENS: _Table()}
        self._last_success = ZERO_TIME
        self._last_error = ZERO_TIME
        self._last_error_message = ""

    # --- events ----------------------------------------------------------------

    def started(self, now: float) -> None:
        """This server leads and replicates from now on (a new term)."""
        self._running = True
        self._started_at = now
        for table in self._tables.values():
            table.failing = False
            table.contact_at = None

    def stopped(self) -> None:
        """Leadership lost: another server replicates; this one no longer knows."""
        self._running = False

    def contact(self, table: AclTable, now: float) -> None:
        state = self._tables[table]
        state.contact_at = now
        state.failing = False

    def replicated(self, table: AclTable, index: int, now: float, wall: datetime) -> None:
        self.contact(table, now)
        self._tables[table].index = index
        self._last_success = wall

    def failed(self, table: AclTable, error: str, wall: datetime) -> None:
        self._tables[table].failing = True
        self._last_error = wall
        self._last_error_message = error

    # --- queries ---------------------------------------------------------------

    def _stale_at(self) -> float | None:
        """When staleness begins (perhaps already passed); ``None``: nothing is failing."""
        if not self._running:
            return None
        moments = [
            (state.contact_at if state.contact_at is not None else self._started_at) + self._ttl
            for state in self._tables.values()
            if state.failing
        ]
        return min(moments) if moments else None

    def stale(self, now: float) -> bool:
        at = self._stale_at()
        return at is not None and now >= at

    def next_deadline(self, now: float) -> float | None:
        """When :meth:`stale` would turn true; ``None`` if it is already, or cannot yet."""
        at = self._stale_at()
        return at if at is not None and at > now else None

    def status(self) -> AclReplicationStatus:
        return AclReplicationStatus(
            enabled=self._enabled,
            running=self._enabled and self._running,
            source_datacenter=self._source,
            replication_type="tokens" if self._enabled else "",
            replicated_index=self._tables[POLICIES].index,
            replicated_token_index=self._tables[TOKENS].index,
            last_success=self._last_success,
            last_error=self._last_error,
            last_error_message=self._last_error_message,
        )
