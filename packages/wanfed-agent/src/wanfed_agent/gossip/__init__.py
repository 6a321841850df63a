"""WAN gossip: a SWIM membership core that speaks hashicorp/memberlist's wire protocol.

The core (:class:`Membership`) does no I/O and reads no clock; an adapter feeds
it packets, streams and the time, and carries out the actions it returns (the
simulator, ``wanfed_sim``, a test-support package, drives many cores in memory
on a virtual clock). :class:`GossipAgent` is that adapter on asyncio, over any
:class:`GossipTransport` (:class:`PlainTransport` is UDP + TCP on one port)::

    config = wan_profile("s1.dc1", "127.0.0.1", 0, meta=encode_tags({"dc": "dc1"}),
                         encrypt=base64_key)
    agent = GossipAgent(config, PlainTransport("127.0.0.1"),
                        tcp_ping_allowed=tcp_pings_allowed_within("dc1"))
    await agent.start()
    await agent.join("s2.dc1/127.0.0.2:8302")
    [(m.name, m.state, m.tags) for m in agent.members()]
    await agent.leave()
    await agent.close()

Go memberlist 0.2.x peers (protocol versions 1-5, AES-GCM keyring, LZW
compression, CRC) join the same pool.
"""

from ._agent import GossipAgent, GossipTransport, PlainTransport
from ._config import GossipConfig, fast_profile, wan_profile
from ._errors import GossipConfigError, GossipDecodeError, GossipError, IncompleteMessage
from ._events import (
    HostPort,
    Member,
    MemberEvent,
    MemberEventKind,
    MemberState,
    SendPacket,
    StreamExchange,
    parse_join_target,
)
from ._keyring import Keyring
from ._membership import Membership
from ._messages import (
    Ack,
    Alive,
    Dead,
    ErrorResponse,
    IndirectPing,
    MessageType,
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
from ._naming import tcp_pings_allowed_within
from ._refusals import RefusalCounts
from ._suspicion import suspicion_timeout
from ._tags import decode_tags, encode_tags

__all__ = [
    "Ack",
    "Alive",
    "Dead",
    "ErrorResponse",
    "GossipAgent",
    "GossipConfig",
    "GossipConfigError",
    "GossipDecodeError",
    "GossipError",
    "GossipTransport",
    "HostPort",
    "IncompleteMessage",
    "IndirectPing",
    "Keyring",
    "Member",
    "MemberEvent",
    "MemberEventKind",
    "MemberState",
    "Membership",
    "MessageType",
    "Nack",
    "NodeStateKind",
    "Ping",
    "PlainTransport",
    "PushNodeState",
    "PushPull",
    "RefusalCounts",
    "SendPacket",
    "StreamExchange",
    "StreamMessageReader",
    "Suspect",
    "UserMessage",
    "decode_packet",
    "decode_tags",
    "encode_compound",
    "encode_message",
    "encode_push_pull",
    "encode_stream_message",
    "encode_tags",
    "fast_profile",
    "parse_join_target",
    "read_stream_message",
    "suspicion_timeout",
    "tcp_pings_allowed_within",
    "wan_profile",
    "with_crc",
]
