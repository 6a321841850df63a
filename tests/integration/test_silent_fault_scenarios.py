"""WAN faults under a running secondary, all of them silent, as real ones are.

A dropped packet or a switched-off machine sends no reset and no ICMP error:
the code under test learns of it only through its own deadlines, keepalives
and retries. So every fault here is a black hole (an nftables ``drop``) or a
host that vanishes (its links deleted before its processes die), and no
connection is ever aborted for the servers (no ``reject``, no ``ss -K``):

a. dc2's gateways are black-holed on the WAN: dc2's leader goes straight to
   the primary's gateways and answers ``?dc=dc1`` again within 45 s of the
   fault, and keeps answering; healed, it goes back to its local gateways;
b. every primary gateway is replaced while dc2 keeps running: the old hosts
   vanish, and only the discovery source dc2's servers read is updated; within
   60 s every dc2 server, followers included, answers ``?dc=dc1`` and stores
   only the new gateways as usable (the old ones, critical, are reaped hours
   later, as Consul's are), with no restart;
c. dc2's server restarts while its discovery source answers with nothing;
   when the source answers, dc2 federates without another restart.

Each scenario builds its own topology and records its row (with the measured
recovery time) in the table printed at the end of the session. The server
and gateway logs are printed after each test (the ``federation`` fixture).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import msgspec
import pytest
from wanfed_topology import (
    GATEWAY_PORT,
    WAN_NETWORK,
    DatacenterSpec,
    Host,
    Supervisor,
    Topology,
    alive_wan_members,
    answers,
    black_hole_wan,
    converged,
    heal_black_hole,
    http_json,
    leader_of,
    replace_gateways,
    run_in,
    start_gateway,
    wait_until,
    wanfed_cli,
    write_gateway_list,
    write_primary_gateways,
)

from wanfed_fsm import FederationState, gateway_wan_address

pytestmark = pytest.mark.integration

StartFederation = Callable[..., tuple[Topology, Supervisor]]
TO_PRIMARY = "/v1/catalog/nodes?dc=dc1"


def stored_gateways(host: Host, datacenter: str) -> set[str] | str:
    """WAN addresses of ``datacenter``'s usable gateways in ``host``'s own store (a
    stale read: what this server holds, not what its leader holds).

    Usable means no critical check, which is what the gateway locator routes
    through. A gateway that vanished never deregisters itself: its TTL check
    turns critical within the TTL, and the entry is reaped only after its
    ``DeregisterCriticalServiceAfter`` (hours, as with Consul, so a gateway that
    is merely cut off is not forgotten). Until then it is stored, marked
    critical, and no longer counts here.
    """
    answer = http_json(host, "/v1/internal/federation-states?stale")
    if answer.get("status") != 200:
        return f"no answer: {answer}"
    states = msgspec.convert(answer["body"], list[FederationState])
    for state in states:
        if state.datacenter == datacenter:
            return {
                "{}:{}".format(*gateway_wan_address(g))
                for g in state.mesh_gateways
                if all(check.status != "critical" for check in g.checks)
            }
    return f"no federation state of {datacenter} among {[s.datacenter for s in states]}"


def gateway_addresses(topology: Topology, datacenter: str) -> set[str]:
    return {f"{g.wan_ip}:{GATEWAY_PORT}" for g in topology.gateways(datacenter)}


def each_server(hosts: list[Host], probe: Callable[[Host], object]) -> dict[str, object]:
    """``probe`` on every host at once (a request that hangs must not hide the others);
    what each one saw, for the hosts where it is not ``True``."""
    with ThreadPoolExecutor(max_workers=len(hosts)) as pool:
        seen = dict(zip((h.name for h in hosts), pool.map(probe, hosts), strict=True))
    return {name: what for name, what in seen.items() if what is not True}


def print_routes(hosts: list[Host]) -> None:
    """The evidence for whoever debugs a failure: each server's path choice."""
    for host in hosts:
        print(f"--- federation routes in {host.datacenter}/{host.name} ---")
        print(wanfed_cli(host, "federation", "routes"))


def pids(supervisor: Supervisor, prefix: str) -> dict[str, int]:
    return {n: p.pid for n, p in supervisor.processes.items() if n.startswith(prefix)}


def assert_not_restarted(supervisor: Supervisor, before: dict[str, int]) -> None:
    after = {n: p.pid for n, p in supervisor.processes.items() if n in before and p.alive()}
    assert after == before, f"processes exited or restarted: before {before}, now {after}"


