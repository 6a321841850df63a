"""What the gateway writes into the catalog about itself, as plain data.

The gateway is its own catalog node (no local agent runs beside it), so it
registers node, service and check in one ``/v1/catalog/register`` body. The
check is a TTL check that the gateway keeps passing itself: it sends the body
again every :func:`refresh_interval` with a new ``Output`` (the refresh
time), which restarts the TTL. A gateway that vanishes without deregistering
stops refreshing, and the leader turns the check critical when its TTL runs
out; anti-entropy then stops publishing the gateway to other datacenters.
No server ever dials the gateway for this: catalog checks are data, and a
server that probed catalog addresses would be a port scanner for anyone who
can write the catalog.

The body is built here without I/O so tests can pin it down exactly; the
process only sends it, on every refresh and whenever :func:`is_registered`
says the catalog lost it (a snapshot restore, an operator's deregister).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import msgspec

from wanfed_agent.config import parse_duration
from wanfed_fsm import (
    MESH_GATEWAY_KIND,
    WAN_FEDERATION_META_KEY,
    CheckServiceNode,
    format_host_port,
)

__all__ = [
    "CHECK_NAME",
    "CHECK_TTL",
    "DEREGISTER_CRITICAL_AFTER",
    "GatewayRegistration",
    "is_registered",
    "refresh_interval",
]

CHECK_NAME: Final = "Mesh Gateway Alive"
CHECK_TTL: Final = "30s"
"""How long the catalog keeps the gateway passing without a refresh."""
REFRESHES_PER_TTL: Final = 3
"""Refreshes sent per TTL: two may be lost (a leader election, a slow server)
before the gateway turns critical."""
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
    check_ttl: str = CHECK_TTL

    def __post_init__(self) -> None:
        try:
            ttl = parse_duration(self.check_ttl)
        except ValueError as exc:
            raise ValueError(f"gateway check TTL: {exc}") from None
        if ttl <= 0:
            raise ValueError(f"gateway check TTL {self.check_ttl!r} must be greater than zero")
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

    def register_body(self, output: str = "") -> dict[str, Any]:
        """The JSON object for ``PUT /v1/catalog/register``: the gateway passing.

        ``output`` must differ from the previous refresh (the process puts
        the time in it): an identical record is not a write, so it would not
        restart the TTL.
        """
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
                "Status": "passing",
                "Output": output,
                "ServiceID": self.service_id,
                "ServiceName": self.service,
                "Definition": {
                    "TTL": self.check_ttl,
                    "DeregisterCriticalServiceAfter": DEREGISTER_CRITICAL_AFTER,
                },
            },
        }

    def deregister_body(self) -> dict[str, Any]:
        """The JSON object for ``PUT /v1/catalog/deregister``: the whole node goes."""
        return {"Datacenter": self.datacenter, "Node": self.node}


def refresh_interval(registration: GatewayRegistration) -> float:
    """Seconds between two refreshes of the gateway's TTL check."""
    return parse_duration(registration.check_ttl) / REFRESHES_PER_TTL


def is_registered(registration: GatewayRegistration, entries: Sequence[CheckServiceNode]) -> bool:
    """Whether the health answer for the gateway's service still shows this gateway
    with its TTL check and the addresses it would register now."""
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
        return any(
            check.check_id == registration.check_id
            and check.definition.ttl == registration.check_ttl
            and not check.definition.tcp
            for check in entry.checks
        )
    return False
