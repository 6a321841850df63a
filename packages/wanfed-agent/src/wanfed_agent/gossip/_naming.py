"""WAN member names: ``<node>.<datacenter>``.

The datacenter in a member's name is what decides how gossip reaches it (same
datacenter: plain UDP/TCP; another one: TLS through a mesh gateway), and that
TCP fallback pings are pointless across datacenters — those packets already
ride TCP through the gateways.
"""

from __future__ import annotations

from collections.abc import Callable

from ._errors import GossipError

__all__ = ["MemberNameError", "split_member_name", "tcp_pings_allowed_within"]


class MemberNameError(GossipError, ValueError):
    """A WAN member name that does not say which datacenter it is in."""


def split_member_name(name: str) -> tuple[str, str]:
    """Split ``node.dc`` into its node and datacenter; exactly one dot is allowed."""
    parts = name.split(".")
    if len(parts) != 2 or not all(parts):
        raise MemberNameError(f"node name does not encode a datacenter: {name}")
    return parts[0], parts[1]


def tcp_pings_allowed_within(datacenter: str) -> Callable[[str], bool]:
    """A ``tcp_ping_allowed`` policy: fallback pings only inside ``datacenter``.

    Names that do not parse keep TCP pings, as memberlist would without the
    wanfed wrapper: refusing them would only make such members easier to kill.
    """

    def allowed(name: str) -> bool:
        try:
            return split_member_name(name)[1] == datacenter
        except MemberNameError:
            return True

    return allowed
