"""WAN gossip: a SWIM membership core that speaks hashicorp/memberlist's wire protocol.

The core (:class:`Membership`) does no I/O and reads no clock; an adapter feeds
it packets, streams and the time, and carries out the actions it returns.
:class:`SimulatedNetwork` is such an adapter in memory, with a virtual clock.
"""

from ._agent import GossipAgent, GossipTransport, PlainTransport
from ._config import GossipConfig, fast_profile, wan_profile
from ._errors import GossipConfigError, GossipDecodeError, GossipError, IncompleteMessage
from ._keyring import Keyring
from ._membership import (
    HostPort,
    Member,
    MemberEvent,
    MemberEventKind,
    Membership,
    MemberState,
    SendPacket,
    StreamExchange,
    parse_join_target,
)
from ._simulation import SimulatedNetwork
from ._suspicion import suspicion_timeout
from ._tags import decode_tags, encode_tags

__all__ = [
    "GossipAgent",
    "GossipConfig",
    "GossipConfigError",
    "GossipDecodeError",
    "GossipError",
    "GossipTransport",
    "HostPort",
    "IncompleteMessage",
    "Keyring",
    "Member",
    "MemberEvent",
    "MemberEventKind",
    "MemberState",
    "Membership",
    "PlainTransport",
    "SendPacket",
    "SimulatedNetwork",
    "StreamExchange",
    "decode_tags",
    "encode_tags",
    "fast_profile",
    "parse_join_target",
    "suspicion_timeout",
    "wan_profile",
]
