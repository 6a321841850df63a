"""The asyncio adapter: drives a :class:`Membership` core over a transport.

The adapter owns one timer, re-armed from the core's next deadline after every
call into the core, and carries out the core's actions: packets go to
``transport.send_packet``; each stream exchange opens a stream, writes the
request and reads until the core says a whole reply has arrived. Incoming
packets and streams are fed back with ``loop.time()`` as ``now``.

A transport is anything with ``send_packet(name, addr, data)`` and
``open_stream(name, addr)`` that hands received packets and streams to the
callbacks given to ``start``. :class:`PlainTransport` is UDP plus TCP on one
port; the wanfed transport (TLS through mesh gateways for other datacenters)
plugs into the same seam, and the core never learns which one carried a
message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from wanfed_proto import ProtoError

from ._config import GossipConfig
from ._errors import GossipDecodeError
from ._events import (
    HostPort,
    Member,
    MemberEvent,
    SendPacket,
    StreamExchange,
    parse_join_target,
)
from ._membership import Membership

__all__ = ["GossipAgent", "GossipTransport", "PlainTransport"]

logger = logging.getLogger("wanfed_agent.gossip")

PacketHandler = Callable[[bytes, HostPort], None]
StreamHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

_STREAM_READ = 65536
_STREAM_LIMIT = 20 * 1024 * 1024 + 1024
_INCOMING_STREAM_TIMEOUT = 10.0


class GossipTransport(Protocol):
    """How gossip bytes travel; the core's actions are carried out through this."""

    async def start(self, on_packet: PacketHandler, on_stream: StreamHandler) -> HostPort:
        """Start receiving; return the address actually bound."""
        ...

    def send_packet(self, name: str, addr: HostPort, data: bytes) -> None: ...

    async def open_stream(
        self, name: str, addr: HostPort
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]: ...

    async def close(self) -> None: ...


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, on_packet: PacketHandler) -> None:
        self._on_packet = on_packet

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self._on_packet(data, (str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        logger.debug("gossip UDP error error=%s; continuing", exc)


class PlainTransport:
    """UDP packets and TCP streams on one host and port (port 0 picks one)."""

    def __init__(self, host: str, port: int = 0) -> None:
        self._host = host
        self._port = port
        self._udp: asyncio.DatagramTransport | None = None
        self._server: asyncio.Server | None = None

    async def start(self, on_packet: PacketHandler, on_stream: StreamHandler) -> HostPort:
        loop = asyncio.get_running_loop()
        # Bind TCP first: with port 0 it chooses, then UDP takes the same number.
        for _attempt in range(10):
            server = await asyncio.start_server(
                on_stream, self._host, self._port, limit=_STREAM_LIMIT
            )
            port = server.sockets[0].getsockname()[1]
            try:
                udp, _ = await loop.create_datagram_endpoint(
                    lambda: _Datagrams(on_packet), local_addr=(self._host, port)
                )
            except OSError:
                server.close()
                await server.wait_closed()
                if self._port:
                    raise
                continue
            self._server, self._udp = server, udp
            return self._host, port
        raise OSError(f"no port free for both UDP and TCP on {self._host}")

    def send_packet(self, name: str, addr: HostPort, data: bytes) -> None:
        if self._udp is not None:
            self._udp.sendto(data, addr)

    async def open_stream(
        self, name: str, addr: HostPort
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(addr[0], addr[1], limit=_STREAM_LIMIT)

    async def close(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


class GossipAgent:
    """One gossip member on the event loop."""

    def __init__(
        self,
        config: GossipConfig,
        transport: GossipTransport,
        *,
        tcp_ping_allowed: Callable[[str], bool] | None = None,
        seed: int | None = None,
    ) -> None:
        self._config = config
        self._transport = transport
        self._tcp_ping_allowed = tcp_ping_allowed
        self._seed = seed
        self._core: Membership | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._results: dict[int, asyncio.Future[bool]] = {}
        self._changed = asyncio.Event()
        self.events: list[MemberEvent] = []

    @property
    def core(self) -> Membership:
        if self._core is None:
            raise RuntimeError("gossip agent is not started")
        return self._core

    @property
    def address(self) -> HostPort:
        return self._config.advertise_host, self._config.advertise_port

    async def start(self) -> None:
        host, port = await self._transport.start(self._on_packet, self._on_stream)
        if self._config.advertise_port != port:
            self._config = self._config.with_port(port)
        loop = asyncio.get_running_loop()
        self._core = Membership(
            self._config, now=loop.time(), seed=self._seed, tcp_ping_allowed=self._tcp_ping_allowed
        )
        logger.info("gossip member started name=%s addr=%s:%d", self._config.name, host, port)
        self._pump()

    def members(self) -> list[Member]:
        return self.core.members()

    def failed_member_names(self) -> list[str]:
        """Failed members not yet reaped (see :meth:`Membership.failed_member_names`)."""
        return self.core.failed_member_names()

    async def join(self, *targets: str) -> int:
        """Join through ``name/host:port`` targets; return how many answered."""
        loop = asyncio.get_running_loop()
        futures = []
        for target in targets:
            name, addr = parse_join_target(target, self._config.advertise_port)
            action = self.core.join(name, addr, loop.time())
            future: asyncio.Future[bool] = loop.create_future()
            self._results[action.stream_id] = future
            futures.append(future)
        self._pump()
        results = await asyncio.gather(*futures)
        joined = sum(results)
        logger.info("gossip join finished contacted=%d of=%d", joined, len(targets))
        return joined

    async def wait_until(self, condition: Callable[[], bool], within: float) -> bool:
        """Wait (at most ``within`` seconds) until ``condition`` holds; False if it never did."""
        loop = asyncio.get_running_loop()
        end = loop.time() + within
        while not condition():
            remaining = end - loop.time()
            if remaining <= 0:
                return False
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._changed.wait()
        return True

    async def leave(self, within: float = 5.0) -> bool:
        """Gossip our departure and wait (bounded) until it has spread."""
        loop = asyncio.get_running_loop()
        self.core.leave(loop.time())
        self._pump()
        return await self.wait_until(self.core.leave_propagated, within)

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._transport.close()

    # -- driving the core -----------------------------------------------------

    def _pump(self) -> None:
        core = self.core
        self.events.extend(core.drain_events())
        for action in core.drain_actions():
            if isinstance(action, SendPacket):
                try:
                    self._transport.send_packet(action.name, action.addr, action.data)
                except OSError as exc:
                    logger.debug("gossip packet send failed to=%s error=%s", action.name, exc)
            else:
                self._spawn(self._exchange(action))
        self._changed.set()
        deadline = core.next_deadline()
        if deadline != self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = deadline
            self._timer = asyncio.get_running_loop().call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer_at = None
        self._timer = None
        self.core.handle_timer(asyncio.get_running_loop().time())
        self._pump()

    def _on_packet(self, data: bytes, source: HostPort) -> None:
        if self._core is None:
            return
        self._core.handle_packet(data, source, asyncio.get_running_loop().time())
        self._pump()

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _read_message(self, reader: asyncio.StreamReader) -> bytes:
        collector = self.core.stream_reader()
        while True:
            chunk = await reader.read(_STREAM_READ)
            if not chunk:
                raise ConnectionError("gossip stream closed before a whole message arrived")
            message = collector.feed(chunk)
            if message is not None:
                return message

    async def _exchange(self, action: StreamExchange) -> None:
        loop = asyncio.get_running_loop()
        ok = False
        writer: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout_at(action.deadline):
                reader, writer = await self._transport.open_stream(action.name, action.addr)
                writer.write(action.data)
                await writer.drain()
                reply = await self._read_message(reader)
            ok = self.core.handle_stream_reply(action.stream_id, reply, loop.time())
        except (OSError, TimeoutError, GossipDecodeError, ProtoError) as exc:
            # ProtoError: a dial through a gateway fails with TransportError.
            logger.debug(
                "gossip stream failed to=%s addr=%s:%d error=%r",
                action.name,
                *action.addr,
                exc,
            )
            self.core.handle_stream_failure(action.stream_id, loop.time())
        finally:
            if writer is not None:
                writer.close()
            future = self._results.pop(action.stream_id, None)
            if future is not None and not future.done():
                future.set_result(ok)
            self._pump()

    async def _on_stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        source: HostPort = (str(peer[0]), int(peer[1])) if peer else ("", 0)
        try:
            async with asyncio.timeout(_INCOMING_STREAM_TIMEOUT):
                request = await self._read_message(reader)
                reply = self.core.handle_stream(request, source, asyncio.get_running_loop().time())
                self._pump()
                if reply is not None:
                    writer.write(reply)
                    await writer.drain()
        except GossipDecodeError as exc:
            reply = self.core.refuse_stream(exc, source, asyncio.get_running_loop().time())
            self._changed.set()  # wakes wait_until callers watching the refusal counts
            with contextlib.suppress(OSError):
                writer.write(reply)
                await writer.drain()
        except (OSError, TimeoutError, ConnectionError) as exc:
            logger.debug("incoming gossip stream dropped from=%s:%d error=%r", *source, exc)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
