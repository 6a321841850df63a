"""What the gateway writes into the catalog about itself, as plain data.

The gateway is its own catalog node (no local agent runs beside it), so it
registers node, service and check in one ``/v1/catalog/register`` body and
the DC's leader runs the TCP check against the LAN listener. The body is
built here without I/O so tests can pin it down exactly; the process only
sends it, and sends it again whenever :func:`is_registered` says the
catalog lost it (a snapshot restore, an operator's deregister).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import msgspec

from wanfed_fsm import (
    MESH_GATEWAY_KIND,
    WAN_FEDERATION_META_KEY,
    CheckServiceNode,
    format_host_port,
)

__all__ = [
    "CHECK_INTERVAL",
    "CHECK_NAME",
    "DEREGISTER_CRITICAL_AFTER",
    "GatewayRegistration",
    "is_registered",
]

CHECK_NAME: Final = "Mesh Gateway Listening"
CHECK_INTERVAL: Final = "10s"
DEREGISTER_CRITICAL_AFTER: Final = "6h"
"""Long enough to ride out any planned outage, short enough that a gateway
whose process vanished without deregistering eventually disappears."""


class GatewayRegistration(msgspec.Struct, frozen=True, kw_only=True):
    """One gateway's catalog identity; ``lan``/``wan`` are where it is reached."""

    node: str
    datacenter: str
    service: str = "mesh-gateway"
    service_id: str = "mesh-gateway"
    lan_host: str
    lan_port: int
    wan_host: str
    wan_port: int
    expose_servers: bool = False

    def __post_init__(self) -> None:
        if not self.node:
            raise ValueError("gateway node name must not be empty")
        if not self.service:
            raise ValueError("gateway service name must not be empty")
        for what, host, port in (
            ("LAN", self.lan_host, self.lan_port),
            ("WAN", self.wan_host, self.wan_port),
        ):
            if not host:
                raise ValueError(f"gateway {what} address has no host")
            if not 0 < port <= 0xFFFF:
                raise ValueError(f"gateway {what} port {port} is outside 1..65535")

    @property
    def check_id(self) -> str:
        return f"service:{self.service_id}"

    @property
    def lan_address(self) -> str:
        return format_host_port(self.lan_host, self.lan_port)

    def register_body(self) -> dict[str, Any]:
        """The JSON object for ``PUT /v1/catalog/register``."""
        meta = {WAN_FEDERATION_META_KEY: "1"} if self.expose_servers else {}
        return {
            "Datacenter": self.datacenter,
            "Node": self.node,
            "Address": self.lan_host,
            "TaggedAddresses": {"lan": self.lan_host, "wan": self.wan_host},
            "Service": {
                "Kind": MESH_GATEWAY_KIND,
                "ID": self.service_id,
                "Service": self.service,
                "Address": self.lan_host,
                "Port": self.lan_port,
                "TaggedAddresses": {
                    "lan": {"Address": self.lan_host, "Port": self.lan_port},
                    "wan": {"Address": self.wan_host, "Port": self.wan_port},
                },
                "Meta": meta,
            },
            "Check": {
                "Node": self.node,
                "CheckID": self.check_id,
                "Name": CHECK_NAME,
                "Status": "critical",
                "ServiceID": self.service_id,
                "ServiceName": self.service,
                "Definition": {
                    "TCP": self.lan_address,
                    "Interval": CHECK_INTERVAL,
                    "DeregisterCriticalServiceAfter": DEREGISTER_CRITICAL_AFTER,
                },
            },
        }

    def deregister_body(self) -> dict[str, Any]:
        """The JSON object for ``PUT /v1/catalog/deregister``: the whole node goes."""
        return {"Datacenter": self.datacenter, "Node": self.node}


def is_registered(registration: GatewayRegistration, entries: Sequence[CheckServiceNode]) -> bool:
    """Whether the health answer for the gateway's service still shows this gateway
    with its check and the addresses it would register now."""
    for entry in entries:
        if entry.node.node != registration.node:
            continue
        service = entry.service
        if service.service_id != registration.service_id:
            continue
        if (service.address, service.port) != (registration.lan_host, registration.lan_port):
            return False
        wan = service.tagged_addresses.get("wan")
        if wan is None or (wan.address, wan.port) != (registration.wan_host, registration.wan_port):
            return False
        if (service.meta.get(WAN_FEDERATION_META_KEY) == "1") != registration.expose_servers:
            return False
        return any(check.check_id == registration.check_id for check in entry.checks)
    return False
