"""A new secondary's mesh gateway registers before ACL replication has ever run
(Consul #9568), with the secondary's configured ``acl.tokens.agent`` secret, and
``/v1/acl/replication`` says honestly that nothing was replicated yet.

The secondary here can never reach its primary (no server of ``dc1`` exists),
so every replication round waits for it: whatever works, works without it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from wanfed_server.gateway import GatewayProcess, GatewaySettings, HiddenToken
from wanfed_server.http import HttpApi, start_http_api
from wanfed_server.runtime import Server

AGENT = "agent-secret-of-dc2"


@pytest.fixture
async def secondary(start_dev_server: Callable[..., Awaitable[Server]]) -> AsyncIterator[HttpApi]:
    server = await start_dev_server(
        datacenter="dc2",
        primary_datacenter="dc1",
        client_addr="127.0.0.1",
        ports={"server": 0, "http": 0},
        acl={
            "enabled": True,
            "default_policy": "deny",
            "down_policy": "deny",
            "token_ttl": "1s",
            "tokens": {"agent": AGENT, "replication": "replication-secret"},
        },
    )
    await server.wait_ready()
    http = await start_http_api(server)
    try:
        yield http
    finally:
        await http.stop()


async def _get(url: str, token: str = "") -> tuple[int, Any]:
    headers = {"X-Consul-Token": token} if token else {}
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as reply:
        if reply.status != 200:
            return reply.status, await reply.text()
        return reply.status, await reply.json()


def _settings(url: str, token: str) -> GatewaySettings:
    return GatewaySettings(
        http_urls=(url,),
        bind_host="127.0.0.1",
        bind_port=0,
        lan_host="127.0.0.1",
        lan_port=0,
        wan_host="127.0.0.1",
        wan_port=0,
        node="dc2-gw1",
        wait=5.0,
        datacenters_interval=0.2,
        backoff_initial=0.05,
        backoff_cap=0.2,
        token=HiddenToken(token),
    )


async def test_gateway_registers_before_replication_ran(secondary: HttpApi) -> None:
    url = f"http://{secondary.address}"
    status, body = await _get(url + "/v1/acl/replication")
    assert status == 200
    assert body["Enabled"] is True
    assert body["SourceDatacenter"] == "dc1"
    assert body["ReplicatedIndex"] == 0
    assert body["ReplicatedTokenIndex"] == 0
    assert body["LastSuccess"] == "0001-01-01T00:00:00Z"
    # An unknown secret is still unknown; the anonymous token may not write.
    status, text = await _get(url + "/v1/catalog/nodes", "not-a-token")
    assert (status, text) == (403, "ACL not found")

    process = GatewayProcess(_settings(url, AGENT))
    try:
        await asyncio.wait_for(process.start(), 10)
        async with asyncio.timeout(20):
            while True:
                status, entries = await _get(url + "/v1/catalog/service/mesh-gateway", AGENT)
                assert status == 200, entries
                if entries:
                    break
                await asyncio.sleep(0.05)
        assert [entry["Node"] for entry in entries] == ["dc2-gw1"]
    finally:
        await process.stop()

    # Replication keeps trying, and says why it has nothing yet.
    async with asyncio.timeout(20):
        while True:
            status, body = await _get(url + "/v1/acl/replication")
            if body["LastErrorMessage"]:
                break
            await asyncio.sleep(0.05)
    assert body["Running"] is True
    assert "dc1" in body["LastErrorMessage"]
    assert body["LastSuccess"] == "0001-01-01T00:00:00Z"
