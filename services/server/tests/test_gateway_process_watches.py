"""The gateway's watches against a scripted HTTP API on loopback.

A real server has one datacenter and well-behaved indexes; this stand-in
lets a test list a second datacenter (so the per-DC service dump is watched),
remove it again, and move an index backwards the way a snapshot restore does.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Callable

import msgspec
import pytest
from aiohttp import web

from wanfed_fsm import CheckServiceNode, Node, Service, ServiceAddress
from wanfed_server.gateway import GatewayProcess, GatewaySettings


def _remote_gateway(dc: str, wan: str, modify_index: int = 1) -> CheckServiceNode:
    return CheckServiceNode(
        node=Node(node=f"{dc}-gw", address="198.18.5.1", datacenter=dc),
        service=Service(
            kind="mesh-gateway",
            service="mesh-gateway",
            address="198.18.5.1",
            port=8443,
            tagged_addresses={"wan": ServiceAddress(address=wan, port=443)},
            meta={"consul-wan-federation": "1"},
            modify_index=modify_index,
        ),
    )


DIRECTORY = "/v1/internal/server-directory"


def _directory_entry(
    node: str, address: str, *, alive: bool = True, dc: str = "dc1"
) -> dict[str, object]:
    return {"Node": node, "Datacenter": dc, "Address": address, "Port": 8300, "Alive": alive}


def _hash(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()[:16]


class ScriptedApi:
    """Answers the gateway's queries from fields a test changes; blocking reads park
    until :meth:`changed` or their ``wait`` ends. Every GET is recorded."""

    def __init__(self) -> None:
        self.index = 10
        self.datacenters = ["dc1"]
        self.dumps: dict[str, list[CheckServiceNode]] = {}
        self.fed_state: dict[str, list[CheckServiceNode]] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.directory: list[dict[str, object]] = [_directory_entry("s1", "127.0.0.11")]
        self.registrations = 0
        self.failing: set[str] = set()
        """Paths answered with 500, as a server without a leader does."""
        self._condition = asyncio.Condition()
        self._request_seen = asyncio.Event()
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def changed(self, index: int | None = None) -> None:
        self.index = self.index + 1 if index is None else index
        async with self._condition:
            self._condition.notify_all()

    async def until(self, done: Callable[[], bool]) -> None:
        """Return once ``done()`` holds, re-checking after every request."""
        async with asyncio.timeout(10):
            while not done():
                self._request_seen.clear()
                await self._request_seen.wait()

    async def _answer(self, request: web.Request, body: object) -> web.Response:
        query = dict(request.query)
        self.requests.append((request.path, query))
        self._request_seen.set()
        if request.path in self.failing:
            return web.Response(status=500, text="No cluster leader")
        if "index" in query and int(query["index"]) >= self.index:
            wait = float(query.get("wait", "5s").rstrip("s"))
            async with self._condition:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._condition.wait(), wait)
        return web.Response(
            body=msgspec.json.encode(body() if callable(body) else body),
            content_type="application/json",
            headers={"X-Consul-Index": str(self.index)},
        )

    async def _directory(self, request: web.Request) -> web.Response:
        """Blocks on the content hash, as the servers' directory endpoint does."""
        query = dict(request.query)
        self.requests.append((request.path, query))
        self._request_seen.set()
        body = msgspec.json.encode(self.directory)
        if query.get("hash") == _hash(body):
            wait = float(query.get("wait", "5s").rstrip("s"))
            async with self._condition:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._condition.wait(), wait)
            body = msgspec.json.encode(self.directory)
        return web.Response(
            body=body,
            content_type="application/json",
            headers={"X-Consul-ContentHash": _hash(body)},
        )

    async def start(self) -> None:
        app = web.Application()

        async def agent_self(request: web.Request) -> web.Response:
            return await self._answer(request, {"Config": {"Datacenter": "dc1"}})

        async def health(request: web.Request) -> web.Response:
            return await self._answer(request, [])

        async def fed(request: web.Request) -> web.Response:
            return await self._answer(request, lambda: self.fed_state)

        async def dcs(request: web.Request) -> web.Response:
            return await self._answer(request, list(self.datacenters))

        async def dump(request: web.Request) -> web.Response:
            dc = request.query.get("dc", "dc1")
            return await self._answer(request, lambda: self.dumps.get(dc, []))

        async def register(request: web.Request) -> web.Response:
            self.registrations += 1
            return web.json_response(True)

        app.router.add_get("/v1/agent/self", agent_self)
        app.router.add_get(DIRECTORY, self._directory)
        app.router.add_get("/v1/health/service/{name}", health)
        app.router.add_get("/v1/internal/federation-states/mesh-gateways", fed)
        app.router.add_get("/v1/catalog/datacenters", dcs)
        app.router.add_get("/v1/internal/service-dump", dump)
        app.router.add_put("/v1/catalog/register", register)
        app.router.add_put("/v1/catalog/deregister", register)
        self.runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        host, port = self.runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture
async def api() -> AsyncIterator[ScriptedApi]:
    scripted = ScriptedApi()
    await scripted.start()
    yield scripted
    await scripted.close()


