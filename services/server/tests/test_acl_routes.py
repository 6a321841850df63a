"""Every route of the HTTP API has an ACL decision.

With ACLs on and ``default_policy = "deny"``, an anonymous request is refused
(403) on every route except the ones Consul leaves open, and list routes
leave out what the anonymous token may not read (marking the answer with
``X-Consul-Results-Filtered-By-ACLs``). The table below names every route
of the application; a route added without an entry fails this test, so
nobody adds a route without deciding who may use it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final

import aiohttp
import pytest

from wanfed_server.http import HttpApi, start_http_api
from wanfed_server.runtime import Server

OPEN: Final = "open"
"""Consul answers these without a token."""
DENIED: Final = "denied"
FILTERED: Final = "filtered"
"""200, and something the catalog holds (the server's own node, service, check,
member) was left out."""
EMPTY: Final = "empty"
"""200 with nothing in it: there is nothing this datacenter could show (no gateway,
no agent service), so nothing was filtered either."""
INVALID: Final = "invalid"
"""400 before any data is touched (a path that names nothing)."""

_REGISTER: Final = {"Node": "web-node", "Address": "10.0.0.9", "Service": {"Service": "web"}}

ROUTES: Final[dict[tuple[str, str], tuple[str, str, Any]]] = {
    # (method, route) -> (decision, concrete path, JSON body)
    ("GET", "/v1/status/leader"): (OPEN, "/v1/status/leader", None),
    ("GET", "/v1/status/peers"): (OPEN, "/v1/status/peers", None),
    ("GET", "/v1/catalog/datacenters"): (OPEN, "/v1/catalog/datacenters", None),
    ("GET", "/v1/acl/replication"): (OPEN, "/v1/acl/replication", None),
    ("GET", "/v1/catalog/nodes"): (FILTERED, "/v1/catalog/nodes", None),
    ("GET", "/v1/catalog/services"): (FILTERED, "/v1/catalog/services", None),
    ("GET", "/v1/catalog/service/{name}"): (FILTERED, "/v1/catalog/service/consul", None),
    ("PUT", "/v1/catalog/register"): (DENIED, "/v1/catalog/register", _REGISTER),
    ("PUT", "/v1/catalog/deregister"): (DENIED, "/v1/catalog/deregister", {"Node": "s1"}),
    ("GET", "/v1/health/service/{name}"): (FILTERED, "/v1/health/service/consul", None),
    ("GET", "/v1/health/node/{node}"): (FILTERED, "/v1/health/node/s1", None),
    ("GET", "/v1/internal/service-dump"): (
        EMPTY,
        "/v1/internal/service-dump?kind=mesh-gateway",
        None,
    ),
    ("GET", "/v1/agent/self"): (DENIED, "/v1/agent/self", None),
    ("GET", "/v1/agent/members"): (FILTERED, "/v1/agent/members", None),
    ("GET", "/v1/agent/services"): (EMPTY, "/v1/agent/services", None),
    ("GET", "/v1/agent/checks"): (EMPTY, "/v1/agent/checks", None),
    ("PUT", "/v1/agent/service/register"): (
        DENIED,
        "/v1/agent/service/register",
        {"Name": "web"},
    ),
    ("PUT", "/v1/agent/service/deregister/{service_id}"): (
        DENIED,
        "/v1/agent/service/deregister/web",
        None,
    ),
    ("PUT", "/v1/agent/check/{verb}/{check_id}"): (DENIED, "/v1/agent/check/pass/c1", None),
    ("GET", "/v1/internal/federation-states"): (DENIED, "/v1/internal/federation-states", None),
    ("GET", "/v1/internal/federation-states/mesh-gateways"): (
        EMPTY,
        "/v1/internal/federation-states/mesh-gateways",
        None,
    ),
    ("GET", "/v1/internal/federation-state/"): (INVALID, "/v1/internal/federation-state/", None),
    ("GET", "/v1/internal/federation-state"): (INVALID, "/v1/internal/federation-state", None),
    ("GET", "/v1/internal/federation-state/{dc}"): (
        DENIED,
        "/v1/internal/federation-state/dc1",
        None,
    ),
    ("GET", "/v1/internal/federation-routes"): (DENIED, "/v1/internal/federation-routes", None),
    ("GET", "/v1/internal/server-directory"): (DENIED, "/v1/internal/server-directory", None),
    ("PUT", "/v1/acl/bootstrap"): (OPEN, "/v1/acl/bootstrap", None),
    ("PUT", "/v1/acl/token"): (DENIED, "/v1/acl/token", {"Description": "x"}),
    ("GET", "/v1/acl/tokens"): (DENIED, "/v1/acl/tokens", None),
    ("GET", "/v1/acl/token/{accessor_id}"): (
        DENIED,
        "/v1/acl/token/00000000-0000-0000-0000-000000000002",
        None,
    ),
    ("PUT", "/v1/acl/token/{accessor_id}"): (
        DENIED,
        "/v1/acl/token/00000000-0000-0000-0000-000000000002",
        {"Description": "x"},
    ),
    ("DELETE", "/v1/acl/token/{accessor_id}"): (
        DENIED,
        "/v1/acl/token/00000000-0000-0000-0000-000000000002",
        None,
    ),
    ("PUT", "/v1/acl/token/{accessor_id}/clone"): (
        DENIED,
        "/v1/acl/token/00000000-0000-0000-0000-000000000002/clone",
        None,
    ),
    ("PUT", "/v1/acl/policy"): (DENIED, "/v1/acl/policy", {"Name": "p", "Rules": ""}),
    ("GET", "/v1/acl/policies"): (DENIED, "/v1/acl/policies", None),
    ("GET", "/v1/acl/policy/name/{name}"): (
        DENIED,
        "/v1/acl/policy/name/global-management",
        None,
    ),
    ("GET", "/v1/acl/policy/{policy_id}"): (
        DENIED,
        "/v1/acl/policy/00000000-0000-0000-0000-000000000001",
        None,
    ),
    ("PUT", "/v1/acl/policy/{policy_id}"): (
        DENIED,
        "/v1/acl/policy/00000000-0000-0000-0000-000000000001",
        {"Name": "global-management"},
    ),
    ("DELETE", "/v1/acl/policy/{policy_id}"): (
        DENIED,
        "/v1/acl/policy/00000000-0000-0000-0000-000000000001",
        None,
    ),
}


@pytest.fixture
async def api(start_dev_server: Callable[..., Awaitable[Server]]) -> AsyncIterator[HttpApi]:
    server = await start_dev_server(
        client_addr="127.0.0.1",
        ports={"server": 0, "http": 0},
        acl={"enabled": True, "default_policy": "deny"},
    )
    await server.wait_ready()
    http = await start_http_api(server)
    try:
        leader = server.acl_leader
        assert leader is not None
        await leader.initialized.wait()
        yield http
    finally:
        await http.stop()


def _app_routes(api: HttpApi) -> set[tuple[str, str]]:
    routes = set()
    for route in api._app.router.routes():
        if route.method == "HEAD":
            continue  # aiohttp's automatic twin of every GET
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter") or ""
        routes.add((route.method, path.replace("{verb:pass|warn|fail}", "{verb}")))
    return routes


async def test_every_route_has_an_acl_decision(api: HttpApi) -> None:
    undecided = _app_routes(api) - set(ROUTES)
    assert not undecided, f"routes without an ACL decision in this table: {sorted(undecided)}"
    stale = set(ROUTES) - _app_routes(api)
    assert not stale, f"table entries for routes that no longer exist: {sorted(stale)}"


async def test_anonymous_requests_under_default_deny(api: HttpApi) -> None:
    base = f"http://127.0.0.1:{api.port}"
    wrong: list[str] = []
    async with aiohttp.ClientSession() as session:
        for (method, route), (decision, path, body) in sorted(ROUTES.items()):
            if route == "/v1/acl/bootstrap":
                continue  # open, but it changes the tables; test_acl_api covers it
            async with session.request(method, base + path, json=body) as reply:
                status, text = reply.status, await reply.text()
                filtered = reply.headers.get("X-Consul-Results-Filtered-By-ACLs") == "true"
            ok = {
                OPEN: status == 200,
                DENIED: status == 403 and text.startswith("Permission denied"),
                FILTERED: status == 200 and filtered,
                EMPTY: status == 200 and text.strip() in ("{}", "[]") and not filtered,
                INVALID: status == 400,
            }[decision]
            if not ok:
                wrong.append(f"{method} {path}: expected {decision}, got {status} {text[:120]!r}")
    assert not wrong, "\n".join(wrong)
