"""Property tests of snapshot restore and FSM command decoding: untrusted bytes.

A snapshot arrives from the leader (InstallSnapshot) or from disk, and either
can be damaged. Garbage, truncated or mutated snapshots are refused with a
:class:`SnapshotFormatError` and leave the store exactly as it was, watches
included; whatever is accepted is a store the store's own writes could have
made, so it snapshots again byte for byte.
"""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wanfed_fsm import (
    SNAPSHOT_VERSION,
    ACLPolicy,
    ACLToken,
    ACLTokenPolicyLink,
    CheckServiceNode,
    CommandDecodeError,
    FederationState,
    Fsm,
    HealthCheck,
    Node,
    RegisterRequest,
    Service,
    SnapshotFormatError,
    StateStore,
    StoreContents,
    decode_command,
)

HEADER = b"WFSM" + SNAPSHOT_VERSION.to_bytes(2, "big")


def _populated() -> StateStore:
    store = StateStore()
    for index, node in enumerate(["a", "b", "c"], start=1):
        store.ensure_registration(
            index,
            RegisterRequest(
                node=Node(node=node, address=f"198.18.0.{index}", meta={"k": "v"}),
                service=Service(service="web", port=80, tags=["t"]),
                checks=[HealthCheck(node=node, check_id="web-alive", service_id="web")],
            ),
        )
    gateway = CheckServiceNode(
        node=Node(node="gw", address="198.18.1.1", datacenter="dc2"),
        service=Service(kind="mesh-gateway", service="mesh-gateway", port=8443),
    )
    store.federation_state_set(
        4,
        FederationState(
            datacenter="dc2", mesh_gateways=[gateway], updated_at=datetime(2026, 1, 1, tzinfo=UTC)
        ),
    )
    when = datetime(2026, 1, 1, tzinfo=UTC)
    store.acl_bootstrap(5, ACLToken(accessor_id="root", secret_id="root-secret", create_time=when))
    store.acl_policy_set(6, [ACLPolicy(id="p", name="ops", rules='operator = "read"')])
    link = ACLTokenPolicyLink(id="p")
    store.acl_token_set(7, [ACLToken(accessor_id="t", secret_id="t-secret", policies=[link])])
    return store


REAL = _populated().snapshot()


def _restore_or_refuse(data: bytes) -> bool:
    """Restore ``data`` over a populated store with a parked watch; True when accepted.

    A refusal must leave contents and the watch untouched; an acceptance must
    fire the watch as abandoned and yield a store that snapshots back exactly.
    """
    store = _populated()
    before = store.contents()
    fired: list[bool] = []
    with store.read() as txn:
        txn.nodes()
        txn.watch(fired.append)
    try:
        store.restore(data)
    except SnapshotFormatError as error:
        assert str(error)  # noqa: PT017 - the refusal is the expected outcome here
        assert store.contents() == before
        assert fired == []
        assert store.watch_count() == 1
        return False
    assert fired == [True]
    again = StateStore()
    again.restore(store.snapshot())
    assert again.contents() == store.contents()
    assert again.snapshot() == store.snapshot()
    return True


@given(st.binary(max_size=600))
def test_garbage_is_refused_and_leaves_the_store_alone(data: bytes) -> None:
    _restore_or_refuse(data)


@given(st.binary(max_size=600))
def test_garbage_after_a_valid_header_is_refused_and_leaves_the_store_alone(data: bytes) -> None:
    _restore_or_refuse(HEADER + data)


@settings(max_examples=150)
@given(st.integers(min_value=0, max_value=len(REAL) - 1))
def test_every_truncation_is_refused(length: int) -> None:
    assert not _restore_or_refuse(REAL[:length])


