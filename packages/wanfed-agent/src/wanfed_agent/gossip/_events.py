"""What crosses the seam between the membership core and its adapter.

Events (:class:`MemberEvent`) tell the layers above what changed; actions
(:class:`SendPacket`, :class:`StreamExchange`) tell the adapter what to send.
All are frozen structs: the core never shares mutable state with its caller.
"""

from __future__ import annotations

import enum
import functools
import ipaddress

import msgspec

from ._errors import GossipDecodeError
from ._tags import decode_tags

__all__ = [
    "Action",
    "HostPort",
    "Member",
    "MemberEvent",
    "MemberEventKind",
    "MemberState",
    "SendPacket",
    "StreamExchange",
    "parse_join_target",
]

HostPort = tuple[str, int]


class MemberState(enum.StrEnum):
    ALIVE = "alive"
    SUSPECT = "suspect"
    DEAD = "dead"
    LEFT = "left"


class Member(msgspec.Struct, frozen=True, kw_only=True):
    """What the pool knows about one member, as handed to the layers above."""

    name: str
    host: str
    port: int
    meta: bytes
    state: MemberState
    incarnation: int
    protocol: tuple[int, int, int]
    delegate: tuple[int, int, int]

    @property
    def tags(self) -> dict[str, str]:
        """Serf-style tags from the metadata; empty when the meta is not tags.

        Routing reads the tags of every WAN member on each forwarded call, so
        the decoding is cached by the meta bytes (a member's meta changes only
        with its incarnation); each caller gets its own copy to mutate.
        """
        return dict(_decoded_tags(self.meta))


@functools.lru_cache(maxsize=4096)
def _decoded_tags(meta: bytes) -> dict[str, str]:
    try:
        return decode_tags(meta)
    except GossipDecodeError:
        return {}


class MemberEventKind(enum.StrEnum):
    JOIN = "join"
    UPDATE = "update"
    LEAVE = "leave"
    FAILED = "failed"


class MemberEvent(msgspec.Struct, frozen=True, kw_only=True):
    kind: MemberEventKind
    member: Member


class SendPacket(msgspec.Struct, frozen=True, kw_only=True):
    """Send ``data`` as one packet to member ``name`` at ``addr``."""

    name: str
    addr: HostPort
    data: bytes


class StreamExchange(msgspec.Struct, frozen=True, kw_only=True):
    """Open a stream to ``name`` at ``addr``, write ``data``, read one reply.

    Feed the reply to :meth:`Membership.handle_stream_reply` (use
    :meth:`Membership.stream_reader` to know when it is complete) or
    report :meth:`Membership.handle_stream_failure`; give up at ``deadline``.
    """

    stream_id: int
    name: str
    addr: HostPort
    data: bytes
    deadline: float


Action = SendPacket | StreamExchange


def parse_join_target(target: str, default_port: int) -> tuple[str, HostPort]:
    """Split ``name/host[:port]`` (IPv6 in brackets) into a name and address."""
    name, sep, rest = target.partition("/")
    if not sep or not name:
        raise ValueError(f"join target must be name/address, got {target!r}")
    host, port = rest, default_port
    if rest.startswith("["):
        host, _, tail = rest[1:].partition("]")
        if tail.startswith(":"):
            port = int(tail[1:])
    elif rest.count(":") == 1:
        host, port_text = rest.split(":")
        port = int(port_text)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"join address must be an IP address, got {host!r}") from None
    if not 0 < port <= 0xFFFF:
        raise ValueError(f"invalid port in join target {target!r}")
    return name, (host, port)
