"""Simulated links between hosts, and the faults they can suffer.

A *host* is a server or a gateway, placed in one datacenter. A message crosses
a *hop* from one host to another. Every hop is fine (a fixed latency) unless
an active :class:`LinkFault` matches it:

* ``blackhole``: the message vanishes silently; the caller only learns of it
  at its own deadline (a vanished host, a dropping firewall, a cut fibre);
* ``reset``: the connection is refused or reset; the caller learns at once;
* ``degraded``: extra ``delay`` and a probability ``loss`` of losing the
  message (a lost request or reply stalls the call until its deadline).

A fault names the datacenters and the roles (``server``/``gateway``) on each
side, and one direction: a symmetric partition is two faults, an asymmetric
one is a single fault. Faults are few at any time, so matching is a scan.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Final, Literal

__all__ = ["HOP_LATENCY", "HopOutcome", "Host", "LinkFault", "Network", "Role"]

Role = Literal["server", "gateway"]
FaultKind = Literal["blackhole", "reset", "degraded"]
HopOutcome = Literal["ok", "blackhole", "reset"]

HOP_LATENCY: Final = {True: 0.001, False: 0.040}
"""One-way latency of a hop inside a datacenter (True) and across the WAN (False)."""

ROLES: Final[frozenset[Role]] = frozenset(("server", "gateway"))


@dataclass(eq=False)
class Host:
    """A machine: up (its process answers), down (refuses) or gone (silent)."""

    name: str
    datacenter: str
    role: Role
    up: bool = True
    gone: bool = False
    """A vanished host (not only a dead process): traffic to it is dropped silently."""


@dataclass(frozen=True)
class LinkFault:
    """One directed fault between sets of hosts."""

    kind: FaultKind
    source_datacenters: frozenset[str]
    target_datacenters: frozenset[str]
    source_roles: frozenset[Role] = ROLES
    target_roles: frozenset[Role] = ROLES
    delay: float = 0.0
    loss: float = 0.0

    def matches(self, source: Host, target: Host) -> bool:
        return (
            source.datacenter in self.source_datacenters
            and target.datacenter in self.target_datacenters
            and source.role in self.source_roles
            and target.role in self.target_roles
        )

    def describe(self) -> str:
        roles = ""
        if self.source_roles != ROLES or self.target_roles != ROLES:
            roles = (
                f" ({'/'.join(sorted(self.source_roles))}->{'/'.join(sorted(self.target_roles))})"
            )
        extra = f" delay={self.delay:.2f} loss={self.loss:.2f}" if self.kind == "degraded" else ""
        return (
            f"{self.kind} {','.join(sorted(self.source_datacenters))}"
            f"->{','.join(sorted(self.target_datacenters))}{roles}{extra}"
        )


@dataclass
class Network:
    """The hosts and the faults currently active between them."""

    rng: random.Random
    faults: list[LinkFault] = field(default_factory=list)

    def hop(self, source: Host, target: Host) -> tuple[HopOutcome, float]:
        """What happens to one message from ``source`` to ``target``, and its latency."""
        if target.gone:
            return "blackhole", 0.0
        delay = HOP_LATENCY[source.datacenter == target.datacenter]
        for fault in self.faults:
            if not fault.matches(source, target):
                continue
            if fault.kind == "blackhole":
                return "blackhole", 0.0
            if fault.kind == "reset":
                return "reset", delay
            delay += fault.delay
            if fault.loss and self.rng.random() < fault.loss:
                return "blackhole", 0.0
        if not target.up:
            return "reset", delay
        return "ok", delay
