"""SWIM membership with memberlist's semantics, as a core without I/O.

Theory of operation. Every ``probe_interval`` we probe the next member of a
shuffled round-robin list: a direct ping, then — if no ack arrived within
``probe_timeout`` — indirect pings through ``indirect_checks`` random members
(which answer with a nack when they too hear nothing) and, unless the target's
datacenter forbids it, a ping over a stream. No ack by the end of the interval
makes us *suspect* the member and tell everyone. A suspicion turns into *dead*
after a Lifeguard timeout that shrinks with independent confirmations; the
suspect can refute by gossiping *alive* with a higher incarnation number. Every
state change is queued as a broadcast and piggybacked on outgoing packets a
bounded number of times; a gossip tick pushes them to a few random members
too, and a periodic push/pull over a stream reconciles whole tables, which is
also how a member joins. Members we declared dead (not those that left) are
remembered for ``reconnect_timeout`` and one of them is retried with a join
push/pull every ``reconnect_interval`` (what Serf adds on top of memberlist):
that is how the two sides of a healed partition find each other again.

The seam (aioquic style): the adapter passes received packets and streams in
with ``now``, calls :meth:`Membership.handle_timer` when
:meth:`Membership.next_deadline` passes, and carries out the actions it drains
(:class:`SendPacket`, :class:`StreamExchange`). Which transport carries a
packet — UDP, or a TLS stream through a mesh gateway — is not this module's
business; it only names the member and its address.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import random
from collections.abc import Callable
from dataclasses import dataclass

import msgspec

from ._broadcasts import BroadcastQueue, retransmit_limit
from ._config import PROTOCOL_VERSION_MAX, PROTOCOL_VERSION_MIN, GossipConfig
from ._errors import GossipConfigError, GossipDecodeError
from ._events import (
    Action,
    HostPort,
    Member,
    MemberEvent,
    MemberEventKind,
    MemberState,
    SendPacket,
    StreamExchange,
)
from ._messages import (
    Ack,
    Alive,
    Dead,
    ErrorResponse,
    IndirectPing,
    Message,
    Nack,
    NodeStateKind,
    Ping,
    PushNodeState,
    PushPull,
    StreamMessageReader,
    Suspect,
    UserMessage,
    decode_packet,
    encode_compound,
    encode_message,
    encode_push_pull,
    encode_stream_message,
    read_stream_message,
    with_crc,
)
from ._suspicion import Awareness, Suspicion, suspicion_timeout

__all__ = ["Membership"]

logger = logging.getLogger("wanfed_agent.gossip")

_COMPOUND_HEADER_OVERHEAD = 2
_COMPOUND_OVERHEAD = 2
_ENCRYPT_OVERHEAD = 29
_PUSH_PULL_SCALE_THRESHOLD = 32
_STREAM_TIMEOUT = 10.0

_KIND_OF = {
    MemberState.ALIVE: NodeStateKind.ALIVE,
    MemberState.SUSPECT: NodeStateKind.SUSPECT,
    MemberState.DEAD: NodeStateKind.DEAD,
    MemberState.LEFT: NodeStateKind.LEFT,
}


@dataclass(slots=True)
class _Node:
    name: str
    addr: bytes
    port: int
    meta: bytes
    incarnation: int
    state: MemberState
    state_change: float
    vsn: bytes = b"\x00" * 6

    @property
    def host(self) -> str:
        return str(ipaddress.ip_address(self.addr))

    @property
    def pmax(self) -> int:
        return self.vsn[1] if len(self.vsn) >= 6 else 0

    def member(self) -> Member:
        vsn = self.vsn if len(self.vsn) >= 6 else b"\x00" * 6
        return Member(
            name=self.name,
            host=self.host,
            port=self.port,
            meta=self.meta,
            state=self.state,
            incarnation=self.incarnation,
            protocol=(vsn[0], vsn[1], vsn[2]),
            delegate=(vsn[3], vsn[4], vsn[5]),
        )


@dataclass(slots=True)
class _Probe:
    seq: int
    target: str
    timeout_at: float
    deadline: float
    indirect_sent: bool = False
    expected_nacks: int = 0
    nacks: int = 0
    fallback_ok: bool = False


@dataclass(slots=True)
class _Relay:
    """An indirect ping we forward on behalf of another member."""

    origin_seq: int
    requester: str
    requester_addr: HostPort
    expires: float
    want_nack: bool


@dataclass(slots=True)
class _Stream:
    kind: str  # "push_pull" or "ping"
    seq: int = 0
    join: bool = False


def _versions(vsn: bytes) -> bytes:
    """Six version bytes; a short or missing list reads as zeros (speaks nothing)."""
    return vsn[:6] if len(vsn) >= 6 else b"\x00" * 6


def _addr_bytes(host: str) -> bytes:
    return ipaddress.ip_address(host).packed


def _valid_addr(addr: bytes) -> bool:
    return len(addr) in (4, 16)


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
        self._tcp_ping_allowed = tcp_ping_allowed or (lambda _name: True)
        self._nodes: dict[str, _Node] = {}
        self._order: list[str] = []
        self._probe_index = 0
        self._seq = 0
        self._incarnation = 0
        self._stream_seq = 0
        self._awareness = Awareness(config.awareness_max_multiplier)
        self._broadcasts = BroadcastQueue()
        self._suspicions: dict[str, Suspicion] = {}
        self._relays: dict[int, _Relay] = {}
        self._streams: dict[int, _Stream] = {}
        self._probe: _Probe | None = None
        self._actions: list[Action] = []
        self._events: list[MemberEvent] = []
        self._left = False
        self._failed: dict[str, tuple[HostPort, float]] = {}
        self._addr = _addr_bytes(config.advertise_host)
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
        self._incarnation += 1
        self._alive(
            Alive(
                incarnation=self._incarnation,
                node=config.name,
                addr=self._addr,
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
        return [node.member() for node in self._nodes.values()]

    def member(self, name: str) -> Member | None:
        node = self._nodes.get(name)
        return None if node is None else node.member()

    def state_of(self, name: str) -> MemberState | None:
        """The state we hold for ``name`` (cheaper than :meth:`member`)."""
        node = self._nodes.get(name)
        return None if node is None else node.state

    def alive_members(self) -> list[Member]:
        return [n.member() for n in self._nodes.values() if n.state is MemberState.ALIVE]

    @property
    def health_score(self) -> int:
        return self._awareness.score

    @property
    def has_left(self) -> bool:
        return self._left

    def leave_propagated(self) -> bool:
        """Whether our leave has been gossiped enough (or nobody is left to tell)."""
        if not self._left:
            return False
        return self._broadcasts.finished(self.name) or not self._any_alive()

    # -- the seam -----------------------------------------------------------

    def drain_actions(self) -> list[Action]:
        actions, self._actions = self._actions, []
        return actions

    def drain_events(self) -> list[MemberEvent]:
        events, self._events = self._events, []
        return events

    def next_deadline(self) -> float:
        deadline = min(
            self._next_probe, self._next_gossip, self._next_push_pull, self._next_reconnect
        )
        if self._probe is not None:
            deadline = min(
                deadline,
                self._probe.deadline if self._probe.indirect_sent else self._probe.timeout_at,
            )
        for relay in self._relays.values():
            deadline = min(deadline, relay.expires)
        for suspicion in self._suspicions.values():
            deadline = min(deadline, suspicion.deadline)
        return deadline

    def handle_timer(self, now: float) -> None:
        for name, suspicion in list(self._suspicions.items()):
            if suspicion.deadline <= now:
                self._suspicion_expired(name, suspicion, now)
        for seq, relay in list(self._relays.items()):
            if relay.expires <= now:
                del self._relays[seq]
                if relay.want_nack:
                    self._send_msg(
                        relay.requester, relay.requester_addr, Nack(seq_no=relay.origin_seq)
                    )
        probe = self._probe
        if probe is not None:
            if not probe.indirect_sent and probe.timeout_at <= now:
                self._probe_indirect(probe, now)
            if probe.indirect_sent and probe.deadline <= now:
                self._probe_failed(probe, now)
        if self._next_probe <= now:
            self._next_probe = now + self._awareness.scale(self.config.probe_interval)
            self._start_probe(now)
        if self._next_gossip <= now:
            self._next_gossip = now + self.config.gossip_interval
            self._gossip(now)
        if self._next_push_pull <= now:
            self._next_push_pull = now + self._push_pull_interval()
            self._periodic_push_pull(now)
        if self._next_reconnect <= now:
            self._next_reconnect = now + self.config.reconnect_interval
            self._reconnect(now)

    def handle_packet(self, data: bytes, source: HostPort, now: float) -> None:
        """A packet arrived from ``source`` (the transport's view of the sender)."""
        try:
            messages = decode_packet(data, self._keyring)
        except GossipDecodeError as exc:
            logger.warning("dropping undecodable gossip packet from=%s:%d error=%s", *source, exc)
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
            logger.warning("refusing gossip stream from=%s:%d error=%s", *source, exc)
            return encode_stream_message(ErrorResponse(error=str(exc)), self._keyring)
        if isinstance(msg, PushPull):
            reply = encode_push_pull(self._local_state(msg.join), self._keyring)
            self._checked_merge(msg.states, source, now)
            return reply
        if isinstance(msg, Ping):
            if msg.node and msg.node != self.name:
                logger.warning("stream ping for another member node=%s; not answering", msg.node)
                return None
            return encode_stream_message(Ack(seq_no=msg.seq_no), self._keyring)
        if isinstance(msg, UserMessage):
            logger.debug("ignoring user message over stream bytes=%d", len(msg.payload))
        return None

    def error_reply(self, error: str) -> bytes:
        """What to answer on a stream whose request could not be read (as memberlist does)."""
        return encode_stream_message(ErrorResponse(error=error), self._keyring)

    def handle_stream_reply(self, stream_id: int, data: bytes, now: float) -> bool:
        """The reply to one of our :class:`StreamExchange` actions; True on success."""
        stream = self._streams.pop(stream_id, None)
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
            return self._checked_merge(msg.states, None, now)
        if stream.kind == "ping" and isinstance(msg, Ack):
            probe = self._probe
            if msg.seq_no == stream.seq and probe is not None and probe.seq == stream.seq:
                probe.fallback_ok = True
            return msg.seq_no == stream.seq
        logger.warning(
            "unexpected gossip stream reply kind=%s got=%s", stream.kind, type(msg).__name__
        )
        return False

    def handle_stream_failure(self, stream_id: int, now: float) -> None:
        stream = self._streams.pop(stream_id, None)
        if stream is not None:
            logger.debug("gossip stream failed kind=%s", stream.kind)

    # -- operator actions ----------------------------------------------------

    def join(self, name: str, addr: HostPort, now: float) -> StreamExchange:
        """Start a join push/pull with ``name`` at ``addr``; the exchange is also queued."""
        return self._start_push_pull(name, addr, join=True, now=now)

    def leave(self, now: float) -> None:
        """Gossip that we leave; poll :meth:`leave_propagated` before shutting down."""
        if self._left:
            return
        self._left = True
        me = self._nodes[self.name]
        self._dead(Dead(incarnation=me.incarnation, node=self.name, from_=self.name), now)

    def update_meta(self, meta: bytes, now: float) -> None:
        """Publish new metadata (tags) with a fresh incarnation."""
        self.config = msgspec.structs.replace(self.config, meta=meta)
        self._incarnation += 1
        me = self._nodes[self.name]
        self._alive(
            Alive(
                incarnation=self._incarnation,
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
            self._on_ping(msg, source)
        elif isinstance(msg, IndirectPing):
            self._on_indirect_ping(msg, source, now)
        elif isinstance(msg, Ack):
            self._on_ack(msg.seq_no)
        elif isinstance(msg, Nack):
            if self._probe is not None and self._probe.seq == msg.seq_no:
                self._probe.nacks += 1
        elif isinstance(msg, Alive):
            if msg.port == 0:
                msg = msgspec.structs.replace(msg, port=self.config.advertise_port)
            self._alive(msg, now)
        elif isinstance(msg, Suspect):
            self._suspect(msg, now)
        elif isinstance(msg, Dead):
            self._dead(msg, now)
        else:
            logger.debug("ignoring gossip message type=%s", type(msg).__name__)

    def _reply_addr(self, addr: bytes, port: int, source: HostPort) -> HostPort:
        if _valid_addr(addr) and port > 0:
            return str(ipaddress.ip_address(addr)), port
        return source

    def _on_ping(self, ping: Ping, source: HostPort) -> None:
        if ping.node and ping.node != self.name:
            logger.warning("got ping for another member node=%s from=%s:%d", ping.node, *source)
            return
        addr = self._reply_addr(ping.source_addr, ping.source_port, source)
        self._send_msg(ping.source_node, addr, Ack(seq_no=ping.seq_no))

    def _on_indirect_ping(self, req: IndirectPing, source: HostPort, now: float) -> None:
        if not _valid_addr(req.target):
            logger.warning("indirect ping with a bad target address from=%s:%d", *source)
            return
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        seq = self._seq
        self._relays[seq] = _Relay(
            origin_seq=req.seq_no,
            requester=req.source_node,
            requester_addr=self._reply_addr(req.source_addr, req.source_port, source),
            expires=now + self.config.probe_timeout,
            want_nack=req.nack,
        )
        port = req.port or self.config.advertise_port
        target = (str(ipaddress.ip_address(req.target)), port)
        self._send_msg(req.node, target, self._ping(seq, req.node))

    def _on_ack(self, seq: int) -> None:
        relay = self._relays.pop(seq, None)
        if relay is not None:
            self._send_msg(relay.requester, relay.requester_addr, Ack(seq_no=relay.origin_seq))
            return
        probe = self._probe
        if probe is not None and probe.seq == seq:
            self._probe = None
            self._awareness.apply(-1)

    def _ping(self, seq: int, target: str) -> Ping:
        return Ping(
            seq_no=seq,
            node=target,
            source_addr=self._addr,
            source_port=self.config.advertise_port,
            source_node=self.name,
        )

    def _send_msg(self, name: str, addr: HostPort, msg: Message) -> None:
        """Send one message with as many pending broadcasts piggybacked as fit."""
        encoded = encode_message(msg)
        avail = self.config.udp_buffer_size - len(encoded) - _COMPOUND_HEADER_OVERHEAD
        if self._keyring is not None:
            avail -= _ENCRYPT_OVERHEAD
        extra = self._take_broadcasts(avail)
        packet = encode_compound([encoded, *extra]) if extra else encoded
        self._raw_send(name, addr, packet)

    def _take_broadcasts(self, avail: int) -> list[bytes]:
        limit = retransmit_limit(self.config.retransmit_mult, len(self._nodes))
        return self._broadcasts.take(_COMPOUND_OVERHEAD, avail, limit)[:254]

    def _raw_send(self, name: str, addr: HostPort, packet: bytes) -> None:
        node = self._nodes.get(name)
        if node is not None and node.pmax >= 5:
            packet = with_crc(packet)
        if self._keyring is not None:
            packet = self._keyring.encrypt(packet)
        self._actions.append(SendPacket(name=name, addr=addr, data=packet))

    # -- probing ------------------------------------------------------------

    def _start_probe(self, now: float) -> None:
        if self._probe is not None:
            return  # the previous probe still runs (its interval was scaled up)
        checked = 0
        while checked <= len(self._order):
            if self._probe_index >= len(self._order):
                self._reset_order(now)
                self._probe_index = 0
                checked += 1
                continue
            name = self._order[self._probe_index]
            self._probe_index += 1
            node = self._nodes[name]
            if name == self.name or node.state in (MemberState.DEAD, MemberState.LEFT):
                checked += 1
                continue
            self._probe_node(node, now)
            return

    def _reset_order(self, now: float) -> None:
        # Forget members that have been dead for longer than we gossip about
        # them, then shuffle so probe order differs from round to round.
        for name in list(self._order):
            node = self._nodes[name]
            if (
                node.state in (MemberState.DEAD, MemberState.LEFT)
                and now - node.state_change > self.config.gossip_to_the_dead_time
            ):
                del self._nodes[name]
        self._order = list(self._nodes)
        self._rng.shuffle(self._order)

    def _probe_node(self, node: _Node, now: float) -> None:
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        interval = self._awareness.scale(self.config.probe_interval)
        self._probe = _Probe(
            seq=self._seq,
            target=node.name,
            timeout_at=now + self.config.probe_timeout,
            deadline=now + interval,
        )
        ping = self._ping(self._seq, node.name)
        addr = (node.host, node.port)
        if node.state is MemberState.ALIVE:
            self._send_msg(node.name, addr, ping)
        else:
            # Tell a suspect that we suspect it, so it can refute at once.
            accusation = Suspect(incarnation=node.incarnation, node=node.name, from_=self.name)
            packet = encode_compound([encode_message(ping), encode_message(accusation)])
            self._raw_send(node.name, addr, packet)

    def _probe_indirect(self, probe: _Probe, now: float) -> None:
        probe.indirect_sent = True
        node = self._nodes.get(probe.target)
        if node is None:
            self._probe = None
            return
        logger.debug("direct ping failed node=%s; trying indirect probes", node.name)
        peers = self._random_nodes(
            self.config.indirect_checks,
            lambda n: n.name not in (self.name, node.name) and n.state is MemberState.ALIVE,
        )
        for peer in peers:
            want_nack = peer.pmax >= 4
            probe.expected_nacks += want_nack
            req = IndirectPing(
                seq_no=probe.seq,
                target=node.addr,
                port=node.port,
                node=node.name,
                nack=want_nack,
                source_addr=self._addr,
                source_port=self.config.advertise_port,
                source_node=self.name,
            )
            self._send_msg(peer.name, (peer.host, peer.port), req)
        if node.pmax >= 3 and self._tcp_ping_allowed(node.name):
            data = encode_stream_message(self._ping(probe.seq, node.name), self._keyring)
            self._open_stream(
                _Stream(kind="ping", seq=probe.seq),
                node.name,
                (node.host, node.port),
                data,
                probe.deadline,
            )

    def _probe_failed(self, probe: _Probe, now: float) -> None:
        self._probe = None
        if probe.fallback_ok:
            logger.warning(
                "member answered over a stream but not by packets node=%s; "
                "the network may drop UDP",
                probe.target,
            )
            self._awareness.apply(-1)
            return
        if probe.expected_nacks > 0:
            self._awareness.apply(max(0, probe.expected_nacks - probe.nacks))
        else:
            self._awareness.apply(1)
        node = self._nodes.get(probe.target)
        if node is None:
            return
        logger.info("probe failed node=%s; suspecting it", node.name)
        self._suspect(Suspect(incarnation=node.incarnation, node=node.name, from_=self.name), now)

    def _random_nodes(self, k: int, keep: Callable[[_Node], bool]) -> list[_Node]:
        # Random picks with rejection, bounded at 3n tries (as memberlist does):
        # O(k) per call instead of filtering the whole table every gossip tick.
        order = self._order
        n = len(order)
        chosen: list[_Node] = []
        seen: set[str] = set()
        for _ in range(3 * n):
            if len(chosen) >= k:
                break
            name = order[self._rng.randrange(n)]
            node = self._nodes.get(name)
            if node is None or name in seen or not keep(node):
                continue
            seen.add(name)
            chosen.append(node)
        return chosen

    # -- gossip and push/pull -------------------------------------------------

    def _gossip(self, now: float) -> None:
        if not len(self._broadcasts):
            return  # nothing to spread; skip picking peers

        def gossipable(n: _Node) -> bool:
            if n.name == self.name:
                return False
            if n.state in (MemberState.ALIVE, MemberState.SUSPECT):
                return True
            return (
                n.state is MemberState.DEAD
                and now - n.state_change <= self.config.gossip_to_the_dead_time
            )

        avail = self.config.udp_buffer_size - _COMPOUND_HEADER_OVERHEAD
        if self._keyring is not None:
            avail -= _ENCRYPT_OVERHEAD
        for node in self._random_nodes(self.config.gossip_nodes, gossipable):
            msgs = self._take_broadcasts(avail)
            if not msgs:
                return
            packet = msgs[0] if len(msgs) == 1 else encode_compound(msgs)
            self._raw_send(node.name, (node.host, node.port), packet)

    def _push_pull_interval(self) -> float:
        # Larger pools exchange whole tables less often: the cost grows with n.
        n = len(self._nodes)
        interval = self.config.push_pull_interval
        if n <= _PUSH_PULL_SCALE_THRESHOLD:
            return interval
        return interval * (math.ceil(math.log2(n) - math.log2(_PUSH_PULL_SCALE_THRESHOLD)) + 1)

    def _periodic_push_pull(self, now: float) -> None:
        peers = self._random_nodes(
            1, lambda n: n.name != self.name and n.state is MemberState.ALIVE
        )
        if peers:
            self._start_push_pull(
                peers[0].name, (peers[0].host, peers[0].port), join=False, now=now
            )

    def _start_push_pull(
        self, name: str, addr: HostPort, *, join: bool, now: float
    ) -> StreamExchange:
        data = encode_push_pull(self._local_state(join), self._keyring)
        return self._open_stream(
            _Stream(kind="push_pull", join=join), name, addr, data, now + _STREAM_TIMEOUT
        )

    def _open_stream(
        self, stream: _Stream, name: str, addr: HostPort, data: bytes, deadline: float
    ) -> StreamExchange:
        self._stream_seq += 1
        self._streams[self._stream_seq] = stream
        action = StreamExchange(
            stream_id=self._stream_seq, name=name, addr=addr, data=data, deadline=deadline
        )
        self._actions.append(action)
        return action

    def _reconnect(self, now: float) -> None:
        for name, (_addr, since) in list(self._failed.items()):
            if now - since > self.config.reconnect_timeout:
                del self._failed[name]
                logger.info("giving up reconnecting to failed member node=%s", name)
        if not self._failed or self._left:
            return
        name = self._rng.choice(sorted(self._failed))
        addr, _since = self._failed[name]
        logger.debug("trying to reconnect to failed member node=%s addr=%s:%d", name, *addr)
        self._start_push_pull(name, addr, join=True, now=now)

    def _local_state(self, join: bool) -> PushPull:
        states = tuple(
            PushNodeState(
                name=n.name,
                addr=n.addr,
                port=n.port,
                meta=n.meta,
                incarnation=n.incarnation,
                state=_KIND_OF[n.state],
                vsn=n.vsn,
            )
            for n in self._nodes.values()
        )
        return PushPull(join=join, states=states)

    def _checked_merge(
        self, states: tuple[PushNodeState, ...], source: HostPort | None, now: float
    ) -> bool:
        problem = self._incompatible(states)
        if problem is not None:
            logger.error("not merging remote state from=%s error=%s", source, problem)
            return False
        self._merge(states, now)
        return True

    def _incompatible(self, states: tuple[PushNodeState, ...]) -> str | None:
        """Why the pool would not share a protocol version after merging, if it would not.

        Every live member advertises the range it understands; each member's
        current version (remote or local, any state) must lie in the
        intersection, else some pair could not talk.
        """
        remote = [(s.name, _versions(s.vsn), s.state == NodeStateKind.ALIVE) for s in states]
        local = [
            (n.name, _versions(n.vsn), n.state is MemberState.ALIVE) for n in self._nodes.values()
        ]
        alive_ranges = [v for _name, v, alive in remote + local if alive and any(v)]
        if not alive_ranges:
            return None
        pmin = max(v[0] for v in alive_ranges)
        pmax = min(v[1] for v in alive_ranges)
        dmin = max(v[3] for v in alive_ranges)
        dmax = min(v[4] for v in alive_ranges)
        for name, v, _alive in remote + local:
            if not pmin <= v[2] <= pmax:
                return f"Node '{name}' protocol version ({v[2]}) is incompatible: [{pmin}, {pmax}]"
            if not dmin <= v[5] <= dmax:
                return (
                    f"Node '{name}' delegate protocol version ({v[5]}) is incompatible: "
                    f"[{dmin}, {dmax}]"
                )
        return None

    def _merge(self, states: tuple[PushNodeState, ...], now: float) -> None:
        for remote in states:
            if remote.state == NodeStateKind.ALIVE:
                alive = Alive(
                    incarnation=remote.incarnation,
                    node=remote.name,
                    addr=remote.addr,
                    port=remote.port or self.config.advertise_port,
                    meta=remote.meta,
                    vsn=remote.vsn,
                )
                self._alive(alive, now)
            elif remote.state == NodeStateKind.LEFT:
                self._dead(
                    Dead(incarnation=remote.incarnation, node=remote.name, from_=remote.name), now
                )
            elif remote.state in (NodeStateKind.DEAD, NodeStateKind.SUSPECT):
                # We only believe what we can check: treat remote deaths as
                # suspicions, so our own probes have a chance to disagree.
                self._suspect(
                    Suspect(incarnation=remote.incarnation, node=remote.name, from_=self.name), now
                )

    # -- state transitions ----------------------------------------------------

    def _broadcast(self, node: str, msg: Message, *, track: bool = False) -> None:
        self._broadcasts.queue(node, encode_message(msg), track=track)

    def _alive(self, a: Alive, now: float, *, bootstrap: bool = False) -> None:
        is_local = a.node == self.name
        if self._left and is_local:
            return
        if len(a.vsn) >= 3 and (a.vsn[0] == 0 or a.vsn[1] == 0 or a.vsn[0] > a.vsn[1]):
            logger.warning("ignoring alive with invalid protocol versions node=%s", a.node)
            return
        if not _valid_addr(a.addr):
            logger.warning("ignoring alive with a malformed address node=%s", a.node)
            return
        node = self._nodes.get(a.node)
        updates_node = False
        if node is None:
            node = _Node(
                name=a.node,
                addr=a.addr,
                port=a.port,
                meta=a.meta,
                incarnation=0,
                state=MemberState.DEAD,
                state_change=now,
            )
            if len(a.vsn) >= 6:
                node.vsn = a.vsn[:6]
            self._nodes[a.node] = node
            self._order.insert(self._rng.randint(0, len(self._order)), a.node)
            updates_node = True
        elif node.addr != a.addr or node.port != a.port:
            if node.state is MemberState.LEFT:
                updates_node = True
            else:
                logger.warning(
                    "conflicting address for member node=%s known=%s:%d claimed=%s:%d; ignoring",
                    a.node,
                    node.host,
                    node.port,
                    str(ipaddress.ip_address(a.addr)),
                    a.port,
                )
                return
        if a.incarnation <= node.incarnation and not is_local and not updates_node:
            return
        if a.incarnation < node.incarnation and is_local:
            return
        self._suspicions.pop(a.node, None)
        old_state, old_meta = node.state, node.meta
        if is_local and not bootstrap:
            if a.incarnation == node.incarnation and a.meta == node.meta and a.vsn == node.vsn:
                return
            self._refute(node, a.incarnation)
            return
        self._broadcast(a.node, a)
        if len(a.vsn) >= 6:
            node.vsn = a.vsn[:6]
        node.incarnation = a.incarnation
        node.meta = a.meta
        node.addr = a.addr
        node.port = a.port
        if node.state is not MemberState.ALIVE:
            node.state = MemberState.ALIVE
            node.state_change = now
        self._failed.pop(a.node, None)
        if old_state in (MemberState.DEAD, MemberState.LEFT):
            self._events.append(MemberEvent(kind=MemberEventKind.JOIN, member=node.member()))
            logger.info("member joined node=%s addr=%s:%d", node.name, node.host, node.port)
        elif old_meta != node.meta:
            self._events.append(MemberEvent(kind=MemberEventKind.UPDATE, member=node.member()))

    def _suspect(self, s: Suspect, now: float) -> None:
        node = self._nodes.get(s.node)
        if node is None or s.incarnation < node.incarnation:
            return
        suspicion = self._suspicions.get(s.node)
        if suspicion is not None:
            if suspicion.confirm(s.from_):
                self._broadcast(s.node, s)
            return
        if node.state is not MemberState.ALIVE:
            return
        if node.name == self.name:
            self._refute(node, s.incarnation)
            return
        self._broadcast(s.node, s)
        node.incarnation = s.incarnation
        node.state = MemberState.SUSPECT
        node.state_change = now
        n = len(self._nodes)
        k = self.config.suspicion_mult - 2
        if n - 2 < k:
            k = 0
        minimum = suspicion_timeout(self.config.suspicion_mult, n, self.config.probe_interval)
        maximum = self.config.suspicion_max_timeout_mult * minimum
        self._suspicions[s.node] = Suspicion(
            accuser=s.from_, k=k, minimum=minimum, maximum=maximum, now=now
        )
        logger.info(
            "member suspected node=%s by=%s; dead in %.1fs unless refuted",
            s.node,
            s.from_,
            maximum if k >= 1 else minimum,
        )

    def _suspicion_expired(self, name: str, suspicion: Suspicion, now: float) -> None:
        del self._suspicions[name]
        node = self._nodes.get(name)
        if (
            node is None
            or node.state is not MemberState.SUSPECT
            or node.state_change != suspicion.start
        ):
            return
        logger.info(
            "suspicion timed out node=%s confirmations=%d; declaring it dead", name, suspicion.n
        )
        self._dead(Dead(incarnation=node.incarnation, node=name, from_=self.name), now)

    def _dead(self, d: Dead, now: float) -> None:
        node = self._nodes.get(d.node)
        if node is None or d.incarnation < node.incarnation:
            return
        self._suspicions.pop(d.node, None)
        if node.state in (MemberState.DEAD, MemberState.LEFT):
            return
        if node.name == self.name:
            if not self._left:
                self._refute(node, d.incarnation)
                return
            self._broadcast(d.node, d, track=True)
        else:
            self._broadcast(d.node, d)
        node.incarnation = d.incarnation
        node.state = MemberState.LEFT if d.node == d.from_ else MemberState.DEAD
        node.state_change = now
        kind = MemberEventKind.LEAVE if node.state is MemberState.LEFT else MemberEventKind.FAILED
        if node.state is MemberState.DEAD:
            self._failed[node.name] = ((node.host, node.port), now)
        self._events.append(MemberEvent(kind=kind, member=node.member()))
        logger.info("member %s node=%s by=%s", node.state.value, d.node, d.from_)

    def _refute(self, me: _Node, accused: int) -> None:
        self._incarnation += 1
        if accused >= self._incarnation:
            self._incarnation = accused + 1
        me.incarnation = self._incarnation
        self._awareness.apply(1)
        logger.info("refuting a rumour about us incarnation=%d", me.incarnation)
        self._broadcast(
            me.name,
            Alive(
                incarnation=me.incarnation,
                node=me.name,
                addr=me.addr,
                port=me.port,
                meta=me.meta,
                vsn=me.vsn,
            ),
        )

    def _any_alive(self) -> bool:
        return any(
            n.name != self.name and n.state is MemberState.ALIVE for n in self._nodes.values()
        )
