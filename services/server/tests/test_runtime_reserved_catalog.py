"""Catalog entries only the servers write: the ``consul`` service and server nodes.

A fake ``consul`` service (a false server address that gateways and clients
would route to) or a write to a live server's node is refused over the HTTP
API (403) and over RPC, from a client certificate and from a server of
another datacenter; the server's own code and its local agent still write
them, and everyone can still write ordinary entries afterwards.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest

from wanfed_fsm import (
    DeregisterRequest,
    IndexedServiceNodes,
    Node,
    RegisterRequest,
    Service,
    ServiceSpecificRequest,
)
from wanfed_proto import Alpn, RemoteError, RpcClient, client_context, dial_alpn
from wanfed_server.http import HttpApi, start_http_api
from wanfed_server.runtime import Server

if TYPE_CHECKING:
    from .conftest import RuntimePki  # type: ignore[import-not-found]


@pytest.fixture
async def server(start_tls_server: Callable[..., Awaitable[Server]]) -> Server:
    return await start_tls_server(client_addr="127.0.0.1", ports={"http": 0})


@pytest.fixture
async def api(server: Server) -> AsyncIterator[str]:
    http: HttpApi = await start_http_api(server)
    try:
        yield f"http://127.0.0.1:{http.port}"
    finally:
        await http.stop()


async def _put(base: str, path: str, body: dict[str, Any]) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.put(base + path, json=body) as reply:
        return reply.status, await reply.text()


def _context(pki: RuntimePki, leaf: str) -> ssl.SSLContext:
    files = pki.certs[leaf]
    return client_context(pki.ca, files.cert, files.key, alpn=[Alpn.RPC_MULTI])


async def _consul_nodes(server: Server) -> list[str]:
    reply = await server.rpc(
        "Catalog.ServiceNodes", ServiceSpecificRequest(service_name="consul"), IndexedServiceNodes
    )
    return [entry.node.node for entry in reply.service_nodes]


FAKE_SERVER = {
    "Node": "evil",
    "Address": "198.18.0.77",
    "Service": {"Service": "consul", "Address": "198.18.0.77", "Port": 8300},
}


async def test_a_fake_consul_service_is_refused_over_http(server: Server, api: str) -> None:
    status, body = await _put(api, "/v1/catalog/register", FAKE_SERVER)
    assert status == 403, body
    assert body.startswith("Permission denied: cannot register service 'consul'")
    by_id = {**FAKE_SERVER, "Service": {"ID": "consul", "Service": "web", "Port": 1}}
    status, body = await _put(api, "/v1/catalog/register", by_id)
    assert (status, body.startswith("Permission denied: ")) == (403, True)
    assert "evil" not in await _consul_nodes(server)
    # still writable for everything else
    ordinary = {"Node": "web-1", "Address": "198.18.0.8", "Service": {"Service": "web"}}
    assert await _put(api, "/v1/catalog/register", ordinary) == (200, "true")


async def test_a_live_server_node_is_refused_over_http(server: Server, api: str) -> None:
    status, body = await _put(api, "/v1/catalog/register", {"Node": "S1", "Address": "198.18.0.77"})
    assert status == 403, body
    assert body.startswith("Permission denied: cannot register node 'S1': it is a server")
    for gone in ({"Node": "s1"}, {"Node": "s1", "ServiceID": "web"}):
        status, body = await _put(api, "/v1/catalog/deregister", gone)
        assert status == 403, body
        assert body.startswith("Permission denied: cannot deregister from node 's1'")
    status, body = await _put(
        api, "/v1/catalog/deregister", {"Node": "anywhere", "ServiceID": "consul"}
    )
    assert status == 403, body
    assert body.startswith("Permission denied: cannot deregister service 'consul'")


@pytest.mark.parametrize("leaf", ["client", "r1"], ids=["same-ca-client", "other-dc-server"])
async def test_a_fake_consul_service_is_refused_over_rpc(
    server: Server, runtime_pki: RuntimePki, leaf: str
) -> None:
    connection = await dial_alpn(
        server.rpc_bind_address, "server.dc1.consul", Alpn.RPC_MULTI, _context(runtime_pki, leaf)
    )
    fake = RegisterRequest(
        node=Node(node="evil", address="198.18.0.77"),
        service=Service(service="consul", address="198.18.0.77", port=8300),
    )
    claim = RegisterRequest(node=Node(node="s1", address="198.18.0.77"))
    async with RpcClient(connection) as client:
        with pytest.raises(RemoteError, match=r"^Permission denied: cannot register service"):
            await client.call("Catalog.Register", fake, type=bool, timeout=10)
        with pytest.raises(RemoteError, match=r"^Permission denied: cannot register node 's1'"):
            await client.call("Catalog.Register", claim, type=bool, timeout=10)
        with pytest.raises(RemoteError, match=r"^Permission denied: cannot deregister from"):
            await client.call("Catalog.Deregister", DeregisterRequest(node="s1"), timeout=10)
        ordinary = RegisterRequest(node=Node(node="web-2", address="198.18.0.9"))
        assert await client.call("Catalog.Register", ordinary, type=bool, timeout=10)
    assert "evil" not in await _consul_nodes(server)


async def test_the_servers_own_code_still_writes_its_node(server: Server) -> None:
    """The local agent registers services on the server's node through ``rpc``."""
    own = RegisterRequest(
        node=Node(node="s1", address="127.0.0.1"),
        service=Service(id="web", service="web", port=80),
    )
    assert await server.rpc("Catalog.Register", own, bool)
    assert await server.rpc(
        "Catalog.Deregister", DeregisterRequest(node="s1", service_id="web"), bool
    )
