"""The piggyback queue: state changes ride on outgoing packets a bounded number of times.

Each broadcast is about one member; a newer one about the same member replaces
the older (an "alive, incarnation 7" makes "suspect, incarnation 6" worthless).
Packets carry the least-transmitted broadcasts first, newest first among equals,
and a broadcast retires after ``retransmit_mult * ceil(log10(n + 1))`` sends,
which is enough for epidemic spread to reach every member with high
probability while keeping packets small.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

__all__ = ["BroadcastQueue", "retransmit_limit"]


def retransmit_limit(retransmit_mult: int, members: int) -> int:
    return retransmit_mult * math.ceil(math.log10(members + 1))


@dataclass(slots=True)
class _Broadcast:
    key: str
    message: bytes
    order: int
    transmits: int = 0
    on_finished: bool = field(default=False)


class BroadcastQueue:
    """Pending broadcasts keyed by member name."""

    __slots__ = ("_finished", "_items", "_order")

    def __init__(self) -> None:
        self._items: dict[str, _Broadcast] = {}
        self._order = 0
        # Keys whose tracked broadcast was retired (sent enough, or replaced).
        self._finished: set[str] = set()

    def __len__(self) -> int:
        return len(self._items)

    def queue(self, key: str, message: bytes, *, track: bool = False) -> None:
        """Queue ``message`` about member ``key``, replacing any older one."""
        old = self._items.pop(key, None)
        if old is not None and old.on_finished:
            self._finished.add(key)
        self._order += 1
        self._items[key] = _Broadcast(key, message, self._order, on_finished=track)
        if track:
            self._finished.discard(key)

    def take(self, overhead: int, limit: int, transmit_limit: int) -> list[bytes]:
        """Broadcasts that fit in ``limit`` bytes, each costing ``overhead`` extra."""
        chosen: list[bytes] = []
        used = 0
        for item in sorted(self._items.values(), key=lambda b: (b.transmits, -b.order)):
            cost = len(item.message) + overhead
            if used + cost > limit:
                continue
            used += cost
            chosen.append(item.message)
            item.transmits += 1
            if item.transmits >= transmit_limit:
                self._retire(item)
        return chosen

    def finished(self, key: str) -> bool:
        """True once a broadcast queued with ``track=True`` for ``key`` retired."""
        return key in self._finished

    def _retire(self, item: _Broadcast) -> None:
        del self._items[item.key]
        if item.on_finished:
            self._finished.add(item.key)
