"""State store semantics: federation states per the reference, catalog queries, watches."""

from __future__ import annotations

import sys
import threading
from datetime import UTC, datetime

import pytest

from wanfed_fsm import (
    MESH_GATEWAY_KIND,
    CatalogError,
    CheckServiceNode,
    FederationState,
    HealthCheck,
    MissingDatacenterError,
    Node,
    RegisterRequest,
    Service,
    SnapshotFormatError,
    StateStore,
    Table,
)


def _register(
    store: StateStore,
    index: int,
    node: str,
    service: str | None = None,
    *,
    kind: str = "",
    status: str = "passing",
    port: int = 8443,
) -> None:
    svc = None
    checks = []
    if service is not None:
        svc = Service(kind=kind, service=service, port=port)  # type: ignore[arg-type]
        checks.append(
            HealthCheck(node=node, check_id=f"{service}-check", status=status, service_id=service)  # type: ignore[arg-type]
        )
    store.ensure_registration(
        index,
        RegisterRequest(node=Node(node=node, address="127.0.0.1"), service=svc, checks=checks),
    )


def _gateway_state(dc: str, *, primary_modify_index: int = 0) -> FederationState:
    gateway = CheckServiceNode(
        node=Node(node="gw", address="127.0.0.2", datacenter=dc),
        service=Service(kind=MESH_GATEWAY_KIND, service="mesh-gateway", port=8443),
    )
    return FederationState(
        datacenter=dc,
        mesh_gateways=[gateway],
        updated_at=datetime(2026, 1, 1, tzinfo=UTC),
        primary_modify_index=primary_modify_index,
    )


def test_upsert_keeps_create_index_and_sets_primary_modify_index_once() -> None:
    store = StateStore()
    store.federation_state_set(5, _gateway_state("dc2"))
    with store.read() as txn:
        index, state = txn.federation_state("dc2")
    assert index == 5
    assert state is not None
    assert (state.create_index, state.modify_index, state.primary_modify_index) == (5, 5, 5)

    store.federation_state_set(9, _gateway_state("dc2", primary_modify_index=7))
    with store.read() as txn:
        index, state = txn.federation_state("DC2")  # keys are case-insensitive
    assert index == 9
    assert state is not None
    assert (state.create_index, state.modify_index, state.primary_modify_index) == (5, 9, 7)


def test_empty_datacenter_is_rejected_and_changes_nothing() -> None:
    store = StateStore()
    with pytest.raises(MissingDatacenterError, match="missing datacenter on federation state"):
        store.federation_state_batch_set(3, [_gateway_state("dc1"), _gateway_state("")])
    assert store.index(Table.FEDERATION_STATES) == 0
    with store.read() as txn:
        assert txn.federation_states() == (0, [])


def test_delete_of_absent_record_is_a_noop() -> None:
    store = StateStore()
    store.federation_state_set(2, _gateway_state("dc1"))
    store.federation_state_delete(3, "dc9")
    assert store.index(Table.FEDERATION_STATES) == 2
    store.federation_state_delete(4, "DC1")
    assert store.index(Table.FEDERATION_STATES) == 4
    with store.read() as txn:
        assert txn.federation_state("dc1") == (4, None)


def test_list_is_ordered_and_mesh_gateways_skip_empty_datacenters() -> None:
    store = StateStore()
    store.federation_state_batch_set(
        1, [_gateway_state("dc3"), FederationState(datacenter="dc2"), _gateway_state("dc1")]
    )
    with store.read() as txn:
        _, states = txn.federation_states()
        index, gateways = txn.mesh_gateways_by_datacenter()
    assert [s.datacenter for s in states] == ["dc1", "dc2", "dc3"]
    assert index == 1
    assert sorted(gateways) == ["dc1", "dc3"]


def test_check_service_nodes_filters_by_name_kind_and_health() -> None:
    store = StateStore()
    _register(store, 1, "a", "web")
    _register(store, 2, "b", "web", status="critical")
    _register(store, 3, "c", "mesh-gateway", kind=MESH_GATEWAY_KIND, status="warning")
    with store.read() as txn:
        index, web = txn.check_service_nodes("web")
        _, healthy = txn.check_service_nodes("web", passing_only=True)
        _, gateways = txn.check_service_nodes_by_kind(MESH_GATEWAY_KIND)
        _, dump = txn.service_dump(MESH_GATEWAY_KIND)
        _, services = txn.services()
        _, service_nodes = txn.service_nodes("web")
        _, nodes = txn.nodes()
    assert index == 3
    assert [e.node.node for e in web] == ["a", "b"]
    assert [e.node.node for e in healthy] == ["a"]
    assert [e.node.node for e in gateways] == ["c"] == [e.node.node for e in dump]
    assert gateways[0].checks[0].service_name == "mesh-gateway"
    assert services == {"mesh-gateway": [], "web": []}
    assert [sn.node.node for sn in service_nodes] == ["a", "b"]
    assert [n.node for n in nodes] == ["a", "b", "c"]


