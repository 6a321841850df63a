"""The pruning core: when to prune, and which datacenters' records go.

Theory of operation. On the primary's leader, every ``interval`` (hourly by
default; the first one interval after the start) the core asks to
:class:`TakeInventory`: the stored federation states and the datacenters the
WAN registry still keeps. Every stored datacenter the registry does not keep
(:func:`stale_datacenters`; never the primary) is pruned with one
:class:`Prune` at a time. The registry keeps a datacenter while any of its
servers is alive *or failed but not yet reaped*, so a partitioned datacenter
keeps its record; only one whose servers left or were reaped loses it. A
failed prune abandons the rest of that pass; the next pass, one interval
later, finds them again.

The seam: feed events with ``now`` and carry out the actions returned; call
:meth:`PruningCore.handle_timer` once :meth:`PruningCore.next_deadline` has
passed.
"""

from __future__ import annotations

import enum
import logging
from collections import deque
from collections.abc import Collection, Sequence
from typing import Final

import msgspec

from wanfed_fsm import FederationState

__all__ = [
    "PRUNE_INTERVAL",
    "Inventory",
    "Prune",
    "PruneFailed",
    "Pruned",
    "PruningAction",
    "PruningCore",
    "PruningEvent",
    "TakeInventory",
    "stale_datacenters",
]

log = logging.getLogger("wanfed.replication")

PRUNE_INTERVAL: Final = 3600.0


def stale_datacenters(
    states: Sequence[FederationState], known: Collection[str], primary: str
) -> list[str]:
    """Datacenters whose record should go: not in the WAN pool, never the primary."""
    known_lower = {datacenter.lower() for datacenter in known} | {primary.lower()}
    return sorted(
        state.datacenter for state in states if state.datacenter.lower() not in known_lower
    )


class Inventory(msgspec.Struct, frozen=True, kw_only=True):
    """The answer to :class:`TakeInventory`: what is stored, what the registry keeps."""

    states: Sequence[FederationState]
    known: frozenset[str]


class Pruned(msgspec.Struct, frozen=True, kw_only=True):
    """The :class:`Prune` of ``datacenter`` landed."""

    datacenter: str


class PruneFailed(msgspec.Struct, frozen=True, kw_only=True):
    """Taking the inventory or a prune failed (``error`` says how)."""

    error: str


class TakeInventory(msgspec.Struct, frozen=True, kw_only=True):
    """Read the stored federation states and the datacenters the registry keeps."""


class Prune(msgspec.Struct, frozen=True, kw_only=True):
    """Delete the federation state of ``datacenter``."""

    datacenter: str

    def __post_init__(self) -> None:
        if not self.datacenter:
            raise ValueError("a prune names the datacenter whose record goes")


PruningEvent = Inventory | Pruned | PruneFailed
PruningAction = TakeInventory | Prune


class _Phase(enum.Enum):
    WAITING = "waiting"
    SURVEYING = "surveying"
    PRUNING = "pruning"


class PruningCore:
    """Passes of the primary leader's pruning, fed events and ``now``."""

    def __init__(self, *, primary: str, now: float, interval: float = PRUNE_INTERVAL) -> None:
        if not primary:
            raise ValueError("pruning needs the primary datacenter's name")
        if interval <= 0:
            raise ValueError(f"the prune interval must be > 0, got {interval}")
        self.primary = primary
        self.interval = interval
        self.passes = 0
        self.passes_ended = 0
        self.last_pruned: list[str] = []  # what the last pass pruned (so far, if it failed)
        self._phase = _Phase.WAITING
        self._due = now + interval
        self._queue: deque[str] = deque()
        self._current = ""  # the datacenter whose prune is in flight

    def next_deadline(self) -> float | None:
        return self._due if self._phase is _Phase.WAITING else None

    def handle_timer(self, now: float) -> list[PruningAction]:
        if self._phase is _Phase.WAITING and now >= self._due:
            return self._begin()
        return []

    def start_pass(self, now: float) -> list[PruningAction]:
        """Start a pass at once, whatever the schedule (the next is due an interval later)."""
        if self._phase is not _Phase.WAITING:
            raise RuntimeError(f"prune pass {self.passes} is still in progress")
        return self._begin()

    def feed(self, event: PruningEvent, now: float) -> list[PruningAction]:
        match event:
            case Inventory() if self._phase is _Phase.SURVEYING:
                stale = stale_datacenters(event.states, event.known, self.primary)
                self._queue = deque(stale)
                self._phase = _Phase.PRUNING
                return self._next(now)
            case Pruned() if self._phase is _Phase.PRUNING and event.datacenter == self._current:
                self.last_pruned.append(event.datacenter)
                return self._next(now)
            case PruneFailed() if self._phase is not _Phase.WAITING:
                log.warning(
                    "pruning federation states failed; will retry in %.0f s: %s",
                    self.interval,
                    event.error,
                    extra={"primary": self.primary, "retry_in": self.interval},
                )
                return self._end(now)
        raise ValueError(f"pruning: {type(event).__name__} unexpected while {self._phase.value}")

    def _begin(self) -> list[PruningAction]:
        self.passes += 1
        self.last_pruned = []
        self._phase = _Phase.SURVEYING
        return [TakeInventory()]

    def _next(self, now: float) -> list[PruningAction]:
        if not self._queue:
            return self._end(now)
        self._current = self._queue.popleft()
        log.info(
            "pruning stale federation state",
            extra={"datacenter": self._current, "primary": self.primary},
        )
        return [Prune(datacenter=self._current)]

    def _end(self, now: float) -> list[PruningAction]:
        self.passes_ended += 1
        self._queue = deque()
        self._phase = _Phase.WAITING
        self._due = now + self.interval
        return []
