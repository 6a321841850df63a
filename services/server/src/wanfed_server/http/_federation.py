"""The read-only federation-state endpoints (Consul's undocumented ``/v1/internal``)."""

from __future__ import annotations

from aiohttp import web

from wanfed_fsm import (
    DatacenterIndexedCheckServiceNodes,
    FederationStateQuery,
    FederationStateResponse,
    IndexedFederationStates,
)

from ._context import context
from ._errors import HttpError
from ._query import datacenter_read, json_response, parse_query, set_meta_headers

__all__ = ["register_federation_routes"]


list_states = datacenter_read(
    "FederationState.List", IndexedFederationStates, lambda reply: reply.states
)
mesh_gateways = datacenter_read(
    "FederationState.ListMeshGateways",
    DatacenterIndexedCheckServiceNodes,
    lambda reply: reply.datacenter_nodes,
)


async def get_state(request: web.Request) -> web.Response:
    """The whole response object (``State`` and the query meta); 404 when absent."""
    ctx = context(request)
    record_dc = request.match_info.get("dc", "")
    if not record_dc:
        raise HttpError(400, "Missing datacenter name")
    params = parse_query(request, ctx.view.datacenter)
    options = params.options()
    reply = await ctx.dispatcher.rpc(
        "FederationState.Get",
        FederationStateQuery(datacenter=record_dc, target_datacenter=params.datacenter, **options),
        FederationStateResponse,
    )
    if reply.state is None:
        response = web.Response(status=404)
        set_meta_headers(response, reply)
        return response
    return json_response(reply, reply)


async def missing_dc(_: web.Request) -> web.Response:
    raise HttpError(400, "Missing datacenter name")


def register_federation_routes(app: web.Application) -> None:
    app.router.add_get("/v1/internal/federation-states", list_states)
    app.router.add_get("/v1/internal/federation-states/mesh-gateways", mesh_gateways)
    app.router.add_get("/v1/internal/federation-state/", missing_dc)
    app.router.add_get("/v1/internal/federation-state", missing_dc)
    app.router.add_get("/v1/internal/federation-state/{dc}", get_state)
