"""The HTTP API against an in-memory dispatcher: Consul's shapes, codes and headers."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
import msgspec
import pytest

from wanfed_fsm import (
    CheckServiceNode,
    FederationState,
    FederationStateRequest,
    HealthCheck,
    Node,
    RegisterRequest,
    Service,
    ServiceAddress,
    Table,
)
from wanfed_server.http import HttpApi

if TYPE_CHECKING:
    from conftest import FakeServer


@dataclass
class Api:
    base: str
    session: aiohttp.ClientSession
    fake: FakeServer

    async def call(
        self, method: str, path: str, body: object = None, **kwargs: Any
    ) -> tuple[int, Any, aiohttp.typedefs.LooseHeaders]:
        data = body if isinstance(body, (bytes, str)) or body is None else json.dumps(body)
        async with self.session.request(method, self.base + path, data=data, **kwargs) as resp:
            text = await resp.text()
            try:
                payload: Any = json.loads(text) if text else None
            except ValueError:
                payload = text
            return resp.status, payload, resp.headers

    async def get(self, path: str, **kwargs: Any) -> tuple[int, Any, Any]:
        return await self.call("GET", path, **kwargs)

    async def put(self, path: str, body: object = None, **kwargs: Any) -> tuple[int, Any, Any]:
        return await self.call("PUT", path, body, **kwargs)


@pytest.fixture
async def api(fake_server: FakeServer) -> AsyncIterator[Api]:
    http = HttpApi(fake_server.dispatcher, fake_server.view, fake_server.agent, "127.0.0.1", 0)
    await http.start()
    async with aiohttp.ClientSession() as session:
        yield Api(f"http://127.0.0.1:{http.port}", session, fake_server)
    await http.stop()


WEB_REGISTRATION = {
    "Node": "n1",
    "Address": "127.0.0.2",
    "TaggedAddresses": {"wan": "198.18.0.2"},
    "NodeMeta": {"Rack": "r1"},
    "Service": {"ID": "web-1", "Service": "web", "Tags": ["v1"], "Port": 8080},
    "Check": {"CheckID": "web-alive", "ServiceID": "web-1", "Status": "passing"},
}


async def register_web(api: Api, **overrides: object) -> None:
    status, body, _ = await api.put("/v1/catalog/register", {**WEB_REGISTRATION, **overrides})
    assert (status, body) == (200, True)


# --- status ----------------------------------------------------------------------


async def test_status_leader_and_peers(api: Api) -> None:
    assert (await api.get("/v1/status/leader"))[:2] == (200, "127.0.0.1:8300")
    assert (await api.get("/v1/status/peers"))[:2] == (200, ["127.0.0.1:8300"])


async def test_unknown_datacenter_is_a_500_no_path(api: Api) -> None:
    for path in ("/v1/catalog/nodes?dc=nope", "/v1/health/service/web?dc=nope"):
        status, body, _ = await api.get(path)
        assert (status, body) == (500, "No path to datacenter")


# --- catalog -----------------------------------------------------------------------


async def test_catalog_register_then_read_back_in_consul_shapes(api: Api) -> None:
    await register_web(api)
    status, nodes, headers = await api.get("/v1/catalog/nodes")
    assert status == 200
    assert [n["Node"] for n in nodes] == ["n1"]
    assert nodes[0]["TaggedAddresses"] == {"wan": "198.18.0.2"}
    assert nodes[0]["Meta"] == {"Rack": "r1"}
    assert int(headers["X-Consul-Index"]) >= 1
    assert headers["X-Consul-KnownLeader"] == "true"
    assert headers["X-Consul-LastContact"] == "0"

    assert (await api.get("/v1/catalog/services"))[1] == {"web": ["v1"]}
    _, instances, _ = await api.get("/v1/catalog/service/web")
    assert len(instances) == 1
    instance = instances[0]
    assert instance["Node"] == "n1"
    assert instance["Address"] == "127.0.0.2"
    assert instance["ServiceID"] == "web-1"
    assert instance["ServiceName"] == "web"
    assert instance["ServicePort"] == 8080
    assert instance["ServiceTags"] == ["v1"]
    assert (await api.get("/v1/catalog/service/web?tag=v2"))[1] == []


async def test_catalog_register_accepts_consul_key_spellings(api: Api) -> None:
    body = {
        "node": "n2",
        "address": "127.0.0.3",
        "skip_node_update": False,
        "service": {"service": "db", "port": 5432, "meta": {"KeepCase": "x"}},
    }
    assert (await api.put("/v1/catalog/register", body))[:2] == (200, True)
    _, instances, _ = await api.get("/v1/catalog/service/db")
    assert instances[0]["ServiceMeta"] == {"KeepCase": "x"}
    assert instances[0]["ServiceID"] == "db"


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"{not json", 400, "Request decode failed"),
        (b"", 400, "Request decode failed: empty body"),
        (b"[1, 2]", 400, "expected a JSON object"),
        ({"Address": "127.0.0.1"}, 400, "Missing node name"),
        ({"Node": "n1"}, 400, "Missing node address"),
        ({"Node": "n1", "Address": "a", "Service": {"Service": "x", "Port": "80"}}, 400, "Port"),
        ({"Node": "n1", "Address": "a", "Service": {"Service": "x", "Port": 70000}}, 400, "port"),
        ({"Node": "n1", "Address": "a", "Service": {"Port": 1}}, 400, "Service name"),
        ({"Node": "n1", "Address": "a", "SkipNodeUpdate": "yes"}, 400, "SkipNodeUpdate"),
        (
            {"Node": "n1", "Address": "a", "Check": {"CheckID": "c", "Status": "bogus"}},
            400,
            "Status",
        ),
        (
            {"Node": "n1", "Address": "a", "Check": {"CheckID": "c", "ServiceID": "ghost"}},
            500,
            "Missing service registration",
        ),
    ],
)
async def test_catalog_register_rejects_bad_bodies_with_a_message(
    api: Api, body: object, status: int, message: str
) -> None:
    got_status, got_body, _ = await api.put("/v1/catalog/register", body)
    assert got_status == status
    assert isinstance(got_body, str)
    assert message in got_body
    assert "Traceback" not in got_body


async def test_catalog_deregister_service_then_node(api: Api) -> None:
    await register_web(api)
    assert (await api.put("/v1/catalog/deregister", {"Node": "n1", "ServiceID": "web-1"}))[1]
    assert (await api.get("/v1/catalog/services"))[1] == {}
    assert (await api.put("/v1/catalog/deregister", {"Node": "n1"}))[:2] == (200, True)
    assert (await api.get("/v1/catalog/nodes"))[1] == []
    status, body, _ = await api.put("/v1/catalog/deregister", {"ServiceID": "x"})
    assert (status, body) == (400, "Missing node name")


async def test_catalog_datacenters(api: Api) -> None:
    assert (await api.get("/v1/catalog/datacenters"))[:2] == (200, ["dc1"])


# --- health ------------------------------------------------------------------------


async def test_health_service_and_passing_filter(api: Api) -> None:
    await register_web(api)
    await register_web(
        api,
        Node="n2",
        Address="127.0.0.3",
        Service={"ID": "web-2", "Service": "web"},
        Check={"CheckID": "web-alive", "ServiceID": "web-2", "Status": "critical"},
    )
    _, everything, headers = await api.get("/v1/health/service/web")
    assert [e["Service"]["ID"] for e in everything] == ["web-1", "web-2"]
    assert everything[0]["Checks"][0]["CheckID"] == "web-alive"
    assert everything[0]["Node"]["Node"] == "n1"
    assert "X-Consul-Index" in headers
    for query in ("?passing", "?passing=1", "?passing=true"):
        _, passing, _ = await api.get("/v1/health/service/web" + query)
        assert [e["Service"]["ID"] for e in passing] == ["web-1"], query
    _, not_filtered, _ = await api.get("/v1/health/service/web?passing=false")
    assert len(not_filtered) == 2


async def test_health_node_checks(api: Api) -> None:
    await register_web(api)
    status, checks, headers = await api.get("/v1/health/node/n1")
    assert status == 200
    assert [(c["CheckID"], c["Status"], c["ServiceName"]) for c in checks] == [
        ("web-alive", "passing", "web")
    ]
    assert int(headers["X-Consul-Index"]) >= 1


async def test_empty_results_are_lists_never_null(api: Api) -> None:
    for path in (
        "/v1/catalog/nodes",
        "/v1/catalog/service/none",
        "/v1/health/service/none",
        "/v1/health/node/none",
        "/v1/internal/federation-states",
    ):
        status, body, headers = await api.get(path)
        assert (status, body) == (200, []), path
        assert headers["X-Consul-Index"] == "1", path
    assert (await api.get("/v1/catalog/services"))[1] == {}
    assert (await api.get("/v1/internal/federation-states/mesh-gateways"))[1] == {}


# --- query parameters ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("index=abc", "Invalid index"),
        ("index=-1", "Invalid index"),
        ("index=18446744073709551616", "Invalid index"),
        ("index=1&wait=forever", "Invalid wait time"),
        ("index=1&wait=10", "Invalid wait time"),
        ("stale&consistent", "Cannot specify ?stale with ?consistent, conflicting semantics."),
    ],
)
async def test_bad_query_parameters_are_400(api: Api, query: str, message: str) -> None:
    assert (await api.get("/v1/catalog/nodes?" + query))[:2] == (400, message)


async def test_query_options_reach_the_rpc(api: Api) -> None:
    await api.get("/v1/catalog/nodes?stale&index=0&wait=5m&token=t1")
    await api.get("/v1/catalog/services?consistent", headers={"X-Consul-Token": "t2"})
    calls = dict(api.fake.dispatcher.calls)
    nodes = calls["Catalog.ListNodes"]
    services = calls["Catalog.ListServices"]
    assert msgspec.structs.asdict(nodes) | {} == {
        "datacenter": "dc1",
        "min_query_index": 0,
        "max_query_time": 300.0,
        "allow_stale": True,
        "require_consistent": False,
        "token": "t1",
    }
    assert msgspec.structs.asdict(services)["require_consistent"] is True
    assert msgspec.structs.asdict(services)["token"] == "t2"


async def test_blocking_query_returns_when_the_result_changes(api: Api) -> None:
    await register_web(api)
    _, _, headers = await api.get("/v1/health/service/web")
    index = int(headers["X-Consul-Index"])
    blocked = asyncio.create_task(api.get(f"/v1/health/service/web?index={index}&wait=30s"))
    await asyncio.wait_for(api.fake.dispatcher.wait_parked("Health.ServiceNodes"), 5)
    assert not blocked.done()
    await register_web(api, Check={"CheckID": "web-alive", "ServiceID": "web-1", "Notes": "n"})
    status, body, headers = await asyncio.wait_for(blocked, 5)
    assert status == 200
    assert int(headers["X-Consul-Index"]) > index
    assert body[0]["Checks"][0]["Status"] == "critical"


async def test_blocking_query_times_out_with_the_same_index(api: Api) -> None:
    await register_web(api)
    index = api.fake.dispatcher.store.index(Table.CHECKS)
    status, body, headers = await api.get(f"/v1/health/node/n1?index={index}&wait=50ms")
    assert status == 200
    assert int(headers["X-Consul-Index"]) == index
    assert len(body) == 1


# --- federation states ----------------------------------------------------------------


def _gateway(dc: str) -> CheckServiceNode:
    return CheckServiceNode(
        node=Node(node=f"gw-{dc}", address="127.0.0.9", datacenter=dc),
        service=Service(
            kind="mesh-gateway",
            id="mesh-gateway",
            service="mesh-gateway",
            port=8443,
            meta={"consul-wan-federation": "1"},
            tagged_addresses={"wan": ServiceAddress(address="198.18.1.9", port=8443)},
        ),
        checks=[HealthCheck(node=f"gw-{dc}", check_id="alive", status="passing")],
    )


async def test_federation_state_endpoints(api: Api) -> None:
    assert (await api.get("/v1/internal/federation-state/"))[:2] == (400, "Missing datacenter name")
    assert (await api.get("/v1/internal/federation-state"))[:2] == (400, "Missing datacenter name")
    status, body, headers = await api.get("/v1/internal/federation-state/dc2")
    assert (status, body) == (404, None)
    assert headers["X-Consul-Index"] == "1"

    dispatcher = api.fake.dispatcher
    for dc, gateways in (("dc1", []), ("dc2", [_gateway("dc2")])):
        request = FederationStateRequest(
            op="upsert", state=FederationState(datacenter=dc, mesh_gateways=gateways)
        )
        assert await dispatcher.rpc("FederationState.Apply", request, bool)

    status, states, headers = await api.get("/v1/internal/federation-states")
    assert status == 200
    assert [s["Datacenter"] for s in states] == ["dc1", "dc2"]
    assert states[1]["MeshGateways"][0]["Service"]["Kind"] == "mesh-gateway"
    index = int(headers["X-Consul-Index"])

    status, gateways_by_dc, _ = await api.get("/v1/internal/federation-states/mesh-gateways")
    assert status == 200
    assert list(gateways_by_dc) == ["dc2"]
    assert gateways_by_dc["dc2"][0]["Service"]["TaggedAddresses"]["wan"] == {
        "Address": "198.18.1.9",
        "Port": 8443,
    }

    status, one, headers = await api.get("/v1/internal/federation-state/dc2")
    assert status == 200
    assert one["State"]["Datacenter"] == "dc2"
    assert one["State"]["PrimaryModifyIndex"] == one["State"]["ModifyIndex"]
    assert one["Index"] == index == int(headers["X-Consul-Index"])
    assert one["KnownLeader"] is True
    status, body, _ = await api.get("/v1/internal/federation-state/dc2?dc=dc9")
    assert (status, body) == (500, "No path to datacenter")


# --- agent -------------------------------------------------------------------------------


async def test_agent_self_and_members(api: Api) -> None:
    status, info, _ = await api.get("/v1/agent/self")
    assert status == 200
    assert info["Config"]["Datacenter"] == "dc1"
    _, lan, _ = await api.get("/v1/agent/members")
    _, wan, _ = await api.get("/v1/agent/members?wan=1")
    assert [m["Name"] for m in lan] == ["s1"]
    assert [m["Name"] for m in wan] == ["s1.dc1"]
    assert wan[0]["Status"] == 1
    assert wan[0]["Tags"]["dc"] == "dc1"


async def test_agent_service_with_ttl_check_in_py_consul_spelling(api: Api) -> None:
    body = {"name": "api", "id": "api-1", "port": 9000, "tags": ["t"], "checks": [{"ttl": "10s"}]}
    assert (await api.put("/v1/agent/service/register", body))[0] == 200
    _, services, _ = await api.get("/v1/agent/services")
    assert services["api-1"]["Service"] == "api"
    assert services["api-1"]["Port"] == 9000
    _, checks, _ = await api.get("/v1/agent/checks")
    check = checks["service:api-1"]
    assert (check["Status"], check["Type"], check["ServiceID"]) == ("critical", "ttl", "api-1")
    assert check["Name"] == "Service 'api' check"

    assert (await api.put("/v1/agent/check/pass/service:api-1?note=all+good"))[0] == 200
    _, checks, _ = await api.get("/v1/agent/checks")
    assert (checks["service:api-1"]["Status"], checks["service:api-1"]["Output"]) == (
        "passing",
        "all good",
    )
    await api.put("/v1/agent/check/warn/service:api-1")
    assert (await api.get("/v1/agent/checks"))[1]["service:api-1"]["Status"] == "warning"
    await api.put("/v1/agent/check/fail/service:api-1")
    assert (await api.get("/v1/agent/checks"))[1]["service:api-1"]["Status"] == "critical"

    assert (await api.put("/v1/agent/service/deregister/api-1"))[0] == 200
    assert (await api.get("/v1/agent/services"))[1] == {}
    assert (await api.get("/v1/agent/checks"))[1] == {}


async def test_agent_check_errors(api: Api) -> None:
    body = {"Name": "tcp", "Check": {"TCP": "127.0.0.1:1", "Interval": "1h"}}
    assert (await api.put("/v1/agent/service/register", body))[0] == 200
    status, text, _ = await api.put("/v1/agent/check/pass/nope")
    assert (status, text) == (404, 'Unknown check ID "nope"')
    status, text, _ = await api.put("/v1/agent/check/pass/service:tcp")
    assert (status, text) == (500, 'CheckID "service:tcp" does not have associated TTL')
    status, text, _ = await api.put("/v1/agent/service/deregister/nope")
    assert (status, text) == (404, 'Unknown service ID "nope"')
    assert (await api.put("/v1/agent/check/bogus/service:tcp"))[0] in (404, 405)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"Port": 1}, "Missing service name"),
        ({"Name": "x", "Port": "80"}, "Invalid service port"),
        ({"Name": "x", "Check": {"HTTP": "http://x", "Interval": "1s"}}, "not supported"),
        ({"Name": "x", "Check": {"TTL": "1s", "TCP": "a:1"}}, "not both"),
        ({"Name": "x", "Check": {"TCP": "a:1"}}, "Interval"),
        ({"Name": "x", "Check": {"TCP": "nope", "Interval": "1s"}}, "host:port"),
        ({"Name": "x", "Check": {"TTL": "soon"}}, "duration"),
        ({"Name": "x", "Check": {}}, "needs a TTL or a TCP"),
        ({"Name": "x", "Checks": {"TTL": "1s"}}, "must be a list"),
        ({"Name": "x", "Kind": "connect-proxy"}, "Invalid service kind"),
        ({"Name": "consul"}, "reserved for servers"),
        ({"Name": "x", "ID": "consul"}, "reserved for servers"),
        ({"Name": "x", "Meta": {"a": 1}}, "Meta"),
        ([], "must be a JSON object"),
    ],
)
async def test_agent_service_register_rejects_bad_definitions(
    api: Api, body: object, message: str
) -> None:
    status, text, _ = await api.put("/v1/agent/service/register", body)
    assert status == 400
    assert message in text
    assert (await api.get("/v1/agent/services"))[1] == {}


async def test_lost_rpc_connection_is_a_500_with_a_message(api: Api) -> None:
    api.fake.dispatcher.fail_methods.add("Catalog.ListServices")
    status, text, _ = await api.get("/v1/catalog/services")
    assert status == 500
    assert text.startswith("rpc error: Catalog.ListServices: connection to the leader lost")


async def test_catalog_register_passes_token_and_datacenter(api: Api) -> None:
    await register_web(api)
    status, text, _ = await api.put("/v1/catalog/register?dc=dc7", WEB_REGISTRATION)
    assert (status, text) == (500, "No path to datacenter")
    await api.put("/v1/catalog/register", WEB_REGISTRATION, headers={"X-Consul-Token": "secret"})
    registers = [a for m, a in api.fake.dispatcher.calls if m == "Catalog.Register"]
    last = registers[-1]
    assert isinstance(last, RegisterRequest)
    assert (last.token, last.datacenter, last.node.datacenter) == ("secret", "dc1", "dc1")


async def test_a_busy_port_fails_start_cleanly(fake_server: FakeServer) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        api = HttpApi(
            fake_server.dispatcher, fake_server.view, fake_server.agent, "127.0.0.1", port
        )
        with pytest.raises(OSError):
            await api.start()
        with pytest.raises(RuntimeError, match="not started"):
            _ = api.port
        await api.stop()  # nothing to stop: harmless


async def test_stop_does_not_wait_for_parked_blocking_queries(fake_server: FakeServer) -> None:
    api = HttpApi(fake_server.dispatcher, fake_server.view, fake_server.agent, "127.0.0.1", 0)
    await api.start()
    async with aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{api.port}/v1/catalog/nodes?index=1&wait=5m"

        async def get() -> int:
            async with session.get(url) as response:
                await response.read()
                return response.status

        parked = asyncio.create_task(get())
        await asyncio.wait_for(fake_server.dispatcher.wait_parked("Catalog.ListNodes"), 5)
        # The query is parked for five minutes: a stop that waited for it would
        # outlive this deadline by far (a deadline, not a measurement).
        await asyncio.wait_for(api.stop(), 30)
        with pytest.raises(aiohttp.ClientError):
            await asyncio.wait_for(parked, 5)
