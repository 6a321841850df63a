"""Changing a built topology: black-hole a datacenter's gateways on the WAN, replace
the primary's gateways, remove a datacenter; and cleaning up after a dead run.

The federation scenarios build on these, so each is checked here on its own
with plain TCP listeners: the faults must be silent (a dial gets no answer at
all: no reset, no ICMP error), and the paths they leave open must stay open.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from wanfed_topology import (
    PREFIX_ENV,
    TCP_SILENT,
    DatacenterSpec,
    Host,
    Process,
    Supervisor,
    Topology,
    black_hole_wan,
    build,
    heal_black_hole,
    leftovers,
    reap_stale,
    remove_datacenter,
    replace_gateways,
    start_tcp_listeners,
    tcp_dial,
    teardown,
)

pytestmark = pytest.mark.integration

PORT = 7000


def dial(source: Host, address: str | None) -> str:
    assert address is not None
    return tcp_dial(source, address, PORT)


def listen(supervisor: Supervisor, hosts: list[Host]) -> None:
    start_tcp_listeners(supervisor, hosts, PORT)


_HOLDING_LISTENER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen()
print("listening", flush=True)
held = []
while True:
    held.append(s.accept()[0])
"""
_HOLDING_CLIENT = """
import socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
c.settimeout(None)
print("connected", flush=True)
print("closed" if not c.recv(1) else "data", flush=True)
"""
HOLD_PORT = 7001


def hold_open(supervisor: Supervisor, source: Host, address: str | None) -> Process:
    """A connection from ``source`` to a holding listener at ``address``, idle, whose
    client reports the first thing that arrives: a FIN prints ``closed``, a reset
    kills it with a traceback. A silent fault leaves it waiting."""
    assert address is not None
    name = f"hold-{len(supervisor.processes)}-{source.netns}-{address}"
    argv = [sys.executable, "-c", _HOLDING_CLIENT, address, str(HOLD_PORT)]
    client = supervisor.start(name, source, argv)
    client.wait_for_output("connected")
    return client


def heard_nothing(client: Process) -> bool:
    return client.alive() and client.log_text().split() == ["connected"]


def netns_names() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return {line.split()[0] for line in out.stdout.splitlines() if line.strip()}


def test_black_hole_silences_gateways_but_keeps_the_fallback_path(tmp_path: Path) -> None:
    topology = Topology(
        datacenters=[
            DatacenterSpec(name="dc1"),
            DatacenterSpec(name="dc2", gateways=2),
            DatacenterSpec(name="dc3"),
        ]
    )
    build(topology)
    supervisor = Supervisor(tmp_path / "logs")
    try:
        listen(supervisor, topology.hosts())
        gw1, gw3 = topology.host("dc1", "gw1"), topology.host("dc3", "gw1")
        s2 = topology.host("dc2", "s1")
        dc2_gateways = topology.gateways("dc2")
        assert all(dial(g, gw1.wan_ip) == "ok" for g in dc2_gateways)
        black_hole_wan(topology, "dc2")
        holed = {
            "dc2 gateways -> dc1 gateway WAN": {dial(g, gw1.wan_ip) for g in dc2_gateways},
            "dc2 gateways -> dc3 gateway WAN": {dial(g, gw3.wan_ip) for g in dc2_gateways},
            "dc1 gateway -> dc2 gateways WAN": {dial(gw1, g.wan_ip) for g in dc2_gateways},
        }
        # Nothing answers: not a refusal, not an unreachable, just silence.
        assert all(answers == {TCP_SILENT} for answers in holed.values()), holed
        # Untouched: the fallback path, gateway to gateway elsewhere, the LAN.
        assert dial(s2, gw1.wan_ip) == "ok"
        assert dial(gw3, gw1.wan_ip) == "ok"
        assert dial(dc2_gateways[0], s2.lan_ip) == "ok"
        heal_black_hole(topology, "dc2")
        assert all(dial(g, gw1.wan_ip) == "ok" for g in dc2_gateways)
        assert dial(gw1, dc2_gateways[1].wan_ip) == "ok"
    finally:
        supervisor.stop_all()
        teardown(topology)


