"""Every error wanfed_proto raises derives from :class:`ProtoError`.

Decoders of untrusted bytes raise only these types, so a caller can tell "the
peer sent garbage" from "our code is broken" with one ``except`` clause.
"""

from __future__ import annotations

__all__ = [
    "AlpnNotServedError",
    "EnvelopeError",
    "FrameTooLargeError",
    "HelloError",
    "HelloTooLargeError",
    "InvalidNameError",
    "MalformedHelloError",
    "NoAlpnForTypeError",
    "NotTLSError",
    "ProtoError",
    "RemoteError",
    "TLSConfigError",
    "TransportError",
    "UnknownRpcTypeError",
    "error_text",
]


class ProtoError(Exception):
    """Base of every error raised by wanfed_proto."""


class UnknownRpcTypeError(ProtoError):
    """A first byte that is neither an assigned RPC type nor the start of TLS."""


class NoAlpnForTypeError(ProtoError):
    """The RPC type has no ALPN id, so it cannot cross a mesh gateway."""

    def __init__(self, rpc_type: int) -> None:
        super().__init__(f"rpc type {rpc_type} cannot be routed through a mesh gateway")
        self.rpc_type = rpc_type


class AlpnNotServedError(ProtoError):
    """The peer negotiated no ALPN id, or one this side does not serve."""


class InvalidNameError(ProtoError):
    """A server name, node name or datacenter name that does not parse."""


class FrameTooLargeError(ProtoError):
    """A length prefix above the configured maximum; raised before buffering."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"frame size {size} exceeds threshold of {limit}")
        self.size = size
        self.limit = limit


class HelloError(ProtoError):
    """The first bytes of a connection are not an acceptable TLS ClientHello."""


class NotTLSError(HelloError):
    """The connection does not start with a TLS handshake record."""


class MalformedHelloError(HelloError):
    """The bytes claim to be a ClientHello but violate its structure."""


class HelloTooLargeError(HelloError):
    """The ClientHello is larger than the configured cap."""


class EnvelopeError(ProtoError):
    """An RPC envelope that does not decode, or breaks the multiplexing rules."""


class RemoteError(ProtoError):
    """The remote side ran the request and answered with an error.

    Distinct from :class:`TransportError`: the request reached the peer and was
    processed, so retrying elsewhere may repeat a side effect.
    """


class TransportError(ProtoError):
    """The connection failed or closed before an answer arrived.

    The outcome of an in-flight request is unknown.
    """


class TLSConfigError(ProtoError):
    """TLS material is missing, unreadable or inconsistent."""


def error_text(exc: BaseException) -> str:
    """Why something failed, never empty: an exception without a message (a bare
    ``ConnectionResetError()``, a ``TimeoutError``) is named by its type."""
    return str(exc) or type(exc).__name__
