"""The firewall makes "only through gateways" a fact: every path, allowed or not.

Each host runs a small TCP listener; connections are attempted from inside
other hosts' namespaces. Allowed: within a datacenter, gateway to gateway
(WAN), and a secondary's server to a primary gateway's WAN address (the
bootstrap path). Everything else is rejected at once (reset), never hangs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from wanfed_topology import (
    TCP_REFUSED,
    DatacenterSpec,
    Host,
    Supervisor,
    Topology,
    start_tcp_listeners,
    tcp_dial,
)

pytestmark = pytest.mark.integration

PORT = 7000


def dial(source: Host, address: str) -> str:
    return tcp_dial(source, address, PORT)


def test_only_gateways_cross(two_dc_network: tuple[Topology, Supervisor]) -> None:
    topology, supervisor = two_dc_network
    start_tcp_listeners(supervisor, topology.hosts(), PORT)
    s1, s2 = topology.host("dc1", "s1"), topology.host("dc2", "s1")
    gw1, gw2 = topology.host("dc1", "gw1"), topology.host("dc2", "gw1")
    assert gw1.wan_ip is not None
    assert gw2.wan_ip is not None
    started = time.monotonic()
    allowed = {
        "dc1 server -> dc1 gateway LAN": dial(s1, gw1.lan_ip),
        "dc1 gateway -> dc1 server": dial(gw1, s1.lan_ip),
        "dc1 gateway -> dc2 gateway WAN": dial(gw1, gw2.wan_ip),
        "dc2 gateway -> dc1 gateway WAN": dial(gw2, gw1.wan_ip),
        "dc2 server -> primary gateway WAN (bootstrap)": dial(s2, gw1.wan_ip),
    }
    refused = {
        "dc2 server -> dc1 server": dial(s2, s1.lan_ip),
        "dc1 server -> dc2 server": dial(s1, s2.lan_ip),
        "dc1 server -> dc2 gateway WAN (not the primary's)": dial(s1, gw2.wan_ip),
        "dc2 gateway -> dc1 server": dial(gw2, s1.lan_ip),
        "dc2 server -> dc1 gateway LAN": dial(s2, gw1.lan_ip),
    }
    elapsed = time.monotonic() - started
    assert all(answer == "ok" for answer in allowed.values()), allowed
    # The one place a refusal is what is tested: enforcement of "only through
    # gateways" answers at once, so a test that breaks the rule fails fast. The
    # faults scenarios inject are silent (wanfed_topology's black_hole_wan and
    # vanish_hosts), never a reject.
    assert all(answer == TCP_REFUSED for answer in refused.values()), refused
    assert elapsed < 8, "rejections must be immediate, not timeouts"
    print(f"10 paths checked in {elapsed:.2f} s")


def test_cli_up_show_exec_down() -> None:
    prefix = "wfcli"
    env = {**os.environ, "WANFED_TOPOLOGY_STATE": "/run/wanfed-topology-test"}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "wanfed_topology.cli", "--prefix", prefix, *args],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            check=False,
        )

    up = cli("up", "dc1:1:1", "dc2:1:1")
    try:
        assert up.returncode == 0, up.stderr
        assert "198.19.0.11" in up.stdout
        shown = cli("exec", "dc2", "s1", "--", "ip", "-4", "-o", "addr", "show", "eth0")
        assert "198.18.2.11/24" in shown.stdout
    finally:
        down = cli("down")
    assert down.returncode == 0, down.stderr
    assert (
        f"{prefix}-"
        not in subprocess.run(
            ["ip", "netns", "list"], capture_output=True, text=True, check=True
        ).stdout
    )
    missing = cli("show")
    assert missing.returncode == 1
    assert "no topology with prefix 'wfcli' is up" in missing.stderr


def test_bad_topologies_are_refused() -> None:
    with pytest.raises(ValueError, match="must match"):
        DatacenterSpec(name="DC1")
    with pytest.raises(ValueError, match="repeat"):
        Topology(datacenters=[DatacenterSpec(name="a"), DatacenterSpec(name="a")])
    with pytest.raises(ValueError, match="primary 'x'"):
        Topology(datacenters=[DatacenterSpec(name="a")], primary="x")
