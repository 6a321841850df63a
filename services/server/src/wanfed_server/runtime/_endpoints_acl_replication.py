"""``ACL.ReplicationStatus``: what the leader of a datacenter knows of ACL replication.

The status lives on the leader (only it replicates), so the request goes to
the leader of the datacenter asked (``?dc=``), as Consul's does. Consul
requires no ACL token for it: it says how replication goes, never what was
replicated. ACLs off: ``401 ACL support disabled``, as every ACL route.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from wanfed_fsm import DCSpecificRequest

from ._acl_replication_status import AclReplicationStatus
from ._acl_rules import acl_open
from ._endpoint import Endpoint, EndpointKind
from ._endpoints_acl import AclDisabledError

__all__ = ["acl_replication_endpoints"]


def acl_replication_endpoints(
    status: Callable[[], AclReplicationStatus], *, enabled: bool
) -> list[Endpoint[Any, Any]]:
    async def replication_status(_request: DCSpecificRequest) -> AclReplicationStatus:
        if not enabled:
            raise AclDisabledError
        return status()

    def target(request: DCSpecificRequest) -> str:
        return request.datacenter

    def on_leader(request: DCSpecificRequest) -> DCSpecificRequest:
        # Only the leader replicates: a follower's copy of the status says nothing.
        if request.allow_stale:
            return DCSpecificRequest(datacenter=request.datacenter, token=request.token)
        return request

    return [
        Endpoint(
            "ACL.ReplicationStatus",
            DCSpecificRequest,
            AclReplicationStatus,
            EndpointKind.READ,
            replication_status,
            target,
            on_leader,
            acl_check=acl_open,
        )
    ]
