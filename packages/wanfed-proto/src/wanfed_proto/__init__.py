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
from ._hello import (
    DEFAULT_MAX_HELLO,
    NEED_MORE,
    ClientHello,
    ClientHelloParser,
    HelloProgress,
    HelloResult,
    parse_client_hello,
)
from ._names import (
    DEFAULT_DOMAIN,
    ServerName,
    normalize_domain,
    parse_server_sni,
    server_sni,
    split_node_name,
    validate_datacenter,
    validate_node_label,
    wan_member_name,
)
from ._types import MAX_RPC_TYPE, NATIVE_TLS, NativeTLS, RpcType, classify

__all__ = [
    "DEFAULT_DOMAIN",
    "DEFAULT_MAX_FRAME",
    "DEFAULT_MAX_HELLO",
    "HEADER_SIZE",
    "MAX_RPC_TYPE",
    "NATIVE_TLS",
    "NEED_MORE",
    "SERVER_ALPN_PROTOCOLS",
    "Alpn",
    "AlpnNotServedError",
    "ClientHello",
    "ClientHelloParser",
    "EnvelopeError",
    "FrameDecoder",
    "FrameTooLargeError",
    "HelloError",
    "HelloProgress",
    "HelloResult",
    "HelloTooLargeError",
    "InvalidNameError",
    "MalformedHelloError",
    "NativeTLS",
    "NoAlpnForTypeError",
    "NotTLSError",
    "ProtoError",
    "RemoteError",
    "RpcType",
    "ServerName",
    "TLSConfigError",
    "TransportError",
    "UnknownRpcTypeError",
    "alpn_for_type",
    "classify",
    "encode_frame",
    "normalize_domain",
    "parse_client_hello",
    "parse_server_sni",
    "server_sni",
    "split_node_name",
    "type_for_alpn",
    "validate_datacenter",
    "validate_node_label",
    "wan_member_name",
]
