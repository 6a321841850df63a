"""An outsider on dc2's network tries every door of dc1; each one stays shut.

The outsider is a host on dc2's LAN that runs neither a server nor a gateway
(``DatacenterSpec(outsiders=1)``): what an attacker who got onto that network
controls. It reaches what any dc2 machine reaches — dc2's servers on the same
segment, and dc1's gateway at its WAN address (the path dc2's servers
bootstrap through) — and speaks the real protocols with the project's own
codecs (``outsider_probe.py``, run inside its namespace). Every attempt is
named, has a deadline, and is recorded as its own row of the session's table:

* dc1 server ports directly (RPC plain and TLS, HTTP, gossip TCP and UDP): the
  firewall between datacenters stops them;
* dc1's gateway with nothing: an SNI in no route table, ``server.dc1`` and
  ``s2.server.dc1`` without a client certificate, a ClientHello followed by
  plain RPC bytes;
* dc1's gateway with a leaked *client* certificate of the same CA:
  ``Status.Hello`` posing as s2, ``FederationState.Apply`` of a fake
  datacenter, the raft ALPN, the gossip packet and stream ALPNs carrying a
  fake member of a fake datacenter, ``Raft.Join`` of a made-up server;
* unencrypted gossip (UDP and TCP) to dc2's servers on the same segment;
* 400 idle connections held on dc1's gateway, while a real dc2 server still
  gets through it.

Then "unaffected": dc1 keeps its leader, Raft peers and server directory
(compared with a snapshot taken before), no server lists the fake datacenter,
``?dc=`` works both ways and dc1 accepts a catalog write.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from wanfed_topology import (
    GATEWAY_PORT,
    HTTP_PORT,
    DatacenterSpec,
    Host,
    Supervisor,
    Topology,
    build,
    http_json,
    run_in,
    start_federation,
    teardown,
    wait_until,
    wanfed_executable,
)

pytestmark = pytest.mark.integration

PROBE = Path(__file__).with_name("outsider_probe.py")
FAKE_DC = "fakedc"
DOMAIN = "consul"
RPC_PORT = 8300
GOSSIP_PORT = 8302
IDLE_CONNECTIONS = 400

Federation = tuple[Topology, Supervisor, Path]


@pytest.fixture
def federation(tmp_path: Path) -> Iterator[Federation]:
    """dc1 (primary: three servers, one gateway) and dc2 (one server, one gateway, one
    outsider); certificates as the operator made them, plus one leaked client certificate."""
    topology = Topology(
        datacenters=[
            DatacenterSpec(name="dc1", servers=3, gateways=1),
            DatacenterSpec(name="dc2", servers=1, gateways=1, outsiders=1),
        ],
    )
    build(topology)
    supervisor = Supervisor(tmp_path / "logs")
    try:
        start_federation(topology, supervisor, tmp_path)
        yield topology, supervisor, tmp_path
    finally:
        supervisor.stop_all()
        for name, text in supervisor.logs():
            print(f"--- {name} (last lines) ---\n{text[-2500:]}")
        teardown(topology)


def leak_client_certificate(workdir: Path) -> dict[str, str]:
    """What the outsider holds after a leak: the (public) CA certificate and one
    client certificate of dc2 with its key, copied where the outsider keeps them."""
    tls = workdir / "tls"
    subprocess.run(
        [wanfed_executable(), "tls", "cert", "create", "-client", "-dc", "dc2"],
        cwd=tls,
        check=True,
        capture_output=True,
    )
    loot = workdir / "outsider"
    loot.mkdir()
    for name in ("wanfed-agent-ca.pem", "dc2-client-consul-0.pem", "dc2-client-consul-0-key.pem"):
        shutil.copy(tls / name, loot / name)
    return {
        "ca": str(loot / "wanfed-agent-ca.pem"),
        "cert": str(loot / "dc2-client-consul-0.pem"),
        "key": str(loot / "dc2-client-consul-0-key.pem"),
    }


def probe(host: Host, attempt: str, **args: Any) -> dict[str, str]:
    """One attempt inside ``host``'s namespace: ``{"outcome", "detail"}``."""
    result = run_in(host, sys.executable, str(PROBE), attempt, json.dumps(args), timeout=60)
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        raise AssertionError(f"probe {attempt} crashed in {host.netns}: {result.stderr[-800:]}")
    answer: dict[str, str] = json.loads(lines[-1])
    print(f"[{attempt}] {answer['outcome']}: {answer['detail']}")
    return answer


