"""ACL decisions of the routes that do not go through an RPC endpoint.

Catalog, health, federation-state and ACL routes are decided by their RPC
endpoint, on the server that answers. The routes below read this server's
own agent or view, so they decide here, with the request's token resolved
by this server (``ApiContext.acl``; without one, as with ACLs off,
everything is allowed). Consul's rules: ``/v1/agent/self`` needs
``agent:read`` on this node, ``/v1/agent/members`` lists only the members the
token may ``node:read``, an agent's services and checks are filtered by
``service:read`` / ``node:read``, registering or deregistering a service
needs ``service:write`` on it, a TTL update ``service:write`` on the check's
service (``node:write`` on the node for a node check); the server directory
(the servers' addresses) needs ``service:read`` on ``consul``, and the
federation routes ``operator:read``.
"""

from __future__ import annotations

from typing import Final

from aiohttp import web

from wanfed_fsm import Authorizer
from wanfed_server.runtime import AclSubject

from ._context import context
from ._query import request_token

__all__ = ["FILTERED_HEADER", "acl_subject", "mark_filtered"]

FILTERED_HEADER: Final = "X-Consul-Results-Filtered-By-ACLs"


def acl_subject(request: web.Request) -> AclSubject:
    """The request's token, resolved; raises ``ACL not found`` for an unknown secret."""
    resolver = context(request).acl
    if resolver is None:
        return AclSubject(Authorizer.management())
    return resolver.resolve(request_token(request))


def mark_filtered(response: web.StreamResponse, filtered: bool) -> None:
    if filtered:
        response.headers[FILTERED_HEADER] = "true"
