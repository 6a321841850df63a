"""The ALPN registry: one id per protocol that may cross a mesh gateway.

A gateway forwards raw TLS without decrypting, so the plain type byte cannot
travel; the protocol is named by ALPN instead. Each id mirrors the Consul
protocol of the same role (``consul/rpc-multi`` becomes ``wanfed/rpc-multi``).
"""

from __future__ import annotations

import enum
from typing import Final

from ._errors import NoAlpnForTypeError
from ._types import RpcType

__all__ = ["SERVER_ALPN_PROTOCOLS", "Alpn", "alpn_for_type", "type_for_alpn"]


class Alpn(enum.StrEnum):
    """ALPN ids spoken on the RPC port's native-TLS path."""

    RPC = "wanfed/rpc-single"
    RAFT = "wanfed/raft"
    RPC_MULTI = "wanfed/rpc-multi"
    RPC_SNAPSHOT = "wanfed/rpc-snapshot"
    WAN_GOSSIP_PACKET = "wanfed/wan-gossip/packet"
    WAN_GOSSIP_STREAM = "wanfed/wan-gossip/stream"


_BY_TYPE: Final[dict[RpcType, Alpn]] = {
    RpcType.CONSUL: Alpn.RPC,
    RpcType.RAFT: Alpn.RAFT,
    RpcType.MULTIPLEX_V2: Alpn.RPC_MULTI,
    RpcType.SNAPSHOT: Alpn.RPC_SNAPSHOT,
}
_BY_ALPN: Final[dict[Alpn, RpcType]] = {alpn: rpc_type for rpc_type, alpn in _BY_TYPE.items()}

SERVER_ALPN_PROTOCOLS: Final[tuple[str, ...]] = tuple(alpn.value for alpn in Alpn)
"""What a server offers, in the order Consul advertises the equivalent ids."""


def alpn_for_type(rpc_type: int) -> Alpn:
    """The ALPN id that carries ``rpc_type`` through a gateway."""
    try:
        return _BY_TYPE[RpcType(rpc_type)]
    except (ValueError, KeyError):
        raise NoAlpnForTypeError(rpc_type) from None


def type_for_alpn(alpn: str) -> RpcType | None:
    """The plain type byte equivalent to ``alpn``; ``None`` for gossip-only ids."""
    try:
        return _BY_ALPN.get(Alpn(alpn))
    except ValueError:
        return None
