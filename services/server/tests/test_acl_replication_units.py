"""The pieces of ACL replication without a network: the tracker (status and
staleness on an explicit clock) and how the resolver treats stale tables and a
secondary's bootstrap."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, TypeVar

import msgspec
import pytest

from wanfed_agent.config import ACLConfig, ACLTokens
from wanfed_fsm import (
    ANONYMOUS_TOKEN_ID,
    MANAGEMENT_POLICY_ID,
    ZERO_TIME,
    ACLInitialize,
    ACLPolicy,
    ACLPolicySet,
    ACLToken,
    ACLTokenPolicyLink,
    ACLTokenSet,
    LocalConsensus,
    anonymous_token,
)
from wanfed_replication import IndexReplicator, ReplicationRoundError
from wanfed_server.runtime import AclNotFoundError, TokenResolver
from wanfed_server.runtime._acl_replication import _PolicyReplication, _TokenReplication
from wanfed_server.runtime._acl_replication_status import (
    POLICIES,
    TOKENS,
    AclReplicationTracker,
)

R = TypeVar("R")
D = TypeVar("D", _PolicyReplication, _TokenReplication)
WALL = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_never_run_status_is_the_zero_time_and_no_message() -> None:
    tracker = AclReplicationTracker(source_datacenter="dc1", enabled=True, ttl=30.0)
    status = tracker.status()
    assert (status.enabled, status.running) == (True, False)
    assert (status.replicated_index, status.replicated_token_index) == (0, 0)
    assert status.last_success == ZERO_TIME
    assert status.last_error == ZERO_TIME
    assert status.last_error_message == ""
    assert not tracker.stale(1e9)


def test_status_reports_indexes_and_the_latest_error() -> None:
    tracker = AclReplicationTracker(source_datacenter="dc1", enabled=True, ttl=30.0)
    tracker.started(0.0)
    tracker.replicated(POLICIES, 7, 1.0, WALL)
    tracker.replicated(TOKENS, 9, 1.0, WALL)
    tracker.failed(TOKENS, "acl tokens: i/o timeout", WALL.replace(second=9))
    status = tracker.status()
    assert status.running
    assert (status.replicated_index, status.replicated_token_index) == (7, 9)
    assert status.last_success == WALL
    assert status.last_error == WALL.replace(second=9)
    assert status.last_error_message == "acl tokens: i/o timeout"


def test_stale_only_after_failing_for_the_ttl_since_the_last_contact() -> None:
    tracker = AclReplicationTracker(source_datacenter="dc1", enabled=True, ttl=30.0)
    tracker.started(0.0)
    tracker.contact(POLICIES, 10.0)
    tracker.contact(TOKENS, 10.0)
    # A quiet long-poll is not staleness: nothing failed.
    assert not tracker.stale(500.0)
    assert tracker.next_deadline(500.0) is None
    tracker.failed(TOKENS, "i/o timeout", WALL)
    assert not tracker.stale(39.9)
    assert tracker.next_deadline(39.9) == 40.0
    assert tracker.stale(40.0)
    assert tracker.next_deadline(40.0) is None
    tracker.contact(TOKENS, 41.0)  # heard from the primary again
    assert not tracker.stale(41.0)


def test_never_reached_primary_counts_from_the_start_of_the_term() -> None:
    tracker = AclReplicationTracker(source_datacenter="dc1", enabled=True, ttl=30.0)
    tracker.started(100.0)
    tracker.failed(POLICIES, "no path", WALL)
    assert not tracker.stale(129.0)
    assert tracker.stale(130.0)
    tracker.stopped()  # a follower does not judge
    assert not tracker.stale(1000.0)


def test_ttl_must_be_positive() -> None:
    with pytest.raises(ValueError, match="> 0"):
        AclReplicationTracker(source_datacenter="dc1", enabled=True, ttl=0)


# --- the resolver ------------------------------------------------------------------------

AGENT = "agent-secret-of-dc2"
WEB = "web-secret"


def _config(down_policy: str = "extend-cache") -> ACLConfig:
    return ACLConfig(
        enabled=True,
        default_policy="deny",
        down_policy=down_policy,  # type: ignore[arg-type]
        tokens=ACLTokens(agent=AGENT),
    )


async def _replicated_store() -> LocalConsensus:
    consensus = LocalConsensus()
    await consensus.apply(ACLInitialize(create_time=WALL))
    rules = 'service "web" { policy = "write" }'
    await consensus.apply(ACLPolicySet(policies=[ACLPolicy(id="p1", name="web", rules=rules)]))
    await consensus.apply(
        ACLTokenSet(
            tokens=[
                ACLToken(accessor_id="a1", secret_id=WEB, policies=[ACLTokenPolicyLink(id="p1")]),
                ACLToken(
                    accessor_id="a2",
                    secret_id="root",
                    policies=[ACLTokenPolicyLink(id=MANAGEMENT_POLICY_ID)],
                ),
            ]
        )
    )
    return consensus


async def test_a_secondary_resolves_its_agent_token_before_replication_only() -> None:
    consensus = LocalConsensus()
    resolver = TokenResolver(consensus.store, _config(), "dc2", primary=False)
    subject = resolver.resolve(AGENT)
    assert subject.authorizer.service_write("mesh-gateway")
    assert subject.authorizer.node_write("dc2-gw1")
    assert subject.authorizer.agent_read("s1")
    assert not subject.authorizer.acl_read()
    assert not subject.authorizer.operator_write()
    with pytest.raises(AclNotFoundError):
        resolver.resolve("some-other-secret")
    # The primary never grants it: its tables are authoritative from the start.
    primary = TokenResolver(consensus.store, _config(), "dc1", primary=True)
    with pytest.raises(AclNotFoundError):
        primary.resolve(AGENT)
    # Once tokens were replicated, the secret means what the primary says: unknown here.
    await consensus.apply(ACLInitialize(create_time=WALL))
    with pytest.raises(AclNotFoundError):
        resolver.resolve(AGENT)


@pytest.mark.parametrize(
    ("down_policy", "web_may_write"),
    [("extend-cache", True), ("async-cache", True), ("deny", False), ("allow", True)],
)
async def test_down_policy_decides_when_stale(down_policy: str, web_may_write: bool) -> None:
    consensus = await _replicated_store()
    resolver = TokenResolver(consensus.store, _config(down_policy), "dc2", primary=False)
    assert resolver.resolve(WEB).authorizer.service_write("web")
    resolver.set_stale(True)
    assert resolver.resolve(WEB).authorizer.service_write("web") is web_may_write
    assert resolver.resolve("root").is_management
    resolver.set_stale(False)
    assert resolver.resolve(WEB).authorizer.service_write("web")


# --- the delegates, against a fake primary ---------------------------------------------


class _FakePrimary:
    """``ACL.PolicyList`` / ``ACL.TokenList`` answers of a primary, from fixed lists."""

    def __init__(self, policies: list[ACLPolicy], tokens: list[ACLToken], index: int) -> None:
        self.policies = policies
        self.tokens = tokens
        self.index = index
        self.requests: list[Any] = []

    async def rpc(self, method: str, args: msgspec.Struct, reply_type: type[R]) -> R:
        self.requests.append(args)
        if method == "ACL.PolicyList":
            return reply_type(index=self.index, policies=self.policies)  # type: ignore[call-arg]
        return reply_type(index=self.index, tokens=self.tokens)  # type: ignore[call-arg]


def _delegate(kind: type[D], primary: _FakePrimary, consensus: LocalConsensus) -> D:
    return kind(
        primary="dc1",
        rpc=primary,
        consensus=consensus,
        token="replication-secret",
        wait=1.0,
        tracker=AclReplicationTracker(source_datacenter="dc1", enabled=True, ttl=30.0),
        changed=lambda: None,
        clock=lambda: 0.0,
    )


async def test_policies_that_swapped_names_in_the_primary_replicate() -> None:
    consensus = LocalConsensus()
    await consensus.apply(
        ACLPolicySet(policies=[ACLPolicy(id="p1", name="a"), ACLPolicy(id="p2", name="b")])
    )
    remote = [
        ACLPolicy(id="p1", name="b", modify_index=20),
        ACLPolicy(id="p2", name="a", modify_index=20),
    ]
    primary = _FakePrimary(remote, [], index=20)
    replicator = IndexReplicator(_delegate(_PolicyReplication, primary, consensus))
    await replicator.replicate_once()
    with consensus.store.read() as txn:
        names = {policy.id: policy.name for policy in txn.acl_policies()[1]}
    assert names == {"p1": "b", "p2": "a"}
    assert replicator.last_remote_index == 20
    assert primary.requests[0].token == "replication-secret"
    assert primary.requests[0].datacenter == "dc1"


async def test_tokens_with_hidden_secrets_fail_the_round_and_say_why() -> None:
    consensus = LocalConsensus()
    hidden = ACLToken(accessor_id="a1", secret_id="<hidden>", modify_index=5)
    primary = _FakePrimary([], [hidden], index=5)
    delegate = _delegate(_TokenReplication, primary, consensus)
    with pytest.raises(ReplicationRoundError, match="acl:write"):
        await IndexReplicator(delegate).replicate_once()
    with consensus.store.read() as txn:
        assert txn.acl_tokens()[1] == []
    assert "acl:write" in delegate._tracker.status().last_error_message
    assert primary.requests[0].include_local is False


async def test_token_replication_leaves_local_tokens_alone() -> None:
    consensus = LocalConsensus()
    await consensus.apply(
        ACLTokenSet(
            tokens=[
                ACLToken(accessor_id="local", secret_id="s-local", local=True),
                ACLToken(accessor_id="gone", secret_id="s-gone"),
            ]
        )
    )
    remote = [ACLToken(accessor_id="new", secret_id="s-new", modify_index=3)]
    delegate = _delegate(_TokenReplication, _FakePrimary([], remote, index=3), consensus)
    await IndexReplicator(delegate).replicate_once()
    with consensus.store.read() as txn:
        assert sorted(token.accessor_id for token in txn.acl_tokens()[1]) == ["local", "new"]
    assert delegate._tracker.status().replicated_token_index == 3


def test_the_anonymous_token_is_written_last_so_the_bootstrap_ends_with_the_round() -> None:
    remote = [
        anonymous_token(WALL),
        ACLToken(accessor_id="ffff", secret_id="s-agent", modify_index=3),
        ACLToken(accessor_id="0000", secret_id="s-other", modify_index=3),
    ]
    delegate = _delegate(_TokenReplication, _FakePrimary([], [], index=3), LocalConsensus())
    updates = delegate.diff([], remote, 0).updates
    assert [token.accessor_id for token in updates] == ["0000", "ffff", ANONYMOUS_TOKEN_ID]
