"""A request the caller got wrong is a 400 with the endpoint's message, never a 500.

Real servers behind the HTTP API: the refusal is raised by an RPC endpoint,
here or in another datacenter (errors cross the RPC wire as text), and the
HTTP layer maps its type.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import msgspec
import pytest
from aiohttp.test_utils import TestClient, TestServer

from wanfed_agent.rpc import RpcPool
from wanfed_fsm import (
    DCSpecificRequest,
    HealthCheck,
    HealthCheckDefinition,
    IndexedNodes,
    Node,
    RegisterRequest,
    ServiceSpecificRequest,
)
from wanfed_proto import RemoteError, RpcClient, RpcType, dial_plain
from wanfed_server.http import build_app
from wanfed_server.local_agent import LocalAgent
from wanfed_server.runtime import (
    INVALID_REQUEST_PREFIX,
    Dispatcher,
    Endpoint,
    EndpointKind,
    InvalidRequestError,
    RemoteServer,
    Server,
    ServerInfo,
    StaticRouter,
)
from wanfed_server.runtime._endpoints_errors import typed_remote_error

StartServer = Callable[..., Awaitable[Server]]
Http = Callable[[Server], Awaitable["TestClient[Any, Any]"]]


@pytest.fixture
async def http() -> AsyncIterator[Http]:
    clients: list[TestClient[Any, Any]] = []

    async def open_http(server: Server) -> TestClient[Any, Any]:
        agent = LocalAgent(
            server,
            node=Node(node=server.node_name, address="127.0.0.1", datacenter=server.datacenter),
            datacenter=server.datacenter,
        )
        client = TestClient(TestServer(build_app(server, server, agent), host="127.0.0.1"))
        await client.start_server()
        clients.append(client)
        return client

    yield open_http
    for client in clients:
        await client.close()


def _registration(node: str = "n1", **check: object) -> dict[str, object]:
    return {
        "Node": node,
        "Address": "198.18.0.10",
        "Service": {"ID": "web-1", "Service": "web", "Port": 80},
        "Check": {"CheckID": "web-alive", "ServiceID": "web-1", **check},
    }


async def _put(client: TestClient[Any, Any], path: str, body: object) -> tuple[int, str]:
    async with client.put(path, data=msgspec.json.encode(body)) as response:
        return response.status, await response.text()


async def _node_names(server: Server, datacenter: str = "") -> list[str]:
    reply = await server.rpc(
        "Catalog.ListNodes", DCSpecificRequest(datacenter=datacenter), IndexedNodes
    )
    return [node.node for node in reply.nodes]


@pytest.mark.parametrize(
    ("body", "wording"),
    [
        (
            _registration(Definition={"DeregisterCriticalServiceAfter": "soon"}),
            "check 'web-alive': DeregisterCriticalServiceAfter",
        ),
        (
            _registration(Definition={"DeregisterCriticalServiceAfter": "-5s"}),
            "check 'web-alive': DeregisterCriticalServiceAfter",
        ),
        (_registration(Node="elsewhere"), "names node 'elsewhere'"),
        ({**_registration(), "SkipNodeUpdate": True}, "node 'n1' is unknown"),
    ],
)
async def test_register_refused_by_the_endpoint_is_a_400(
    start_dev_server: StartServer, http: Http, body: dict[str, object], wording: str
) -> None:
    server = await start_dev_server()
    client = await http(server)
    status, text = await _put(client, "/v1/catalog/register", body)
    assert status == 400, text
    assert text.startswith(INVALID_REQUEST_PREFIX)
    assert wording in text
    assert "n1" not in await _node_names(server), "nothing was written"
    # the same body with a good duration is accepted: it was that one field
    good = _registration(Definition={"DeregisterCriticalServiceAfter": "90s"})
    assert await _put(client, "/v1/catalog/register", good) == (200, "true")


async def test_a_refusal_from_another_datacenter_is_still_a_400(
    start_dev_server: StartServer, http: Http
) -> None:
    remote = await start_dev_server("r1", datacenter="dc2", primary_datacenter="dc1")
    router = StaticRouter(
        "dc1", {"dc2": [RemoteServer(node="r1", datacenter="dc2", address=remote.rpc_address)]}
    )
    local = await start_dev_server("s1", router=router)
    client = await http(local)

    bad = _registration(Definition={"DeregisterCriticalServiceAfter": "soon"})
    status, text = await _put(client, "/v1/catalog/register?dc=dc2", bad)
    assert status == 400, text
    assert text.startswith(
        f"{INVALID_REQUEST_PREFIX}check 'web-alive': DeregisterCriticalServiceAfter"
    )
    assert await _node_names(remote) == ["r1"], "nothing was written in dc2"

    async with client.get("/v1/health/service/web?dc=dc2") as response:
        assert response.status == 200  # a good request still crosses
    good = _registration(Definition={"DeregisterCriticalServiceAfter": "90s"})
    assert await _put(client, "/v1/catalog/register?dc=dc2", good) == (200, "true")
    assert "n1" in await _node_names(local, "dc2")


async def test_invalid_requests_are_typed_for_in_process_and_forwarded_callers(
    start_dev_server: StartServer,
) -> None:
    remote = await start_dev_server("r1", datacenter="dc2", primary_datacenter="dc1")
    router = StaticRouter(
        "dc1", {"dc2": [RemoteServer(node="r1", datacenter="dc2", address=remote.rpc_address)]}
    )
    local = await start_dev_server("s1", router=router)
    for datacenter in ("", "dc2"):
        with pytest.raises(InvalidRequestError, match="Must provide service name or service kind"):
            await local.rpc(
                "Health.ServiceNodes",
                ServiceSpecificRequest(datacenter=datacenter),
                IndexedNodes,
            )


async def test_the_rpc_port_answers_invalid_requests_with_the_marked_text(
    start_dev_server: StartServer,
) -> None:
    server = await start_dev_server()
    client = RpcClient(await dial_plain(server.rpc_bind_address, RpcType.MULTIPLEX_V2))
    try:
        with pytest.raises(RemoteError) as undecodable:
            await client.call("Catalog.Register", {"Node": 5}, timeout=5)
        assert str(undecodable.value).startswith(f"{INVALID_REQUEST_PREFIX}rpc Catalog.Register")
        bad_check = RegisterRequest(
            node=Node(node="n1", address="198.18.0.10"),
            checks=[
                HealthCheck(
                    node="n1",
                    check_id="c1",
                    definition=HealthCheckDefinition(deregister_critical_service_after="soon"),
                )
            ],
        )
        with pytest.raises(RemoteError) as refused:
            await client.call("Catalog.Register", bad_check, timeout=5)
        assert isinstance(typed_remote_error(refused.value), InvalidRequestError)
    finally:
        await client.close()


class _RefusingPool:
    """A pool whose every call reaches a server that refuses with ``message``."""

    def __init__(self, message: str) -> None:
        self.message = message
        self.calls = 0

    async def call(self, *args: object, **kwargs: object) -> object:
        self.calls += 1
        raise RemoteError(self.message)


async def _echo(request: DCSpecificRequest) -> str:
    return request.datacenter


def _follower(pool: _RefusingPool) -> Dispatcher:
    leader = ServerInfo(node="s2", datacenter="dc1", rpc_address="127.0.0.1:1")
    return Dispatcher(
        datacenter="dc1",
        endpoints=[Endpoint("Test.Write", DCSpecificRequest, str, EndpointKind.WRITE, _echo)],
        is_leader=lambda: False,
        leader=lambda: leader,
        router=StaticRouter("dc1", {}),
        pool=cast(RpcPool, pool),
        hold_timeout=1.0,
    )


async def test_a_refusal_relayed_by_the_leader_keeps_its_kind() -> None:
    pool = _RefusingPool(f"{INVALID_REQUEST_PREFIX}Must provide node")
    dispatcher = _follower(pool)
    with pytest.raises(InvalidRequestError) as error:
        await dispatcher.dispatch(dispatcher.endpoint("Test.Write"), DCSpecificRequest())
    assert error.value.reason == "Must provide node"
    assert pool.calls == 1, "a refusal is an answer: it is not retried"

    other = _RefusingPool("Permission denied")
    dispatcher = _follower(other)
    with pytest.raises(RemoteError) as plain:
        await dispatcher.dispatch(dispatcher.endpoint("Test.Write"), DCSpecificRequest())
    assert not isinstance(plain.value, InvalidRequestError)
    assert str(plain.value) == "Permission denied"


def test_invalid_request_text_round_trips() -> None:
    error = InvalidRequestError("Must provide node")
    assert str(error) == f"{INVALID_REQUEST_PREFIX}Must provide node"
    assert str(InvalidRequestError(str(error))) == str(error), "never marked twice"
    received = typed_remote_error(RemoteError(str(error)))
    assert isinstance(received, InvalidRequestError)
    assert received.reason == "Must provide node"
    untouched = RemoteError("No path to datacenter")
    assert typed_remote_error(untouched) is untouched


async def test_an_index_beyond_uint64_is_a_400_not_an_encoding_failure(
    start_dev_server: StartServer, http: Http
) -> None:
    """Consul parses ``?index=`` as a uint64; a larger one could not even be forwarded."""
    remote = await start_dev_server("r1", datacenter="dc2", primary_datacenter="dc1")
    router = StaticRouter(
        "dc1", {"dc2": [RemoteServer(node="r1", datacenter="dc2", address=remote.rpc_address)]}
    )
    client = await http(await start_dev_server("s1", router=router))
    for dc in ("dc1", "dc2"):
        async with client.get(f"/v1/catalog/nodes?dc={dc}&index={2**64}&wait=1s") as response:
            assert (response.status, await response.text()) == (400, "Invalid index")
        async with client.get(f"/v1/catalog/nodes?dc={dc}&index={2**64 - 1}&wait=10ms") as response:
            assert response.status == 200
