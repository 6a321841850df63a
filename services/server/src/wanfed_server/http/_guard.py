"""Connection caps and read deadlines for the HTTP API, at aiohttp's protocol level.

aiohttp has an idle keep-alive timeout (``keepalive_timeout``: a connection
that has not completed a request's headers that long after it opened, or
after its last response, is closed), but no bound on how long one request's
headers may take once they started: a client that sends one header byte a
second (slowloris) would hold its socket for the whole keep-alive time, per
connection. And nothing caps how many connections one client, or all of them,
may hold.

Both are added here without touching how requests are served: the listening
site builds :class:`_GuardedRequestHandler`, aiohttp's own request handler
with three hooks. ``connection_made`` counts the connection against the caps
(:class:`~wanfed_proto.ConnectionLimiter`); one over a cap gets a ``429`` and
is closed before a byte is read, as Consul does. ``data_received`` arms a
header deadline when a byte arrives while no request is open (every request
parsed so far has been answered), and disarms it once aiohttp's parser has
produced a request; ``finish_response`` counts the answers. When the
deadline fires and still no request is open, the headers never completed and
the connection is closed. Bytes of a request's body, or of requests
pipelined behind one being served, never arm it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Final, cast

import msgspec
from aiohttp import web

from wanfed_proto import REFUSAL_LOG_INTERVAL, ConnectionLimiter, RateLimitedLog, Refusal

__all__ = ["GuardedSite", "HttpGuard", "HttpLimits", "HttpStats"]

logger = logging.getLogger("wanfed_server.http.limits")

_REFUSED_BODY: Final = b"Too many connections from your address; try again later\n"
_REFUSED_TOTAL_BODY: Final = b"Too many connections to this agent; try again later\n"


def _too_many(body: bytes) -> bytes:
    return (
        b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body
    )


_RESPONSES: Final = {
    Refusal.PER_CLIENT: _too_many(_REFUSED_BODY),
    Refusal.TOTAL: _too_many(_REFUSED_TOTAL_BODY),
}


class HttpLimits(msgspec.Struct, frozen=True, kw_only=True):
    """The ``limits.http_*`` keys of the agent config (0 caps mean "no cap")."""

    max_conns_per_client: int = 200
    max_conns: int = 4096
    read_header_timeout: float = 10.0
    idle_timeout: float = 60.0

    def __post_init__(self) -> None:
        if self.read_header_timeout <= 0 or self.idle_timeout <= 0:
            raise ValueError("read_header_timeout and idle_timeout must be positive")
        if self.max_conns_per_client < 0 or self.max_conns < 0:
            raise ValueError("connection caps must not be negative (0 means no cap)")


class HttpStats(msgspec.Struct, frozen=True, kw_only=True):
    open_connections: int
    refused_per_client: int
    refused_total: int
    header_timeouts: int


class HttpGuard:
    """Shared by every connection of one listener: the caps, counters and logs."""

    def __init__(self, limits: HttpLimits) -> None:
        self.limits = limits
        self.limiter = ConnectionLimiter(
            per_client=limits.max_conns_per_client, total=limits.max_conns
        )
        self.log = RateLimitedLog(logger, REFUSAL_LOG_INTERVAL)
        self.header_timeouts = 0

    def stats(self) -> HttpStats:
        refused = self.limiter.refused
        return HttpStats(
            open_connections=self.limiter.open_total,
            refused_per_client=refused[Refusal.PER_CLIENT],
            refused_total=refused[Refusal.TOTAL],
            header_timeouts=self.header_timeouts,
        )


class _GuardedRequestHandler(web.RequestHandler):
    """aiohttp's request handler, admitted by the caps and with a header deadline.

    Reads one attribute of the base class, ``_request_count`` (requests parsed
    on this connection), and overrides ``finish_response`` (called once per
    answered request). The slowloris tests fail if aiohttp changes them.
    """

    __slots__ = ("_answered", "_client", "_guard", "_header_timer")

    def __init__(self, manager: web.Server, guard: HttpGuard, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._guard = guard
        self._client: str | None = None
        self._header_timer: asyncio.TimerHandle | None = None
        self._answered = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        client = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
        guard = self._guard
        refusal = guard.limiter.admit(client)
        if refusal is not None:
            # Never handed to aiohttp: connection_lost below ignores it.
            cast(asyncio.Transport, transport).write(_RESPONSES[refusal])
            transport.close()
            guard.log.log(
                asyncio.get_running_loop().time(),
                logging.WARNING,
                "refused connection on the http api: client over its connection limit; "
                "answered 429 and closed",
                key=str(refusal),
                extra=guard.limiter.refusal_fields(refusal, client),
            )
            return
        self._client = client
        super().connection_made(transport)

    def connection_lost(self, exc: BaseException | None) -> None:
        client, self._client = self._client, None
        if client is None:
            return  # refused in connection_made
        self._guard.limiter.release(client)
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._header_timer is None and self._no_request_open():
            self._header_timer = asyncio.get_running_loop().call_later(
                self._guard.limits.read_header_timeout, self._header_deadline
            )
        super().data_received(data)
        if self._header_timer is not None and not self._no_request_open():
            self._disarm()

    async def finish_response(
        self, request: web.BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        try:
            return await super().finish_response(request, resp, start_time)
        finally:
            self._answered += 1

    def _no_request_open(self) -> bool:
        """Every request parsed so far has been answered: new bytes start headers."""
        return self._request_count <= self._answered

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_deadline(self) -> None:
        self._header_timer = None
        if not self._no_request_open() or self._client is None:
            return
        guard = self._guard
        guard.header_timeouts += 1
        guard.log.log(
            asyncio.get_running_loop().time(),
            logging.INFO,
            "closing http connection: request headers not complete within the header timeout",
            key="header_timeout",
            extra={
                "client": self._client,
                "read_header_timeout": guard.limits.read_header_timeout,
                "header_timeouts_so_far": guard.header_timeouts,
            },
        )
        self.force_close()


class GuardedSite(web.TCPSite):
    """A TCP site whose connections are :class:`_GuardedRequestHandler`."""

    __slots__ = ("_guard",)

    def __init__(self, runner: web.AppRunner, host: str, port: int, guard: HttpGuard) -> None:
        super().__init__(runner, host, port, reuse_address=True, backlog=1024)
        self._guard = guard

    async def start(self) -> None:
        # BaseSite.start registers the site with its runner; TCPSite.start
        # would create a server with aiohttp's own handler, so it is skipped.
        await web.BaseSite.start(self)
        server = self._runner.server
        assert server is not None
        guard = self._guard
        limits = guard.limits
        loop = asyncio.get_running_loop()

        def handler() -> web.RequestHandler:
            return _GuardedRequestHandler(
                server,
                guard,
                loop=loop,
                access_log=None,
                keepalive_timeout=limits.idle_timeout,
            )

        self._server = await loop.create_server(
            handler,
            self._host,
            self._port,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
        )
        sockets = getattr(self._server, "sockets", None)
        self._bound_port = sockets[0].getsockname()[1] if sockets else self._port
