"""``GET /v1/acl/replication``: how ACL replication goes in a datacenter, Consul's shape.

One ``ACL.ReplicationStatus`` RPC to the leader of the datacenter asked
(``?dc=``), which is the only server that replicates. No token needed, as in
Consul. The answer never invents progress: a replication that has not run
shows the zero time and an empty ``LastErrorMessage``.
"""

from __future__ import annotations

from aiohttp import web

from wanfed_fsm import DCSpecificRequest
from wanfed_server.runtime import AclReplicationStatus

from ._context import context
from ._query import json_response, request_token

__all__ = ["register_acl_replication_routes"]


async def replication_status(request: web.Request) -> web.Response:
    ctx = context(request)
    datacenter = request.query.get("dc") or ctx.view.datacenter
    status = await ctx.dispatcher.rpc(
        "ACL.ReplicationStatus",
        DCSpecificRequest(datacenter=datacenter, token=request_token(request)),
        AclReplicationStatus,
    )
    return json_response(status)


def register_acl_replication_routes(app: web.Application) -> None:
    app.router.add_get("/v1/acl/replication", replication_status)
