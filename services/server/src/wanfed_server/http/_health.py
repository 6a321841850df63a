"""``/v1/health/*``: service instances with their checks, and a node's checks."""

from __future__ import annotations

from aiohttp import web

from wanfed_fsm import IndexedCheckServiceNodes, ServiceSpecificRequest
from wanfed_server.runtime import IndexedHealthChecks, NodeSpecificRequest

from ._context import context
from ._query import filter_by_tag, json_response, parse_query

__all__ = ["register_health_routes"]


def _flag(request: web.Request, name: str) -> bool:
    """``?passing``, ``?passing=1`` and ``?passing=true`` set it; ``?passing=false`` does not."""
    if name not in request.query:
        return False
    return request.query[name].lower() not in ("0", "false", "no")


async def service(request: web.Request) -> web.Response:
    ctx = context(request)
    params = parse_query(request, ctx.view.datacenter)
    reply = await ctx.dispatcher.rpc(
        "Health.ServiceNodes",
        ServiceSpecificRequest(
            datacenter=params.datacenter,
            service_name=request.match_info["name"],
            passing_only=_flag(request, "passing"),
            **params.options(),
        ),
        IndexedCheckServiceNodes,
    )
    return json_response(filter_by_tag(request, reply.nodes), reply)


async def node(request: web.Request) -> web.Response:
    ctx = context(request)
    params = parse_query(request, ctx.view.datacenter)
    reply = await ctx.dispatcher.rpc(
        "Health.NodeChecks",
        NodeSpecificRequest(
            datacenter=params.datacenter, node=request.match_info["node"], **params.options()
        ),
        IndexedHealthChecks,
    )
    return json_response(reply.health_checks, reply)


def register_health_routes(app: web.Application) -> None:
    app.router.add_get("/v1/health/service/{name}", service)
    app.router.add_get("/v1/health/node/{node}", node)
