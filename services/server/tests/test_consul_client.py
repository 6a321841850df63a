"""A running ``wanfed agent -dev`` driven by the unmodified py-consul client.

py-consul speaks Consul's HTTP API exactly as Consul clients in the field do
(its own key spellings, its own query parameters, its own checks of status
codes and ``X-Consul-Index``), so passing here means Consul tooling works.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import sys
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import consul
import pytest

import wanfed_proto as wp
from wanfed_fsm import (
    CheckServiceNode,
    FederationState,
    FederationStateRequest,
    HealthCheck,
    Node,
    Service,
    ServiceAddress,
)
from wanfed_server.cli import main

if TYPE_CHECKING:
    from .conftest import RuntimePki  # type: ignore[import-not-found]

_HTTP_LISTENING = re.compile(rb"http api listening address=([\d.]+):(\d+)")
_RPC_LISTENING = re.compile(rb"rpc port listening on ([\d.]+):(\d+)")


@dataclass
class DevAgent:
    http: tuple[str, int]
    rpc: tuple[str, int]
    process: asyncio.subprocess.Process

    def client(self) -> consul.Consul:
        return consul.Consul(host=self.http[0], port=self.http[1])


@pytest.fixture
async def dev_agent(runtime_pki: RuntimePki, tmp_path: Path) -> AsyncIterator[DevAgent]:
    # with TLS, so that a test can call servers-only methods with a server certificate
    tls_file = tmp_path / "tls.json"
    tls_file.write_text(json.dumps({"tls": runtime_pki.mutual_tls("s1")}))
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "wanfed_server.cli",
        "agent",
        "-dev",
        "-node",
        "dev1",
        "-http-port",
        "0",
        "-server-port",
        "0",
        "-config-file",
        str(tls_file),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    log: list[bytes] = []
    http = rpc = None

    async def read_until_ready() -> None:
        nonlocal http, rpc
        assert process.stderr is not None
        while http is None or rpc is None:
            line = await process.stderr.readline()
            if not line:
                raise AssertionError(b"".join(log).decode())
            log.append(line)
            if match := _HTTP_LISTENING.search(line):
                http = (match[1].decode(), int(match[2]))
            if match := _RPC_LISTENING.search(line):
                rpc = (match[1].decode(), int(match[2]))

    async def drain() -> None:
        assert process.stderr is not None
        while line := await process.stderr.readline():
            log.append(line)

    try:
        await asyncio.wait_for(read_until_ready(), 10)
        drainer = asyncio.create_task(drain())
        assert http is not None
        assert rpc is not None
        yield DevAgent(http=http, rpc=rpc, process=process)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()
        with contextlib.suppress(NameError):
            await drainer
    assert process.returncode == 0, b"".join(log).decode()


async def test_py_consul_service_with_ttl_check_round_trip(dev_agent: DevAgent) -> None:
    c = dev_agent.client()

    def scenario() -> dict[str, Any]:
        assert c.status.leader() == f"{dev_agent.rpc[0]}:{dev_agent.rpc[1]}"
        assert c.catalog.datacenters() == ["dc1"]
        assert c.agent.service.register(
            "web", service_id="web-1", port=8080, tags=["v1"], check=consul.Check.ttl("30s")
        )
        assert "web-1" in c.agent.services()
        assert c.agent.checks()["service:web-1"]["Status"] == "critical"
        assert c.agent.check.ttl_pass("service:web-1", notes="all good")
        assert c.agent.checks()["service:web-1"]["Status"] == "passing"

        # the agent syncs into the catalog: block on the passing filter until it shows up
        index, passing = c.health.service("web", passing=True)
        while not passing:
            index, passing = c.health.service("web", passing=True, index=index, wait="5s")
        [entry] = passing
        assert entry["Service"]["ID"] == "web-1"
        assert entry["Node"]["Node"] == "dev1"
        checks = {check["CheckID"]: check for check in entry["Checks"]}
        assert checks["service:web-1"]["Output"] == "all good"
        assert checks["serfHealth"]["Status"] == "passing"

        _, instances = c.catalog.service("web")
        assert [(i["ServiceID"], i["ServicePort"], i["ServiceTags"]) for i in instances] == [
            ("web-1", 8080, ["v1"])
        ]
        _, services = c.catalog.services()
        assert services["web"] == ["v1"]
        assert "consul" in services
        _, nodes = c.catalog.nodes()

        # failing the TTL check takes it out of the passing view
        assert c.agent.check.ttl_fail("service:web-1", notes="down")
        index, passing = c.health.service("web", passing=True)
        while passing:
            index, passing = c.health.service("web", passing=True, index=index, wait="5s")
        _, everything = c.health.service("web")
        return {"nodes": nodes, "all": everything, "members": c.agent.members()}

    seen = await asyncio.to_thread(scenario)
    assert [n["Node"] for n in seen["nodes"]] == ["dev1"]
    assert len(seen["all"]) == 1
    assert seen["members"][0]["Name"] == "dev1"


async def test_py_consul_errors_are_consul_errors(dev_agent: DevAgent) -> None:
    c = dev_agent.client()

    def scenario() -> None:
        with pytest.raises(consul.ConsulException, match="No path to datacenter"):
            c.catalog.nodes(dc="nowhere")
        assert c.agent.service.register("db", check=consul.Check.tcp("127.0.0.1", 1, "1h"))
        with pytest.raises(consul.ConsulException, match="does not have associated TTL"):
            c.agent.check.ttl_pass("service:db")
        with pytest.raises(consul.exceptions.BadRequest, match="Missing service name"):
            c.agent.service.register("")

    await asyncio.to_thread(scenario)


def _gateway() -> CheckServiceNode:
    return CheckServiceNode(
        node=Node(node="gw1", address="127.0.0.5", datacenter="dc1"),
        service=Service(
            kind="mesh-gateway",
            id="mesh-gateway",
            service="mesh-gateway",
            port=8443,
            meta={"consul-wan-federation": "1"},
            tagged_addresses={
                "lan": ServiceAddress(address="127.0.0.5", port=8443),
                "wan": ServiceAddress(address="198.18.0.5", port=8443),
            },
        ),
        checks=[HealthCheck(node="gw1", check_id="gw-alive", status="passing")],
    )


def _get(url: str) -> tuple[int, bytes, dict[str, str]]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, error.read(), dict(error.headers)


async def test_federation_state_endpoints_after_apply_over_rpc(
    dev_agent: DevAgent, runtime_pki: RuntimePki
) -> None:
    base = f"http://{dev_agent.http[0]}:{dev_agent.http[1]}"
    status, body, _ = await asyncio.to_thread(_get, base + "/v1/internal/federation-state/dc1")
    assert (status, body) == (404, b"")
    status, body, _ = await asyncio.to_thread(_get, base + "/v1/internal/federation-state/")
    assert (status, body) == (400, b"Missing datacenter name")

    # only servers write federation states: dial as another server of dc1
    files = runtime_pki.certs["s2"]
    context = wp.client_context(runtime_pki.ca, files.cert, files.key, alpn=[wp.Alpn.RPC_MULTI])
    connection = await wp.dial_alpn(dev_agent.rpc, "server.dc1.consul", wp.Alpn.RPC_MULTI, context)
    async with wp.RpcClient(connection) as client:
        request = FederationStateRequest(
            op="upsert", state=FederationState(datacenter="dc1", mesh_gateways=[_gateway()])
        )
        assert await client.call("FederationState.Apply", request, type=bool, timeout=10)

    status, body, headers = await asyncio.to_thread(_get, base + "/v1/internal/federation-states")
    assert status == 200
    [state] = json.loads(body)
    assert state["Datacenter"] == "dc1"
    assert state["MeshGateways"][0]["Service"]["TaggedAddresses"]["wan"]["Address"] == "198.18.0.5"
    assert state["PrimaryModifyIndex"] == state["ModifyIndex"] == int(headers["X-Consul-Index"])
    assert state["UpdatedAt"] != "0001-01-01T00:00:00Z"

    status, body, _ = await asyncio.to_thread(
        _get, base + "/v1/internal/federation-states/mesh-gateways"
    )
    assert status == 200
    gateways = json.loads(body)
    assert list(gateways) == ["dc1"]
    assert gateways["dc1"][0]["Node"]["Node"] == "gw1"

    status, body, headers = await asyncio.to_thread(
        _get, base + "/v1/internal/federation-state/dc1"
    )
    assert status == 200
    one = json.loads(body)
    assert one["State"]["Datacenter"] == "dc1"
    assert one["Index"] == int(headers["X-Consul-Index"])
    assert headers["X-Consul-KnownLeader"] == "true"


async def test_members_and_info_commands_against_the_dev_agent(
    dev_agent: DevAgent, capsys: pytest.CaptureFixture[str]
) -> None:
    address = f"{dev_agent.http[0]}:{dev_agent.http[1]}"
    assert await asyncio.to_thread(main, ["members", "-http-addr", address]) == 0
    header, row = capsys.readouterr().out.splitlines()
    assert header.split() == ["Node", "Address", "Status", "Type", "Build", "Protocol", "DC"]
    assert row.split()[:4] == ["dev1", f"{dev_agent.rpc[0]}:{dev_agent.rpc[1]}", "alive", "server"]
    assert row.split()[-1] == "dc1"
    assert await asyncio.to_thread(main, ["members", "-wan", "-http-addr", address]) == 0
    assert capsys.readouterr().out.splitlines()[1].startswith("dev1.dc1 ")
    assert await asyncio.to_thread(main, ["info", "-http-addr", address]) == 0
    assert "\tserver = true\n" in capsys.readouterr().out
