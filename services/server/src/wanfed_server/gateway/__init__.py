"""The mesh gateway: routes raw TLS between datacenters by SNI, never decrypting.

``build_route_table`` turns what the gateway watches (the servers' own server
directory, federation states, service dumps) into a frozen ``RouteTable``; ``RouteFeed`` keeps the
last answer of each watch and yields a new table when routing changes;
``MeshGateway`` is the
asyncio data plane that routes on it and can swap it at runtime;
``StatusServer`` exposes its counters over HTTP. ``GatewayProcess`` is the
``wanfed gateway`` process around them: self-registration in the catalog and
the blocking-query watches that feed ``RouteFeed``.
"""

from ._api import HiddenToken
from ._counters import GatewayCounters, GatewayStats, RejectReason, RouteCounters, RouteStats
from ._feed import RouteFeed
from ._process import (
    ApiError,
    GatewayProcess,
    GatewaySettings,
    ServerUnreachableError,
    default_node_name,
)
from ._proxy import GatewayConfig, MeshGateway
from ._registration import (
    CHECK_NAME,
    CHECK_TTL,
    DEREGISTER_CRITICAL_AFTER,
    GatewayRegistration,
    is_registered,
    refresh_interval,
)
from ._routes import (
    CONSUL_SERVICE,
    DirectoryServer,
    Route,
    RouteInputError,
    RouteInputs,
    RouteTable,
    Upstream,
    build_route_table,
    render_route_table,
)
from ._status import StatusServer, status_app
from ._watch import Backoff, BlockingIndex, ContentHash, ServerPool

__all__ = [
    "CHECK_NAME",
    "CHECK_TTL",
    "CONSUL_SERVICE",
    "DEREGISTER_CRITICAL_AFTER",
    "ApiError",
    "Backoff",
    "BlockingIndex",
    "ContentHash",
    "DirectoryServer",
    "GatewayConfig",
    "GatewayCounters",
    "GatewayProcess",
    "GatewayRegistration",
    "GatewaySettings",
    "GatewayStats",
    "HiddenToken",
    "MeshGateway",
    "RejectReason",
    "Route",
    "RouteCounters",
    "RouteFeed",
    "RouteInputError",
    "RouteInputs",
    "RouteStats",
    "RouteTable",
    "ServerPool",
    "ServerUnreachableError",
    "StatusServer",
    "Upstream",
    "build_route_table",
    "default_node_name",
    "is_registered",
    "refresh_interval",
    "render_route_table",
    "status_app",
]
