"""The mesh gateway's data plane: route raw TLS by SNI, never decrypt it.

Theory of operation. Each accepted connection is a :class:`_Downstream`
protocol. Until a ClientHello has been read it is *unrouted*: its bytes go to
the sans-I/O hello parser (``wanfed_proto``), under a size cap and a deadline
timer. Once the hello parses, the server name is looked up in the current
:class:`~wanfed_server.gateway.RouteTable` — no route, no hello, garbage or a
silent client all end in a close, so the gateway is never an open relay.
With a route, one upstream is dialed (random order among the candidates,
the next one on failure or, staggered, after :data:`CONNECT_STAGGER` while
the previous one is still pending, each attempt under a connect timeout;
upstreams whose connect recently failed slowly are skipped, see
``_outliers``) while any
further client bytes are held, at most a hello's worth; then the held bytes
are replayed and the two transports are spliced: each side's ``data_received``
writes straight into the other transport, ``pause_writing``/``resume_writing``
on one side pause and resume reading on the other (flow control without a
single extra buffer), and an EOF on one side becomes ``write_eof`` on the
other so half-closed TLS shutdowns pass through.

This is deliberately ``asyncio.Protocol`` (not streams, not
``BufferedProtocol``): on uvloop callbacks are the cheapest way to move
bytes, and the hot path is one ``write`` and one integer addition per chunk.
Idle connections are found by one sweep timer for the whole gateway instead
of one timer per connection.

Connections are capped in total (``max_connections``) and per client address
(``max_connections_per_client``), so one client cannot take the whole
gateway; one over a cap is closed as it is accepted, and refusals are logged
at most once per interval with a count.
"""

from __future__ import annotations

import asyncio
import logging
from functools import partial
from typing import NamedTuple, TypeAlias, cast

import msgspec

from wanfed_proto import (
    REFUSAL_LOG_INTERVAL,
    ClientHello,
    ClientHelloParser,
    ConnectionLimiter,
    HelloError,
    HelloTooLargeError,
    MalformedHelloError,
    NotTLSError,
    RateLimitedLog,
    Refusal,
)

from ._counters import GatewayCounters, GatewayStats, RejectReason
from ._outliers import SLOW_FAILURE, UpstreamHealth
from ._routes import Route, RouteTable, Upstream

__all__ = ["GatewayConfig", "MeshGateway"]

log = logging.getLogger("wanfed.gateway")

_MIN_HELLO_CAP = 64
"""No real ClientHello is smaller; a lower cap would refuse every client."""

_IDLE_SWEEPS = 4
"""An idle connection is closed after this many quiet sweeps (sweep = timeout / 4)."""

CONNECT_STAGGER = 0.25
"""Seconds a pending upstream connect gets before the next candidate is dialled
beside it (RFC 8305's connection attempt delay): a black-holed candidate then
costs a client a quarter second, not the connect timeout, when another works."""


class GatewayConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Limits of the data plane. Times are seconds.

    ``idle_timeout`` must outlast the longest silence of a healthy connection:
    a blocking query may hold an RPC stream quiet for 600 s plus jitter, so the
    default is an hour, as Envoy's TCP proxy uses.
    """

    hello_timeout: float = 5.0
    max_hello_size: int = 16 * 1024
    connect_timeout: float = 5.0
    """Per upstream attempt; Envoy's default. Two slow attempts then still end
    before a client's own 10 s dial timeout, so the client sees a clean close."""
    connect_attempts: int = 3
    upstream_ejection: float = 15.0
    """Seconds an upstream whose connect failed slowly is skipped (0: never)."""
    idle_timeout: float = 3600.0
    max_connections: int = 4000
    max_connections_per_client: int = 1000
    """Open connections one client address may hold (capped by ``max_connections``).

    Every connection from another datacenter arrives from that datacenter's
    gateway, and every local server's traffic from the server's address, so
    this is generous: it stops one address from taking the whole gateway,
    not a busy peer from working."""
    write_buffer_limit: int = 64 * 1024
    """High-water mark of each side's write buffer before the other side stops reading.

    Larger limits measured *more* CPU per MiB (user-space copies of partial
    writes); the kernel's socket buffers are the better place to queue.
    """
    backlog: int = 1024
    stats_log_interval: float = 60.0
    """Seconds between counter summaries in the log; 0 disables them."""

    def __post_init__(self) -> None:
        for name in ("hello_timeout", "connect_timeout", "idle_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.upstream_ejection < 0:
            raise ValueError("upstream_ejection must not be negative")
        if self.stats_log_interval < 0:
            raise ValueError("stats_log_interval must not be negative")
        counts = ("connect_attempts", "max_connections", "max_connections_per_client", "backlog")
        for name in counts:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.max_hello_size < _MIN_HELLO_CAP:
            raise ValueError(f"max_hello_size must be at least {_MIN_HELLO_CAP} bytes")
        if self.write_buffer_limit < 1024:
            raise ValueError("write_buffer_limit must be at least 1024 bytes")


_DialTask: TypeAlias = "asyncio.Task[tuple[asyncio.Transport, asyncio.Protocol]]"


class _Attempt(NamedTuple):
    """One pending upstream connect of a client."""

    upstream: Upstream
    started: float
    timer: asyncio.TimerHandle


_HELLO_REJECTS: dict[type[HelloError], RejectReason] = {
    NotTLSError: RejectReason.NOT_TLS,
    MalformedHelloError: RejectReason.MALFORMED_HELLO,
    HelloTooLargeError: RejectReason.HELLO_TOO_LARGE,
}


class MeshGateway:
    """One gateway listener: SNI routing, counters and a swappable route table."""

    def __init__(self, routes: RouteTable, config: GatewayConfig | None = None) -> None:
        self._routes = routes
        self.config = config or GatewayConfig()
        self.counters = GatewayCounters()
        self.upstream_health = UpstreamHealth(self.config.upstream_ejection)
        self._connections: set[_Downstream] = set()
        self._limiter = ConnectionLimiter(
            per_client=min(self.config.max_connections_per_client, self.config.max_connections),
            total=self.config.max_connections,
        )
        self._refusals = RateLimitedLog(log, REFUSAL_LOG_INTERVAL)
        self._server: asyncio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sweep_handle: asyncio.TimerHandle | None = None
        self._stats_handle: asyncio.TimerHandle | None = None
        self._drained: asyncio.Event | None = None

    @property
    def routes(self) -> RouteTable:
        return self._routes

    def update_routes(self, routes: RouteTable) -> None:
        """Use ``routes`` for every connection accepted from now on.

        Connections already routed keep their upstream: TLS sessions through
        the gateway cannot move, and the endpoints' own health checks decide
        when to give up on them.
        """
        self._routes = routes
        log.info(
            "gateway route table replaced; new connections use it",
            extra={"names": len(routes.exact), "labels": routes.labels()},
        )

    @property
    def active_connections(self) -> int:
        return len(self._connections)

    def stats(self) -> GatewayStats:
        return self.counters.snapshot(self._connections)

    @property
    def address(self) -> tuple[str, int]:
        """The bound ``(host, port)``; only valid after :meth:`start`."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("gateway is not listening")
        host, port = self._server.sockets[0].getsockname()[:2]
        return str(host), int(port)

    async def start(self, host: str, port: int) -> tuple[str, int]:
        """Listen on ``host:port`` (port 0 picks one) and return the bound address."""
        if self._server is not None:
            raise RuntimeError("gateway is already listening")
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._server = await loop.create_server(
            partial(_Downstream, self), host, port, backlog=self.config.backlog
        )
        self._schedule_sweep()
        if self.config.stats_log_interval:
            self._stats_handle = loop.call_later(self.config.stats_log_interval, self._log_stats)
        bound = self.address
        log.info("gateway listening", extra={"host": bound[0], "port": bound[1]})
        return bound

    async def drain(self) -> None:
        """Stop accepting and wait until every open connection has ended by itself.

        For a rolling restart: clients finish what they are doing and
        reconnect elsewhere. Wrap in a timeout and call :meth:`close` after it
        to cut the stragglers.
        """
        if self._server is not None:
            self._server.close()
        if self._connections:
            self._drained = asyncio.Event()
            await self._drained.wait()

    async def close(self) -> None:
        """Stop accepting, drop every open connection and wait for the listener."""
        for handle in (self._sweep_handle, self._stats_handle):
            if handle is not None:
                handle.cancel()
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for conn in list(self._connections):
            conn.abort()
        if server is not None:
            await server.wait_closed()
        log.info("gateway stopped", extra={"stats": msgspec.to_builtins(self.stats())})

    # --- internal, used by connections -------------------------------------

    def _admit(self, conn: _Downstream, client: str) -> bool:
        refusal = self._limiter.admit(client)
        if refusal is not None:
            reason = (
                RejectReason.TOO_MANY_FROM_CLIENT
                if refusal is Refusal.PER_CLIENT
                else RejectReason.TOO_MANY_CONNECTIONS
            )
            self.counters.reject(reason)
            assert self._loop is not None
            self._refusals.log(
                self._loop.time(),
                logging.WARNING,
                "connection refused: over the gateway's connection limit; closed as accepted",
                key=str(refusal),
                extra=self._limiter.refusal_fields(refusal, client),
            )
            return False
        self._connections.add(conn)
        self.counters.accepted += 1
        return True

    def _forget(self, conn: _Downstream, client: str) -> None:
        if conn in self._connections:
            self._connections.remove(conn)
            self._limiter.release(client)
        if not self._connections and self._drained is not None:
            self._drained.set()

    def _schedule_sweep(self) -> None:
        assert self._loop is not None
        interval = self.config.idle_timeout / _IDLE_SWEEPS
        self._sweep_handle = self._loop.call_later(interval, self._sweep_idle)

    def _sweep_idle(self) -> None:
        for conn in list(self._connections):
            conn.idle_sweep()
        self._schedule_sweep()

    def _log_stats(self) -> None:
        assert self._loop is not None
        log.info("gateway counters", extra={"stats": msgspec.to_builtins(self.stats())})
        self._stats_handle = self._loop.call_later(self.config.stats_log_interval, self._log_stats)


class _Downstream(asyncio.Protocol):
    """The client side of one proxied connection; owns its whole lifecycle."""

    __slots__ = (
        "_candidates",
        "_client",
        "_client_eof",
        "_closed",
        "_dials",
        "_gateway",
        "_hello_timer",
        "_idle_mark",
        "_idle_sweeps",
        "_parser",
        "_paused",
        "_pending",
        "_pending_size",
        "_route",
        "_server_eof",
        "_stagger",
        "_transport",
        "_up",
        "bytes_to_downstream",
        "bytes_to_upstream",
        "route_label",
    )

    def __init__(self, gateway: MeshGateway) -> None:
        self._gateway = gateway
        self._transport: asyncio.Transport | None = None
        self._up: asyncio.Transport | None = None
        self._parser: ClientHelloParser | None = None
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._paused = False
        self._hello_timer: asyncio.TimerHandle | None = None
        self._route: Route | None = None
        self._candidates: list[Upstream] = []
        self._client = ""
        self._dials: dict[_DialTask, _Attempt] = {}
        self._stagger: asyncio.TimerHandle | None = None
        self._client_eof = False
        self._server_eof = False
        self._closed = False
        self._idle_mark = -1
        self._idle_sweeps = 0
        self.route_label: str | None = None
        self.bytes_to_upstream = 0
        self.bytes_to_downstream = 0

    # --- asyncio.Protocol ----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, so no isinstance.
        transport = cast(asyncio.Transport, transport)
        self._transport = transport
        gateway = self._gateway
        peer = transport.get_extra_info("peername")
        self._client = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
        if not gateway._admit(self, self._client):
            self._closed = True
            transport.abort()
            return
        config = gateway.config
        self._parser = ClientHelloParser(max_size=config.max_hello_size)
        loop = asyncio.get_running_loop()
        self._hello_timer = loop.call_later(config.hello_timeout, self._on_hello_timeout)

    def data_received(self, data: bytes) -> None:
        up = self._up
        if up is not None:
            up.write(data)
            self.bytes_to_upstream += len(data)
        elif self._parser is not None:
            self._read_hello(data)
        elif self._route is not None and not self._closed:
            # Dialing. Reading goes on (pausing and resuming costs two
            # syscalls per connection, and a TLS client sends nothing more
            # before the server answers), but only up to the hello cap.
            self._pending.append(data)
            self._pending_size += len(data)
            if self._pending_size > self._gateway.config.max_hello_size and not self._paused:
                self._paused = True
                assert self._transport is not None
                self._transport.pause_reading()

    def eof_received(self) -> bool:
        self._client_eof = True
        up = self._up
        if up is None:
            if self._parser is not None:
                self._reject(RejectReason.CLOSED_BEFORE_HELLO)
                return False
            # Dialing: the EOF is passed on once the upstream is there.
            return self._route is not None
        if self._server_eof:
            up.close()  # both directions done: the close carries the FIN
            return False
        if not up.is_closing():
            up.write_eof()
        return True

    def pause_writing(self) -> None:
        # The client reads slower than the upstream sends: stop reading upstream.
        if self._up is not None:
            self._up.pause_reading()

    def resume_writing(self) -> None:
        if self._up is not None:
            self._up.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        gateway = self._gateway
        if self._parser is not None:
            # Reset (or closed) before a full hello: every admitted connection
            # ends up counted once, either under a route or a reject reason.
            self._parser = None
            gateway.counters.reject(RejectReason.CLOSED_BEFORE_HELLO)
        gateway._forget(self, self._client)
        if self._hello_timer is not None:
            self._hello_timer.cancel()
            self._hello_timer = None
        if self._dials:
            for attempt in self._cancel_dials():
                self._client_gave_up_on(attempt)
        up = self._up
        if up is not None:
            if exc is None:
                up.close()
            else:
                up.abort()
        label = self.route_label
        if label is not None:
            counters = gateway.counters.route(label)
            up_bytes, down_bytes = self.bytes_to_upstream, self.bytes_to_downstream
            counters.bytes_to_upstream += up_bytes
            counters.bytes_to_downstream += down_bytes
            self.bytes_to_upstream = self.bytes_to_downstream = 0
            if log.isEnabledFor(logging.DEBUG):
                log.debug(
                    "connection closed",
                    extra={
                        "route": label,
                        "bytes_to_upstream": up_bytes,
                        "bytes_to_downstream": down_bytes,
                        "error": str(exc) if exc else None,
                    },
                )

    # --- used by the upstream side and the gateway -----------------------------

    def upstream_eof(self) -> bool:
        self._server_eof = True
        client = self._transport
        assert client is not None
        if self._client_eof:
            client.close()  # both directions done: the close carries the FIN
            return False
        if not client.is_closing():
            client.write_eof()
        return True

    def upstream_lost(self, exc: Exception | None) -> None:
        client = self._transport
        if client is None or client.is_closing():
            return
        if exc is None:
            client.close()
        else:
            log.info(
                "upstream connection failed; closing the client connection",
                extra={"route": self.route_label, "error": str(exc)},
            )
            client.abort()

    def pause_client(self) -> None:
        assert self._transport is not None
        self._transport.pause_reading()

    def resume_client(self) -> None:
        assert self._transport is not None
        self._transport.resume_reading()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()
        if self._up is not None:
            self._up.abort()

    def idle_sweep(self) -> None:
        """Called by the gateway's sweep timer; closes after enough quiet sweeps."""
        if self._up is None:
            return
        total = self.bytes_to_upstream + self.bytes_to_downstream
        if total != self._idle_mark:
            self._idle_mark = total
            self._idle_sweeps = 0
            return
        self._idle_sweeps += 1
        if self._idle_sweeps >= _IDLE_SWEEPS:
            log.info(
                "connection idle too long; closing both sides",
                extra={
                    "route": self.route_label,
                    "idle_timeout": self._gateway.config.idle_timeout,
                },
            )
            # Nothing is in flight, so a FIN (not a reset) on both sides.
            self._up.close()
            if self._transport is not None:
                self._transport.close()

    # --- the unrouted phase ----------------------------------------------------

    def _read_hello(self, data: bytes) -> None:
        parser = self._parser
        assert parser is not None
        try:
            hello = parser.feed(data)
        except HelloError as exc:
            self._reject(_HELLO_REJECTS.get(type(exc), RejectReason.MALFORMED_HELLO), exc)
            return
        if isinstance(hello, ClientHello):
            self._on_hello(hello)

    def _on_hello(self, hello: ClientHello) -> None:
        self._parser = None
        if self._hello_timer is not None:
            self._hello_timer.cancel()
            self._hello_timer = None
        sni = hello.server_name
        if not sni:
            self._reject(RejectReason.NO_SNI)
            return
        route = self._gateway.routes.lookup(sni)
        if route is None:
            self._reject(RejectReason.UNKNOWN_SNI, sni=sni)
            return
        self.route_label = route.label
        self._gateway.counters.route(route.label).connections += 1
        self._pending.append(hello.raw)
        self._pending_size = len(hello.raw)
        self._route = route
        gateway = self._gateway
        assert gateway._loop is not None
        self._candidates = gateway.upstream_health.candidates(
            route.upstreams, gateway.config.connect_attempts, gateway._loop.time()
        )
        self._dial_next()

    # Dialing is done with callbacks on one task per attempt rather than a
    # coroutine with ``asyncio.timeout``: the connect path runs once per
    # connection, and the wrapper coroutine and timeout context were a
    # measurable share of the gateway's CPU per new connection.

    def _dial_next(self) -> None:
        if self._stagger is not None:
            self._stagger.cancel()
            self._stagger = None
        route = self._route
        assert route is not None
        if not self._candidates:
            if self._dials:
                return  # the last attempt still pending decides
            gateway = self._gateway
            gateway.counters.route(route.label).unreachable += 1
            assert gateway._loop is not None
            skipped = gateway.upstream_health.ejected(gateway._loop.time())
            log.warning(
                "no upstream reachable; closing the client connection",
                extra={
                    "route": route.label,
                    "candidates": [str(u) for u in route.upstreams],
                    "skipped_after_slow_failures": [str(u) for u in skipped],
                },
            )
            if self._transport is not None:
                self._transport.close()
            return
        upstream = self._candidates.pop()
        loop = self._gateway._loop
        assert loop is not None
        task = loop.create_task(
            loop.create_connection(partial(_Upstream, self), upstream.host, upstream.port)
        )
        timer = loop.call_later(self._gateway.config.connect_timeout, task.cancel)
        self._dials[task] = _Attempt(upstream, loop.time(), timer)
        task.add_done_callback(self._dialed)
        if self._candidates:
            self._stagger = loop.call_later(CONNECT_STAGGER, self._dial_next)

    def _cancel_dials(self) -> list[_Attempt]:
        """Stop every pending attempt; a late winner is closed by :meth:`_dialed`."""
        if self._stagger is not None:
            self._stagger.cancel()
            self._stagger = None
        attempts = list(self._dials.values())
        for task, attempt in self._dials.items():
            attempt.timer.cancel()
            task.cancel()
        self._dials = {}
        return attempts

    def _client_gave_up_on(self, attempt: _Attempt) -> None:
        """The client left while ``attempt`` was pending: its own dial timeout
        outran ours. A connect pending that long is as good as failed slowly,
        and the next client should not wait on it again."""
        loop = self._gateway._loop
        if loop is None:
            return
        now = loop.time()
        slow = now - attempt.started >= SLOW_FAILURE
        if self._gateway.upstream_health.connect_failed(attempt.upstream, now, slow=slow):
            log.info(
                "client left while the upstream connect was pending; skipping the upstream "
                "for a while",
                extra={"route": self.route_label, "upstream": str(attempt.upstream)},
            )

    def _dialed(self, task: _DialTask) -> None:
        attempt = self._dials.pop(task, None)
        if attempt is None or self._closed or self._up is not None:
            # Cancelled: the client left, or another attempt won. It may still
            # have connected; that connection is not wanted.
            if not task.cancelled() and task.exception() is None:
                task.result()[0].close()
            return
        attempt.timer.cancel()
        gateway = self._gateway
        upstream = attempt.upstream
        route = self._route
        assert route is not None
        error: BaseException | None
        if task.cancelled():
            error = TimeoutError(f"connect timed out after {gateway.config.connect_timeout}s")
        else:
            error = task.exception()
        if error is None:
            gateway.upstream_health.connected(upstream)
            self._cancel_dials()
            self._splice(task.result()[0])
            return
        # ValueError: a name DNS cannot encode (UnicodeError) is one bad
        # candidate, not a reason to give up on the others.
        if not isinstance(error, OSError | TimeoutError | ValueError):
            log.error(
                "unexpected error while dialing an upstream; closing the client connection",
                exc_info=error,
                extra={"route": route.label, "upstream": str(upstream)},
            )
            if self._transport is not None:
                self._transport.abort()
            return
        gateway.counters.route(route.label).connect_failures += 1
        assert gateway._loop is not None
        now = gateway._loop.time()
        slow = isinstance(error, TimeoutError) or now - attempt.started >= SLOW_FAILURE
        ejected = gateway.upstream_health.connect_failed(upstream, now, slow=slow)
        log.warning(
            "upstream connect failed; trying the next candidate if any",
            extra={
                "route": route.label,
                "upstream": str(upstream),
                "error": repr(error),
                "skipped_for": gateway.config.upstream_ejection if ejected else 0,
            },
        )
        self._dial_next()

    def _splice(self, up: asyncio.Transport) -> None:
        client = self._transport
        assert client is not None
        if up.is_closing():
            # The upstream hung up between connecting and this callback: its
            # connection_lost found no splice to report to.
            client.close()
            return
        limit = self._gateway.config.write_buffer_limit
        up.set_write_buffer_limits(high=limit)
        client.set_write_buffer_limits(high=limit)
        self._up = up
        pending = b"".join(self._pending)
        self._pending = []
        if self._paused:
            # Resume first: the write below may fill the upstream buffer and
            # pause the client again, which must not be undone afterwards.
            self._paused = False
            client.resume_reading()
        up.write(pending)
        self.bytes_to_upstream += len(pending)
        if self._client_eof:
            up.write_eof()

    def _on_hello_timeout(self) -> None:
        self._hello_timer = None
        self._reject(RejectReason.HELLO_TIMEOUT)

    def _reject(
        self, reason: RejectReason, exc: Exception | None = None, sni: str | None = None
    ) -> None:
        self._parser = None
        if self._hello_timer is not None:
            self._hello_timer.cancel()
            self._hello_timer = None
        self._gateway.counters.reject(reason)
        transport = self._transport
        assert transport is not None
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "connection refused; closing it",
                extra={
                    "reason": str(reason),
                    "sni": sni,
                    "peer": transport.get_extra_info("peername"),
                    "error": str(exc) if exc else None,
                },
            )
        transport.close()


class _Upstream(asyncio.Protocol):
    """The server side of one proxied connection; forwards everything to its client."""

    __slots__ = ("_down", "_transport", "_write")

    def __init__(self, down: _Downstream) -> None:
        assert down._transport is not None
        self._down = down
        self._write = down._transport.write
        self._transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        # The hot path: straight into the client transport, one addition.
        self._write(data)
        self._down.bytes_to_downstream += len(data)

    def eof_received(self) -> bool:
        return self._down.upstream_eof()

    def pause_writing(self) -> None:
        # The upstream reads slower than the client sends: stop reading the client.
        self._down.pause_client()

    def resume_writing(self) -> None:
        self._down.resume_client()

    def connection_lost(self, exc: Exception | None) -> None:
        # A losing parallel attempt is closed unused: its end is not the client's.
        if self._down._up is self._transport:
            self._down.upstream_lost(exc)
