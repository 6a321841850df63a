"""``/v1/agent/*``: this server's own agent, its gossip view, services and checks."""

from __future__ import annotations

from typing import Any, Final

import msgspec
from aiohttp import web

from wanfed_fsm import HealthCheck, HealthStatus, Service
from wanfed_server.local_agent import parse_service_definition

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
    return json_response(context(request).view.self_info())


async def members(request: web.Request) -> web.Response:
    view = context(request).view
    return json_response(view.members(wan=_truthy(request, "wan")))


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
    return json_response(
        {sid: _agent_service_json(s, agent.datacenter) for sid, s in agent.services().items()}
    )


async def checks(request: web.Request) -> web.Response:
    agent = context(request).agent
    owned = agent.services()
    return json_response(
        {
            cid: _agent_check_json(
                check, owned[check.service_id].tags if check.service_id in owned else []
            )
            for cid, check in agent.checks().items()
        }
    )


async def register_service(request: web.Request) -> web.Response:
    agent = context(request).agent
    definition = parse_service_definition(await read_json(request))
    agent.register_service(
        definition, replace_existing_checks=_truthy(request, "replace-existing-checks")
    )
    return web.Response(status=200)


async def deregister_service(request: web.Request) -> web.Response:
    context(request).agent.deregister_service(request.match_info["service_id"])
    return web.Response(status=200)


async def update_ttl(request: web.Request) -> web.Response:
    status = _TTL_STATUS[request.match_info["verb"]]
    note = request.query.get("note", "")
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
