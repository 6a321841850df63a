"""The seams inside the server: what the HTTP API and the local agent need from
the server runtime, declared here so that each side can be built and tested
alone (the HTTP API against a fake, the runtime without HTTP).

Every call that reads or writes the catalog goes through :meth:`RpcDispatcher.rpc`
with the same method names and request Structs as the RPC port, so an HTTP
request, a local agent sync and a remote server's RPC all take one path:
forwarding to another datacenter (``Datacenter`` field) or to the leader
happens behind it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, TypeVar, runtime_checkable

import msgspec

if TYPE_CHECKING:  # only an annotation: `wanfed members` should not load the locator
    from wanfed_gateway_locator import LocatorStatus

__all__ = ["FederationStatusSource", "Member", "MemberStatus", "RpcDispatcher", "ServerView"]

T = TypeVar("T")


class RpcDispatcher(Protocol):
    """Runs one RPC method as if it had arrived on the RPC port.

    Raises :class:`wanfed_proto.RemoteError` with the endpoint's message when
    the method fails (``No path to datacenter``, validation errors, ...), and
    :class:`wanfed_proto.TransportError` when forwarding lost its connection.
    """

    async def rpc(self, method: str, args: msgspec.Struct, reply_type: type[T]) -> T: ...


class MemberStatus:
    """Serf member status numbers, as Consul's ``/v1/agent/members`` reports them."""

    NONE = 0
    ALIVE = 1
    LEAVING = 2
    LEFT = 3
    FAILED = 4


class Member(msgspec.Struct, frozen=True, kw_only=True, rename="pascal"):
    """One gossip member, in the JSON shape of ``/v1/agent/members``."""

    name: str
    addr: str
    port: int
    tags: dict[str, str] = msgspec.field(default_factory=dict)
    status: int = MemberStatus.ALIVE
    protocol_min: int = 1
    protocol_max: int = 5
    protocol_cur: int = 2
    delegate_min: int = 2
    delegate_max: int = 5
    delegate_cur: int = 4


class ServerView(Protocol):
    """What the HTTP API and CLI read about the running server itself."""

    @property
    def datacenter(self) -> str: ...

    @property
    def node_name(self) -> str: ...

    def is_leader(self) -> bool: ...

    def leader_rpc_address(self) -> str | None:
        """``host:port`` of the leader's RPC port, as ``/v1/status/leader`` shows it."""
        ...

    def members(self, *, wan: bool) -> list[Member]:
        """LAN: this datacenter's servers; WAN: the WAN gossip pool."""
        ...

    def self_info(self) -> dict[str, object]:
        """The ``/v1/agent/self`` document (``Config``, ``Member``, ``Stats``...)."""
        ...


@runtime_checkable
class FederationStatusSource(Protocol):
    """A server running WAN federation via mesh gateways can explain its routes."""

    def federation_status(self) -> LocatorStatus | None:
        """The gateway locator's view; ``None`` when the feature is off."""
        ...
