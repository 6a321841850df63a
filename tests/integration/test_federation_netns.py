"""Three datacenters in network namespaces, where only gateways can cross.

Every server and gateway is its own process on its own host address; the
router's firewall rejects every cross-datacenter packet except gateway to
gateway and a secondary's server to a primary gateway. The secondaries know
nothing of the primary but ``primary_gateways``.

Phases (one bring-up, measured and printed as they go):
1. dc2 and dc3 federate from ``primary_gateways`` alone: ``wanfed members -wan``
   in dc3 lists all nine servers alive, and ``?dc=dc2`` asked in dc3 answers;
2. the rule is enforced: a dc2 server cannot open dc1's RPC or gossip port,
   while the same request through ``?dc=dc1`` succeeds;
3. kill -9 of the primary's leader: cross-datacenter requests succeed again
   within 5 s and no write acknowledged before the kill is lost;
4. kill -9 of every dc2 server, then restart: the federation states are
   intact and the path to the primary is the local gateways from the first
   choice on (#9342), and dc2 answers ``?dc=dc1`` again.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from wanfed_topology import (
    TCP_REFUSED,
    DatacenterSpec,
    Supervisor,
    Topology,
    build,
    http_json,
    start_federation,
    tcp_dial,
    teardown,
    wait_until,
    wanfed_cli,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def federation(tmp_path: Path) -> Iterator[tuple[Topology, Supervisor]]:
    topology = Topology(
        datacenters=[
            DatacenterSpec(name="dc1", servers=3, gateways=2),
            DatacenterSpec(name="dc2", servers=3, gateways=2),
            DatacenterSpec(name="dc3", servers=3, gateways=2),
        ],
    )
    build(topology)
    supervisor = Supervisor(tmp_path / "logs")
    try:
        start_federation(topology, supervisor, tmp_path)
        yield topology, supervisor
    finally:
        supervisor.stop_all()
        for name, text in supervisor.logs():
            print(f"--- {name} (last lines) ---\n{text[-1500:]}")
        teardown(topology)


def test_three_datacenters_through_gateways_only(
    federation: tuple[Topology, Supervisor], scenarios: Any
) -> None:
    scenarios.plan(
        "1 federate from primary_gateways alone",
        "2 only gateways cross",
        "3 kill -9 the primary's leader",
        "6 kill -9 dc2's servers, restart",
    )
    topology, supervisor = federation
    dc3 = topology.host("dc3", "s1")
    dc2 = topology.host("dc2", "s1")
    everyone = {f"s{i}.dc{d}" for i in (1, 2, 3) for d in (1, 2, 3)}

    def nine_alive() -> object:
        out = wanfed_cli(dc3, "members", "-wan")
        alive = {line.split()[0] for line in out.splitlines()[1:] if " alive " in line}
        return alive == everyone or f"{len(alive & everyone)} of 9 alive"

    # 1. federation from primary_gateways alone
    with scenarios.run("1 federate from primary_gateways alone") as scenario:
        formed = wait_until("all nine servers alive in dc3's view of the WAN pool", 150, nine_alive)

        def dc2_answers_dc3() -> object:
            answer = http_json(dc3, "/v1/catalog/services?dc=dc2")
            return answer.get("status") == 200 or answer

        answered = wait_until("?dc=dc2 answered in dc3", 60, dc2_answers_dc3)

        # Federated means every datacenter reaches every other one; the next
        # scenarios start from there (dc3 may be ready before dc2 knows dc1's
        # gateways).
        def every_pair_answers() -> object:
            failing: dict[str, object] = {}
            for asked in ("dc1", "dc2", "dc3"):
                for target in ("dc1", "dc2", "dc3"):
                    if asked == target:
                        continue
                    host = topology.host(asked, "s1")
                    answer = http_json(host, f"/v1/catalog/services?dc={target}")
                    if answer.get("status") != 200:
                        failing[f"{asked} -> {target}"] = answer
            return failing or True

        meshed = wait_until("every datacenter answers ?dc= for every other", 60, every_pair_answers)
        scenario.recovered(formed + answered + meshed)

    # 2. enforcement: direct server-to-server paths are rejected, ?dc= works
    with scenarios.run("2 only gateways cross"):
        s1_dc1 = topology.host("dc1", "s1")
        for port in (8300, 8302):
            outcome = tcp_dial(dc2, s1_dc1.lan_ip, port)
            assert outcome == TCP_REFUSED, (port, outcome)
        assert http_json(dc2, "/v1/catalog/nodes?dc=dc1").get("status") == 200

    # 3. kill -9 the primary's leader while writes are acknowledged
    with scenarios.run("3 kill -9 the primary's leader") as scenario:
        leader_answer = http_json(dc3, "/v1/status/leader?dc=dc1")
        leader_rpc = str(leader_answer.get("body", ""))
        leaders = [h for h in topology.servers("dc1") if leader_rpc.split(":")[0] == h.lan_ip]
        assert len(leaders) == 1, leader_answer
        leader = leaders[0]
        acknowledged = []
        for n in range(20):
            registration = {"Node": f"w{n}", "Address": "198.18.9.9", "Datacenter": "dc1"}
            answer = http_json(dc2, "/v1/catalog/register?dc=dc1", method="PUT", body=registration)
            if answer.get("status") == 200:
                acknowledged.append(f"w{n}")
        assert len(acknowledged) == 20
        process = supervisor.processes[f"dc1-{leader.name}"]
        os.kill(process.pid, signal.SIGKILL)
        killed_at = time.monotonic()

        def cross_dc_again() -> object:
            answer = http_json(dc3, "/v1/catalog/nodes?dc=dc1")
            return answer.get("status") == 200 or answer

        wait_until("cross-DC reads after kill -9 of the primary's leader", 30, cross_dc_again)
        recovered = scenario.recovered(time.monotonic() - killed_at)
        print(f"primary leader killed; cross-DC requests succeed again after {recovered:.1f} s")
        assert recovered < 5.0
        nodes = http_json(dc3, "/v1/catalog/nodes?dc=dc1&consistent")
        names = {node["Node"] for node in nodes["body"]}
        assert set(acknowledged) <= names, sorted(set(acknowledged) - names)

    # 4. kill -9 every dc2 server and restart them from their data directories
    with scenarios.run("6 kill -9 dc2's servers, restart") as scenario:
        dc2_servers = [f"dc2-{h.name}" for h in topology.servers("dc2")]
        for name in dc2_servers:
            os.kill(supervisor.processes[name].pid, signal.SIGKILL)
        for name in dc2_servers:
            supervisor.processes[name].popen.wait(10)
        marks = {name: len(supervisor.processes[name].log_text()) for name in dc2_servers}
        restarted_at = time.monotonic()
        for name in dc2_servers:
            supervisor.restart(name)

        def dc2_back() -> object:
            answer = http_json(dc2, "/v1/catalog/nodes?dc=dc1")
            return answer.get("status") == 200 or answer

        wait_until("dc2 restarted from kill -9 answers ?dc=dc1", 60, dc2_back)
        scenario.recovered(time.monotonic() - restarted_at)
        states = http_json(dc2, "/v1/internal/federation-states?stale")
        assert {s["Datacenter"] for s in states["body"]} == {"dc1", "dc2", "dc3"}
        for name in dc2_servers:
            since_restart = supervisor.processes[name].log_text()[marks[name] :]
            choices = [
                line.rsplit(" ", 1)[-1]
                for line in since_restart.splitlines()
                if "path to the primary datacenter is now" in line
            ]
            assert choices[:1] == ["local-gateways"], (name, choices)