def test_black_holed_wan_sends_the_leader_to_the_primary_gateways_and_back(
    federation: StartFederation, scenarios: Any
) -> None:
    scenarios.plan(
        "a black hole: dc2's leader direct, ?dc=dc1 within 45 s",
        "a black hole: dc2 -> dc1 keeps working",
        "a heal: back to local gateways",
    )
    topology, _ = federation(
        DatacenterSpec(name="dc1", servers=1, gateways=1),
        DatacenterSpec(name="dc2", servers=3, gateways=2),
    )
    converged(topology)
    seen: dict[str, str] = {}

    # Only the leader acts on the replication signal, and leadership may move
    # at any moment (an election on a loaded machine): every look at "dc2's
    # leader" asks who leads now.
    def leader_now() -> Host | str:
        try:
            return leader_of(topology, "dc2")
        except AssertionError as exc:
            return str(exc)

    def routes() -> str:
        leader = leader_now()
        return leader if isinstance(leader, str) else wanfed_cli(leader, "federation", "routes")

    def leader_answers(path: str) -> object:
        leader = leader_now()
        return leader if isinstance(leader, str) else answers(leader, path)

    def route_is(path: str) -> Callable[[], object]:
        def probe() -> object:
            shown = seen["routes"] = routes()
            return f"dc1: {path}" in shown or shown

        return probe

    wait_until("dc2's leader routes to dc1 through local gateways", 60, route_is("local-gateways"))

    def direct_connections(hosts: list[Host]) -> dict[str, str]:
        return {
            h.name: out
            for h in hosts
            if (out := run_in(h, "ss", "-H", "-tn", "dst", WAN_NETWORK).stdout.strip())
        }

    # Bootstrap dials the primary's gateways directly (no local gateway is known
    # yet); when the local gateways appear, the pooled RPC and WAN gossip
    # connections along the direct path are retired. A follower keeps none.
    leader = leader_of(topology, "dc2")
    followers = [h for h in topology.servers("dc2") if h.name != leader.name]
    wait_until(
        "no dc2 follower keeps a connection straight to the primary's gateways",
        60,
        lambda: not direct_connections(followers) or direct_connections(followers),
    )

    # The leader keeps none either: its replication long-poll in flight along
    # the direct path is abandoned at the switch and asked again locally. So
    # from here on, everything dc2 sends to dc1 crosses dc2's own gateways.
    def only_local_paths() -> object:
        direct = direct_connections(topology.servers("dc2"))
        return (not direct and leader_answers(TO_PRIMARY) is True) or direct

    wait_until("dc2 reaches dc1 through its own gateways only", 60, only_local_paths)

    holed_at = time.monotonic()
    black_hole_wan(topology, "dc2")
    with scenarios.run(
        "a black hole: dc2's leader direct, ?dc=dc1 within 45 s", go_on=True
    ) as scenario:

        def direct_and_answering() -> object:
            shown = seen["routes"] = routes()
            if "dc1: primary-gateways" not in shown:
                return f"the leader does not route to dc1 directly yet:\n{shown}"
            answer = leader_answers(TO_PRIMARY)
            return answer is True or f"routed directly, but ?dc=dc1 gave {answer}"

        try:
            wait_until(
                "dc2's leader goes to the primary's gateways and answers ?dc=dc1 again",
                45 - (time.monotonic() - holed_at),
                direct_and_answering,
                interval=0.2,
            )
        except AssertionError:
            print_routes(topology.servers("dc2"))
            raise
        scenario.recovered(time.monotonic() - holed_at)
        shown = seen["routes"]  # the very answer that showed the switch
        print(shown)
        assert "Primary-bound traffic: the primary's gateways directly" in shown, shown
        why = shown.split("dc1: primary-gateways", 1)[1].splitlines()[1]
        assert "3 consecutive replication failures" in why, shown
        for gateway in topology.gateways("dc1"):
            assert f"{gateway.wan_ip}:{GATEWAY_PORT} (" in shown, shown

    with scenarios.run("a black hole: dc2 -> dc1 keeps working", go_on=True):
        # Not one lucky request: ask twice a second for 15 s; every one must be answered.
        outcomes: list[object] = []
        until = time.monotonic() + 15
        while time.monotonic() < until:
            outcomes.append(leader_answers(TO_PRIMARY))
            time.sleep(0.5)
        failed = [o for o in outcomes if o is not True]
        print(f"while black-holed: {len(outcomes) - len(failed)} of {len(outcomes)} answered")
        assert not failed, f"{len(failed)} of {len(outcomes)} requests failed: {failed[:3]}"

    with scenarios.run("a heal: back to local gateways") as scenario:
        heal_black_hole(topology, "dc2")

        def settled_local() -> object:
            shown = routes()
            return (
                "dc1: local-gateways" in shown and " 0 consecutive failure(s)" in shown
            ) or shown

        scenario.recovered(wait_until("dc2's leader back on local gateways", 360, settled_local))
        assert "Primary-bound traffic: local gateways first" in routes()
        assert leader_answers(TO_PRIMARY) is True
    scenarios.check()


