"""The server's RPC port: one TCP port, many protocols, chosen per connection.

Each accepted connection is first counted against two caps, connections per
client address and in total (:class:`~wanfed_proto.ConnectionLimiter`); one
over either cap is closed at once, before a byte is read, and refusals are
logged at most once per interval with a count. An admitted connection gets
one handshake deadline that covers everything before a handler runs: waiting
for the first byte, the TLS handshake, and the ALPN check. An idle or slow
client therefore costs a socket for at most that long. The first byte is
peeked, not read: a type byte (0-9) selects a plain handler and is then
consumed; anything above is a TLS record, handed with the byte still unread
to a TLS server whose negotiated ALPN selects the handler.

After admission, a connection that receives nothing for the idle timeout and
has no request in flight (its reader says so through
:meth:`Connection.report_busy`; a parked blocking query is in flight) is
closed. One sweep timer serves the whole port: a connection is closed after
four quiet sweeps of a quarter of the timeout each, so between one and one
and a quarter timeouts after its last byte.

An ALPN mismatch does not fail a TLS handshake (the server simply selects
nothing), so a missing or unknown protocol is rejected here explicitly.
Every rejected connection is closed; rejections are logged with their reason,
at most one line per kind of rejection and interval (with the number left
out since the previous line), since a flood of them is the usual case.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import struct
import weakref
from collections.abc import Awaitable, Callable, Mapping
from typing import Final

import msgspec

from ._connection import Connection, _address_text, _Forwarder, describe_transport
from ._errors import UnknownRpcTypeError
from ._limits import REFUSAL_LOG_INTERVAL, ConnectionLimiter, RateLimitedLog, Refusal
from ._types import NATIVE_TLS, RpcType, classify

__all__ = [
    "DEFAULT_HANDSHAKE_TIMEOUT",
    "DEFAULT_RPC_IDLE_TIMEOUT",
    "DEFAULT_RPC_MAX_CONNS",
    "DEFAULT_RPC_MAX_CONNS_PER_CLIENT",
    "ConnectionHandler",
    "RpcPortServer",
    "RpcPortStats",
    "serve_rpc_port",
]

logger = logging.getLogger("wanfed_proto.listener")

DEFAULT_HANDSHAKE_TIMEOUT: Final = 5.0
"""Seconds from accept until a handler runs (Consul's ``rpc_handshake_timeout``)."""

DEFAULT_RPC_MAX_CONNS_PER_CLIENT: Final = 100
"""Open connections one client address may hold (Consul's ``rpc_max_conns_per_client``)."""

DEFAULT_RPC_MAX_CONNS: Final = 4096
"""Open connections the port holds in total; far below the file-descriptor limit
a server raises itself to, so that its own files and dials never run out."""

DEFAULT_RPC_IDLE_TIMEOUT: Final = 300.0
"""Seconds an admitted connection may stay silent with nothing in flight. Pooled
clients retire their connections after half of it, so they never race a close."""

_IDLE_SWEEPS: Final = 4


class RpcPortStats(msgspec.Struct, frozen=True, kw_only=True):
    """Counters of a running RPC port since it started."""

    open_connections: int
    refused_per_client: int
    refused_total: int
    idle_closed: int


ConnectionHandler = Callable[[Connection], Awaitable[None]]
"""Serves one connection; the connection is closed when the handler returns."""

# The server never learns the SNI from the transport; only the SNI callback
# sees it, so the callback records it against the TLS object of the connection.
_SNI_SEEN: weakref.WeakKeyDictionary[ssl.SSLObject, str] = weakref.WeakKeyDictionary()
_SNI_RECORDING: weakref.WeakSet[ssl.SSLContext] = weakref.WeakSet()


def _record_sni(context: ssl.SSLContext) -> None:
    if context in _SNI_RECORDING:
        return
    previous = context.sni_callback

    def sni_callback(
        ssl_object: ssl.SSLObject, server_name: str, ctx: ssl.SSLContext
    ) -> int | None:
        # Called with None when the client sent no SNI, whatever the stubs say.
        if server_name is not None and isinstance(ssl_object, ssl.SSLObject):
            _SNI_SEEN[ssl_object] = server_name
        return previous(ssl_object, server_name, ctx) if previous is not None else None

    context.sni_callback = sni_callback
    _SNI_RECORDING.add(context)


class _Rejected(Exception):
    """Internal: why a connection is closed before reaching a handler."""

    def __init__(self, reason: str, kind: str, level: int = logging.WARNING) -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind
        """Rejections of one kind share a rate limit: a flood logs one line per interval."""
        self.level = level


class RpcPortServer:
    """A running RPC port. Close it to stop accepting and drop every connection."""

    def __init__(
        self,
        listener: socket.socket,
        plain_handlers: Mapping[RpcType, ConnectionHandler],
        alpn_handlers: Mapping[str, ConnectionHandler],
        ssl_context: ssl.SSLContext | None,
        handshake_timeout: float,
        limiter: ConnectionLimiter,
        idle_timeout: float | None,
    ) -> None:
        self._listener = listener
        host, port = listener.getsockname()[:2]
        self._address = (str(host), int(port))
        self._plain = dict(plain_handlers)
        self._alpn = dict(alpn_handlers)
        self._ssl = ssl_context
        self._handshake_timeout = handshake_timeout
        self._limiter = limiter
        self._idle_timeout = idle_timeout
        self._refusals = RateLimitedLog(logger, REFUSAL_LOG_INTERVAL)
        self._tasks: set[asyncio.Task[None]] = set()
        self._transports: set[asyncio.Transport] = set()
        self._live: dict[Connection, list[int]] = {}
        """Connections served by a handler: [received bytes at the last sweep, quiet sweeps]."""
        self._idle_closed = 0
        loop = asyncio.get_running_loop()
        self._accepting = loop.create_task(self._accept_loop())
        self._sweep: asyncio.TimerHandle | None = None
        if idle_timeout is not None:
            self._sweep = loop.call_later(idle_timeout / _IDLE_SWEEPS, self._sweep_idle)
        self._closed = False

    @property
    def address(self) -> tuple[str, int]:
        """The bound ``(host, port)``; useful after binding port 0."""
        return self._address

    @property
    def stats(self) -> RpcPortStats:
        refused = self._limiter.refused
        return RpcPortStats(
            open_connections=self._limiter.open_total,
            refused_per_client=refused[Refusal.PER_CLIENT],
            refused_total=refused[Refusal.TOTAL],
            idle_closed=self._idle_closed,
        )

    async def close(self) -> None:
        """Stop accepting, abort open connections, wait for their handlers."""
        if self._closed:
            return
        self._closed = True
        if self._sweep is not None:
            self._sweep.cancel()
        self._accepting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._accepting
        self._listener.close()
        for transport in list(self._transports):
            transport.abort()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def __aenter__(self) -> RpcPortServer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _accept_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, address = await loop.sock_accept(self._listener)
            except OSError as exc:  # e.g. EMFILE: back off instead of spinning
                self._refusals.log(
                    loop.time(),
                    logging.ERROR,
                    f"accept failed on rpc port: {exc}; retrying every 0.1s",
                    key="accept",
                )
                await asyncio.sleep(0.1)
                continue
            client = str(address[0])
            refusal = self._limiter.admit(client)
            if refusal is not None:
                _refuse(conn)
                self._refusals.log(
                    loop.time(),
                    logging.WARNING,
                    "refused connection on rpc port: client over its connection limit; "
                    "closed before reading",
                    key=str(refusal),
                    extra=self._limiter.refusal_fields(refusal, client),
                )
                continue
            task = loop.create_task(self._serve(conn, address, client))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _serve(self, conn: socket.socket, address: tuple[str, int], client: str) -> None:
        try:
            await self._serve_admitted(conn, address)
        finally:
            self._limiter.release(client)

    async def _serve_admitted(self, conn: socket.socket, address: tuple[str, int]) -> None:
        peer = _address_text(address)
        with contextlib.suppress(OSError):  # small RPC frames must not wait for ACKs
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            connection = await self._admit(conn)
        except _Rejected as rejected:
            self._refusals.log(
                asyncio.get_running_loop().time(),
                rejected.level,
                f"rejected connection from {peer}: {rejected.reason}; closed",
                key=f"rejected:{rejected.kind}",
                extra={"peer": peer, "reason": rejected.reason},
            )
            return
        self._live[connection] = [connection.received_bytes, 0]
        handler_name = connection.info.alpn or (
            connection.info.rpc_type.name if connection.info.rpc_type is not None else "?"
        )
        try:
            await self._dispatch(connection)
        except asyncio.CancelledError:
            connection.abort()
            raise
        except Exception:
            logger.exception(
                "handler %s failed for connection from %s; closing it",
                handler_name,
                peer,
                extra={"peer": peer, "handler": handler_name},
            )
            connection.abort()
        else:
            connection.close()
        finally:
            self._live.pop(connection, None)
            self._transports.discard(connection.transport)

    def _sweep_idle(self) -> None:
        """Close connections quiet for ``_IDLE_SWEEPS`` sweeps with nothing in flight."""
        assert self._idle_timeout is not None
        loop = asyncio.get_running_loop()
        for connection, state in list(self._live.items()):
            received = connection.received_bytes
            if received != state[0] or connection.busy:
                state[0] = received
                state[1] = 0
                continue
            state[1] += 1
            if state[1] < _IDLE_SWEEPS:
                continue
            del self._live[connection]
            self._idle_closed += 1
            self._refusals.log(
                loop.time(),
                logging.INFO,
                "closing idle rpc connection: nothing received and nothing in flight; "
                "the client dials again when it needs to",
                key="idle",
                extra={
                    "peer": connection.info.peer_text,
                    "idle_timeout": self._idle_timeout,
                    "idle_closed_so_far": self._idle_closed,
                },
            )
            connection.close()
        self._sweep = loop.call_later(self._idle_timeout / _IDLE_SWEEPS, self._sweep_idle)

    async def _dispatch(self, connection: Connection) -> None:
        info = connection.info
        if info.rpc_type is not None:
            await self._plain[info.rpc_type](connection)
        else:
            assert info.alpn is not None
            await self._alpn[info.alpn](connection)

    async def _admit(self, conn: socket.socket) -> Connection:
        """Everything under the handshake deadline; the socket is closed on failure."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._handshake_timeout
        transport: asyncio.Transport | None = None
        try:
            async with asyncio.timeout_at(deadline):
                first = await _peek_first_byte(conn)
                if not first:
                    raise _Rejected("closed before sending anything", "closed-early", logging.INFO)
                try:
                    kind = classify(first[0])
                except UnknownRpcTypeError as exc:
                    raise _Rejected(str(exc), "unknown-type") from None
                if kind is NATIVE_TLS:
                    transport, connection = await self._admit_tls(conn, deadline)
                else:
                    transport, connection = await self._admit_plain(conn, kind)
            return connection
        except _Rejected:
            _close(conn, transport)
            raise
        except TimeoutError:
            _close(conn, transport)
            raise _Rejected(
                f"handshake not completed within {self._handshake_timeout:g}s",
                "handshake-timeout",
            ) from None
        except ssl.SSLError as exc:
            _close(conn, transport)
            raise _Rejected(f"TLS handshake failed: {exc.reason or exc}", "tls-failed") from None
        except (OSError, EOFError) as exc:
            _close(conn, transport)
            raise _Rejected(
                f"connection failed during handshake: {exc!r}", "handshake-error"
            ) from None
        except BaseException:
            _close(conn, transport)
            raise

    async def _admit_plain(
        self, conn: socket.socket, rpc_type: RpcType
    ) -> tuple[asyncio.Transport, Connection]:
        if rpc_type not in self._plain:
            raise _Rejected(
                f"no handler for rpc type {int(rpc_type)} ({rpc_type.name})", "no-handler"
            )
        conn.recv(1)  # the peeked type byte: handlers start after it
        forwarder = _Forwarder()
        transport, _ = await asyncio.get_running_loop().connect_accepted_socket(
            lambda: forwarder, sock=conn
        )
        self._transports.add(transport)
        return transport, Connection(
            transport, forwarder, describe_transport(transport, rpc_type=rpc_type)
        )

    async def _admit_tls(
        self, conn: socket.socket, deadline: float
    ) -> tuple[asyncio.Transport, Connection]:
        if self._ssl is None:
            raise _Rejected("native TLS is not enabled on this port", "tls-disabled")
        loop = asyncio.get_running_loop()
        # The outer deadline decides; the transport's own timeout is a backstop.
        # (uvloop returns its TLS protocol here, not ours: keep our own handle.)
        forwarder = _Forwarder()
        transport, _ = await loop.connect_accepted_socket(
            lambda: forwarder,
            sock=conn,
            ssl=self._ssl,
            ssl_handshake_timeout=max(deadline - loop.time(), 0.001) + 1.0,
        )
        self._transports.add(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        sni = _SNI_SEEN.pop(ssl_object, None) if ssl_object is not None else None
        info = describe_transport(transport, sni=sni)
        if info.alpn is None:
            self._transports.discard(transport)
            transport.abort()
            raise _Rejected(f"no ALPN protocol negotiated (SNI {sni!r})", "no-alpn")
        if info.alpn not in self._alpn:
            self._transports.discard(transport)
            transport.abort()
            raise _Rejected(f"unknown ALPN {info.alpn!r} (SNI {sni!r})", "unknown-alpn")
        return transport, Connection(transport, forwarder, info)


async def _peek_first_byte(conn: socket.socket) -> bytes:
    """Wait until the socket is readable, then peek without consuming."""
    loop = asyncio.get_running_loop()
    readable: asyncio.Future[None] = loop.create_future()
    fd = conn.fileno()

    def wake() -> None:
        if not readable.done():
            readable.set_result(None)

    loop.add_reader(fd, wake)
    try:
        await readable
    finally:
        # Must happen before a transport takes the socket over.
        loop.remove_reader(fd)
    try:
        return conn.recv(1, socket.MSG_PEEK)
    except BlockingIOError:  # spurious wake-up
        return await _peek_first_byte(conn)


def _refuse(conn: socket.socket) -> None:
    """Close a refused socket with a reset: no FIN handshake, no TIME_WAIT kept here."""
    with contextlib.suppress(OSError):
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


def _close(conn: socket.socket, transport: asyncio.Transport | None) -> None:
    if transport is not None:
        transport.abort()
    else:
        conn.close()


async def serve_rpc_port(
    host: str,
    port: int,
    *,
    plain_handlers: Mapping[RpcType, ConnectionHandler],
    alpn_handlers: Mapping[str, ConnectionHandler],
    ssl_context: ssl.SSLContext | None,
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
    max_conns_per_client: int = DEFAULT_RPC_MAX_CONNS_PER_CLIENT,
    max_conns: int = DEFAULT_RPC_MAX_CONNS,
    idle_timeout: float | None = DEFAULT_RPC_IDLE_TIMEOUT,
    backlog: int = 1024,
) -> RpcPortServer:
    """Listen on ``host:port`` and serve both plain type-byte and TLS+ALPN clients.

    Without ``ssl_context`` every native TLS connection is refused. The
    context's SNI callback is wrapped (once) so the server can report the SNI
    each client asked for. ``max_conns_per_client`` and ``max_conns`` cap the
    open connections per client address and in total (0: no cap);
    ``idle_timeout`` (``None``: never) closes admitted connections that stay
    silent with nothing in flight.
    """
    if handshake_timeout <= 0:
        raise ValueError("handshake_timeout must be positive")
    if idle_timeout is not None and idle_timeout <= 0:
        raise ValueError("idle_timeout must be positive (or None for no idle timeout)")
    limiter = ConnectionLimiter(per_client=max_conns_per_client, total=max_conns)
    if ssl_context is not None:
        if ssl_context.verify_mode != ssl.CERT_REQUIRED and alpn_handlers:
            raise ValueError("native TLS with ALPN requires verified client certificates")
        _record_sni(ssl_context)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(backlog)
        listener.setblocking(False)
    except BaseException:
        listener.close()
        raise
    server = RpcPortServer(
        listener,
        plain_handlers,
        alpn_handlers,
        ssl_context,
        handshake_timeout,
        limiter,
        idle_timeout,
    )
    logger.info(
        "rpc port listening on %s",
        _address_text(server.address),
        extra={
            "tls": ssl_context is not None,
            "alpn": sorted(alpn_handlers),
            "max_conns_per_client": max_conns_per_client,
            "max_conns": max_conns,
            "idle_timeout": idle_timeout,
        },
    )
    return server
