"""SWIM membership with memberlist's semantics, as a core without I/O.

Theory of operation. Every ``probe_interval`` we probe the next member of a
shuffled round-robin list (directly, then indirectly through peers and over a
stream: :mod:`._probing`); a member that does not answer is *suspected*, and a
suspicion it does not refute in time makes it *dead* (:mod:`._state_changes`).
Every state change is queued as a broadcast and piggybacked on outgoing
packets a bounded number of times; a gossip tick pushes them to a few random
members too (:mod:`._dissemination`), and a periodic push/pull over a stream
reconciles whole tables, which is also how a member joins and how failed
members are retried after a partition heals (:mod:`._push_pull`). The member
table and the probe round live in :mod:`._member_table`. :class:`Membership`
wires these together, owns the timers and is the only public face.

The seam (aioquic style): the adapter passes received packets and streams in
with ``now``, calls :meth:`Membership.handle_timer` when
:meth:`Membership.next_deadline` passes, and carries out the actions it drains
(:class:`SendPacket`, :class:`StreamExchange`). Which transport carries a
packet — UDP, or a TLS stream through a mesh gateway — is not this module's
business; it only names the member and its address.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable

import msgspec

from ._config import PROTOCOL_VERSION_MAX, PROTOCOL_VERSION_MIN, GossipConfig
from ._dissemination import Outbox
from ._errors import GossipConfigError, GossipDecodeError
from ._events import Action, HostPort, Member, MemberEvent, MemberState, StreamExchange
from ._member_table import MemberTable, addr_bytes
from ._messages import (
    Ack,
    Alive,
    Dead,
    ErrorResponse,
    IndirectPing,
    Message,
    Nack,
    Ping,
    PushPull,
    StreamMessageReader,
    Suspect,
    UserMessage,
    decode_packet,
    encode_push_pull,
    encode_stream_message,
    read_stream_message,
)
from ._probing import FailureDetector
from ._push_pull import StateSync
from ._refusals import RefusalCounts, Refusals
from ._state_changes import StateChanges
from ._suspicion import Awareness

__all__ = ["Membership"]

logger = logging.getLogger("wanfed_agent.gossip")


class Membership:
    """One member's view of the gossip pool; feed it events, drain its actions."""

    def __init__(
        self,
        config: GossipConfig,
        *,
        now: float,
        seed: int | None = None,
        tcp_ping_allowed: Callable[[str], bool] | None = None,
    ) -> None:
        if config.advertise_port == 0:
            raise GossipConfigError("the membership core needs the real advertised port, not 0")
        self.config = config
        self._keyring = config.keyring()
        self._rng = random.Random(seed)
        self._refusals = Refusals()
        self._awareness = Awareness(config.awareness_max_multiplier)
        self._table = MemberTable(self._rng)
        self._outbox = Outbox(config, self._keyring, self._table)
        self._states = StateChanges(config, self._table, self._outbox, self._awareness)
        addr = addr_bytes(config.advertise_host)
        self._detector = FailureDetector(
            config,
            self._keyring,
            self._table,
            self._outbox,
            self._states,
            self._awareness,
            addr=addr,
            tcp_ping_allowed=tcp_ping_allowed or (lambda _name: True),
        )
        self._sync = StateSync(
            config, self._keyring, self._table, self._outbox, self._states, self._rng
        )
        self._vsn = bytes(
            (
                PROTOCOL_VERSION_MIN,
                PROTOCOL_VERSION_MAX,
                config.protocol_version,
                *config.delegate_versions,
            )
        )
        # Stagger the periodic work so a pool started at once does not beat in step.
        self._next_probe = now + self._rng.uniform(0, config.probe_interval)
        self._next_gossip = now + self._rng.uniform(0, config.gossip_interval)
        self._next_push_pull = now + self._rng.uniform(0, config.push_pull_interval)
        self._next_reconnect = now + config.reconnect_interval
        self._states.incarnation += 1
        self._states.alive(
            Alive(
                incarnation=self._states.incarnation,
                node=config.name,
                addr=addr,
                port=config.advertise_port,
                meta=config.meta,
                vsn=self._vsn,
            ),
            now,
            bootstrap=True,
        )

    # -- queries ------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.config.name

    def members(self) -> list[Member]:
        """Every member we know, including suspect, dead and left ones."""
        return [node.member() for node in self._table.nodes.values()]

    def member(self, name: str) -> Member | None:
        node = self._table.get(name)
        return None if node is None else node.member()

    def state_of(self, name: str) -> MemberState | None:
        """The state we hold for ``name`` (cheaper than :meth:`member`)."""
        node = self._table.get(name)
        return None if node is None else node.state

    def failed_member_names(self) -> list[str]:
        """Members that failed (not left) and are still being reconnected to.

        A dead member leaves :meth:`members` after ``gossip_to_the_dead_time``,
        but it is *reaped* — given up on — only after ``reconnect_timeout``;
        until then it may be partitioned away, not gone.
        """
        return sorted(self._states.failed)

    def alive_members(self) -> list[Member]:
        return [n.member() for n in self._table.nodes.values() if n.state is MemberState.ALIVE]

    @property
    def health_score(self) -> int:
        return self._awareness.score

    @property
    def refusals(self) -> RefusalCounts:
        """Packets and incoming streams refused so far (undecodable, unsealed, over a limit)."""
        return self._refusals.counts

    @property
    def has_left(self) -> bool:
        return self._states.left

    def leave_propagated(self) -> bool:
        """Whether our leave has been gossiped enough (or nobody is left to tell)."""
        if not self._states.left:
            return False
        return self._outbox.broadcasts.finished(self.name) or not self._states.any_alive()

    # -- the seam -----------------------------------------------------------

    def drain_actions(self) -> list[Action]:
        return self._outbox.drain()

    def drain_events(self) -> list[MemberEvent]:
        events, self._states.events = self._states.events, []
        return events

    def next_deadline(self) -> float:
        deadline = min(
            self._next_probe, self._next_gossip, self._next_push_pull, self._next_reconnect
        )
        deadline = self._detector.next_deadline(deadline)
        return self._states.next_deadline(deadline)

    def handle_timer(self, now: float) -> None:
        self._states.expire_suspicions(now)
        self._detector.expire_relays(now)
        self._detector.advance_probe(now)
        if self._next_probe <= now:
            self._next_probe = now + self._awareness.scale(self.config.probe_interval)
            self._detector.start_probe(now)
        if self._next_gossip <= now:
            self._next_gossip = now + self.config.gossip_interval
            self._outbox.gossip(now)
        if self._next_push_pull <= now:
            self._next_push_pull = now + self._sync.interval()
            self._sync.periodic(now)
        if self._next_reconnect <= now:
            self._next_reconnect = now + self.config.reconnect_interval
            self._sync.reconnect(now)

    def handle_packet(self, data: bytes, source: HostPort, now: float) -> None:
        """A packet arrived from ``source`` (the transport's view of the sender)."""
        try:
            messages = decode_packet(data, self._keyring)
        except GossipDecodeError as exc:
            self._refusals.refuse("packet", source, exc, now)
            return
        for msg in messages:
            self._dispatch(msg, source, now)

    def stream_reader(self) -> StreamMessageReader:
        """A collector that says when a stream request or reply has fully arrived.

        Its ``feed`` raises :class:`GossipDecodeError` for bytes that can
        never become a valid message.
        """
        return StreamMessageReader(self._keyring)

    def handle_stream(self, data: bytes, source: HostPort, now: float) -> bytes | None:
        """A complete incoming stream request; returns the reply to write, if any."""
        try:
            msg, _used = read_stream_message(data, self._keyring)
        except GossipDecodeError as exc:
            return self.refuse_stream(exc, source, now)
        if isinstance(msg, PushPull):
            reply = encode_push_pull(self._sync.local_state(msg.join), self._keyring)
            self._sync.checked_merge(msg.states, source, now)
            return reply
        if isinstance(msg, Ping):
            if msg.node and msg.node != self.name:
                logger.warning("stream ping for another member node=%s; not answering", msg.node)
                return None
            return encode_stream_message(Ack(seq_no=msg.seq_no), self._keyring)
        if isinstance(msg, UserMessage):
            logger.debug("ignoring user message over stream bytes=%d", len(msg.payload))
        return None

    def refuse_stream(self, error: GossipDecodeError, source: HostPort, now: float) -> bytes:
        """Count a stream request that could not be read; return the error to answer with
        (as memberlist does) before closing it."""
        self._refusals.refuse("stream", source, error, now)
        return encode_stream_message(ErrorResponse(error=str(error)), self._keyring)

    def handle_stream_reply(self, stream_id: int, data: bytes, now: float) -> bool:
        """The reply to one of our :class:`StreamExchange` actions; True on success."""
        stream = self._outbox.close_stream(stream_id)
        if stream is None:
            return False
        try:
            msg, _used = read_stream_message(data, self._keyring)
        except GossipDecodeError as exc:
            logger.warning("bad gossip stream reply kind=%s error=%s", stream.kind, exc)
            return False
        if isinstance(msg, ErrorResponse):
            logger.warning("remote gossip error kind=%s error=%s", stream.kind, msg.error)
            return False
        if stream.kind == "push_pull" and isinstance(msg, PushPull):
            return self._sync.checked_merge(msg.states, None, now)
        if stream.kind == "ping" and isinstance(msg, Ack):
            if msg.seq_no == stream.seq:
                self._detector.on_stream_ack(stream.seq)
            return msg.seq_no == stream.seq
        logger.warning(
            "unexpected gossip stream reply kind=%s got=%s", stream.kind, type(msg).__name__
        )
        return False

    def handle_stream_failure(self, stream_id: int, now: float) -> None:
        stream = self._outbox.close_stream(stream_id)
        if stream is not None:
            logger.debug("gossip stream failed kind=%s", stream.kind)

    # -- operator actions ----------------------------------------------------

    def join(self, name: str, addr: HostPort, now: float) -> StreamExchange:
        """Start a join push/pull with ``name`` at ``addr``; the exchange is also queued."""
        return self._sync.start(name, addr, join=True, now=now)

    def leave(self, now: float) -> None:
        """Gossip that we leave; poll :meth:`leave_propagated` before shutting down."""
        if self._states.left:
            return
        self._states.left = True
        me = self._table.nodes[self.name]
        self._states.dead(Dead(incarnation=me.incarnation, node=self.name, from_=self.name), now)

    def update_meta(self, meta: bytes, now: float) -> None:
        """Publish new metadata (tags) with a fresh incarnation."""
        self.config = msgspec.structs.replace(self.config, meta=meta)
        self._states.incarnation += 1
        me = self._table.nodes[self.name]
        self._states.alive(
            Alive(
                incarnation=self._states.incarnation,
                node=self.name,
                addr=me.addr,
                port=me.port,
                meta=meta,
                vsn=self._vsn,
            ),
            now,
            bootstrap=True,
        )

    # -- packets ------------------------------------------------------------

    def _dispatch(self, msg: Message, source: HostPort, now: float) -> None:
        if isinstance(msg, Ping):
            self._detector.on_ping(msg, source)
        elif isinstance(msg, IndirectPing):
            self._detector.on_indirect_ping(msg, source, now)
        elif isinstance(msg, Ack):
            self._detector.on_ack(msg.seq_no)
        elif isinstance(msg, Nack):
            self._detector.on_nack(msg.seq_no)
        elif isinstance(msg, Alive):
            if msg.port == 0:
                msg = msgspec.structs.replace(msg, port=self.config.advertise_port)
            self._states.alive(msg, now)
        elif isinstance(msg, Suspect):
            self._states.suspect(msg, now)
        elif isinstance(msg, Dead):
            self._states.dead(msg, now)
        else:
            logger.debug("ignoring gossip message type=%s", type(msg).__name__)
