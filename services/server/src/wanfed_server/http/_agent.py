"""``/v1/agent/*``: this server's own agent, its gossip view, services and checks."""

from __future__ import annotations

from typing import Any, Final

import msgspec
from aiohttp import web

from wanfed_fsm import Authorizer, HealthCheck, HealthStatus, Service
from wanfed_server.local_agent import parse_service_definition

from ._acl_guard import acl_subject, mark_filtered
from ._body import read_json
from ._context import context
from ._query import json_response

__all__ = ["register_agent_routes"]

_TTL_STATUS: Final[dict[str, HealthStatus]] = {
    "pass": "passing",
    "warn": "warning",
    "fail": "critical",
}


def _truthy(request: web.Request, name: str) -> bool:
    value = request.query.get(name)
    return value is not None and value.lower() not in ("0", "false", "no")


async def self_(request: web.Request) -> web.Response:
    view = context(request).view
    subject = acl_subject(request)
    subject.require(subject.authorizer.agent_read(view.node_name), "agent:read", view.node_name)
    return json_response(view.self_info())


async def members(request: web.Request) -> web.Response:
    view = context(request).view
    subject = acl_subject(request)
    found = view.members(wan=_truthy(request, "wan"))
    kept = [m for m in found if subject.authorizer.node_read(m.name)]
    response = json_response(kept)
    mark_filtered(response, len(kept) != len(found))
    return response


def _agent_service_json(service: Service, datacenter: str) -> dict[str, Any]:
    """Consul's ``AgentService`` shape, as ``/v1/agent/services`` shows it."""
    body: dict[str, Any] = {
        "ID": service.service_id,
        "Service": service.service,
        "Tags": service.tags,
        "Meta": service.meta,
        "Port": service.port,
        "Address": service.address,
        "TaggedAddresses": service.tagged_addresses,
        "Weights": {"Passing": 1, "Warning": 1},
        "EnableTagOverride": False,
        "Datacenter": datacenter,
    }
    if service.kind:
        body["Kind"] = service.kind
    return body


def _agent_check_json(check: HealthCheck, tags: list[str]) -> dict[str, Any]:
    body: dict[str, Any] = msgspec.to_builtins(check)
    body["ServiceTags"] = tags
    body["Type"] = "ttl" if check.definition.ttl else "tcp" if check.definition.tcp else ""
    return body


async def services(request: web.Request) -> web.Response:
    agent = context(request).agent
    authorizer = acl_subject(request).authorizer
    owned = agent.services()
    kept = {sid: s for sid, s in owned.items() if authorizer.service_read(s.service)}
    response = json_response(
        {sid: _agent_service_json(s, agent.datacenter) for sid, s in kept.items()}
    )
    mark_filtered(response, len(kept) != len(owned))
    return response


def _check_service(check: HealthCheck, owned: dict[str, Service]) -> str:
    """The name of the service ``check`` belongs to, ``""`` for a node check."""
    known = owned.get(check.service_id) if check.service_id else None
    return known.service if known is not None else check.service_name


def _check_readable(authorizer: Authorizer, check: HealthCheck, owned: dict[str, Service]) -> bool:
    name = _check_service(check, owned)
    return authorizer.service_read(name) if name else authorizer.node_read(check.node)


async def checks(request: web.Request) -> web.Response:
    agent = context(request).agent
    authorizer = acl_subject(request).authorizer
    owned = agent.services()
    found = agent.checks()
    kept = {cid: c for cid, c in found.items() if _check_readable(authorizer, c, owned)}
    response = json_response(
        {
            cid: _agent_check_json(
                check, owned[check.service_id].tags if check.service_id in owned else []
            )
            for cid, check in kept.items()
        }
    )
    mark_filtered(response, len(kept) != len(found))
    return response


async def register_service(request: web.Request) -> web.Response:
    agent = context(request).agent
    definition = parse_service_definition(await read_json(request))
    subject = acl_subject(request)
    name = definition.service.service
    subject.require(subject.authorizer.service_write(name), "service:write", name)
    agent.register_service(
        definition, replace_existing_checks=_truthy(request, "replace-existing-checks")
    )
    return web.Response(status=200)


async def deregister_service(request: web.Request) -> web.Response:
    agent = context(request).agent
    service_id = request.match_info["service_id"]
    subject = acl_subject(request)
    known = agent.services().get(service_id)
    if known is not None:
        name = known.service
        subject.require(subject.authorizer.service_write(name), "service:write", name)
    else:  # nothing to learn about unknown IDs without a right to write something
        subject.require(subject.authorizer.service_write(service_id), "service:write", service_id)
    agent.deregister_service(service_id)
    return web.Response(status=200)


async def update_ttl(request: web.Request) -> web.Response:
    status = _TTL_STATUS[request.match_info["verb"]]
    note = request.query.get("note", "")
    agent = context(request).agent
    subject = acl_subject(request)
    check = agent.checks().get(request.match_info["check_id"])
    name = "" if check is None else _check_service(check, agent.services())
    if name:
        subject.require(subject.authorizer.service_write(name), "service:write", name)
    else:
        node = context(request).view.node_name
        subject.require(subject.authorizer.node_write(node), "node:write", node)
    context(request).agent.update_ttl(request.match_info["check_id"], status, note)
    return web.Response(status=200)


def register_agent_routes(app: web.Application) -> None:
    app.router.add_get("/v1/agent/self", self_)
    app.router.add_get("/v1/agent/members", members)
    app.router.add_get("/v1/agent/services", services)
    app.router.add_get("/v1/agent/checks", checks)
    app.router.add_put("/v1/agent/service/register", register_service)
    app.router.add_put("/v1/agent/service/deregister/{service_id}", deregister_service)
    app.router.add_put("/v1/agent/check/{verb:pass|warn|fail}/{check_id}", update_ttl)