def test_unchanged_reregistration_moves_no_index() -> None:
    store = StateStore()
    _register(store, 1, "a", "web")
    _register(store, 2, "a", "web")
    assert [store.index(t) for t in (Table.NODES, Table.SERVICES, Table.CHECKS)] == [1, 1, 1]
    _register(store, 3, "a", "web", port=9000)
    assert [store.index(t) for t in (Table.NODES, Table.SERVICES, Table.CHECKS)] == [1, 3, 1]
    with store.read() as txn:
        _, (entry,) = txn.check_service_nodes("web")
    assert (entry.service.create_index, entry.service.modify_index) == (1, 3)


def test_check_for_missing_service_is_rejected_atomically() -> None:
    store = StateStore()
    request = RegisterRequest(
        node=Node(node="a"),
        checks=[HealthCheck(node="a", check_id="c", service_id="nope")],
    )
    with pytest.raises(CatalogError, match="Missing service registration"):
        store.ensure_registration(1, request)
    with store.read() as txn:
        assert txn.nodes() == (0, [])


def test_deregister_service_removes_its_checks_and_node_removes_everything() -> None:
    store = StateStore()
    _register(store, 1, "a", "web")
    _register(store, 2, "a", "api")
    store.delete_service(3, "a", "web")
    with store.read() as txn:
        assert [c.check_id for c in txn.node_checks("a")[1]] == ["api-check"]
    store.delete_node(4, "A")
    assert store.contents().nodes == []
    assert store.contents().services == []
    assert store.contents().checks == []
    assert all(store.index(t) == 4 for t in (Table.NODES, Table.SERVICES, Table.CHECKS))


def test_check_status_update_needs_a_registered_check() -> None:
    store = StateStore()
    _register(store, 1, "a", "web")
    store.update_check_status(2, "a", "web-check", "critical", "connection refused")
    with store.read() as txn:
        _, (entry,) = txn.check_service_nodes("web")
    assert entry.checks[0].status == "critical"
    assert entry.checks[0].output == "connection refused"
    with pytest.raises(CatalogError, match="not registered"):
        store.update_check_status(3, "a", "missing", "passing", "")


def test_watch_fires_only_for_tables_read() -> None:
    store = StateStore()
    fired: list[bool] = []
    with store.read() as txn:
        txn.federation_states()
        watch = txn.watch(fired.append)
    _register(store, 1, "a", "web")
    assert fired == []
    store.federation_state_set(2, _gateway_state("dc1"))
    assert fired == [False]
    store.federation_state_set(3, _gateway_state("dc1"))
    assert fired == [False]  # one-shot
    watch.cancel()
    assert store.watch_count() == 0


def test_restore_gives_an_identical_store_and_abandons_watches() -> None:
    store = StateStore()
    _register(store, 1, "a", "web")
    store.federation_state_set(2, _gateway_state("dc1"))
    fired: list[bool] = []
    copy = StateStore()
    with copy.read() as txn:
        txn.nodes()
        txn.watch(fired.append)
    copy.restore(store.snapshot())
    assert copy.contents() == store.contents()
    assert fired == [True]
    assert copy.watch_count() == 0


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "bad magic"),
        (b"PK\x03\x04zip", "bad magic"),
        (b"WFSM\x00\x00", "version 0 cannot be restored by this build"),
        (b"WFSM\x00\x02\x80", "version 2 cannot be restored"),
        (b"WFSM\x00\x01\xc1", "corrupt snapshot"),
    ],
)
def test_unreadable_snapshots_fail_clearly_and_leave_the_store_alone(
    data: bytes, message: str
) -> None:
    store = StateStore()
    _register(store, 1, "a", "web")
    before = store.contents()
    with pytest.raises(SnapshotFormatError, match=message):
        store.restore(data)
    assert store.contents() == before


def test_reads_never_see_half_a_write_from_another_thread() -> None:
    """A registration changes node, service and check together; a reader on another
    thread must always find all three at the same version."""
    store = StateStore()
    versions = 3000

    def register(version: int) -> None:
        store.ensure_registration(
            version,
            RegisterRequest(
                node=Node(node="a", meta={"v": str(version)}),
                service=Service(service="web", port=version % 65536),
                checks=[HealthCheck(node="a", check_id="c", service_id="web", output=str(version))],
            ),
        )

    register(1)
    done = threading.Event()

    def writer() -> None:
        for version in range(2, versions):
            register(version)
        done.set()

    # switch threads as often as possible, so an unlocked store would tear (it does:
    # hundreds of mixed reads per run without the lock)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    thread = threading.Thread(target=writer)
    try:
        thread.start()
        reads = 0
        while not done.is_set() or reads == 0:
            with store.read() as txn:
                _, (entry,) = txn.check_service_nodes("web")
            version = int(entry.node.meta["v"])
            assert entry.service.port == version % 65536
            assert entry.checks[0].output == str(version)
            reads += 1
    finally:
        thread.join()
        sys.setswitchinterval(interval)
    assert reads > 1