def test_primary_gateways_replaced_under_a_running_secondary(
    federation: StartFederation, scenarios: Any, tmp_path: Path
) -> None:
    name = "b every primary gateway vanishes and is replaced; dc2 follows in 60 s"
    scenarios.plan(name)
    discovery = tmp_path / "primary-gateways.txt"
    topology, supervisor = federation(
        DatacenterSpec(name="dc1", servers=1, gateways=2),
        DatacenterSpec(name="dc2", servers=3, gateways=2),
        primary_gateways_file=discovery,
    )
    converged(topology)
    dc2 = topology.servers("dc2")
    old = gateway_addresses(topology, "dc1")

    def federated_through(gateways: set[str]) -> Callable[[Host], object]:
        def probe(host: Host) -> object:
            answer = answers(host, TO_PRIMARY)
            stored = stored_gateways(host, "dc1")
            return (answer is True and stored == gateways) or {
                "?dc=dc1": answer,
                "dc1 gateways stored": stored,
            }

        return probe

    wait_until(
        "every dc2 server answers ?dc=dc1 and stores dc1's gateways",
        120,
        lambda: not (left := each_server(dc2, federated_through(old))) or left,
    )
    running = pids(supervisor, "dc2-")

    with scenarios.run(name) as scenario:
        # The old gateway machines are switched off: no deregistration, no
        # goodbye on any connection. New machines with new names and addresses
        # take over, and the operator updates the one thing dc2 reads.
        topology = replace_gateways(topology, "dc1")
        for gateway in topology.gateways("dc1"):
            start_gateway(topology, supervisor, gateway)
        write_primary_gateways(discovery, topology)
        replaced_at = time.monotonic()
        new = gateway_addresses(topology, "dc1")
        assert not old & new
        try:
            wait_until(
                "every dc2 server, followers included, answers ?dc=dc1 and stores only "
                "dc1's new gateways",
                60,
                lambda: not (left := each_server(dc2, federated_through(new))) or left,
            )
        except AssertionError:
            print_routes(dc2)
            # Which side is behind: the primary's own record of its gateways, with
            # their health (a vanished gateway never deregisters itself).
            primary = topology.servers("dc1")[0]
            print(f"--- federation states in dc1/{primary.name} ---")
            print(wanfed_cli(primary, "federation", "states"))
            raise
        scenario.recovered(time.monotonic() - replaced_at)
        assert_not_restarted(supervisor, running)


DISCOVERY_FOUND_NOTHING = "no mesh gateways found"
"""What a server logs when its discovery source answered with nothing."""


def test_secondary_restarted_while_discovery_finds_nothing_federates_when_it_answers(
    federation: StartFederation, scenarios: Any, tmp_path: Path
) -> None:
    name = "c dc2 restarts, discovery empty, then answers: federates, no restart"
    scenarios.plan(name)
    discovery = tmp_path / "primary-gateways.txt"
    topology, supervisor = federation(
        DatacenterSpec(name="dc1", servers=1, gateways=1),
        DatacenterSpec(name="dc2", servers=1, gateways=1),
        primary_gateways_file=discovery,
    )
    converged(topology)
    server = topology.host("dc2", "s1")
    dc1_servers = {f"{h.name}.dc1" for h in topology.servers("dc1")}

    with scenarios.run(name) as scenario:
        supervisor.processes["dc2-s1"].stop()
        # The source answers, with nothing: an empty file (as a DNS name with no
        # records would). dc2's gateway and everything in dc1 keep running.
        write_gateway_list(discovery, [])
        written = discovery.stat()
        logged = supervisor.processes["dc2-s1"].log_text().count(DISCOVERY_FOUND_NOTHING)
        restarted = supervisor.restart("dc2-s1")

        def asked_and_found_nothing() -> object:
            # Reading the file moves its access time past its change time (relatime);
            # the server's own log line says the same where atime is not kept.
            read = discovery.stat().st_atime_ns > written.st_mtime_ns
            said = restarted.log_text().count(DISCOVERY_FOUND_NOTHING) > logged
            return read or said or "the restarted server has not asked its discovery yet"

        wait_until(
            "restarted dc2-s1 asked its discovery and found nothing", 60, asked_and_found_nothing
        )
        answered_at = time.monotonic()
        write_primary_gateways(discovery, topology)

        def federated() -> object:
            alive = alive_wan_members(server)
            answer = answers(server, TO_PRIMARY)
            return (dc1_servers <= alive and answer is True) or {
                "alive on the WAN": sorted(alive),
                "?dc=dc1": answer,
            }

        try:
            wait_until(
                "dc2 federates once its discovery answers (dc1's servers alive on its WAN, "
                "?dc=dc1 answered)",
                120,
                federated,
            )
        except AssertionError:
            print_routes([server])
            raise
        scenario.recovered(time.monotonic() - answered_at)
        assert restarted.alive(), "dc2-s1 exited"
        assert supervisor.processes["dc2-s1"] is restarted, "dc2-s1 was restarted again"
