"""WAN member names: ``<node>.<datacenter>``.

The datacenter in a member's name is what decides how gossip reaches it (same
datacenter: plain UDP/TCP; another one: TLS through a mesh gateway), and that
TCP fallback pings are pointless across datacenters — those packets already
ride TCP through the gateways. Names split by :func:`wanfed_proto.split_node_name`,
the one rule every member shares.
"""

from __future__ import annotations

from collections.abc import Callable

from wanfed_proto import InvalidNameError, split_node_name

__all__ = ["tcp_pings_allowed_within"]


def tcp_pings_allowed_within(datacenter: str) -> Callable[[str], bool]:
    """A ``tcp_ping_allowed`` policy: fallback pings only inside ``datacenter``.

    Names that do not parse keep TCP pings, as memberlist would without the
    wanfed wrapper: refusing them would only make such members easier to kill.
    """

    def allowed(name: str) -> bool:
        try:
            return split_node_name(name)[1] == datacenter
        except InvalidNameError:
            return True

    return allowed
