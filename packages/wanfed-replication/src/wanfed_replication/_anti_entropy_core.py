"""The anti-entropy core: when to compare, and what to write, for this datacenter.

Theory of operation. Every leader keeps its own datacenter's federation
state in the primary equal to its catalog. A *check* asks for a
:class:`ReadView` — a blocking read, above the index of the last check, of
the stored record and the mesh gateways in the catalog — and compares the two
(:func:`federation_state_to_sync`; check outputs are left out, so a TTL
refresh is no change). Equal: the check ends and the next one waits for the
next change. Different: a :class:`WriteState` of the current list, unless the
last write was less than ``sync_interval`` ago; then the core waits out the
interval and reads again from index 0 (the catalog may have moved back, as a
flapping health check does), so a flap costs at most one write per interval.
One write is never held back: the first that names a usable gateway (no
critical check) after a record that named none, at bootstrap or when every
gateway was replaced, because until it lands no other datacenter can reach
this one.

Checks start no faster than the :class:`wanfed_fsm.RetryPolicy` token bucket
allows; after ``n`` consecutive failed checks (a read or a write that failed)
the next waits ``policy.backoff(n)``.

The seam: feed events with ``now`` and carry out the actions returned;
call :meth:`AntiEntropyCore.handle_timer` once
:meth:`AntiEntropyCore.next_deadline` has passed (a check only ever starts
from the timer or :meth:`AntiEntropyCore.start_check`). The wall-clock time stamped
on a written record comes in with the view (:attr:`ViewRead.wall`): the core
reads no clock.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Final

import msgspec

from wanfed_fsm import CheckServiceNode, FederationState, RetryPolicy, TokenBucket

__all__ = [
    "AE_SYNC_INTERVAL",
    "AntiEntropyAction",
    "AntiEntropyCore",
    "AntiEntropyEvent",
    "ReadView",
    "StateWritten",
    "SyncFailed",
    "ViewRead",
    "WriteState",
    "federation_state_to_sync",
]

log = logging.getLogger("wanfed.replication")

AE_SYNC_INTERVAL: Final = 5.0


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


def restores_a_path(stored: FederationState | None, current: FederationState) -> bool:
    """The stored record names no gateway other datacenters could use, the new one does.

    Such a write is not debounced: until it lands every other datacenter's path
    to this one is broken (a bootstrap, every gateway replaced), and it cannot
    repeat faster than the debounced writes that take the gateways away again.
    """
    return not _usable(stored) and _usable(current)


# --- events (in) and actions (out) -----------------------------------------------


class ViewRead(msgspec.Struct, frozen=True, kw_only=True):
    """The answer to :class:`ReadView`, and the wall-clock time to stamp a write with."""

    index: int
    stored: FederationState | None
    gateways: Sequence[CheckServiceNode]
    wall: datetime

    def __post_init__(self) -> None:
        if self.index < 0:
            raise ValueError(f"a store index is never negative, got {self.index}")
        if self.wall.tzinfo is None:
            raise ValueError("the wall-clock time of a view must carry its time zone")


class StateWritten(msgspec.Struct, frozen=True, kw_only=True):
    """The :class:`WriteState` landed."""


class SyncFailed(msgspec.Struct, frozen=True, kw_only=True):
    """A :class:`ReadView` or :class:`WriteState` failed (``error`` says how)."""

    error: str


class ReadView(msgspec.Struct, frozen=True, kw_only=True):
    """Blocking read above ``min_index`` of the stored record and the gateway dump."""

    min_index: int


class WriteState(msgspec.Struct, frozen=True, kw_only=True):
    """Write ``state`` into the primary (through the local Raft log on the primary)."""

    state: FederationState


AntiEntropyEvent = ViewRead | StateWritten | SyncFailed
AntiEntropyAction = ReadView | WriteState


class _Phase(enum.Enum):
    WAITING = "waiting"  # for the next check's start time and token
    READING = "reading"
    DEBOUNCING = "debouncing"
    WRITING = "writing"


class AntiEntropyCore:
    """Checks of one datacenter's federation state, fed events and ``now``."""

    def __init__(
        self,
        *,
        datacenter: str,
        now: float,
        sync_interval: float = AE_SYNC_INTERVAL,
        policy: RetryPolicy | None = None,
    ) -> None:
        if not datacenter:
            raise ValueError("anti-entropy needs this datacenter's name")
        if sync_interval < 0:
            raise ValueError(f"sync_interval must be >= 0, got {sync_interval}")
        self.datacenter = datacenter
        self.sync_interval = sync_interval
        self.policy = policy or RetryPolicy()
        self._bucket = TokenBucket(self.policy.rate, self.policy.burst, now)
        self.index = 0  # the view index the next check blocks above
        self.syncs = 0  # writes that landed
        self.checks = 0
        self.checks_ended = 0  # with or without a write, or failed
        self.failures = 0
        self.wrote_last = False  # whether the last check that ended wrote
        self._last_sync: float | None = None
        self._phase = _Phase.WAITING
        self._start_at = now
        self._token_held = False
        self._debounce_until = now
        self._writing_index = 0
        self._writing: FederationState | None = None

    @property
    def debouncing(self) -> bool:
        """A change waits out the interval since the last write (until the deadline)."""
        return self._phase is _Phase.DEBOUNCING

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timer` has work; ``None`` while waiting on an answer."""
        if self._phase is _Phase.WAITING:
            return self._start_at
        if self._phase is _Phase.DEBOUNCING:
            return self._debounce_until
        return None

    def handle_timer(self, now: float) -> list[AntiEntropyAction]:
        if self._phase is _Phase.WAITING:
            return self._start_when_due(now)
        if self._phase is _Phase.DEBOUNCING and now >= self._debounce_until:
            # The catalog may have moved while we waited: compare what is current.
            self._phase = _Phase.READING
            return [ReadView(min_index=0)]
        return []

    def start_check(self, now: float) -> list[AntiEntropyAction]:
        """Start a check at once, regardless of the rate limit and any backoff."""
        if self._phase is not _Phase.WAITING:
            raise RuntimeError(f"anti-entropy check {self.checks} is still in progress")
        return self._begin()

    def feed(self, event: AntiEntropyEvent, now: float) -> list[AntiEntropyAction]:
        match event:
            case ViewRead() if self._phase is _Phase.READING:
                return self._compare(event, now)
            case StateWritten() if self._phase is _Phase.WRITING:
                return self._written(now)
            case SyncFailed() if self._phase in (_Phase.READING, _Phase.WRITING):
                return self._failed(event.error, now)
        raise ValueError(
            f"anti-entropy: {type(event).__name__} unexpected while {self._phase.value}"
        )

    # -- steps -------------------------------------------------------------

    def _start_when_due(self, now: float) -> list[AntiEntropyAction]:
        if now < self._start_at:
            return []
        if not self._token_held:
            self._token_held = True
            delay = self._bucket.reserve(now)
            if delay > 0:
                self._start_at = now + delay
                return []
        return self._begin()

    def _begin(self) -> list[AntiEntropyAction]:
        self.checks += 1
        self._token_held = False
        self._phase = _Phase.READING
        return [ReadView(min_index=self.index)]

    def _compare(self, view: ViewRead, now: float) -> list[AntiEntropyAction]:
        state = federation_state_to_sync(self.datacenter, view.stored, view.gateways, view.wall)
        if state is None:
            self.index = view.index
            return self._end(now, wrote=False)
        if self._last_sync is not None and not restores_a_path(view.stored, state):
            due = self._last_sync + self.sync_interval
            if now < due:
                self._phase = _Phase.DEBOUNCING
                self._debounce_until = due
                return []
        self._phase = _Phase.WRITING
        self._writing_index = view.index
        self._writing = state
        return [WriteState(state=state)]

    def _written(self, now: float) -> list[AntiEntropyAction]:
        self._last_sync = now
        self.index = self._writing_index
        self.syncs += 1
        gateways = len(self._writing.mesh_gateways) if self._writing is not None else 0
        self._writing = None
        log.info(
            "federation state anti-entropy synced",
            extra={"datacenter": self.datacenter, "gateways": gateways},
        )
        return self._end(now, wrote=True)

    def _failed(self, error: str, now: float) -> list[AntiEntropyAction]:
        self.failures += 1
        wait = self.policy.backoff(self.failures)
        log.warning(
            "federation state anti-entropy failed; retrying in %.0f s: %s",
            wait,
            error,
            extra={"datacenter": self.datacenter, "failures": self.failures, "retry_in": wait},
        )
        self._writing = None
        self.checks_ended += 1
        self.wrote_last = False
        self._phase = _Phase.WAITING
        self._start_at = now + wait
        return []

    def _end(self, now: float, *, wrote: bool) -> list[AntiEntropyAction]:
        self.failures = 0
        self.checks_ended += 1
        self.wrote_last = wrote
        self._phase = _Phase.WAITING
        self._start_at = now
        return []
