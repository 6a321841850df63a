"""Health answers (instances with node and checks): order, contents, and freshness.

The store keeps built answers until the next catalog write, so besides the
pinned order these tests check that every kind of write is seen by the next
read, and (as a property) that answers always equal a plain recomputation
from the store's contents.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from hypothesis import given, settings
from hypothesis import strategies as st

from wanfed_fsm import (
    MESH_GATEWAY_KIND,
    CatalogError,
    CheckServiceNode,
    FederationState,
    HealthCheck,
    Node,
    RegisterRequest,
    Service,
    StateStore,
    StoreContents,
)


def _service_check(node: str, service_id: str, check_id: str, status: str) -> HealthCheck:
    return HealthCheck(node=node, check_id=check_id, service_id=service_id, status=status)  # type: ignore[arg-type]


def _populated() -> StateStore:
    store = StateStore()
    # node "b" registered first and with a capital letter: order is by lower-cased name
    store.ensure_registration(
        1,
        RegisterRequest(
            node=Node(node="B"),
            service=Service(id="web-2", service="web", port=2),
            checks=[
                HealthCheck(node="B", check_id="serfHealth", status="passing"),
                _service_check("B", "web-2", "z-web-2", "passing"),
            ],
        ),
    )
    store.ensure_registration(
        2,
        RegisterRequest(
            node=Node(node="B"),
            service=Service(id="web-1", service="web", port=1),
            checks=[_service_check("B", "web-1", "a-web-1", "warning")],
        ),
    )
    store.ensure_registration(
        3,
        RegisterRequest(
            node=Node(node="B"),
            service=Service(id="api", service="api", port=3),
            checks=[_service_check("B", "api", "m-api", "critical")],
        ),
    )
    store.ensure_registration(
        4,
        RegisterRequest(
            node=Node(node="a"),
            service=Service(id="web", service="web", port=4),
            checks=[_service_check("a", "web", "web-check", "passing")],
        ),
    )
    store.ensure_registration(
        5,
        RegisterRequest(
            node=Node(node="c"),
            service=Service(kind=MESH_GATEWAY_KIND, service="mesh-gateway", port=8443),
        ),
    )
    return store


def _shape(entries: list[CheckServiceNode]) -> list[tuple[str, str, list[str]]]:
    return [(e.node.node, e.service.service_id, [c.check_id for c in e.checks]) for e in entries]


def test_instances_are_ordered_by_node_then_service_id_with_node_and_own_checks() -> None:
    store = _populated()
    with store.read() as txn:
        index, web = txn.check_service_nodes("web")
        _, passing = txn.check_service_nodes("web", passing_only=True)
        _, gateways = txn.check_service_nodes_by_kind(MESH_GATEWAY_KIND)
        _, plain = txn.service_dump("")
    assert index == 5
    assert _shape(web) == [
        ("a", "web", ["web-check"]),
        ("B", "web-1", ["a-web-1", "serfHealth"]),
        ("B", "web-2", ["serfHealth", "z-web-2"]),
    ]
    assert _shape(passing) == [
        ("a", "web", ["web-check"]),
        ("B", "web-2", ["serfHealth", "z-web-2"]),
    ]
    assert _shape(gateways) == [("c", "mesh-gateway", [])]
    assert [e.service.service_id for e in plain] == ["web", "api", "web-1", "web-2"]
    assert web[1].checks[0].status == "warning"
    assert web[1].checks[0].service_name == "web"


def test_every_caller_gets_its_own_list() -> None:
    store = _populated()
    with store.read() as txn:
        _, first = txn.check_service_nodes("web")
        first.clear()
        _, second = txn.check_service_nodes("web")
    assert len(second) == 3


def _reread(store: StateStore) -> list[tuple[str, str, list[str]]]:
    with store.read() as txn:
        return _shape(txn.check_service_nodes("web", passing_only=True)[1])


def test_each_kind_of_catalog_write_is_seen_by_the_next_read() -> None:
    store = _populated()
    assert len(_reread(store)) == 2
    store.update_check_status(6, "B", "a-web-1", "passing", "")
    assert [s for _, s, _ in _reread(store)] == ["web", "web-1", "web-2"]
    store.delete_check(7, "B", "serfHealth")
    assert _reread(store)[1] == ("B", "web-1", ["a-web-1"])
    store.delete_service(8, "B", "web-2")
    assert [s for _, s, _ in _reread(store)] == ["web", "web-1"]
    store.delete_node(9, "a")
    assert [s for _, s, _ in _reread(store)] == ["web-1"]
    snapshot = _populated().snapshot()
    store.restore(snapshot)
    assert len(_reread(store)) == 2


def test_a_federation_state_write_keeps_health_answers_valid() -> None:
    store = _populated()
    before = _reread(store)
    store.federation_state_set(6, FederationState(datacenter="dc2"))
    assert _reread(store) == before


# --- property: answers equal a recomputation from the contents -------------------

_NODES = st.sampled_from(["a", "A", "b", "c"])
_SERVICE_IDS = st.sampled_from(["web", "web-2", "api", "gw"])
_STATUS = st.sampled_from(["passing", "warning", "critical"])


def _registration(
    node: str, sid: str, with_service: bool, checks: list[tuple[str, str, bool]]
) -> RegisterRequest:
    service = None
    if with_service:
        kind = MESH_GATEWAY_KIND if sid == "gw" else ""
        name = "mesh-gateway" if sid == "gw" else sid.split("-")[0]
        service = Service(id=sid, service=name, kind=kind)  # type: ignore[arg-type]
    return RegisterRequest(
        node=Node(node=node),
        service=service,
        checks=[
            HealthCheck(
                node=node,
                check_id=cid,
                status=status,  # type: ignore[arg-type]
                service_id=sid if bound and with_service else "",
            )
            for cid, status, bound in checks
        ],
    )


_Op = Callable[[StateStore, int], None]


def _op_register(args: tuple[str, str, bool, list[tuple[str, str, bool]]]) -> _Op:
    request = _registration(*args)
    return lambda store, index: store.ensure_registration(index, request)


_OPS: st.SearchStrategy[_Op] = st.one_of(
    st.tuples(
        _NODES,
        _SERVICE_IDS,
        st.booleans(),
        st.lists(
            st.tuples(st.sampled_from(["c1", "c2", "serf"]), _STATUS, st.booleans()), max_size=2
        ),
    ).map(_op_register),
    st.tuples(_NODES, _SERVICE_IDS).map(
        lambda a: lambda store, index: store.delete_service(index, a[0], a[1])
    ),
    _NODES.map(lambda n: lambda store, index: store.delete_node(index, n)),
    st.tuples(_NODES, st.sampled_from(["c1", "c2", "serf"])).map(
        lambda a: lambda store, index: store.delete_check(index, a[0], a[1])
    ),
)


def _expected(
    contents: StoreContents, match: Callable[[Service], bool], passing_only: bool
) -> list[CheckServiceNode]:
    nodes = {n.node.lower(): n for n in contents.nodes}
    instances = sorted(
        ((name.lower(), s.service_id, s) for name, s in contents.services if match(s)),
        key=lambda t: (t[0], t[1]),
    )
    result: list[CheckServiceNode] = []
    for node_key, sid, service in instances:
        checks = sorted(
            (
                c
                for c in contents.checks
                if c.node.lower() == node_key and c.service_id in ("", sid)
            ),
            key=lambda c: c.check_id,
        )
        entry = CheckServiceNode(node=nodes[node_key], service=service, checks=checks)
        if not passing_only or entry.passing():
            result.append(entry)
    return result


def _named(name: str) -> Callable[[Service], bool]:
    return lambda service: service.service == name


@settings(max_examples=150)
@given(st.lists(_OPS, max_size=12))
def test_answers_always_equal_a_recomputation(ops: list[_Op]) -> None:
    store = StateStore()
    for index, op in enumerate(ops, start=1):
        with contextlib.suppress(CatalogError):  # a check of a missing service is refused
            op(store, index)
        contents = store.contents()
        with store.read() as txn:
            for name in ["web", "api"]:
                for passing_only in (False, True):
                    _, got = txn.check_service_nodes(name, passing_only=passing_only)
                    assert got == _expected(contents, _named(name), passing_only)
            _, got = txn.check_service_nodes_by_kind(MESH_GATEWAY_KIND)
            assert got == _expected(contents, lambda s: s.kind == MESH_GATEWAY_KIND, False)
