"""An accepted or dialed connection, before anyone decided how to read it.

The RPC port learns which protocol a connection speaks only after the first
byte or the TLS handshake, and a dialer only after ALPN is negotiated. So the
transport is created with a small forwarding protocol that holds early bytes
back; whoever owns the protocol then either attaches an ``asyncio.Protocol``
(the fast path, used by RPC) or asks for a stream pair (simple loops such as
the gossip packet stream). The forwarder stays in place, which is what lets
:meth:`Connection.wait_closed` work whichever way the connection is read.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import Any, cast

import msgspec

from ._types import RpcType

__all__ = ["Connection", "ConnectionInfo"]

_STREAM_LIMIT = 2**16


class ConnectionInfo(msgspec.Struct, frozen=True, kw_only=True):
    """Who is on the other end, as far as the transport can tell."""

    peer: tuple[str, int] | None
    """Address of the TCP peer (behind a gateway: the gateway's address)."""
    local: tuple[str, int] | None = None
    rpc_type: RpcType | None = None
    """The type byte of a plain connection; ``None`` on native TLS."""
    sni: str | None = None
    """Server name the client asked for (server side) or sent (client side)."""
    alpn: str | None = None
    tls_version: str | None = None
    peer_cert: dict[str, Any] | None = None
    """The verified peer certificate as :meth:`ssl.SSLSocket.getpeercert` gives it."""

    @property
    def peer_text(self) -> str:
        """``host:port`` of the peer for log lines."""
        return _address_text(self.peer)


def _address_text(address: tuple[str, int] | None) -> str:
    if address is None:
        return "unknown"
    return f"{address[0]}:{address[1]}"


def _address(value: object) -> tuple[str, int] | None:
    if isinstance(value, tuple) and len(value) >= 2:
        return (str(value[0]), int(value[1]))
    return None


def describe_transport(
    transport: asyncio.BaseTransport,
    *,
    rpc_type: RpcType | None = None,
    sni: str | None = None,
) -> ConnectionInfo:
    """Collect what the transport knows; ``sni`` comes from whoever saw it."""
    ssl_object: ssl.SSLObject | None = transport.get_extra_info("ssl_object")
    alpn = tls_version = None
    peer_cert = None
    if ssl_object is not None:
        alpn = ssl_object.selected_alpn_protocol()
        tls_version = ssl_object.version()
        peer_cert = ssl_object.getpeercert() or None
        if sni is None and not ssl_object.server_side:
            sni = ssl_object.server_hostname
    return ConnectionInfo(
        peer=_address(transport.get_extra_info("peername")),
        local=_address(transport.get_extra_info("sockname")),
        rpc_type=rpc_type,
        sni=sni,
        alpn=alpn,
        tls_version=tls_version,
        peer_cert=peer_cert,
    )


class _Forwarder(asyncio.Protocol):
    """Buffers (with reading paused) until a target protocol is attached."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.target: asyncio.Protocol | None = None
        self._early: list[bytes] = []
        self._eof = False
        self._paused_writing = False
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.lost_with: Exception | None = None
        self.received = 0
        """Bytes received so far: an idle sweep compares it between sweeps, which
        costs one addition per chunk instead of a clock read."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport; same interface.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.pause_reading()

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        if self.target is not None:
            self.target.data_received(data)
        else:
            self._early.append(data)

    def eof_received(self) -> bool | None:
        if self.target is not None:
            return self.target.eof_received()
        self._eof = True
        # Keep a plain transport open until the target decides; TLS transports
        # close after EOF whatever we return (and warn if we return True).
        transport = self.transport
        if transport is not None and transport.get_extra_info("sslcontext") is not None:
            return None
        return True

    def pause_writing(self) -> None:
        self._paused_writing = True
        if self.target is not None:
            self.target.pause_writing()

    def resume_writing(self) -> None:
        self._paused_writing = False
        if self.target is not None:
            self.target.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost_with = exc
        if self.target is not None:
            self.target.connection_lost(exc)
        if not self.closed.done():
            self.closed.set_result(None)

    def attach(self, target: asyncio.Protocol) -> None:
        if self.target is not None:
            raise RuntimeError("a protocol is already attached to this connection")
        transport = self.transport
        assert transport is not None
        self.target = target
        target.connection_made(transport)
        if self._paused_writing:
            target.pause_writing()
        early, self._early = self._early, []
        for chunk in early:
            target.data_received(chunk)
        if self.closed.done():
            target.connection_lost(self.lost_with)
            return
        if self._eof and not target.eof_received():
            transport.close()
            return
        if not transport.is_closing():
            transport.resume_reading()


class Connection:
    """An established connection plus what is known about its peer.

    Read it exactly once, either with :meth:`attach` or :meth:`open_streams`.
    """

    __slots__ = ("_busy", "_forwarder", "info", "transport")

    def __init__(self, transport: asyncio.Transport, forwarder: _Forwarder, info: ConnectionInfo):
        self.transport = transport
        self.info = info
        self._forwarder = forwarder
        self._busy: Callable[[], bool] | None = None

    @property
    def received_bytes(self) -> int:
        """Bytes received from the peer so far, however the connection is read."""
        return self._forwarder.received

    def report_busy(self, probe: Callable[[], bool]) -> None:
        """Let ``probe`` say whether a request is in flight on this connection.

        An RPC server whose handler waits (a blocking query parks for minutes)
        receives nothing meanwhile, yet the connection is not idle: whoever
        reads the connection registers a probe so that an idle timeout asks
        it before closing. Without a probe, a connection is busy only while
        bytes arrive.
        """
        self._busy = probe

    @property
    def busy(self) -> bool:
        """A request is in flight, as the registered probe says (False without one)."""
        return self._busy is not None and self._busy()

    def attach(self, protocol: asyncio.Protocol) -> None:
        """Hand the connection to ``protocol``; bytes held so far are replayed."""
        self._forwarder.attach(protocol)

    def open_streams(
        self, limit: int = _STREAM_LIMIT
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Hand the connection to a stream pair, for simple sequential loops."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=limit, loop=loop)
        protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
        self.attach(protocol)
        writer = asyncio.StreamWriter(self.transport, protocol, reader, loop)
        return reader, writer

    @property
    def is_closed(self) -> bool:
        return self._forwarder.closed.done()

    async def wait_closed(self) -> None:
        """Return once the transport is gone, however it was read."""
        await asyncio.shield(self._forwarder.closed)

    def close(self) -> None:
        """Flush what was written, then close."""
        self.transport.close()

    def abort(self) -> None:
        """Close at once, dropping unsent bytes."""
        self.transport.abort()

    def __repr__(self) -> str:
        info = self.info
        return (
            f"<Connection peer={info.peer_text} type={info.rpc_type} "
            f"alpn={info.alpn} sni={info.sni}>"
        )
