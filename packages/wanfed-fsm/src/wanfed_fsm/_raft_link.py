"""``RaftLink``: pysyncobj's messages carried over the server's own connections.

pysyncobj normally opens its own TCP port and speaks pickle on it. With a
link, raft rides connections the server already authenticates: the server's
RPC port accepts TLS with ALPN ``wanfed/raft`` (mutual TLS, so only servers
holding a certificate of this cluster get in) and hands each such connection
to :meth:`RaftLink.serve`; outgoing connections come from a ``dial``
function the server provides (``dial_alpn`` with the peer's server name).

Theory of operation. pysyncobj drives its transport from its tick thread and
expects every callback on that thread; the connections live on the asyncio
loop. So the transport is two halves joined by queues:

* tick thread → loop: ``send`` pickles the message, frames it and schedules
  the write with ``call_soon_threadsafe``; ``addNode``/``dropNode`` start or
  stop a dialer task per peer.
* loop → tick thread: received frames and connect/disconnect events go into
  a deque, and a pipe wakes pysyncobj's poller, whose callback (on the tick
  thread) drains the deque into pysyncobj.

Each direction has its own connection: a server sends on the connection it
dialed and receives on the ones its peers dialed. The dialer's first frame
is its raft node id, so the receiver knows which peer a message is from.

Pickle is only ever decoded from a peer that passed mutual TLS *and* whose
certificate names a server of this datacenter: any client certificate of the
same CA passes the handshake, so the owner must hand :meth:`RaftLink.serve`
only connections it has checked (the server puts it behind
``wanfed_agent.tls.ServerCertificatePolicy.guard``, which refuses before a
byte is read; its tests spy on :class:`_Inbound` to prove it).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import pickle
import threading
from collections.abc import Awaitable, Callable
from typing import Any, Final, cast

from pysyncobj.node import Node
from pysyncobj.pipe_notifier import PipeNotifier
from pysyncobj.transport import Transport

from wanfed_proto import Connection, FrameDecoder, ProtoError, encode_frame

__all__ = ["RaftDial", "RaftLink"]

logger = logging.getLogger(__name__)

RaftDial = Callable[[str], Awaitable[Connection]]
"""Open an authenticated connection speaking ``wanfed/raft`` to a peer's raft address."""

_MAX_FRAME: Final = 64 * 1024 * 1024
_HELLO_TIMEOUT: Final = 5.0

# events crossing from the loop to the tick thread
_CONNECTED: Final = "connected"
_DISCONNECTED: Final = "disconnected"
_MESSAGE: Final = "message"


class RaftLink:
    """Owned by the server: ``dial`` for outgoing, ``serve`` as the ALPN handler."""

    def __init__(self, dial: RaftDial, *, retry_interval: float = 0.2) -> None:
        self._dial = dial
        self._retry_interval = retry_interval
        self._transport: _LinkTransport | None = None
        self._pending: list[Connection] = []

    async def serve(self, connection: Connection) -> None:
        """Handle one inbound ``wanfed/raft`` connection until it closes; the caller has
        checked that the peer is a server of this datacenter (see the module docstring)."""
        transport = self._transport
        if transport is None:
            logger.warning(
                "raft connection from %s before raft started; closing it",
                connection.info.peer_text,
            )
            return
        await transport.serve_inbound(connection)

    def _bind(self, transport: _LinkTransport) -> None:
        if self._transport is not None:
            raise RuntimeError("a RaftLink carries one raft server's traffic")
        self._transport = transport

    def transport_factory(self, loop: asyncio.AbstractEventLoop) -> Callable[..., Transport]:
        """What RaftConsensus hands pysyncobj as its ``transportClass``."""

        def build(syncobj: Any, self_node: Node, other_nodes: set[Node]) -> Transport:
            transport = _LinkTransport(syncobj, self_node, other_nodes, self, loop)
            self._bind(transport)
            return transport

        return build


class _Inbound(asyncio.Protocol):
    """Frames from one peer's dialed connection, forwarded to the tick thread."""

    def __init__(self, transport: _LinkTransport, peer: str) -> None:
        self._link = transport
        self._peer = peer
        self._decoder = FrameDecoder(_MAX_FRAME)
        self._node: Node | None = None
        self.hello: asyncio.Future[Node | None] = asyncio.get_running_loop().create_future()
        self._connection: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport; same interface.
        self._connection = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self._decoder.feed(data)
            for frame in self._decoder.frames():
                if self._node is None:
                    self._node = self._link.known_node(frame.decode("utf-8", "replace"))
                    if not self.hello.done():
                        self.hello.set_result(self._node)
                    if self._node is None:
                        self._abort()
                        return
                else:
                    self._link.deliver(_MESSAGE, self._node, frame)
        except ProtoError as exc:
            logger.warning("raft link from %s sent a bad frame: %s; closing", self._peer, exc)
            self._abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.hello.done():
            self.hello.set_result(None)

    def _abort(self) -> None:
        if self._connection is not None:
            self._connection.abort()


