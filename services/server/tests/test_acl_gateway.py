"""A mesh gateway registers itself under ``default_policy = "deny"`` with the token
it is given (``-token``), and a settings object never shows that token."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from wanfed_server.gateway import GatewayProcess, GatewaySettings, HiddenToken
from wanfed_server.http import HttpApi, start_http_api
from wanfed_server.runtime import Server

ROOT = "root-secret-for-tests"
GATEWAY_RULES = """
service "mesh-gateway" { policy = "write" }
service_prefix "" { policy = "read" }
node "gw1" { policy = "write" }
node_prefix "" { policy = "read" }
agent_prefix "" { policy = "read" }
"""


@pytest.fixture
async def api(start_dev_server: Callable[..., Awaitable[Server]]) -> AsyncIterator[HttpApi]:
    server = await start_dev_server(
        client_addr="127.0.0.1",
        ports={"server": 0, "http": 0},
        acl={"enabled": True, "default_policy": "deny", "tokens": {"initial_management": ROOT}},
    )
    await server.wait_ready()
    http = await start_http_api(server)
    try:
        assert server.acl_leader is not None
        await asyncio.wait_for(server.acl_leader.initialized.wait(), 30)
        yield http
    finally:
        await http.stop()


async def _call(url: str, method: str, path: str, token: str, body: object = None) -> Any:
    headers = {"X-Consul-Token": token}
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url + path, json=body, headers=headers) as reply,
    ):
        assert reply.status == 200, await reply.text()
        return await reply.json()


def _settings(url: str, token: str) -> GatewaySettings:
    return GatewaySettings(
        http_urls=(url,),
        bind_host="127.0.0.1",
        bind_port=0,
        lan_host="127.0.0.1",
        lan_port=0,
        wan_host="127.0.0.1",
        wan_port=0,
        node="gw1",
        wait=5.0,
        datacenters_interval=0.2,
        backoff_initial=0.05,
        backoff_cap=0.2,
        token=HiddenToken(token),
    )


async def test_gateway_registers_with_its_token(api: HttpApi) -> None:
    url = f"http://{api.address}"
    policy = await _call(url, "PUT", "/v1/acl/policy", ROOT, {"Name": "gw", "Rules": GATEWAY_RULES})
    token = await _call(url, "PUT", "/v1/acl/token", ROOT, {"Policies": [{"ID": policy["ID"]}]})
    settings = _settings(url, token["SecretID"])
    assert token["SecretID"] not in repr(settings)
    process = GatewayProcess(settings)
    try:
        await asyncio.wait_for(process.start(), 10)
        async with asyncio.timeout(20):
            index = 0
            while True:
                async with (
                    aiohttp.ClientSession() as session,
                    session.get(
                        url + "/v1/catalog/service/mesh-gateway",
                        params={"index": str(index), "wait": "5s"},
                        headers={"X-Consul-Token": ROOT},
                    ) as reply,
                ):
                    entries = await reply.json()
                    index = int(reply.headers["X-Consul-Index"])
                if entries:
                    break
        assert [e["Node"] for e in entries] == ["gw1"]
    finally:
        await process.stop()
