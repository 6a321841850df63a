"""The mesh gateway: routes raw TLS between datacenters by SNI, never decrypting.

``build_route_table`` turns what the gateway watches (local servers, federation
states, service dumps) into a frozen ``RouteTable``; ``RouteFeed`` keeps the
last answer of each watch and yields a new table when routing changes;
``MeshGateway`` is the
asyncio data plane that routes on it and can swap it at runtime;
``StatusServer`` exposes its counters over HTTP.
"""

from ._counters import GatewayCounters, GatewayStats, RejectReason, RouteCounters, RouteStats
from ._feed import RouteFeed
from ._proxy import GatewayConfig, MeshGateway
from ._routes import (
    CONSUL_SERVICE,
    Route,
    RouteInputError,
    RouteInputs,
    RouteTable,
    Upstream,
    build_route_table,
    render_route_table,
)
from ._status import StatusServer, status_app

__all__ = [
    "CONSUL_SERVICE",
    "GatewayConfig",
    "GatewayCounters",
    "GatewayStats",
    "MeshGateway",
    "RejectReason",
    "Route",
    "RouteCounters",
    "RouteFeed",
    "RouteInputError",
    "RouteInputs",
    "RouteStats",
    "RouteTable",
    "StatusServer",
    "Upstream",
    "build_route_table",
    "render_route_table",
    "status_app",
]
