"""``/v1/catalog/*``: the catalog as Consul's HTTP API shows it."""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from wanfed_fsm import (
    DCSpecificRequest,
    DeregisterRequest,
    HealthCheck,
    HealthCheckDefinition,
    IndexedNodes,
    IndexedServiceNodes,
    IndexedServices,
    Node,
    RegisterRequest,
    Service,
    ServiceAddress,
    ServiceNode,
    ServiceSpecificRequest,
)

from ._body import canonical_keys, read_json
from ._context import context
from ._errors import HttpError
from ._query import datacenter_read, filter_by_tag, json_response, parse_query, request_token

__all__ = ["register_catalog_routes", "service_node_json"]


def _names(*types: type[msgspec.Struct]) -> set[str]:
    return {field.encode_name for t in types for field in msgspec.structs.fields(t)}


_FIELD_NAMES = (
    _names(RegisterRequest, DeregisterRequest, Node, Service, ServiceAddress, HealthCheck)
    | _names(HealthCheckDefinition)
    | {"NodeMeta", "Check", "Checks"}
)


def service_node_json(entry: ServiceNode) -> dict[str, Any]:
    """Consul's flat ``ServiceNode`` shape of ``/v1/catalog/service/<name>``."""
    node, service = entry.node, entry.service
    return {
        "ID": node.id,
        "Node": node.node,
        "Address": node.address,
        "Datacenter": node.datacenter,
        "TaggedAddresses": node.tagged_addresses,
        "NodeMeta": node.meta,
        "ServiceKind": service.kind,
        "ServiceID": service.service_id,
        "ServiceName": service.service,
        "ServiceTags": service.tags,
        "ServiceAddress": service.address,
        "ServiceTaggedAddresses": service.tagged_addresses,
        "ServiceMeta": service.meta,
        "ServicePort": service.port,
        "ServiceEnableTagOverride": False,
        "CreateIndex": service.create_index,
        "ModifyIndex": service.modify_index,
    }


async def datacenters(request: web.Request) -> web.Response:
    ctx = context(request)
    names = await ctx.dispatcher.rpc(
        "Catalog.ListDatacenters", DCSpecificRequest(datacenter=ctx.view.datacenter), list[str]
    )
    return json_response(names or [])


nodes = datacenter_read("Catalog.ListNodes", IndexedNodes, lambda reply: reply.nodes)
services = datacenter_read("Catalog.ListServices", IndexedServices, lambda reply: reply.services)


async def service(request: web.Request) -> web.Response:
    ctx = context(request)
    params = parse_query(request, ctx.view.datacenter)
    name = request.match_info["name"]
    reply = await ctx.dispatcher.rpc(
        "Catalog.ServiceNodes",
        ServiceSpecificRequest(datacenter=params.datacenter, service_name=name, **params.options()),
        IndexedServiceNodes,
    )
    entries = filter_by_tag(request, reply.service_nodes)
    return json_response([service_node_json(entry) for entry in entries], reply)


def _register_request(body: object, datacenter: str, token: str) -> RegisterRequest:
    fields = canonical_keys(body, _FIELD_NAMES)
    if not isinstance(fields, dict):
        raise HttpError(400, "Request decode failed: expected a JSON object")
    node_name = fields.get("Node")
    if not isinstance(node_name, str) or not node_name:
        raise HttpError(400, "Missing node name")
    address = fields.get("Address")
    if not isinstance(address, str) or not address:
        raise HttpError(400, "Missing node address")
    node = msgspec.convert(
        {
            "ID": fields.get("ID") or "",
            "Node": node_name,
            "Address": address,
            "Datacenter": fields.get("Datacenter") or datacenter,
            "TaggedAddresses": fields.get("TaggedAddresses") or {},
            "Meta": fields.get("NodeMeta") or {},
        },
        Node,
    )
    service = None
    if fields.get("Service") is not None:
        raw_service = fields["Service"]
        if not isinstance(raw_service, dict) or not raw_service.get("Service"):
            raise HttpError(400, "Invalid service: Service name is missing")
        service = msgspec.convert(raw_service, Service)
    raw_checks: list[object] = []
    if fields.get("Check") is not None:
        raw_checks.append(fields["Check"])
    if fields.get("Checks") is not None:
        if not isinstance(fields["Checks"], list):
            raise HttpError(400, "Request decode failed: Checks must be a list")
        raw_checks.extend(fields["Checks"])
    checks: list[HealthCheck] = []
    for raw_check in raw_checks:
        if not isinstance(raw_check, dict):
            raise HttpError(400, "Request decode failed: a check must be a JSON object")
        check = {"Status": "critical", **raw_check}
        if not check.get("Node"):
            check["Node"] = node_name
        if not check.get("CheckID"):
            check["CheckID"] = check.get("Name") or ""
        if not check.get("CheckID"):
            raise HttpError(400, "Invalid check: CheckID or Name is required")
        checks.append(msgspec.convert(check, HealthCheck))
    skip_node_update = fields.get("SkipNodeUpdate", False)
    if not isinstance(skip_node_update, bool):
        raise HttpError(400, "Request decode failed: SkipNodeUpdate must be true or false")
    return RegisterRequest(
        datacenter=str(fields.get("Datacenter") or datacenter),
        node=node,
        service=service,
        checks=checks,
        skip_node_update=skip_node_update,
        token=token,
    )


async def register(request: web.Request) -> web.Response:
    ctx = context(request)
    dc = request.query.get("dc") or ctx.view.datacenter
    args = _register_request(await read_json(request), dc, request_token(request))
    ok = await ctx.dispatcher.rpc("Catalog.Register", args, bool)
    return json_response(bool(ok) or ok is None)


async def deregister(request: web.Request) -> web.Response:
    ctx = context(request)
    fields = canonical_keys(await read_json(request), _FIELD_NAMES)
    if not isinstance(fields, dict):
        raise HttpError(400, "Request decode failed: expected a JSON object")
    if not fields.get("Node"):
        raise HttpError(400, "Missing node name")
    dc = request.query.get("dc") or ctx.view.datacenter
    args = msgspec.convert(
        {
            "Datacenter": fields.get("Datacenter") or dc,
            "Node": fields["Node"],
            "ServiceID": fields.get("ServiceID") or "",
            "CheckID": fields.get("CheckID") or "",
            "Token": request_token(request),
        },
        DeregisterRequest,
    )
    ok = await ctx.dispatcher.rpc("Catalog.Deregister", args, bool)
    return json_response(bool(ok) or ok is None)


def register_catalog_routes(app: web.Application) -> None:
    app.router.add_get("/v1/catalog/datacenters", datacenters)
    app.router.add_get("/v1/catalog/nodes", nodes)
    app.router.add_get("/v1/catalog/services", services)
    app.router.add_get("/v1/catalog/service/{name}", service)
    app.router.add_put("/v1/catalog/register", register)
    app.router.add_put("/v1/catalog/deregister", deregister)
