"""RPC type bytes and the first-byte sniff of the RPC port.

A server's RPC port carries several protocols. A plain client announces its
protocol with one type byte. A native TLS client starts with a TLS record
header, whose first byte (the content type, 0x16 for a handshake) is always
above the highest type byte, so one peeked byte tells the two apart without
consuming anything.
"""

from __future__ import annotations

import enum
from typing import Final

from ._errors import UnknownRpcTypeError

__all__ = ["MAX_RPC_TYPE", "NATIVE_TLS", "NativeTLS", "RpcType", "classify"]


class RpcType(enum.IntEnum):
    """Type bytes, numbered as Consul numbers them on its RPC port."""

    CONSUL = 0
    RAFT = 1
    MULTIPLEX = 2
    TLS = 3
    MULTIPLEX_V2 = 4
    SNAPSHOT = 5
    GOSSIP = 6
    TLS_INSECURE = 7
    GRPC = 8
    RAFT_FORWARDING = 9


MAX_RPC_TYPE: Final = max(RpcType)


class NativeTLS(enum.Enum):
    """The sniff result for a connection that starts a TLS handshake directly."""

    NATIVE_TLS = "native-tls"


NATIVE_TLS: Final = NativeTLS.NATIVE_TLS


def classify(first_byte: int) -> RpcType | NativeTLS:
    """Say which protocol a connection speaks from its first byte.

    Bytes above :data:`MAX_RPC_TYPE` are native TLS: TLS content types start at
    20, so the ranges never collide.
    """
    if not 0 <= first_byte <= 0xFF:
        raise UnknownRpcTypeError(f"first byte {first_byte} is not a byte value")
    if first_byte > MAX_RPC_TYPE:
        return NATIVE_TLS
    try:
        return RpcType(first_byte)
    except ValueError:
        raise UnknownRpcTypeError(f"rpc type byte {first_byte} is not assigned") from None
