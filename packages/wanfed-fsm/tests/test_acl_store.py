"""ACL tokens and policies in the store, through FSM commands, and in snapshots."""

from __future__ import annotations

import asyncio
import hmac
from datetime import UTC, datetime

import msgspec
import pytest

from wanfed_fsm import (
    ANONYMOUS_SECRET_ID,
    ANONYMOUS_TOKEN_ID,
    MANAGEMENT_POLICY_ID,
    ACLBootstrap,
    ACLBootstrapNotAllowedError,
    ACLBootstrapResetIndexError,
    ACLError,
    ACLInitialize,
    ACLPolicy,
    ACLPolicyDelete,
    ACLPolicySet,
    ACLRulesError,
    ACLToken,
    ACLTokenDelete,
    ACLTokenPolicyLink,
    ACLTokenSet,
    Command,
    Fsm,
    Node,
    QueryOptions,
    ReadTxn,
    RegisterRequest,
    SnapshotFormatError,
    StateStore,
    StoreContents,
    Table,
    blocking_query,
    decode_command,
    decode_snapshot,
    encode_command,
)

WHEN = datetime(2026, 12, 1, tzinfo=UTC)
ROOT = ACLToken(accessor_id="root-accessor", secret_id="root-secret", create_time=WHEN)


def _policy(policy_id: str, name: str, rules: str = 'operator = "read"') -> ACLPolicy:
    return ACLPolicy(id=policy_id, name=name, rules=rules)


def _token(accessor: str, secret: str, *policy_ids: str) -> ACLToken:
    links = [ACLTokenPolicyLink(id=p) for p in policy_ids]
    return ACLToken(accessor_id=accessor, secret_id=secret, policies=links, create_time=WHEN)


def _bootstrapped() -> StateStore:
    store = StateStore()
    store.acl_bootstrap(3, ROOT)
    return store


# --- bootstrap ---------------------------------------------------------------------


def test_bootstrap_creates_builtins_and_a_management_token() -> None:
    store = _bootstrapped()
    with store.read() as txn:
        _, root = txn.acl_token(ROOT.accessor_id)
        _, anonymous = txn.acl_token_by_secret(ANONYMOUS_SECRET_ID)
        index, management = txn.acl_policy_by_name("GLOBAL-management")
        _, (allowed, reset_index) = txn.acl_bootstrap_allowed()
    assert root is not None
    assert root.policies == [ACLTokenPolicyLink(id=MANAGEMENT_POLICY_ID, name="global-management")]
    assert root.create_index == root.modify_index == 3
    assert root.hash
    assert anonymous is not None
    assert anonymous.accessor_id == ANONYMOUS_TOKEN_ID
    assert management is not None
    assert management.id == MANAGEMENT_POLICY_ID
    assert index == 3
    assert (allowed, reset_index) == (False, 3)


def test_second_bootstrap_is_refused_with_the_reset_index_and_changes_nothing() -> None:
    store = _bootstrapped()
    before = store.contents()
    other = _token("second", "second-secret")
    with pytest.raises(ACLBootstrapNotAllowedError, match=r"reset index: 3\)") as caught:
        store.acl_bootstrap(4, other)
    assert caught.value.reset_index == 3
    with pytest.raises(ACLBootstrapResetIndexError):
        store.acl_bootstrap(4, other, reset_index=2)
    assert store.contents() == before
    store.acl_bootstrap(5, other, reset_index=3)
    with store.read() as txn:
        assert txn.acl_bootstrap_allowed()[1] == (False, 5)
        assert txn.acl_token_by_secret("second-secret")[1] is not None


def test_bootstrap_token_cannot_be_or_shadow_the_anonymous_token() -> None:
    store = StateStore()
    for token in (_token(ANONYMOUS_TOKEN_ID, "x"), _token("a", ANONYMOUS_SECRET_ID)):
        with pytest.raises(ACLError, match="anonymous"):
            store.acl_bootstrap(1, token)
    assert store.contents() == StateStore().contents()


def test_initialize_is_idempotent() -> None:
    store = StateStore()
    store.acl_initialize(1, WHEN)
    first = store.contents()
    store.acl_initialize(2, WHEN)
    assert store.contents() == first
    assert store.index(Table.ACL_TOKENS) == store.index(Table.ACL_POLICIES) == 1


