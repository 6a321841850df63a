"""Catalog entries only the servers write: the ``consul`` service and server nodes.

The leader keeps every server in the catalog as service ``consul`` on the
server's node (with its ``serfHealth`` check), and mesh gateways and clients
read those entries to find servers. Until ACLs exist the catalog is writable
by anyone who reaches the HTTP API or holds a client certificate, so a write
that claims these entries would let anyone pose as a server. Such a write is
refused unless it comes from the servers themselves: this server's own code
(leader reconciliation, its local agent, which registers the server's own
node) or another server of this datacenter (a follower forwarding to the
leader a write it has already checked). A server of another datacenter is
forwarding on behalf of someone this datacenter cannot vouch for, so its
writes are checked here like anyone else's.
"""

from __future__ import annotations

from typing import Final, Protocol

from wanfed_fsm import DeregisterRequest, RegisterRequest

from ._caller import Caller, PermissionDeniedError

__all__ = ["RESERVED_SERVICE", "ReservedCatalogEntries", "ServerNodes"]

RESERVED_SERVICE: Final = "consul"
"""The service name (and ID) the leader registers for every server."""


class ServerNodes(Protocol):
    """Which node names belong to the servers of this datacenter right now."""

    def is_server_node(self, node: str) -> bool: ...


class ReservedCatalogEntries:
    """``authorize`` for ``Catalog.Register`` and ``Catalog.Deregister``."""

    def __init__(self, datacenter: str, servers: ServerNodes) -> None:
        self._datacenter = datacenter.lower()
        self._servers = servers

    def _trusted(self, caller: Caller) -> bool:
        return caller.is_server_of(self._datacenter)

    def _local(self, datacenter: str) -> bool:
        return not datacenter or datacenter.lower() == self._datacenter

    def _check_node(self, node: str, datacenter: str, what: str) -> None:
        # Another datacenter's servers are known only there; it checks on arrival.
        if self._local(datacenter) and self._servers.is_server_node(node):
            raise PermissionDeniedError(
                f"{what} node {node!r}: it is a server of datacenter {self._datacenter}, "
                "and only the servers themselves write their catalog entries"
            )

    def register(self, caller: Caller, request: RegisterRequest) -> None:
        if self._trusted(caller):
            return
        service = request.service
        if service is not None and RESERVED_SERVICE in (
            service.service.lower(),
            service.id.lower(),
        ):
            raise PermissionDeniedError(
                f"cannot register service {service.service!r} (id {service.id!r}): the "
                f"{RESERVED_SERVICE!r} service is reserved for the servers, which the leader "
                "registers itself"
            )
        for check in request.checks:
            if check.service_id.lower() == RESERVED_SERVICE:
                raise PermissionDeniedError(
                    f"cannot register check {check.check_id!r} on service "
                    f"{check.service_id!r}: the {RESERVED_SERVICE!r} service is reserved for "
                    "the servers"
                )
        self._check_node(request.node.node, request.datacenter, "cannot register")

    def deregister(self, caller: Caller, request: DeregisterRequest) -> None:
        if self._trusted(caller):
            return
        if request.service_id.lower() == RESERVED_SERVICE:
            raise PermissionDeniedError(
                f"cannot deregister service {request.service_id!r}: the {RESERVED_SERVICE!r} "
                "service is reserved for the servers"
            )
        self._check_node(request.node, request.datacenter, "cannot deregister from")
