"""The member table: what one member knows of every other, and random picks from it.

``order`` is the probe round: every member once, in a shuffled order that is
reshuffled (and purged of members dead for longer than we gossip about them)
at the start of each round. New members are inserted at a random position so
that they are probed within the current round. Gossip and indirect probes pick
random members by rejection sampling over the same list.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Callable
from dataclasses import dataclass

from ._events import Member, MemberState

__all__ = ["KnownMember", "MemberTable", "addr_bytes", "valid_addr", "versions"]


def versions(vsn: bytes) -> bytes:
    """Six version bytes; a short or missing list reads as zeros (speaks nothing)."""
    return vsn[:6] if len(vsn) >= 6 else b"\x00" * 6


def addr_bytes(host: str) -> bytes:
    return ipaddress.ip_address(host).packed


def valid_addr(addr: bytes) -> bool:
    return len(addr) in (4, 16)


@dataclass(slots=True)
class KnownMember:
    """Our record of one member, mutated in place by state transitions."""

    name: str
    addr: bytes
    port: int
    meta: bytes
    incarnation: int
    state: MemberState
    state_change: float
    vsn: bytes = b"\x00" * 6

    @property
    def host(self) -> str:
        return str(ipaddress.ip_address(self.addr))

    @property
    def pmax(self) -> int:
        return self.vsn[1] if len(self.vsn) >= 6 else 0

    def member(self) -> Member:
        vsn = self.vsn if len(self.vsn) >= 6 else b"\x00" * 6
        return Member(
            name=self.name,
            host=self.host,
            port=self.port,
            meta=self.meta,
            state=self.state,
            incarnation=self.incarnation,
            protocol=(vsn[0], vsn[1], vsn[2]),
            delegate=(vsn[3], vsn[4], vsn[5]),
        )


class MemberTable:
    """Members by name plus the probe round; ``rng`` is the membership's one generator."""

    def __init__(self, rng: random.Random) -> None:
        self.nodes: dict[str, KnownMember] = {}
        self.order: list[str] = []
        self._rng = rng

    def __len__(self) -> int:
        return len(self.nodes)

    def get(self, name: str) -> KnownMember | None:
        return self.nodes.get(name)

    def add(self, node: KnownMember) -> None:
        self.nodes[node.name] = node
        self.order.insert(self._rng.randint(0, len(self.order)), node.name)

    def new_round(self, now: float, forget_after: float) -> None:
        """Forget members dead or left for longer than ``forget_after``, then reshuffle
        so the probe order differs from round to round."""
        for name in list(self.order):
            node = self.nodes[name]
            if (
                node.state in (MemberState.DEAD, MemberState.LEFT)
                and now - node.state_change > forget_after
            ):
                del self.nodes[name]
        self.order = list(self.nodes)
        self._rng.shuffle(self.order)

    def random_nodes(self, k: int, keep: Callable[[KnownMember], bool]) -> list[KnownMember]:
        # Random picks with rejection, bounded at 3n tries (as memberlist does):
        # O(k) per call instead of filtering the whole table every gossip tick.
        order = self.order
        n = len(order)
        chosen: list[KnownMember] = []
        seen: set[str] = set()
        for _ in range(3 * n):
            if len(chosen) >= k:
                break
            name = order[self._rng.randrange(n)]
            node = self.nodes.get(name)
            if node is None or name in seen or not keep(node):
                continue
            seen.add(name)
            chosen.append(node)
        return chosen
