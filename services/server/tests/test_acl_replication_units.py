"""The pieces of ACL replication without a network: the tracker (status and
staleness on an explicit clock) and how the resolver treats stale tables and a
secondary's bootstrap."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from wanfed_agent.config import ACLConfig, ACLTokens
from wanfed_fsm import (
    MANAGEMENT_POLICY_ID,
    ZERO_TIME,
    ACLInitialize,
    ACLPolicy,
    ACLPolicySet,
    ACLToken,
    ACLTokenPolicyLink,
    ACLTokenSet,
    LocalConsensus,
)
from wanfed_server.runtime import AclNotFoundError, TokenResolver
from wanfed_server.runtime._acl_replication_status import (
    POLICIES,
    TOKENS,
    AclReplicationTracker,
)

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
