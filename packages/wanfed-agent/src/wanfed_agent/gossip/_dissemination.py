"""Everything a member sends: packets carrying piggybacked broadcasts, and streams.

Every packet we send (pings, acks, relayed probes) fills its spare room, up to
the UDP buffer size, with pending broadcasts from the :class:`BroadcastQueue`;
the gossip tick sends packets of nothing but broadcasts to a few random live
(or recently dead) members. Packets to members speaking protocol 5 or later
carry a CRC; with a keyring every packet is encrypted. Stream exchanges
(push/pull, the TCP fallback ping) are numbered so their replies can be matched.
The sends are queued as actions for the adapter to carry out.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._broadcasts import BroadcastQueue, retransmit_limit
from ._config import GossipConfig
from ._events import Action, HostPort, MemberState, SendPacket, StreamExchange
from ._keyring import Keyring
from ._member_table import KnownMember, MemberTable
from ._messages import Message, encode_compound, encode_message, with_crc

__all__ = ["Outbox", "PendingStream"]

_COMPOUND_HEADER_OVERHEAD = 2
_COMPOUND_OVERHEAD = 2
_ENCRYPT_OVERHEAD = 29


@dataclass(slots=True)
class PendingStream:
    """A stream exchange we opened and whose reply we await."""

    kind: str  # "push_pull" or "ping"
    seq: int = 0
    join: bool = False


class Outbox:
    """Queues sends as actions; reads only sizes and timings from ``config``."""

    def __init__(self, config: GossipConfig, keyring: Keyring | None, table: MemberTable) -> None:
        self._config = config
        self._keyring = keyring
        self._table = table
        self.broadcasts = BroadcastQueue()
        self._actions: list[Action] = []
        self._streams: dict[int, PendingStream] = {}
        self._stream_seq = 0

    def drain(self) -> list[Action]:
        actions, self._actions = self._actions, []
        return actions

    def broadcast(self, node: str, msg: Message, *, track: bool = False) -> None:
        """Queue news about ``node``; it replaces older news about the same member."""
        self.broadcasts.queue(node, encode_message(msg), track=track)

    def send_msg(self, name: str, addr: HostPort, msg: Message) -> None:
        """Send one message with as many pending broadcasts piggybacked as fit."""
        encoded = encode_message(msg)
        avail = self._config.udp_buffer_size - len(encoded) - _COMPOUND_HEADER_OVERHEAD
        if self._keyring is not None:
            avail -= _ENCRYPT_OVERHEAD
        extra = self._take_broadcasts(avail)
        packet = encode_compound([encoded, *extra]) if extra else encoded
        self.raw_send(name, addr, packet)

    def raw_send(self, name: str, addr: HostPort, packet: bytes) -> None:
        node = self._table.get(name)
        if node is not None and node.pmax >= 5:
            packet = with_crc(packet)
        if self._keyring is not None:
            packet = self._keyring.encrypt(packet)
        self._actions.append(SendPacket(name=name, addr=addr, data=packet))

    def _take_broadcasts(self, avail: int) -> list[bytes]:
        limit = retransmit_limit(self._config.retransmit_mult, len(self._table))
        return self.broadcasts.take(_COMPOUND_OVERHEAD, avail, limit)[:254]

    def gossip(self, now: float) -> None:
        """The gossip tick: pending broadcasts to ``gossip_nodes`` random members."""
        if not len(self.broadcasts):
            return  # nothing to spread; skip picking peers
        config = self._config

        def gossipable(n: KnownMember) -> bool:
            if n.name == config.name:
                return False
            if n.state in (MemberState.ALIVE, MemberState.SUSPECT):
                return True
            return (
                n.state is MemberState.DEAD
                and now - n.state_change <= config.gossip_to_the_dead_time
            )

        avail = config.udp_buffer_size - _COMPOUND_HEADER_OVERHEAD
        if self._keyring is not None:
            avail -= _ENCRYPT_OVERHEAD
        for node in self._table.random_nodes(config.gossip_nodes, gossipable):
            msgs = self._take_broadcasts(avail)
            if not msgs:
                return
            packet = msgs[0] if len(msgs) == 1 else encode_compound(msgs)
            self.raw_send(node.name, (node.host, node.port), packet)

    def open_stream(
        self, stream: PendingStream, name: str, addr: HostPort, data: bytes, deadline: float
    ) -> StreamExchange:
        self._stream_seq += 1
        self._streams[self._stream_seq] = stream
        action = StreamExchange(
            stream_id=self._stream_seq, name=name, addr=addr, data=data, deadline=deadline
        )
        self._actions.append(action)
        return action

    def close_stream(self, stream_id: int) -> PendingStream | None:
        """The exchange ended (reply or failure); None if it was not ours or already ended."""
        return self._streams.pop(stream_id, None)
