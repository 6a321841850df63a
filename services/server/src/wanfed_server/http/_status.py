"""``/v1/status/*``: who leads, and who votes, in a datacenter."""

from __future__ import annotations

from aiohttp import web

from wanfed_fsm import DCSpecificRequest

from ._context import context
from ._query import json_response

__all__ = ["register_status_routes"]


async def leader(request: web.Request) -> web.Response:
    """The leader's RPC ``host:port`` as a JSON string; ``""`` while there is none."""
    ctx = context(request)
    dc = request.query.get("dc") or ctx.view.datacenter
    address = await ctx.dispatcher.rpc("Status.Leader", DCSpecificRequest(datacenter=dc), str)
    return json_response(address or "")


async def peers(request: web.Request) -> web.Response:
    ctx = context(request)
    dc = request.query.get("dc") or ctx.view.datacenter
    addresses = await ctx.dispatcher.rpc(
        "Status.Peers", DCSpecificRequest(datacenter=dc), list[str]
    )
    return json_response(addresses or [])


def register_status_routes(app: web.Application) -> None:
    app.router.add_get("/v1/status/leader", leader)
    app.router.add_get("/v1/status/peers", peers)
