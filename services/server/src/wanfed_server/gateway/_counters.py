"""Per-route traffic counters of the mesh gateway.

The data plane's hot path only adds to plain attributes of the connection it
is serving; a connection folds its byte counts into its route's totals when it
closes, and a snapshot adds the live connections on top. That keeps every
``data_received`` down to one write and one addition, and still shows
long-lived (pooled RPC) connections' bytes while they run.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import Protocol

import msgspec

__all__ = [
    "GatewayCounters",
    "GatewayStats",
    "LiveConnection",
    "RejectReason",
    "RouteCounters",
    "RouteStats",
]


class RejectReason(StrEnum):
    """Why a connection was closed before it reached any upstream."""

    NOT_TLS = "not-tls"
    MALFORMED_HELLO = "malformed-hello"
    HELLO_TOO_LARGE = "hello-too-large"
    NO_SNI = "no-sni"
    HELLO_TIMEOUT = "hello-timeout"
    CLOSED_BEFORE_HELLO = "closed-before-hello"
    UNKNOWN_SNI = "unknown-sni"
    TOO_MANY_CONNECTIONS = "too-many-connections"
    TOO_MANY_FROM_CLIENT = "too-many-from-client"


class RouteCounters:
    """Mutable totals of one route label; written only by the event loop thread."""

    __slots__ = (
        "bytes_to_downstream",
        "bytes_to_upstream",
        "connect_failures",
        "connections",
        "unreachable",
    )

    def __init__(self) -> None:
        self.connections = 0
        """Connections routed here (counted when the route is chosen)."""
        self.connect_failures = 0
        """Single upstream connect attempts that failed."""
        self.unreachable = 0
        """Connections closed because every candidate upstream failed."""
        self.bytes_to_upstream = 0
        self.bytes_to_downstream = 0


class LiveConnection(Protocol):
    """What a snapshot needs from an open, routed connection."""

    @property
    def route_label(self) -> str | None: ...

    @property
    def bytes_to_upstream(self) -> int: ...

    @property
    def bytes_to_downstream(self) -> int: ...


class RouteStats(msgspec.Struct, frozen=True, kw_only=True):
    connections: int
    active: int
    connect_failures: int
    unreachable: int
    bytes_to_upstream: int
    bytes_to_downstream: int


class GatewayStats(msgspec.Struct, frozen=True, kw_only=True):
    """A point-in-time copy of every counter, safe to hand to other layers."""

    active_connections: int
    accepted: int
    rejected: dict[str, int]
    routes: dict[str, RouteStats]


class GatewayCounters:
    """Every counter of one gateway process."""

    __slots__ = ("accepted", "rejected", "routes")

    def __init__(self) -> None:
        self.accepted = 0
        self.rejected: dict[RejectReason, int] = dict.fromkeys(RejectReason, 0)
        self.routes: dict[str, RouteCounters] = {}

    def route(self, label: str) -> RouteCounters:
        counters = self.routes.get(label)
        if counters is None:
            counters = self.routes[label] = RouteCounters()
        return counters

    def reject(self, reason: RejectReason) -> None:
        self.rejected[reason] += 1

    def snapshot(self, live: Iterable[LiveConnection]) -> GatewayStats:
        """Totals so far, including bytes of connections that are still open."""
        active: dict[str, int] = {}
        up: dict[str, int] = {}
        down: dict[str, int] = {}
        count = 0
        for conn in live:
            count += 1
            label = conn.route_label
            if label is None:
                continue
            active[label] = active.get(label, 0) + 1
            up[label] = up.get(label, 0) + conn.bytes_to_upstream
            down[label] = down.get(label, 0) + conn.bytes_to_downstream
        routes = {
            label: RouteStats(
                connections=c.connections,
                active=active.get(label, 0),
                connect_failures=c.connect_failures,
                unreachable=c.unreachable,
                bytes_to_upstream=c.bytes_to_upstream + up.get(label, 0),
                bytes_to_downstream=c.bytes_to_downstream + down.get(label, 0),
            )
            for label, c in sorted(self.routes.items())
        }
        return GatewayStats(
            active_connections=count,
            accepted=self.accepted,
            rejected={str(reason): n for reason, n in self.rejected.items()},
            routes=routes,
        )
