"""What the leader writes about the servers: ``consul`` registrations and ``serfHealth``."""

from __future__ import annotations

from wanfed_fsm import LocalConsensus
from wanfed_server.runtime import LeaderRoutines, ServerDirectory, ServerInfo, server_registration

ME = ServerInfo(node="s1", datacenter="dc1", rpc_address="127.0.0.1:8300", raft_address="r1:1")
PEER = ServerInfo(
    node="s2",
    datacenter="dc1",
    rpc_address="127.0.0.2:8300",
    raft_address="r2:1",
    wan_address="198.18.0.2",
)


async def test_serf_health_needs_a_recent_hello_and_raft_membership() -> None:
    now = [100.0]
    directory = ServerDirectory(ME, clock=lambda: now[0])
    directory.learn([PEER])
    members = ["r1:1"]
    routines = LeaderRoutines(
        LocalConsensus(),
        directory,
        clock=lambda: now[0],
        failure_timeout=3.0,
        raft_members=lambda: members,
    )
    directory.seen("s2")
    assert not routines.alive(PEER), "answers hellos but is not a raft voter"
    members.append("r2:1")
    assert routines.alive(PEER)
    now[0] += 3.5
    assert not routines.alive(PEER), "silent for longer than the failure timeout"
    assert routines.alive(ME)


async def test_reconcile_writes_each_server_once_until_something_changes() -> None:
    now = [0.0]
    directory = ServerDirectory(ME, clock=lambda: now[0])
    directory.learn([PEER])
    directory.seen("s2")
    consensus = LocalConsensus()
    routines = LeaderRoutines(consensus, directory, clock=lambda: now[0])
    assert await routines.reconcile_once() == 2
    assert await routines.reconcile_once() == 0, "unchanged registrations are not rewritten"
    now[0] += 10
    assert await routines.reconcile_once() == 1, "s2 turned critical"
    with consensus.store.read() as txn:
        _, checks = txn.node_checks("s2")
        _, node = txn.node("s2")
    assert [(c.check_id, c.status) for c in checks] == [("serfHealth", "critical")]
    assert node is not None
    assert node.tagged_addresses == {"lan": "127.0.0.2", "wan": "198.18.0.2"}


def test_server_registration_shape() -> None:
    request = server_registration(PEER, alive=True)
    assert request.service is not None
    assert (request.service.id, request.service.service, request.service.port) == (
        "consul",
        "consul",
        8300,
    )
    assert request.service.tagged_addresses["wan"].address == "198.18.0.2"
    assert request.checks[0].name == "Serf Health Status"