@settings(max_examples=200)
@given(
    st.lists(
        st.tuples(st.integers(min_value=0, max_value=len(REAL) - 1), st.integers(0, 255)),
        min_size=1,
        max_size=4,
    )
)
def test_mutated_snapshots_are_restored_whole_or_refused(flips: list[tuple[int, int]]) -> None:
    data = bytearray(REAL)
    for position, value in flips:
        data[position] = value
    _restore_or_refuse(bytes(data))


def test_the_real_snapshot_is_accepted() -> None:
    assert _restore_or_refuse(REAL)


def _with(**changes: object) -> bytes:
    contents = msgspec.structs.replace(_populated().contents(), **changes)
    return HEADER + msgspec.msgpack.encode(contents)


_CONTENTS = _populated().contents()
_ORPHAN_SERVICE = ("zz", Service(service="web"))
_ORPHAN_CHECK = HealthCheck(node="zz", check_id="c")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"indexes": {"nodes": 1, "tables": 2}}, "index of unknown table 'tables'"),
        ({"indexes": {"nodes": -1}}, "index -1 of table 'nodes' is out of range"),
        ({"nodes": [*_CONTENTS.nodes, Node(node="A")]}, "node 'A' appears twice"),
        ({"services": [*_CONTENTS.services, _ORPHAN_SERVICE]}, "belongs to unknown node 'zz'"),
        ({"services": [*_CONTENTS.services, _CONTENTS.services[0]]}, "'web' appears twice"),
        ({"checks": [*_CONTENTS.checks, _ORPHAN_CHECK]}, "check 'c' belongs to unknown node"),
        ({"checks": [*_CONTENTS.checks, _CONTENTS.checks[0]]}, "'web-alive' appears twice"),
        (
            {"checks": [HealthCheck(node="a", check_id="x", service_id="db")]},
            "check 'x' names unknown service 'db'",
        ),
        (
            {
                "federation_states": [
                    *_CONTENTS.federation_states,
                    FederationState(datacenter="DC2"),
                ]
            },
            "a datacenter has two federation states",
        ),
    ],
)
def test_snapshots_no_store_could_hold_are_refused(
    changes: dict[str, object], message: str
) -> None:
    data = _with(**changes)
    store = _populated()
    before = store.contents()
    with pytest.raises(SnapshotFormatError, match="inconsistent snapshot") as caught:
        store.restore(data)
    assert message in str(caught.value)
    assert store.contents() == before


@pytest.mark.parametrize(
    "body",
    [
        b"\x91" * 100_000 + b"\xc0",  # arrays where a map belongs: refused at the first level
        b"\x81\xa1k" * 100_000 + b"\xc0",  # unknown fields, skipped by descending into them
        b"\x85\xa7indexes\x80\xa5extra" + b"\x91" * 100_000 + b"\xc0",
    ],
    ids=["arrays", "unknown-fields", "unknown-field-in-contents"],
)
def test_a_deeply_nested_snapshot_is_refused(body: bytes) -> None:
    store = _populated()
    before = store.contents()
    with pytest.raises(SnapshotFormatError, match="corrupt snapshot"):
        store.restore(HEADER + body)
    assert store.contents() == before


@given(st.binary(max_size=300))
def test_commands_decode_or_raise_command_decode_errors(data: bytes) -> None:
    message = "undecodable FSM command"
    try:
        decode_command(data)
    except CommandDecodeError as error:
        message = str(error)
    assert message.startswith("undecodable FSM command")


@settings(max_examples=30)
@given(st.integers(min_value=1, max_value=50_000), st.sampled_from([b"\x91", b"\x81\xa1k"]))
def test_deep_commands_are_rejected_as_entries_not_raised(depth: int, level: bytes) -> None:
    fsm = Fsm()
    before = fsm.store.contents()
    result = fsm.apply(1, level * depth + b"\xc0")
    assert result.error.startswith("undecodable FSM command")
    assert fsm.store.contents() == before


def test_store_contents_round_trip() -> None:
    assert msgspec.msgpack.decode(REAL[len(HEADER) :], type=StoreContents) == _CONTENTS