def _settings(*urls: str) -> GatewaySettings:
    return GatewaySettings(
        http_urls=urls,
        bind_host="127.0.0.1",
        bind_port=0,
        lan_host="127.0.0.1",
        lan_port=0,
        wan_host="127.0.0.1",
        wan_port=0,
        register=False,
        expose_servers=False,
        wait=2.0,
        datacenters_interval=0.05,
        backoff_initial=0.05,
        backoff_cap=0.1,
    )


@pytest.fixture
async def gateway(api: ScriptedApi) -> AsyncIterator[GatewayProcess]:
    process = GatewayProcess(_settings(api.url))
    await asyncio.wait_for(process.start(), 10)
    yield process
    await process.stop()


async def _until(process: GatewayProcess, sni: str, upstreams: list[str]) -> None:
    async with asyncio.timeout(10):
        while True:
            route = process.gateway.routes.lookup(sni)
            if [str(u) for u in (route.upstreams if route else ())] == upstreams:
                return
            process.routes_changed.clear()
            await process.routes_changed.wait()


async def test_a_listed_remote_dc_is_routed_by_its_service_dump_until_it_leaves(
    api: ScriptedApi, gateway: GatewayProcess
) -> None:
    api.dumps["dc2"] = [_remote_gateway("dc2", "198.18.6.1")]
    api.datacenters = ["dc1", "dc2"]
    await _until(gateway, "server.dc2.consul", ["198.18.6.1:443"])
    assert any(
        path == "/v1/internal/service-dump" and query.get("dc") == "dc2"
        for path, query in api.requests
    )
    # the local DC is never dumped: its servers come from the server directory
    assert not any(q.get("dc") == "dc1" for p, q in api.requests if p.endswith("service-dump"))

    # newer information from federation states wins over the dump
    api.fed_state = {"dc2": [_remote_gateway("dc2", "198.18.7.1", modify_index=50)]}
    await api.changed()
    await _until(gateway, "server.dc2.consul", ["198.18.7.1:443"])

    api.fed_state = {}
    await api.changed()
    await _until(gateway, "server.dc2.consul", ["198.18.6.1:443"])
    api.datacenters = ["dc1"]
    await _until(gateway, "server.dc2.consul", [])
    assert api.registrations == 0, "no -register, no catalog writes"


async def test_an_index_that_goes_backwards_restarts_from_zero(
    api: ScriptedApi, gateway: GatewayProcess
) -> None:
    path = "/v1/internal/federation-states/mesh-gateways"

    def queries() -> list[dict[str, str]]:
        return [query for p, query in api.requests if p == path]

    await api.until(lambda: any(q.get("index") == "10" for q in queries()))
    seen = len(queries())
    await api.changed(index=3)  # a restore: the store's index is lower now
    await api.until(lambda: len(queries()) >= seen + 2)
    after = queries()[seen:]
    assert "index" not in after[0], "the query after going backwards must not block"
    assert after[1].get("index") == "3"


async def test_a_server_that_keeps_failing_local_queries_is_left_for_the_next(
    api: ScriptedApi,
) -> None:
    healthy = ScriptedApi()
    await healthy.start()
    healthy.fed_state = {"dc2": [_remote_gateway("dc2", "198.18.8.1")]}
    api.failing.add("/v1/internal/federation-states/mesh-gateways")
    process = GatewayProcess(_settings(api.url, healthy.url))
    try:
        await asyncio.wait_for(process.start(), 10)
        await _until(process, "server.dc2.consul", ["198.18.8.1:443"])
        assert process.pool.current == healthy.url
        failures = [p for p, _ in api.requests if p.endswith("/mesh-gateways")]
        assert len(failures) == 3, "three server errors in a row, then the switch"
    finally:
        await process.stop()
        await healthy.close()


async def test_local_servers_come_from_the_server_directory_never_from_the_catalog(
    api: ScriptedApi, gateway: GatewayProcess
) -> None:
    await _until(gateway, "server.dc1.consul", ["127.0.0.11:8300"])
    # the next read blocks on the hash of what was seen
    await api.until(lambda: any(p == DIRECTORY and "hash" in q for p, q in api.requests))

    api.directory = [
        _directory_entry("s1", "127.0.0.11", alive=False),
        _directory_entry("s2", "127.0.0.12"),
    ]
    await api.changed()
    await _until(gateway, "server.dc1.consul", ["127.0.0.12:8300"])
    # a server not alive is still reachable by its own name
    await _until(gateway, "s1.server.dc1.consul", ["127.0.0.11:8300"])

    # an answer naming another DC's server is refused; the routes stay
    before = gateway.gateway.routes
    seen = len(api.requests)
    api.directory = [_directory_entry("x9", "127.0.0.99", dc="dc2")]
    await api.changed()
    await api.until(lambda: sum(p == DIRECTORY for p, _ in api.requests[seen:]) >= 2)
    assert gateway.gateway.routes is before

    assert not any(p == "/v1/health/service/consul" for p, _ in api.requests), (
        "the catalog's consul service must never be read for routes"
    )
