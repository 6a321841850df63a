"""Failure detection: SWIM probes, indirect probes through peers, and relaying.

Every probe interval the next member of the round gets a direct ping. No ack
within ``probe_timeout`` sends indirect pings through ``indirect_checks``
random live members (those speaking protocol 4 or later answer with a nack
when they hear nothing either) and, unless the target's datacenter forbids it,
a ping over a stream. No ack by the end of the interval makes us suspect the
member; an ack that came only over the stream means the network drops
packets, not that the member is down. Missed nacks and failed probes raise
our awareness score (we may be the slow one), acks lower it. We also answer
pings and relay indirect pings for others, with a nack when asked for one.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable
from dataclasses import dataclass

from ._config import GossipConfig
from ._dissemination import Outbox, PendingStream
from ._events import HostPort, MemberState
from ._keyring import Keyring
from ._member_table import KnownMember, MemberTable, valid_addr
from ._messages import (
    Ack,
    IndirectPing,
    Nack,
    Ping,
    Suspect,
    encode_compound,
    encode_message,
    encode_stream_message,
)
from ._state_changes import StateChanges
from ._suspicion import Awareness

__all__ = ["FailureDetector"]

logger = logging.getLogger("wanfed_agent.gossip")


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


class FailureDetector:
    """At most one probe of ours in flight, plus the pings we relay for others."""

    def __init__(
        self,
        config: GossipConfig,
        keyring: Keyring | None,
        table: MemberTable,
        outbox: Outbox,
        states: StateChanges,
        awareness: Awareness,
        *,
        addr: bytes,
        tcp_ping_allowed: Callable[[str], bool],
    ) -> None:
        self._config = config
        self._name = config.name
        self._keyring = keyring
        self._table = table
        self._outbox = outbox
        self._states = states
        self._awareness = awareness
        self._addr = addr
        self._tcp_ping_allowed = tcp_ping_allowed
        self._seq = 0
        self._probe_index = 0
        self._probe: _Probe | None = None
        self._relays: dict[int, _Relay] = {}

    def next_deadline(self, deadline: float) -> float:
        probe = self._probe
        if probe is not None:
            deadline = min(deadline, probe.deadline if probe.indirect_sent else probe.timeout_at)
        for relay in self._relays.values():
            deadline = min(deadline, relay.expires)
        return deadline

    def expire_relays(self, now: float) -> None:
        """Relays nobody answered: nack the requester if it asked for one."""
        for seq, relay in list(self._relays.items()):
            if relay.expires <= now:
                del self._relays[seq]
                if relay.want_nack:
                    self._outbox.send_msg(
                        relay.requester, relay.requester_addr, Nack(seq_no=relay.origin_seq)
                    )

    def advance_probe(self, now: float) -> None:
        """Escalate the running probe to indirect pings, or fail it, when its time comes."""
        probe = self._probe
        if probe is not None:
            if not probe.indirect_sent and probe.timeout_at <= now:
                self._probe_indirect(probe, now)
            if probe.indirect_sent and probe.deadline <= now:
                self._probe_failed(probe, now)

    # -- incoming -------------------------------------------------------------

    def on_ping(self, ping: Ping, source: HostPort) -> None:
        if ping.node and ping.node != self._name:
            logger.warning("got ping for another member node=%s from=%s:%d", ping.node, *source)
            return
        addr = _reply_addr(ping.source_addr, ping.source_port, source)
        self._outbox.send_msg(ping.source_node, addr, Ack(seq_no=ping.seq_no))

    def on_indirect_ping(self, req: IndirectPing, source: HostPort, now: float) -> None:
        if not valid_addr(req.target):
            logger.warning("indirect ping with a bad target address from=%s:%d", *source)
            return
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        seq = self._seq
        self._relays[seq] = _Relay(
            origin_seq=req.seq_no,
            requester=req.source_node,
            requester_addr=_reply_addr(req.source_addr, req.source_port, source),
            expires=now + self._config.probe_timeout,
            want_nack=req.nack,
        )
        port = req.port or self._config.advertise_port
        target = (str(ipaddress.ip_address(req.target)), port)
        self._outbox.send_msg(req.node, target, self.ping(seq, req.node))

    def on_ack(self, seq: int) -> None:
        relay = self._relays.pop(seq, None)
        if relay is not None:
            self._outbox.send_msg(
                relay.requester, relay.requester_addr, Ack(seq_no=relay.origin_seq)
            )
            return
        probe = self._probe
        if probe is not None and probe.seq == seq:
            self._probe = None
            self._awareness.apply(-1)

    def on_nack(self, seq: int) -> None:
        if self._probe is not None and self._probe.seq == seq:
            self._probe.nacks += 1

    def on_stream_ack(self, seq: int) -> None:
        """The stream fallback of probe ``seq`` was answered."""
        probe = self._probe
        if probe is not None and probe.seq == seq:
            probe.fallback_ok = True

    def ping(self, seq: int, target: str) -> Ping:
        return Ping(
            seq_no=seq,
            node=target,
            source_addr=self._addr,
            source_port=self._config.advertise_port,
            source_node=self._name,
        )

    # -- our probes -------------------------------------------------------------

    def start_probe(self, now: float) -> None:
        if self._probe is not None:
            return  # the previous probe still runs (its interval was scaled up)
        table = self._table
        checked = 0
        while checked <= len(table.order):
            if self._probe_index >= len(table.order):
                table.new_round(now, self._config.gossip_to_the_dead_time)
                self._probe_index = 0
                checked += 1
                continue
            name = table.order[self._probe_index]
            self._probe_index += 1
            node = table.nodes[name]
            if name == self._name or node.state in (MemberState.DEAD, MemberState.LEFT):
                checked += 1
                continue
            self._probe_node(node, now)
            return

    def _probe_node(self, node: KnownMember, now: float) -> None:
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        interval = self._awareness.scale(self._config.probe_interval)
        self._probe = _Probe(
            seq=self._seq,
            target=node.name,
            timeout_at=now + self._config.probe_timeout,
            deadline=now + interval,
        )
        ping = self.ping(self._seq, node.name)
        addr = (node.host, node.port)
        if node.state is MemberState.ALIVE:
            self._outbox.send_msg(node.name, addr, ping)
        else:
            # Tell a suspect that we suspect it, so it can refute at once.
            accusation = Suspect(incarnation=node.incarnation, node=node.name, from_=self._name)
            packet = encode_compound([encode_message(ping), encode_message(accusation)])
            self._outbox.raw_send(node.name, addr, packet)

    def _probe_indirect(self, probe: _Probe, now: float) -> None:
        probe.indirect_sent = True
        node = self._table.get(probe.target)
        if node is None:
            self._probe = None
            return
        logger.debug("direct ping failed node=%s; trying indirect probes", node.name)
        peers = self._table.random_nodes(
            self._config.indirect_checks,
            lambda n: n.name not in (self._name, node.name) and n.state is MemberState.ALIVE,
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
                source_port=self._config.advertise_port,
                source_node=self._name,
            )
            self._outbox.send_msg(peer.name, (peer.host, peer.port), req)
        if node.pmax >= 3 and self._tcp_ping_allowed(node.name):
            data = encode_stream_message(self.ping(probe.seq, node.name), self._keyring)
            self._outbox.open_stream(
                PendingStream(kind="ping", seq=probe.seq),
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
        node = self._table.get(probe.target)
        if node is None:
            return
        logger.info("probe failed node=%s; suspecting it", node.name)
        self._states.suspect(
            Suspect(incarnation=node.incarnation, node=node.name, from_=self._name), now
        )


def _reply_addr(addr: bytes, port: int, source: HostPort) -> HostPort:
    """Where to answer: the address the sender claims, else where the packet came from."""
    if valid_addr(addr) and port > 0:
        return str(ipaddress.ip_address(addr)), port
    return source