def assert_refused(answer: dict[str, str]) -> None:
    assert answer["outcome"] == "refused", f"door opened: {answer['detail']}"


def sni(node: str | None = None) -> str:
    return f"{node}.server.dc1.{DOMAIN}" if node else f"server.dc1.{DOMAIN}"


def observe(topology: Topology) -> dict[str, Any]:
    """What the attacks must not change: per dc1 server its leader, Raft peers and
    server directory (its LAN member list is the directory), and the federation
    states the primary keeps."""
    seen: dict[str, Any] = {}
    for host in topology.servers("dc1"):
        members = http_json(host, "/v1/agent/members").get("body") or []
        seen[f"dc1/{host.name}"] = {
            "leader": http_json(host, "/v1/status/leader").get("body"),
            "peers": sorted(http_json(host, "/v1/status/peers").get("body") or []),
            "directory": sorted(f"{m['Name']}={m['Addr']}:{m['Port']}" for m in members),
        }
    primary = topology.host("dc1", "s1")
    states = http_json(primary, "/v1/internal/federation-states?stale").get("body") or []
    seen["federation states"] = sorted(s["Datacenter"] for s in states)
    return seen


def wan_members(topology: Topology) -> dict[str, set[str]]:
    """Each server's view of the WAN gossip pool."""
    return {
        f"{host.datacenter}/{host.name}": {
            m["Name"] for m in http_json(host, "/v1/agent/members?wan=1").get("body") or []
        }
        for host in topology.servers()
    }


def fake_datacenter_sightings(topology: Topology) -> dict[str, object]:
    """Where any server lists the fake datacenter, or a WAN member of it."""
    sightings: dict[str, object] = {}
    for host in topology.servers():
        datacenters = http_json(host, "/v1/catalog/datacenters").get("body") or []
        if FAKE_DC in datacenters:
            sightings[f"{host.datacenter}/{host.name} datacenters"] = datacenters
    for where, names in wan_members(topology).items():
        if fakes := sorted(name for name in names if name.endswith(f".{FAKE_DC}")):
            sightings[f"{where} WAN members"] = fakes
    return sightings


