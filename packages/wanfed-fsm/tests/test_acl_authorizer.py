"""Authorizer decisions, checked against Consul's documented precedence.

Each row: the rules of a token's policies (one string per policy), the
default policy, a question and the expected answer.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from wanfed_fsm import (
    MANAGEMENT_POLICY_ID,
    ACLPolicy,
    ACLRulesError,
    Authorizer,
    DefaultPolicy,
    management_policy,
    parse_rules,
)

Question = Callable[[Authorizer], bool]


def _authorizer(policies: list[str], default: DefaultPolicy) -> Authorizer:
    return Authorizer([parse_rules(text) for text in policies], default_policy=default)


PRECEDENCE = [
    # exact beats prefix, whatever the prefix says
    (['service "web" { policy = "read" }', 'service_prefix "" { policy = "write" }'],
     "deny", lambda a: a.service_write("web"), False),
    (['service "web" { policy = "read" }', 'service_prefix "" { policy = "write" }'],
     "deny", lambda a: a.service_write("webby"), True),
    (['service "web" { policy = "write" }\nservice_prefix "we" { policy = "deny" }'],
     "deny", lambda a: a.service_read("web"), True),
    # the longest prefix wins, even over a shorter deny
    (['service_prefix "" { policy = "deny" }\nservice_prefix "web-" { policy = "read" }'],
     "allow", lambda a: a.service_read("web-1"), True),
    (['service_prefix "" { policy = "write" }\nservice_prefix "web-" { policy = "deny" }'],
     "allow", lambda a: a.service_read("web-1"), False),
    (['service_prefix "" { policy = "write" }\nservice_prefix "web-" { policy = "deny" }'],
     "allow", lambda a: a.service_write("api"), True),
    # a prefix longer than the name does not match
    (['node_prefix "db-10" { policy = "write" }'], "deny", lambda a: a.node_read("db-1"), False),
    # deny wins at equal specificity, across policies and within one
    (['node "n1" { policy = "write" }', 'node "n1" { policy = "deny" }'],
     "allow", lambda a: a.node_read("n1"), False),
    (['node_prefix "n" { policy = "deny" }', 'node_prefix "n" { policy = "write" }'],
     "allow", lambda a: a.node_write("n2"), False),
    (['agent "a" { policy = "read" }\nagent "a" { policy = "deny" }'],
     "allow", lambda a: a.agent_read("a"), False),
    # write beats read at equal specificity; several policies add up
    (['node "n1" { policy = "read" }', 'node "n1" { policy = "write" }'],
     "deny", lambda a: a.node_write("n1"), True),
    (['node "n1" { policy = "read" }', 'service "s" { policy = "write" }'],
     "deny", lambda a: a.service_write("s") and a.node_read("n1"), True),
    # write implies read; read does not imply write; deny denies both
    (['agent_prefix "" { policy = "write" }'], "deny", lambda a: a.agent_read("x"), True),
    (['agent_prefix "" { policy = "read" }'], "deny", lambda a: a.agent_write("x"), False),
    (['operator = "write"'], "deny", lambda a: a.operator_read(), True),
    (['operator = "read"'], "deny", lambda a: a.operator_write(), False),
    (['acl = "deny"'], "allow", lambda a: a.acl_read(), False),
    (['acl = "read"', 'acl = "write"'], "deny", lambda a: a.acl_write(), True),
    (['acl = "write"', 'acl = "deny"'], "allow", lambda a: a.acl_read(), False),
    # mesh falls back to operator when it has no rule of its own
    (['operator = "write"'], "deny", lambda a: a.mesh_write(), True),
    (['operator = "write"\nmesh = "read"'], "deny", lambda a: a.mesh_write(), False),
    (['mesh = "write"'], "deny", lambda a: a.operator_read(), False),
    # what no rule speaks about, the default policy decides
    (['service "web" { policy = "read" }'], "deny", lambda a: a.node_read("n"), False),
    (['service "web" { policy = "read" }'], "allow", lambda a: a.node_write("n"), True),
    ([], "deny", lambda a: a.operator_read(), False),
    ([], "allow", lambda a: a.mesh_write(), True),
    # ignored resources grant nothing
    (['key_prefix "" { policy = "write" }'], "deny", lambda a: a.service_read("x"), False),
]  # fmt: skip


@pytest.mark.parametrize(("policies", "default", "question", "expected"), PRECEDENCE)
def test_precedence(
    policies: list[str], default: DefaultPolicy, question: Question, expected: bool
) -> None:
    assert question(_authorizer(policies, default)) is expected


ALL_QUESTIONS: list[Question] = [
    lambda a: a.node_read("n"),
    lambda a: a.node_write("n"),
    lambda a: a.service_read("s"),
    lambda a: a.service_write("s"),
    lambda a: a.agent_read("n"),
    lambda a: a.agent_write("n"),
    lambda a: a.operator_read(),
    lambda a: a.operator_write(),
    lambda a: a.acl_read(),
    lambda a: a.acl_write(),
    lambda a: a.mesh_read(),
    lambda a: a.mesh_write(),
]


def test_global_management_allows_everything_even_under_default_deny() -> None:
    authorizer = Authorizer.from_policies(
        [management_policy()], default_policy="deny", datacenter="dc1"
    )
    assert authorizer.is_management
    assert all(question(authorizer) for question in ALL_QUESTIONS)


def test_management_is_by_id_not_by_rules() -> None:
    lookalike = ACLPolicy(id="other", name="lookalike", rules='service "x" { policy = "read" }')
    authorizer = Authorizer.from_policies([lookalike], default_policy="deny", datacenter="dc1")
    assert not authorizer.is_management
    assert not authorizer.acl_write()
    renamed = ACLPolicy(id=MANAGEMENT_POLICY_ID, name="renamed", rules="")
    assert Authorizer.from_policies([renamed], default_policy="deny", datacenter="dc1").acl_write()


def test_policies_of_other_datacenters_do_not_count() -> None:
    elsewhere = ACLPolicy(id="p", name="p", rules='operator = "write"', datacenters=["dc2", "dc3"])
    assert not Authorizer.from_policies(
        [elsewhere], default_policy="deny", datacenter="dc1"
    ).operator_read()
    assert Authorizer.from_policies(
        [elsewhere], default_policy="deny", datacenter="dc3"
    ).operator_write()


def test_unparseable_policy_rules_are_an_error_not_a_silent_grant() -> None:
    broken = ACLPolicy(id="p", name="p", rules='operator = "everything"')
    with pytest.raises(ACLRulesError):
        Authorizer.from_policies([broken], default_policy="allow", datacenter="dc1")


def test_default_policy_must_be_allow_or_deny() -> None:
    with pytest.raises(ValueError, match="allow or deny"):
        Authorizer(default_policy="maybe")  # type: ignore[arg-type]


def test_twenty_rule_policy_answers_by_longest_prefix() -> None:
    rules = "\n".join(
        f'service_prefix "{"a" * n}" {{ policy = "{"write" if n % 2 else "deny"}" }}'
        for n in range(20)
    )
    authorizer = _authorizer([rules], "allow")
    for n in range(20):
        name = "a" * n + "b"
        assert authorizer.service_write(name) is bool(n % 2), n