# --- tokens -------------------------------------------------------------------------


def test_token_lookup_by_secret_uses_a_constant_time_comparison(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = _bootstrapped()
    calls: list[tuple[bytes, bytes]] = []
    original = hmac.compare_digest

    def recording(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return original(a, b)

    monkeypatch.setattr(hmac, "compare_digest", recording)
    with store.read() as txn:
        assert txn.acl_token_by_secret("root-secret")[1] is not None
        assert txn.acl_token_by_secret("root-secreT")[1] is None
        assert txn.acl_token_by_secret("\ud800")[1] is None  # a lone surrogate is just wrong
    assert (b"root-secret", b"root-secret") in calls


def test_token_repr_hides_the_secret_everywhere_it_is_formatted() -> None:
    token = _token("acc", "hunter2-secret")
    command = ACLTokenSet(tokens=[token])
    for text in (
        repr(token),
        str(token),
        repr(command),
        f"{[token]}",
        repr(ACLBootstrap(token=token)),
    ):
        assert "hunter2" not in text
        assert "acc" in text
    assert "hunter2" not in repr(list(token.__rich_repr__()))
    assert msgspec.json.decode(msgspec.json.encode(token), type=ACLToken) == token


def test_token_json_uses_consul_field_names() -> None:
    encoded = msgspec.json.decode(msgspec.json.encode(ROOT))
    assert set(encoded) >= {
        "AccessorID",
        "SecretID",
        "Description",
        "Policies",
        "Local",
        "CreateTime",
        "Hash",
        "CreateIndex",
        "ModifyIndex",
    }


def test_token_links_resolve_by_id_or_name_and_follow_renames_and_deletes() -> None:
    store = _bootstrapped()
    store.acl_policy_set(4, [_policy("p1", "ops"), _policy("p2", "web")])
    by_name = ACLToken(
        accessor_id="t",
        secret_id="t-secret",
        policies=[
            ACLTokenPolicyLink(name="OPS"),
            ACLTokenPolicyLink(id="p2"),
            ACLTokenPolicyLink(id="p2"),
        ],
    )
    store.acl_token_set(5, [by_name])
    with store.read() as txn:
        token = txn.acl_token("t")[1]
    assert token is not None
    assert token.policies == [
        ACLTokenPolicyLink(id="p1", name="ops"),
        ACLTokenPolicyLink(id="p2", name="web"),
    ]
    store.acl_policy_set(6, [_policy("p1", "operators")])
    store.acl_policy_delete(7, ["p2"])
    with store.read() as txn:
        index, token = txn.acl_token("t")
        _, linked = txn.acl_tokens(policy_id="p1")
        assert token is not None
        _, policies = txn.acl_token_policies(token)
    assert index == 7
    assert token.policies == [ACLTokenPolicyLink(id="p1", name="operators")]
    assert [t.accessor_id for t in linked] == ["t"]
    assert [p.name for p in policies] == ["operators"]


@pytest.mark.parametrize(
    ("tokens", "message"),
    [
        ([_token("", "s")], "Missing token AccessorID"),
        ([_token("a", "")], "Missing token SecretID"),
        ([_token("a", "root-secret")], "SecretID is already in use"),
        ([_token("root-accessor", "changed")], "SecretID cannot change"),
        ([_token("a", "s1"), _token("b", "s1")], "SecretID is already in use"),
        ([_token("a", "s1"), _token("a", "s2")], "appears twice"),
        ([_token("a", "s", "no-such-policy")], "No such ACL policy with ID 'no-such-policy'"),
    ],
)
def test_bad_token_writes_are_refused_whole(tokens: list[ACLToken], message: str) -> None:
    store = _bootstrapped()
    before = store.contents()
    with pytest.raises(ACLError, match=message):
        store.acl_token_set(9, [_token("fine", "fine-secret"), *tokens])
    assert store.contents() == before


def test_replication_may_link_policies_not_replicated_yet() -> None:
    store = _bootstrapped()
    store.acl_token_set(4, [_token("a", "s", "later")], allow_missing_links=True)
    with store.read() as txn:
        token = txn.acl_token("a")[1]
    assert token is not None
    assert token.policies == []
    store.acl_policy_set(5, [_policy("later", "later")])
    with store.read() as txn:
        token = txn.acl_token("a")[1]
    assert token is not None
    assert [link.name for link in token.policies] == ["later"]


def test_unchanged_token_write_moves_no_index_and_keeps_create_index() -> None:
    store = _bootstrapped()
    store.acl_token_set(4, [_token("a", "s")])
    store.acl_token_set(5, [_token("a", "s")])
    assert store.index(Table.ACL_TOKENS) == 4
    store.acl_token_set(6, [msgspec.structs.replace(_token("a", "s"), description="new")])
    with store.read() as txn:
        token = txn.acl_token("a")[1]
    assert token is not None
    assert (token.create_index, token.modify_index) == (4, 6)


def test_deleting_tokens_frees_their_secrets_but_the_anonymous_token_stays() -> None:
    store = _bootstrapped()
    store.acl_token_set(4, [_token("a", "s")])
    store.acl_token_delete(5, ["a", "unknown"])
    with store.read() as txn:
        assert txn.acl_token_by_secret("s")[1] is None
    store.acl_token_set(6, [_token("b", "s")])
    with pytest.raises(ACLError, match="anonymous token is not permitted"):
        store.acl_token_delete(7, [ANONYMOUS_TOKEN_ID])


# --- policies -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policies", "error", "message"),
    [
        ([_policy("", "x")], ACLError, "Missing policy ID"),
        ([_policy("p", "bad name")], ACLError, "invalid Name"),
        ([_policy("p", "GLOBAL-MANAGEMENT")], ACLError, "already exists"),
        ([_policy("p", "a"), _policy("q", "A")], ACLError, "already exists"),
        ([_policy("p", "a", rules='servce "x" { policy = "read" }')], ACLRulesError, "servce"),
        ([_policy(MANAGEMENT_POLICY_ID, "global-management", "")], ACLError, "builtin"),
    ],
)
def test_bad_policy_writes_are_refused_whole(
    policies: list[ACLPolicy], error: type[Exception], message: str
) -> None:
    store = _bootstrapped()
    before = store.contents()
    with pytest.raises(error, match=message):
        store.acl_policy_set(9, [_policy("fine", "fine"), *policies])
    assert store.contents() == before


def test_a_batch_may_swap_policy_names() -> None:
    store = _bootstrapped()
    store.acl_policy_set(4, [_policy("p", "x"), _policy("q", "y")])
    store.acl_policy_set(5, [_policy("p", "y"), _policy("q", "x")])
    with store.read() as txn:
        by_x, by_y = txn.acl_policy_by_name("x")[1], txn.acl_policy_by_name("y")[1]
    assert by_x is not None
    assert by_x.id == "q"
    assert by_y is not None
    assert by_y.id == "p"


def test_the_management_policy_cannot_be_deleted_and_a_freed_name_is_reusable() -> None:
    store = _bootstrapped()
    with pytest.raises(ACLError, match="not permitted"):
        store.acl_policy_delete(4, [MANAGEMENT_POLICY_ID])
    store.acl_policy_set(4, [_policy("p", "ops")])
    store.acl_policy_delete(5, ["p"])
    store.acl_policy_set(6, [_policy("q", "Ops")])
    with store.read() as txn:
        _, policies = txn.acl_policies()
    assert [p.id for p in policies] == [MANAGEMENT_POLICY_ID, "q"]


# --- watches, FSM, snapshots ---------------------------------------------------------


def test_acl_writes_wake_acl_readers_only() -> None:
    store = _bootstrapped()
    fired: list[str] = []
    with store.read() as txn:
        txn.acl_policies()
        txn.watch(lambda _: fired.append("policies"))
    with store.read() as txn:
        txn.nodes()
        txn.watch(lambda _: fired.append("nodes"))
    store.acl_token_set(4, [_token("a", "s")])
    assert fired == []
    store.acl_policy_set(5, [_policy("p", "p")])
    assert fired == ["policies"]


def test_fsm_applies_acl_commands_and_reports_refusals_as_results() -> None:
    fsm = Fsm()
    commands: list[Command] = [
        ACLInitialize(create_time=WHEN),
        ACLBootstrap(token=ROOT),
        ACLPolicySet(policies=[_policy("p", "ops")]),
        ACLTokenSet(tokens=[_token("a", "s", "p")]),
        ACLTokenDelete(accessor_ids=["a"]),
        ACLPolicyDelete(policy_ids=["p"]),
        ACLBootstrap(token=_token("b", "s2")),
    ]
    results = []
    for index, command in enumerate(commands, start=1):
        data = encode_command(command)
        assert decode_command(data) == command
        results.append(fsm.apply(index, data).error)
    assert results[:-1] == [""] * 6
    assert results[-1] == "ACL bootstrap no longer allowed (reset index: 2)"
    with fsm.store.read() as txn:
        assert [t.accessor_id for t in txn.acl_tokens()[1]] == [ANONYMOUS_TOKEN_ID, "root-accessor"]


def test_snapshot_round_trip_keeps_acl_tables_and_indexes() -> None:
    store = _bootstrapped()
    store.acl_policy_set(4, [_policy("p", "ops")])
    store.acl_token_set(5, [_token("a", "s", "p")])
    restored = StateStore()
    restored.restore(store.snapshot())
    assert restored.contents() == store.contents()
    assert restored.snapshot() == store.snapshot()
    with restored.read() as txn:
        assert txn.acl_token_by_secret("s")[1] is not None
        assert txn.acl_policy_by_name("OPS")[1] is not None
        assert txn.acl_bootstrap_allowed()[1] == (False, 3)
    with pytest.raises(ACLBootstrapNotAllowedError):
        restored.acl_bootstrap(6, _token("b", "s2"))


def test_snapshot_from_before_acls_restores_with_empty_acl_tables() -> None:
    old = {
        "indexes": {"nodes": 0},
        "nodes": [],
        "services": [],
        "checks": [],
        "federation_states": [],
    }
    data = b"WFSM" + (1).to_bytes(2, "big") + msgspec.msgpack.encode(old)
    contents = decode_snapshot(data)
    assert contents.acl_tokens == []
    assert contents.acl_policies == []
    assert contents.acl_bootstrap_index == 0


def _snapshot_of(contents: StoreContents) -> bytes:
    return b"WFSM" + (1).to_bytes(2, "big") + msgspec.msgpack.encode(contents)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: {"acl_tokens": [*c.acl_tokens, c.acl_tokens[-1]]}, "appears twice"),
        (
            lambda c: {
                "acl_tokens": [
                    *c.acl_tokens,
                    msgspec.structs.replace(c.acl_tokens[-1], accessor_id="x"),
                ]
            },
            "another token's",
        ),
        (lambda c: {"acl_policies": [*c.acl_policies, _policy("x", "Global-Management")]}, "twice"),
        (
            lambda c: {"acl_policies": [*c.acl_policies, _policy("x", "x", "nonsense =")]},
            "Failed to parse",
        ),
        (lambda c: {"acl_bootstrap_index": -1}, "out of range"),
    ],
)
def test_inconsistent_acl_snapshots_are_refused(change: object, message: str) -> None:
    store = _bootstrapped()
    contents = store.contents()
    assert callable(change)
    broken = msgspec.structs.replace(contents, **change(contents))
    target = _bootstrapped()
    target.acl_token_set(4, [_token("keep", "keep-secret")])
    before = target.contents()
    with pytest.raises(SnapshotFormatError, match=message):
        target.restore(_snapshot_of(broken))
    assert target.contents() == before


async def test_a_blocking_token_list_wakes_on_a_policy_rename_not_on_a_catalog_write() -> None:
    """Token answers show policy names, so a rename must wake a token list."""
    store = _bootstrapped()
    store.acl_policy_set(4, [_policy("p", "ops")])
    store.acl_token_set(5, [_token("a", "s", "p")])

    def tokens(txn: ReadTxn) -> tuple[int, list[ACLToken]]:
        return txn.acl_tokens()

    query = asyncio.ensure_future(
        blocking_query(store, QueryOptions(min_query_index=5, max_query_time=600), tokens)
    )
    for _ in range(1000):
        if store.watch_count():
            break
        await asyncio.sleep(0)
    store.ensure_registration(6, RegisterRequest(node=Node(node="n1")))
    assert store.watch_count(Table.ACL_TOKENS) == 1, "woken by a catalog write"
    store.acl_policy_set(7, [_policy("p", "operators")])
    meta, answer = await asyncio.wait_for(query, 30)  # a deadline, not a measurement
    assert meta.index == 7
    assert [link.name for t in answer if t.accessor_id == "a" for link in t.policies] == [
        "operators"
    ]
