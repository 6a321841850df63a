"""WAN gossip through mesh gateways (the wanfed transport) and its packet pool."""

from ._pool import POOL_CLOSED_MESSAGE, PacketConnection, PacketConnectionPool, PoolClosedError
from ._transport import DC_NOT_AVAILABLE, GatewayTransport, NoGatewayError

__all__ = [
    "DC_NOT_AVAILABLE",
    "POOL_CLOSED_MESSAGE",
    "GatewayTransport",
    "NoGatewayError",
    "PacketConnection",
    "PacketConnectionPool",
    "PoolClosedError",
]
