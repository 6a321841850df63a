"""Random command sequences: equal stores everywhere, and snapshots that round-trip."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import example, given, settings
from hypothesis import strategies as st

from wanfed_fsm import (
    ANONYMOUS_TOKEN_ID,
    MANAGEMENT_POLICY_ID,
    MESH_GATEWAY_KIND,
    ACLBootstrap,
    ACLInitialize,
    ACLPolicy,
    ACLPolicyDelete,
    ACLPolicySet,
    ACLToken,
    ACLTokenDelete,
    ACLTokenPolicyLink,
    ACLTokenSet,
    Barrier,
    CheckServiceNode,
    CheckStatusUpdate,
    Command,
    CommandDecodeError,
    Deregister,
    DeregisterRequest,
    FederationState,
    FederationStateBatch,
    FederationStateRequest,
    FederationStateWrite,
    Fsm,
    HealthCheck,
    HealthStatus,
    Node,
    ReadTxn,
    Register,
    RegisterRequest,
    Service,
    ServiceKind,
    StateStore,
    decode_command,
    encode_command,
)

_NODES = st.sampled_from(["a", "b", "C", "c"])
_SERVICES = st.sampled_from(["web", "mesh-gateway", "api"])
_STATUS: st.SearchStrategy[HealthStatus] = st.sampled_from(["passing", "warning", "critical"])
_DCS = st.sampled_from(["dc1", "dc2", "DC2", "dc3", ""])


@st.composite
def _register(draw: st.DrawFn) -> Command:
    node = draw(_NODES)
    name = draw(st.one_of(st.none(), _SERVICES))
    service = None
    checks = []
    if name is not None:
        kind: ServiceKind = MESH_GATEWAY_KIND if name == "mesh-gateway" else ""
        service = Service(
            kind=kind,
            service=name,
            port=draw(st.integers(0, 3)),
            tags=draw(st.lists(st.sampled_from(["x", "y"]), max_size=2)),
        )
        checks.append(
            HealthCheck(node=node, check_id=f"{name}-c", status=draw(_STATUS), service_id=name)
        )
    if draw(st.booleans()):
        checks.append(HealthCheck(node=node, check_id="serf", status=draw(_STATUS)))
    if draw(st.integers(0, 9)) == 0:  # sometimes a check that must be rejected
        checks.append(HealthCheck(node=node, check_id="orphan", service_id="missing"))
    return Register(
        request=RegisterRequest(
            node=Node(node=node, address=draw(st.sampled_from(["127.0.0.1", "127.0.0.2"]))),
            service=service,
            checks=checks,
            skip_node_update=draw(st.integers(0, 5)) == 0,
        )
    )


@st.composite
def _federation_state(draw: st.DrawFn) -> FederationState:
    dc = draw(_DCS)
    gateways = [
        CheckServiceNode(
            node=Node(node=draw(_NODES), datacenter=dc),
            service=Service(kind=MESH_GATEWAY_KIND, service="mesh-gateway", port=p),
        )
        for p in draw(st.lists(st.integers(1, 3), max_size=2))
    ]
    return FederationState(
        datacenter=dc,
        mesh_gateways=gateways,
        updated_at=datetime(2026, 1, 1, tzinfo=UTC),
        primary_modify_index=draw(st.sampled_from([0, 0, 3, 100])),
    )


_POLICY_IDS = st.sampled_from(["p1", "p2", "p3", MANAGEMENT_POLICY_ID])
_ACCESSORS = st.sampled_from(["t1", "t2", "t3", ANONYMOUS_TOKEN_ID])
_WHEN = datetime(2026, 1, 1, tzinfo=UTC)

_acl_policy = st.builds(
    lambda policy_id, name, rules: ACLPolicy(id=policy_id, name=name, rules=rules),
    _POLICY_IDS,
    st.sampled_from(["ops", "OPS", "web", "global-management", "bad name"]),
    st.sampled_from(['operator = "read"', 'service_prefix "" { policy = "write" }', "x = 1"]),
)
_acl_token = st.builds(
    lambda accessor, secret, links: ACLToken(
        accessor_id=accessor,
        secret_id=secret,
        policies=[ACLTokenPolicyLink(id=link) for link in links],
        create_time=_WHEN,
    ),
    _ACCESSORS,
    st.sampled_from(["s1", "s2", "anonymous", ""]),
    st.lists(_POLICY_IDS, max_size=2),
)
_ACL_COMMANDS: st.SearchStrategy[Command] = st.one_of(
    st.builds(ACLInitialize, create_time=st.just(_WHEN)),
    st.builds(ACLBootstrap, token=_acl_token, reset_index=st.sampled_from([0, 0, 1, 5])),
    st.builds(ACLPolicySet, policies=st.lists(_acl_policy, max_size=2)),
    st.builds(ACLPolicyDelete, policy_ids=st.lists(_POLICY_IDS, max_size=2)),
    st.builds(
        ACLTokenSet, tokens=st.lists(_acl_token, max_size=2), allow_missing_links=st.booleans()
    ),
    st.builds(ACLTokenDelete, accessor_ids=st.lists(_ACCESSORS, max_size=2)),
)

_COMMANDS: st.SearchStrategy[Command] = st.one_of(
    _ACL_COMMANDS,
    _register(),
    st.builds(
        lambda node, sid, cid: Deregister(
            request=DeregisterRequest(node=node, service_id=sid, check_id=cid)
        ),
        _NODES,
        st.sampled_from(["", "web", "api"]),
        st.sampled_from(["", "", "serf", "web-c"]),
    ),
    st.builds(
        lambda node, cid, status: CheckStatusUpdate(node=node, check_id=cid, status=status),
        _NODES,
        st.sampled_from(["serf", "web-c", "mesh-gateway-c"]),
        _STATUS,
    ),
    st.builds(
        lambda op, state: FederationStateWrite(request=FederationStateRequest(op=op, state=state)),
        st.sampled_from(["upsert", "upsert", "delete"]),
        _federation_state(),
    ),
    st.builds(
        lambda op, states: FederationStateBatch(op=op, states=states),
        st.sampled_from(["upsert", "delete"]),
        st.lists(_federation_state(), max_size=3),
    ),
    st.just(Barrier()),
)


def _all_queries(txn: ReadTxn) -> list[object]:
    results: list[object] = [txn.nodes(), txn.services(), txn.federation_states()]
    results.append(txn.mesh_gateways_by_datacenter())
    results.append(txn.check_service_nodes_by_kind(MESH_GATEWAY_KIND, passing_only=True))
    results.append(txn.service_dump(""))
    for name in ["web", "mesh-gateway", "api"]:
        results += [txn.check_service_nodes(name), txn.service_nodes(name)]
    for node in ["a", "b", "c"]:
        results += [txn.node(node), txn.node_checks(node)]
    for dc in ["dc1", "dc2", "dc3"]:
        results.append(txn.federation_state(dc))
    results += [txn.acl_tokens(), txn.acl_policies(), txn.acl_bootstrap_allowed()]
    for secret in ["s1", "s2", "anonymous"]:
        results.append(txn.acl_token_by_secret(secret))
    for name in ["ops", "Web"]:
        results.append(txn.acl_policy_by_name(name))
    return results


def _query_everything(store: StateStore) -> list[object]:
    with store.read() as txn:
        return _all_queries(txn)


@settings(max_examples=150)
@given(st.lists(_COMMANDS, max_size=40))
def test_replicas_agree_and_snapshots_round_trip(commands: list[Command]) -> None:
    entries = [encode_command(c) for c in commands]
    one, two = Fsm(), Fsm()
    errors_one = [one.apply(i, data).error for i, data in enumerate(entries, start=1)]
    errors_two = [two.apply(i, data).error for i, data in enumerate(entries, start=1)]
    assert errors_one == errors_two
    assert one.store.contents() == two.store.contents()
    assert _query_everything(one.store) == _query_everything(two.store)

    restored = Fsm()
    restored.restore(one.snapshot())
    assert restored.store.contents() == one.store.contents()
    assert _query_everything(restored.store) == _query_everything(one.store)
    assert restored.snapshot() == one.snapshot()

    # a replica restored halfway and fed the rest ends up in the same place
    half = len(entries) // 2
    prefix = Fsm()
    for i, data in enumerate(entries[:half], start=1):
        prefix.apply(i, data)
    resumed = Fsm()
    resumed.restore(prefix.snapshot())
    for i, data in enumerate(entries[half:], start=half + 1):
        resumed.apply(i, data)
    assert resumed.store.contents() == one.store.contents()


@given(_COMMANDS)
def test_commands_round_trip_through_bytes(command: Command) -> None:
    assert decode_command(encode_command(command)) == command


@given(st.binary(max_size=64))
@example(  # bytes that do decode, so that half of the test always runs
    encode_command(
        FederationStateWrite(
            request=FederationStateRequest(op="delete", state=FederationState(datacenter="dc9"))
        )
    )
)
@example(b"\x81\xa4type\xa8register")  # a tag with no body
def test_garbage_entries_are_rejected_not_raised(data: bytes) -> None:
    fsm = Fsm()
    before = fsm.store.contents()
    result = fsm.apply(1, data)
    try:
        command = decode_command(data)
    except CommandDecodeError:
        assert result.error.startswith("undecodable FSM command")
        assert fsm.store.contents() == before
        return
    # The bytes happen to be a command: applied like that command (whatever its
    # encoding), deterministically, and without tripping over a bug.
    assert not result.error.startswith("internal error"), result.error
    same = Fsm()
    assert same.apply(1, encode_command(command)) == result
    assert same.store.contents() == fsm.store.contents()


def test_federation_state_errors_match_the_reference() -> None:
    fsm = Fsm()
    missing = FederationStateWrite(
        request=FederationStateRequest(op="upsert", state=FederationState(datacenter=""))
    )
    assert fsm.apply(1, encode_command(missing)).error == "missing datacenter on federation state"
    absent = FederationStateWrite(
        request=FederationStateRequest(op="delete", state=FederationState(datacenter="dc9"))
    )
    assert fsm.apply(2, encode_command(absent)).error == ""
