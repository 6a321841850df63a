"""``/v1/internal/service-dump``: every instance of one service kind, with checks.

Consul has no public HTTP form of ``Internal.ServiceDump``; its mesh gateways
call the RPC through their local agent. A wanfed gateway talks only HTTP to
its servers, so this read-only route carries the same query (blocking,
``?dc=`` for another datacenter) as ``?kind=mesh-gateway``.
"""

from __future__ import annotations

from typing import cast, get_args

from aiohttp import web

from wanfed_fsm import IndexedCheckServiceNodes, ServiceKind, ServiceSpecificRequest

from ._context import context
from ._errors import HttpError
from ._query import json_response, parse_query

__all__ = ["register_internal_routes"]

_KINDS = frozenset(get_args(ServiceKind)) - {""}


async def service_dump(request: web.Request) -> web.Response:
    ctx = context(request)
    params = parse_query(request, ctx.view.datacenter)
    kind = request.query.get("kind", "")
    if kind not in _KINDS:
        raise HttpError(400, f"Invalid kind {kind!r}: expected one of {', '.join(sorted(_KINDS))}")
    reply = await ctx.dispatcher.rpc(
        "Internal.ServiceDump",
        ServiceSpecificRequest(
            datacenter=params.datacenter, service_kind=cast(ServiceKind, kind), **params.options()
        ),
        IndexedCheckServiceNodes,
    )
    return json_response(reply.nodes, reply)


def register_internal_routes(app: web.Application) -> None:
    app.router.add_get("/v1/internal/service-dump", service_dump)