def test_an_outsider_in_dc2_opens_no_door_of_dc1(federation: Federation, scenarios: Any) -> None:
    topology, supervisor, workdir = federation
    dc1_s1, dc1_s2 = topology.host("dc1", "s1"), topology.host("dc1", "s2")
    dc2_s1 = topology.host("dc2", "s1")
    gateway = topology.host("dc1", "gw1")
    outsider = topology.host("dc2", "o1")
    assert gateway.wan_ip is not None
    door = f"{gateway.wan_ip}:{GATEWAY_PORT}"
    me = outsider.lan_ip

    def federated() -> object:
        answers = {
            "dc2 -> dc1": http_json(dc2_s1, "/v1/catalog/nodes?dc=dc1"),
            "dc1 -> dc2": http_json(dc1_s1, "/v1/catalog/nodes?dc=dc2"),
        }
        failing = {k: v for k, v in answers.items() if v.get("status") != 200}
        return failing or True

    wait_until("dc1 and dc2 answer ?dc= for each other", 150, federated)
    before = observe(topology)
    assert all(before[f"dc1/{h.name}"]["leader"] for h in topology.servers("dc1")), before
    print(f"before the attacks: {json.dumps(before)}")

    leaked = leak_client_certificate(workdir)
    nothing = {"ca": leaked["ca"]}
    fake = {"me": me, "fake_dc": FAKE_DC}
    s1_rpc = f"{dc1_s1.lan_ip}:{RPC_PORT}"
    attempts: list[tuple[str, str, dict[str, Any]]] = [
        # dc1 server ports directly: the firewall between datacenters stops them.
        ("dc1 s1:8300 plain RPC", "plain-rpc", {"address": s1_rpc}),
        (
            "dc1 s1:8300 TLS RPC, no certificate",
            "tls-rpc",
            {**nothing, "address": s1_rpc, "sni": sni(), "method": "Status.Ping"},
        ),
        ("dc1 s1:8500 HTTP", "http", {"address": f"{dc1_s1.lan_ip}:{HTTP_PORT}"}),
        (
            "dc1 s1:8302 gossip TCP",
            "tcp-gossip",
            {**fake, "node": "evil-tcp1", "address": f"{dc1_s1.lan_ip}:{GOSSIP_PORT}"},
        ),
        (
            "dc1 s1:8302 gossip UDP",
            "udp-gossip",
            {**fake, "node": "evil-udp1", "address": f"{dc1_s1.lan_ip}:{GOSSIP_PORT}"},
        ),
        # dc1's gateway, holding nothing.
        ("gw: SNI in no route table", "unrouted-sni", {"address": door, "sni": "www.example.com"}),
        (
            "gw: server.dc1, no certificate",
            "tls-rpc",
            {**nothing, "address": door, "sni": sni(), "method": "Status.Ping"},
        ),
        (
            "gw: s2.server.dc1, no certificate",
            "tls-rpc",
            {**nothing, "address": door, "sni": sni("s2"), "method": "Status.Ping"},
        ),
        ("gw: ClientHello then plain RPC", "hello-then-plain", {"address": door, "sni": sni()}),
        # dc1's gateway, holding a leaked client certificate.
        (
            "gw+client cert: Status.Hello as s2",
            "tls-rpc",
            {
                **leaked,
                "address": door,
                "sni": sni("s1"),
                "method": "Status.Hello",
                "body": {
                    "Node": "s2",
                    "Datacenter": "dc1",
                    "RpcAddress": f"{me}:{RPC_PORT}",
                    "RaftAddress": f"{dc1_s2.lan_ip}:{RPC_PORT}",
                    "WanAddress": me,
                    "WanGossipAddress": f"{me}:{GOSSIP_PORT}",
                },
            },
        ),
        (
            "gw+client cert: FederationState.Apply",
            "tls-rpc",
            {
                **leaked,
                "address": door,
                "sni": sni(),
                "method": "FederationState.Apply",
                "body": {
                    "Datacenter": "dc1",
                    "Op": "upsert",
                    "State": {"Datacenter": FAKE_DC, "MeshGateways": []},
                },
            },
        ),
        (
            "gw+client cert: raft ALPN as s2",
            "raft-alpn",
            {**leaked, "address": door, "sni": sni("s1"), "peer": f"{dc1_s2.lan_ip}:{RPC_PORT}"},
        ),
        (
            "gw+client cert: gossip packet ALPN",
            "gossip-packet-alpn",
            {**leaked, **fake, "node": "evil-packet", "address": door, "sni": sni("s1")},
        ),
        (
            "gw+client cert: gossip stream ALPN",
            "gossip-stream-alpn",
            {**leaked, **fake, "node": "evil-stream", "address": door, "sni": sni("s1")},
        ),
        (
            "gw+client cert: Raft.Join a made-up server",
            "tls-rpc",
            {
                **leaked,
                "address": door,
                "sni": sni(),
                "method": "Raft.Join",
                "body": {
                    "Node": "ghost",
                    "Datacenter": "dc1",
                    "RpcAddress": f"{me}:{RPC_PORT}",
                    "RaftAddress": f"{me}:{RPC_PORT}",
                },
            },
        ),
        # Gossip on the outsider's own segment: dc2's server.
        (
            "dc2 s1:8302 gossip UDP, unencrypted",
            "udp-gossip",
            {**fake, "node": "evil-udp2", "address": f"{dc2_s1.lan_ip}:{GOSSIP_PORT}"},
        ),
        (
            "dc2 s1:8302 gossip TCP, unencrypted",
            "tcp-gossip",
            {**fake, "node": "evil-tcp2", "address": f"{dc2_s1.lan_ip}:{GOSSIP_PORT}"},
        ),
    ]
    held = f"gw: {IDLE_CONNECTIONS} idle connections, gateway usable"
    unaffected = "federation unaffected"
    scenarios.plan(
        *(f"8 outsider: {name}" for name, _, _ in attempts), f"8 {held}", f"8 {unaffected}"
    )

    for name, attempt, args in attempts:
        with scenarios.run(f"8 outsider: {name}", go_on=True):
            assert_refused(probe(outsider, attempt, **args))
            if "node" in args:
                # A gossip message need not be answered to be believed: the fake
                # member (named for this attempt) must be in no server's view.
                # Servers act on a message when it arrives, and the probe has
                # waited for an answer since.
                member = f"{args['node']}.{FAKE_DC}"
                believed = [
                    where for where, names in wan_members(topology).items() if member in names
                ]
                assert not believed, f"{member} is a WAN member in {believed}"

    with scenarios.run(f"8 {held}", go_on=True):
        holder = supervisor.start(
            "outsider-hold",
            outsider,
            [
                sys.executable,
                str(PROBE),
                "hold",
                json.dumps({"address": door, "count": IDLE_CONNECTIONS}),
            ],
        )
        holder.wait_for_output('"outcome": "holding"', timeout=120)
        try:
            # A real dc2 server opens a new connection through the gateway meanwhile.
            tls = workdir / "tls"
            fresh = probe(
                dc2_s1,
                "tls-rpc",
                ca=str(tls / "wanfed-agent-ca.pem"),
                cert=str(tls / "dc2-server-consul-0.pem"),
                key=str(tls / "dc2-server-consul-0-key.pem"),
                address=door,
                sni=sni(),
                method="Status.Ping",
            )
            assert fresh["outcome"] == "accepted", f"gateway unusable: {fresh['detail']}"
            answer = http_json(dc2_s1, "/v1/catalog/nodes?dc=dc1")
            assert answer.get("status") == 200, f"?dc=dc1 while held: {answer}"
        finally:
            holder.stop()
            print(f"[hold] {holder.log_text().strip()}")
        assert supervisor.processes["dc1-gw1"].alive(), "the gateway died"

    with scenarios.run(f"8 {unaffected}", go_on=True):
        after = observe(topology)
        problems: dict[str, object] = {
            f"{key} (before, after)": (before[key], after.get(key))
            for key in before
            if after.get(key) != before[key]
        }
        problems.update(fake_datacenter_sightings(topology))
        for asked, target in (("dc2", "dc1"), ("dc1", "dc2")):
            answer = http_json(topology.host(asked, "s1"), f"/v1/catalog/nodes?dc={target}")
            if answer.get("status") != 200:
                problems[f"?dc={target} asked in {asked}"] = answer
        registration = {"Node": "after-attacks", "Address": "198.18.1.99", "Datacenter": "dc1"}
        written = http_json(dc1_s1, "/v1/catalog/register", method="PUT", body=registration)
        nodes = http_json(dc1_s1, "/v1/catalog/nodes?consistent").get("body") or []
        if written.get("status") != 200 or "after-attacks" not in {n["Node"] for n in nodes}:
            problems["catalog write in dc1"] = written
        assert not problems, f"changed by the attacks: {problems}"

    scenarios.check()
