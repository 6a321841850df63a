"""wanfed_proto: everything wanfed puts on the wire.

Type bytes and the first-byte sniff, the ALPN registry, server names (SNI),
a sans-I/O ClientHello parser, length-prefixed frames, the multiplexed RPC
envelope and connection, TLS context builders and small asyncio helpers.
Depends on msgspec and the standard library only.
"""

from ._alpn import SERVER_ALPN_PROTOCOLS, Alpn, alpn_for_type, type_for_alpn
from ._errors import (
    AlpnNotServedError,
    EnvelopeError,
    FrameTooLargeError,
    HelloError,
    HelloTooLargeError,
    InvalidNameError,
    MalformedHelloError,
    NoAlpnForTypeError,
    NotTLSError,
    ProtoError,
    RemoteError,
    TLSConfigError,
    TransportError,
    UnknownRpcTypeError,
)
from ._frames import DEFAULT_MAX_FRAME, HEADER_SIZE, FrameDecoder, encode_frame
from ._types import MAX_RPC_TYPE, NATIVE_TLS, NativeTLS, RpcType, classify

__all__ = [
    "DEFAULT_MAX_FRAME",
    "HEADER_SIZE",
    "MAX_RPC_TYPE",
    "NATIVE_TLS",
    "SERVER_ALPN_PROTOCOLS",
    "Alpn",
    "AlpnNotServedError",
    "EnvelopeError",
    "FrameDecoder",
    "FrameTooLargeError",
    "HelloError",
    "HelloTooLargeError",
    "InvalidNameError",
    "MalformedHelloError",
    "NativeTLS",
    "NoAlpnForTypeError",
    "NotTLSError",
    "ProtoError",
    "RemoteError",
    "RpcType",
    "TLSConfigError",
    "TransportError",
    "UnknownRpcTypeError",
    "alpn_for_type",
    "classify",
    "encode_frame",
    "type_for_alpn",
]