class _LinkTransport(Transport):  # type: ignore[misc]
    """The pysyncobj Transport. Methods without a leading underscore run on the tick thread."""

    def __init__(
        self,
        syncobj: Any,
        self_node: Node,
        other_nodes: set[Node],
        link: RaftLink,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        super().__init__(syncobj, self_node, other_nodes)
        self._self_node = self_node
        self._link = link
        self._loop = loop
        self._nodes: dict[str, Node] = {str(node.id): node for node in other_nodes}
        self._events: collections.deque[tuple[str, Node, bytes]] = collections.deque()
        self._notifier = PipeNotifier(syncobj._poller, self._drain)
        self._outbound: dict[str, asyncio.Transport] = {}
        self._dialers: dict[str, asyncio.Task[None]] = {}
        self._inbound: set[Connection] = set()
        self._lock = threading.Lock()
        self._destroyed = False
        for node in other_nodes:
            self._call(self._start_dialer, node)

    # --- pysyncobj side (tick thread) -------------------------------------------

    def send(self, node: Node, message: Any) -> bool:
        node_id = str(node.id)
        with self._lock:
            connected = node_id in self._outbound
        if not connected:
            return False
        frame = encode_frame(pickle.dumps(message, pickle.HIGHEST_PROTOCOL), _MAX_FRAME)
        self._call(self._write, node_id, frame)
        return True

    def addNode(self, node: Node) -> None:
        with self._lock:
            self._nodes[str(node.id)] = node
        self._call(self._start_dialer, node)

    def dropNode(self, node: Node) -> None:
        with self._lock:
            self._nodes.pop(str(node.id), None)
        self._call(self._stop_dialer, str(node.id))

    def destroy(self) -> None:
        self._destroyed = True
        self._call(self._close_all)

    def _drain(self) -> None:
        """Tick thread, woken by the pipe: hand queued events to pysyncobj in order."""
        while self._events:
            kind, node, payload = self._events.popleft()
            if kind == _MESSAGE:
                try:
                    message = pickle.loads(payload)
                except Exception:
                    logger.exception("undecodable raft message from %s; dropped", node.id)
                    continue
                self._onMessageReceived(node, message)
            elif kind == _CONNECTED:
                self._onNodeConnected(node)
            else:
                self._onNodeDisconnected(node)

    # --- loop side ---------------------------------------------------------------

    def known_node(self, node_id: str) -> Node | None:
        with self._lock:
            node = self._nodes.get(node_id)
        if node is None:
            logger.warning("raft connection claims unknown server %r; closing it", node_id)
        return node

    def deliver(self, kind: str, node: Node, payload: bytes = b"") -> None:
        self._events.append((kind, node, payload))
        with contextlib.suppress(OSError):  # pipe full: a wake-up is already pending
            self._notifier.notify()

    async def serve_inbound(self, connection: Connection) -> None:
        peer = connection.info.peer_text
        if self._destroyed:
            return
        protocol = _Inbound(self, peer)
        connection.attach(protocol)
        self._inbound.add(connection)
        try:
            node = await asyncio.wait_for(asyncio.shield(protocol.hello), _HELLO_TIMEOUT)
            if node is None:
                return
            # A peer's raft link is persistent and may be quiet for long (followers
            # rarely talk to each other); Raft's own timeouts judge it, so the RPC
            # port's idle timeout must not close it. Only after the hello: before,
            # a silent connection is anyone's.
            connection.report_busy(lambda: True)
            await connection.wait_closed()
        except TimeoutError:
            logger.warning("raft connection from %s sent no hello; closing", peer)
        finally:
            self._inbound.discard(connection)

    def _call(self, callback: Callable[..., None], *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # loop already closed at shutdown
            self._loop.call_soon_threadsafe(callback, *args)

    def _write(self, node_id: str, frame: bytes) -> None:
        transport = self._outbound.get(node_id)
        if transport is not None and not transport.is_closing():
            transport.write(frame)

    def _start_dialer(self, node: Node) -> None:
        node_id = str(node.id)
        if self._destroyed or node_id in self._dialers:
            return
        self._dialers[node_id] = self._loop.create_task(self._dial_forever(node))

    def _stop_dialer(self, node_id: str) -> None:
        task = self._dialers.pop(node_id, None)
        if task is not None:
            task.cancel()

    def _close_all(self) -> None:
        for node_id in list(self._dialers):
            self._stop_dialer(node_id)
        for connection in list(self._inbound):
            connection.abort()

    async def _dial_forever(self, node: Node) -> None:
        node_id = str(node.id)
        while not self._destroyed:
            try:
                connection = await self._link._dial(node_id)
            except (ProtoError, OSError) as exc:
                logger.debug("raft dial to %s failed: %s; retrying", node_id, exc)
                await asyncio.sleep(self._link._retry_interval)
                continue
            connection.attach(asyncio.Protocol())  # outbound is write-only
            transport = connection.transport
            transport.write(encode_frame(str(self._self_node.id).encode(), _MAX_FRAME))
            with self._lock:
                self._outbound[node_id] = transport
            self.deliver(_CONNECTED, node)
            logger.info("raft link up to %s", node_id)
            try:
                await connection.wait_closed()
            finally:
                with self._lock:
                    self._outbound.pop(node_id, None)
                connection.abort()
                self.deliver(_DISCONNECTED, node)
            logger.info("raft link down to %s; redialing", node_id)
            await asyncio.sleep(self._link._retry_interval)
