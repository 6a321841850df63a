"""WAN gossip through mesh gateways: the wanfed transport.

Members are named ``<node>.<dc>``. A packet or stream for a member of this
datacenter goes over the plain transport (UDP/TCP to the member's address).
For any other datacenter the member's address is meaningless — the servers
are not reachable — so the transport asks the gateway picker for a gateway of
the path to that datacenter and opens TLS to it with SNI
``<node>.server.<dc>.<domain>`` (``server.<dc>.<domain>`` for the ``*``
placeholder of a join) and exactly one ALPN id:

* ``wanfed/wan-gossip/packet``: pooled connections, each packet one 4-byte
  length-prefixed frame (at most 4 MiB);
* ``wanfed/wan-gossip/stream``: one connection per stream, the bytes exactly
  what the plain TCP stream would carry.

The receiving server's RPC port hands both ALPNs to :meth:`serve_packets` and
:meth:`serve_stream`, which feed the same membership core as the plain
transport does. The TCP peer of such traffic is the gateway, never the member;
the certificate is the member's (gateways forward TLS without terminating it),
and only a server certificate (``server.<dc>.<domain>`` of any datacenter) is
let in: one packet from anyone else could add a member to the WAN pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Final

from wanfed_agent.gossip import GossipTransport, HostPort
from wanfed_agent.rpc import (
    DC_NOT_AVAILABLE,
    GatewayPicker,
    NoGatewayKnownError,
    dial_through_gateway,
)
from wanfed_agent.tls import ServerCertificatePolicy
from wanfed_proto import (
    DEFAULT_DIAL_TIMEOUT,
    DEFAULT_MAX_FRAME,
    Alpn,
    Connection,
    ConnectionHandler,
    FrameTooLargeError,
    InvalidNameError,
    ProtoError,
    read_packet,
    server_sni,
    split_node_name,
    write_packet,
)

from ._pool import PacketConnectionPool, PoolClosedError

__all__ = [
    "DC_NOT_AVAILABLE",
    "GatewayTransport",
    "NoGatewayError",
]

log = logging.getLogger("wanfed.gossip.gateway")

SEND_FAILURE_LOG_INTERVAL: Final = 10.0
"""Seconds between two reports of failed gossip sends to one datacenter."""

PacketHandler = Callable[[bytes, HostPort], None]
StreamHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class NoGatewayError(ConnectionError):
    """No gateway is known on the path to a datacenter."""

    def __init__(self, datacenter: str) -> None:
        super().__init__(DC_NOT_AVAILABLE)
        self.datacenter = datacenter


class GatewayTransport:
    """A :class:`~wanfed_agent.gossip.GossipTransport` that crosses datacenters via gateways."""

    def __init__(
        self,
        *,
        local: GossipTransport,
        datacenter: str,
        domain: str,
        picker: GatewayPicker,
        packet_context: ssl.SSLContext,
        stream_context: ssl.SSLContext,
        dial_timeout: float = DEFAULT_DIAL_TIMEOUT,
        idle_limit: float = 120.0,
        clock: Callable[[], float] = time.monotonic,
        policy: ServerCertificatePolicy | None = None,
    ) -> None:
        """``packet_context``/``stream_context`` offer exactly their one ALPN id;
        ``policy`` reads incoming certificates (one for ``domain`` if not given)."""
        self._local = local
        self._datacenter = datacenter
        self._domain = domain
        self._picker = picker
        self._packet_context = packet_context
        self._stream_context = stream_context
        self._dial_timeout = dial_timeout
        self._idle_limit = idle_limit
        self._pool = PacketConnectionPool(self._dial_packets, idle_limit=idle_limit, clock=clock)
        self._on_packet: PacketHandler | None = None
        self._on_stream: StreamHandler | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._failures_logged: dict[str, tuple[float, int]] = {}
        """Per datacenter: when a send failure was last logged, how many since."""
        self._clock = clock
        self._policy = policy or ServerCertificatePolicy(domain, clock=clock)
        self.serve_packets: ConnectionHandler = self._policy.guard(
            self._serve_packets, what="wan gossip packet"
        )
        """The RPC port's ``wanfed/wan-gossip/packet`` handler: servers only."""
        self.serve_stream: ConnectionHandler = self._policy.guard(
            self._serve_stream, what="wan gossip stream"
        )
        """The RPC port's ``wanfed/wan-gossip/stream`` handler: servers only."""

    # --- GossipTransport ----------------------------------------------------------

    async def start(self, on_packet: PacketHandler, on_stream: StreamHandler) -> HostPort:
        self._on_packet = on_packet
        self._on_stream = on_stream
        self._pool.start()
        return await self._local.start(on_packet, on_stream)

    def send_packet(self, name: str, addr: HostPort, data: bytes) -> None:
        try:
            _node, dc = split_node_name(name)
        except InvalidNameError as exc:
            log.warning("not sending gossip packet: %s", exc)
            return
        if dc == self._datacenter:
            self._local.send_packet(name, addr, data)
            return
        if len(data) > DEFAULT_MAX_FRAME:
            log.warning(
                "gossip packet size %d exceeds threshold of %d", len(data), DEFAULT_MAX_FRAME
            )
            return
        task = asyncio.create_task(self._send_remote(name, dc, data))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def open_stream(
        self, name: str, addr: HostPort
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        node, dc = split_node_name(name)
        if dc == self._datacenter:
            return await self._local.open_stream(name, addr)
        connection = await self._dial(node, dc, Alpn.WAN_GOSSIP_STREAM, self._stream_context)
        return connection.open_streams()

    async def close(self, flush_within: float = 5.0) -> None:
        """Stop; packets already handed over get ``flush_within`` seconds to leave.

        A graceful leave is announced in the last packets sent: cancelling them
        would make the other datacenters see a failure instead of a departure.
        """
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=flush_within)
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._pool.close()
        await self._local.close()

    def retire_datacenter(self, datacenter: str) -> int:
        """The path to ``datacenter`` changed: pooled packet connections stop being reused.

        Streams need nothing: each is dialled for one exchange and closes.
        """

        def in_datacenter(name: str) -> bool:
            try:
                return split_node_name(name)[1].lower() == datacenter.lower()
            except InvalidNameError:
                return False

        retired = self._pool.retire(in_datacenter)
        if retired:
            log.info(
                "retired %d pooled gossip connection(s) to dc=%s; next packets dial the current "
                "path",
                retired,
                datacenter,
            )
        return retired

    # --- outgoing -------------------------------------------------------------------

    async def _dial(self, node: str, dc: str, alpn: Alpn, context: ssl.SSLContext) -> Connection:
        sni = server_sni(dc, self._domain, None if node in ("", "*") else node)
        try:
            return await dial_through_gateway(
                self._picker, dc, sni, alpn, context, self._dial_timeout
            )
        except NoGatewayKnownError:
            raise NoGatewayError(dc) from None

    async def _dial_packets(self, name: str) -> asyncio.StreamWriter:
        node, dc = split_node_name(name)
        connection = await self._dial(node, dc, Alpn.WAN_GOSSIP_PACKET, self._packet_context)
        _reader, writer = connection.open_streams()
        return writer

    async def _send_remote(self, name: str, dc: str, data: bytes) -> None:
        try:
            conn = await self._pool.acquire(name)
        except NoGatewayError as exc:
            self._log_send_failure(
                dc,
                f"Failed to send gossip to {name}: {exc}",
                f"will retry when a gateway of {dc} is known",
            )
            return
        except PoolClosedError:
            # A probe's packet handed over while the transport was closing.
            log.debug("not sending gossip to %s: the transport is closed", name)
            return
        except (ProtoError, OSError) as exc:
            self._log_send_failure(
                dc, f"Failed to send gossip to {name}: {exc}", "the next packet dials again"
            )
            return
        try:
            await write_packet(conn.writer, data)
        except (ConnectionError, OSError, ProtoError) as exc:
            conn.failed = True
            self._log_send_failure(
                dc, f"Failed to send gossip to {name}: {exc}", "the next packet dials again"
            )
        finally:
            self._pool.release(conn)

    def _log_send_failure(self, dc: str, message: str, next_step: str) -> None:
        """At most one line per datacenter per 10 s: during an outage this fires on
        every probe and every gossip packet, several times a second per member."""
        now = self._clock()
        logged_at, suppressed = self._failures_logged.get(dc, (-1e9, 0))
        if now - logged_at < SEND_FAILURE_LOG_INTERVAL:
            self._failures_logged[dc] = (logged_at, suppressed + 1)
            return
        self._failures_logged[dc] = (now, 0)
        more = f" ({suppressed} more to dc {dc} since the last report)" if suppressed else ""
        log.warning("%s; %s%s", message, next_step, more)

    # --- incoming (the RPC port's ALPN handlers) ---------------------------------------

    async def _serve_packets(self, connection: Connection) -> None:
        """``wanfed/wan-gossip/packet`` (behind the server check): frames until EOF or
        two idle minutes."""
        reader, _writer = connection.open_streams()
        peer = connection.info.peer or ("0.0.0.0", 0)
        while True:
            try:
                packet = await read_packet(reader, idle_timeout=self._idle_limit)
            except TimeoutError:
                return
            except FrameTooLargeError as exc:
                log.warning(
                    "gossip packet size %d exceeds threshold of %d; closing the connection from %s",
                    exc.size,
                    exc.limit,
                    connection.info.peer_text,
                )
                return
            except ProtoError as exc:
                log.debug("gossip packet stream from %s ended: %s", connection.info.peer_text, exc)
                return
            if packet is None:
                return
            if not packet:
                log.warning("gossip packet too short from %s", connection.info.peer_text)
                continue
            if self._on_packet is not None:
                self._on_packet(packet, peer)

    async def _serve_stream(self, connection: Connection) -> None:
        """``wanfed/wan-gossip/stream`` (behind the server check): the membership core
        owns the stream."""
        reader, writer = connection.open_streams()
        if self._on_stream is None:
            writer.close()
            return
        await self._on_stream(reader, writer)