def test_faults_leave_open_connections_hearing_nothing(tmp_path: Path) -> None:
    """No FIN and no reset reaches the far end of an open connection: not through a
    black hole when the other end closes, not from a host that vanishes."""
    topology = Topology(
        datacenters=[
            DatacenterSpec(name="dc1"),
            DatacenterSpec(name="dc2"),
            DatacenterSpec(name="dc3"),
        ]
    )
    build(topology)
    supervisor = Supervisor(tmp_path / "logs")
    try:
        gw1, gw2, gw3 = (topology.host(dc, "gw1") for dc in ("dc1", "dc2", "dc3"))
        s1, s2 = topology.host("dc1", "s1"), topology.host("dc2", "s1")
        listeners = {
            h.name + h.datacenter: supervisor.start(
                f"holder-{h.netns}", h, [sys.executable, "-c", _HOLDING_LISTENER, str(HOLD_PORT)]
            )
            for h in (gw1, gw2)
        }
        for listener in listeners.values():
            listener.wait_for_output("listening")

        # A black hole: dc1's gateway closes its connections; dc3's hears the FIN
        # at once, black-holed dc2's hears nothing.
        holed, control = (
            hold_open(supervisor, gw2, gw1.wan_ip),
            hold_open(supervisor, gw3, gw1.wan_ip),
        )
        black_hole_wan(topology, "dc2")
        listeners["gw1dc1"].stop()
        control.wait_for_output("closed")
        assert heard_nothing(holed), holed.log_text()
        heal_black_hole(topology, "dc2")

        # Vanishing: the same over the WAN (gateway to gateway), through the router
        # (the fallback path) and on the LAN, while dc2's gateway closes normally.
        listeners["gw1dc1"] = supervisor.start(
            "holder-again", gw1, [sys.executable, "-c", _HOLDING_LISTENER, str(HOLD_PORT)]
        )
        listeners["gw1dc1"].wait_for_output("listening")
        clients = [
            hold_open(supervisor, h, a)
            for h, a in ((gw3, gw1.wan_ip), (s2, gw1.wan_ip), (s1, gw1.lan_ip))
        ]
        control = hold_open(supervisor, s2, gw2.lan_ip)
        topology = replace_gateways(topology, "dc1")
        listeners["gw1dc2"].stop()
        control.wait_for_output("closed")
        assert all(heard_nothing(c) for c in clients), {c.name: c.log_text() for c in clients}
    finally:
        supervisor.stop_all()
        teardown(topology)


def test_replace_primary_gateways_and_remove_a_datacenter(tmp_path: Path) -> None:
    topology = Topology(
        datacenters=[
            DatacenterSpec(name="dc1", gateways=2),
            DatacenterSpec(name="dc2"),
            DatacenterSpec(name="dc3"),
        ]
    )
    build(topology)
    supervisor = Supervisor(tmp_path / "logs")
    try:
        old = topology.gateways("dc1")
        topology = replace_gateways(topology, "dc1")
        new = topology.gateways("dc1")
        assert [h.name for h in new] == ["gw3", "gw4"]
        assert [h.wan_ip for h in new] == ["198.19.0.13", "198.19.0.14"]
        assert [h.lan_ip for h in new] == ["198.18.1.23", "198.18.1.24"]
        names = netns_names()
        assert not {h.netns for h in old} & names
        assert {h.netns for h in new} <= names
        listen(supervisor, [*new, topology.host("dc1", "s1"), topology.host("dc2", "gw1")])
        s2 = topology.host("dc2", "s1")
        # The bootstrap path follows the new addresses; the old ones went silent,
        # through the router and on the WAN and LAN segments alike.
        assert [dial(s2, h.wan_ip) for h in new] == ["ok", "ok"]
        assert dial(s2, old[0].wan_ip) == TCP_SILENT
        assert dial(topology.host("dc2", "gw1"), new[0].wan_ip) == "ok"
        assert dial(topology.host("dc2", "gw1"), old[1].wan_ip) == TCP_SILENT
        assert dial(topology.host("dc1", "s1"), old[0].lan_ip) == TCP_SILENT
        assert dial(new[1], topology.host("dc1", "s1").lan_ip) == "ok"

        dc3 = [h.netns for h in topology.hosts() if h.datacenter == "dc3"]
        topology = remove_datacenter(topology, "dc3")
        assert not set(dc3) & netns_names()
        assert [h.datacenter for h in topology.hosts()].count("dc3") == 0
        assert (
            "198.18.3.0/24"
            not in subprocess.run(
                ["ip", "netns", "exec", topology.router_netns, "nft", "list", "ruleset"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
    finally:
        supervisor.stop_all()
        teardown(topology)
    assert not leftovers(topology.prefix)


def test_leftovers_of_a_dead_run_are_reaped_and_a_live_run_is_not(tmp_path: Path) -> None:
    # A prefix whose owner has exited: what a run killed with SIGKILL leaves.
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)  # fmt: skip
    dead_owner = int(finished.stdout)
    stale = Topology(datacenters=[DatacenterSpec(name="dc1")], prefix=f"wf{dead_owner}")
    live = Topology(datacenters=[DatacenterSpec(name="dc1")])  # owned by this process
    build(stale)
    supervisor = Supervisor(tmp_path / "logs")
    try:
        host = stale.host("dc1", "s1")
        orphan = supervisor.start("orphan", host, ["sleep", "300"])
        build(live)  # build reaps first: the stale topology goes, with its process
        assert not {h.netns for h in stale.hosts()} & netns_names()
        orphan.popen.wait(10)
        assert not leftovers(stale.prefix)
        # A live owner's namespaces survive a reap, and so do its tagged processes.
        survivor = supervisor.start("survivor", live.host("dc1", "s1"), ["sleep", "300"])
        assert reap_stale() == []
        assert {h.netns for h in live.hosts()} <= netns_names()
        assert survivor.alive()
        assert survivor.pid in leftovers(live.prefix).pids
        environ = Path(f"/proc/{survivor.pid}/environ").read_bytes().split(b"\0")
        assert f"{PREFIX_ENV}={live.prefix}".encode() in environ
    finally:
        supervisor.stop_all()
        teardown(stale)
        teardown(live)
    assert not leftovers(live.prefix)
    assert os.getpid() == int(live.prefix.removeprefix("wf"))
