"""The ACL rules language: the forms Consul documents, in HCL and JSON, and clear refusals.

Rules text comes from API callers and from other datacenters, so the
property tests treat it as untrusted: any text either decodes or raises
:class:`ACLRulesError`, and rules written out as HCL and as JSON decode to
the same thing.
"""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wanfed_fsm import (
    MAX_RULES_BYTES,
    Access,
    ACLRulesError,
    PolicyRules,
    Resource,
    SegmentRule,
    parse_rules,
)

CONSUL_EXAMPLE = """
# Nodes and services, exact and by prefix
node "db-1" {
  policy = "write"
}
node_prefix "" {
  policy = "read"
}
service "web" { policy = "write" }
service_prefix "" {
  policy = "read"
  intentions = "read"
}
agent_prefix "" {
  policy = "read"
}
// key rules are accepted for compatibility and ignored
key_prefix "foo/" {
  policy = "list"
}
operator = "read"
acl = "write"
mesh = "deny"
keyring = "read"
"""

CONSUL_EXAMPLE_JSON = json.dumps(
    {
        "node": {"db-1": {"policy": "write"}},
        "node_prefix": {"": {"policy": "read"}},
        "service": {"web": {"policy": "write"}},
        "service_prefix": {"": {"policy": "read", "intentions": "read"}},
        "agent_prefix": {"": {"policy": "read"}},
        "key_prefix": {"foo/": {"policy": "list"}},
        "operator": "read",
        "acl": "write",
        "mesh": "deny",
        "keyring": "read",
    }
)

EXPECTED = PolicyRules(
    segments=(
        SegmentRule(resource=Resource.NODE, segment="db-1", prefix=False, access=Access.WRITE),
        SegmentRule(resource=Resource.NODE, segment="", prefix=True, access=Access.READ),
        SegmentRule(resource=Resource.SERVICE, segment="web", prefix=False, access=Access.WRITE),
        SegmentRule(resource=Resource.SERVICE, segment="", prefix=True, access=Access.READ),
        SegmentRule(resource=Resource.AGENT, segment="", prefix=True, access=Access.READ),
    ),
    operator=Access.READ,
    acl=Access.WRITE,
    mesh=Access.DENY,
    ignored=("intentions", "key_prefix", "keyring"),
)


def test_consul_documented_hcl_forms_decode() -> None:
    assert parse_rules(CONSUL_EXAMPLE) == EXPECTED


def test_json_decodes_to_the_same_rules() -> None:
    assert parse_rules(CONSUL_EXAMPLE_JSON) == EXPECTED


def test_json_blocks_may_also_be_lists_of_objects() -> None:
    text = json.dumps({"service": [{"web": {"policy": "read"}}, {"api": {"policy": "deny"}}]})
    assert [(r.segment, r.access) for r in parse_rules(text).segments] == [
        ("web", Access.READ),
        ("api", Access.DENY),
    ]


@pytest.mark.parametrize("text", ["", "   \n", "# only a comment\n"])
def test_empty_rules_grant_nothing(text: str) -> None:
    assert parse_rules(text) == PolicyRules()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('servce "web" { policy = "read" }', "unknown resource 'servce'"),
        ('service "web" { policy = "raed" }', 'service "web": policy: expected one of read'),
        ('service "web" { }', 'service "web": missing policy'),
        ('service "web" { policy = "read"\n color = "blue" }', "unknown key 'color'"),
        ('node "n" { intentions = "read" }', "unknown key 'intentions'"),
        ('operator = "list"', "operator: expected one of read, write, deny, got 'list'"),
        ('service "web" { policy = "list" }', "expected one of read, write, deny, got 'list'"),
        ('acl = ["write"]', "acl: expected one of read, write, deny, got a list"),
        ("operator = 1", "operator: expected one of read, write, deny, got 1 (int)"),
        ('service = "read"', 'expected service "<name>"'),
        ('service "web" {\n  policy = "read"\n', "invalid HCL at line 3"),
        ('{"operator": "read",}', "invalid JSON at line 1"),
        ('{"operator": "read", "operator": "write"}', "key 'operator' appears twice"),
        ('["operator"]', "invalid HCL"),
        ('{"service": {"web": "read"}}', 'service "web": expected a block'),
    ],
)
def test_bad_rules_name_the_rule_or_the_line(text: str, message: str) -> None:
    with pytest.raises(ACLRulesError) as caught:
        parse_rules(text)
    assert message in str(caught.value)
    assert str(caught.value).startswith("Failed to parse ACL rules: ")


def test_key_rules_accept_list_but_are_only_noted() -> None:
    rules = parse_rules('key "a" { policy = "list" }\nkey_prefix "" { policy = "deny" }')
    assert rules.segments == ()
    assert rules.ignored == ("key", "key_prefix")


def test_oversized_and_deeply_nested_rules_are_refused() -> None:
    with pytest.raises(ACLRulesError, match="longer than"):
        parse_rules("#" * (MAX_RULES_BYTES + 1))
    with pytest.raises(ACLRulesError, match="nested deeper"):
        parse_rules('{"service": ' + "[" * 50 + "]" * 50 + "}")


# --- properties ----------------------------------------------------------------

_segments = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters='"\\$%'),
    max_size=12,
)
_access = st.sampled_from([Access.READ, Access.WRITE, Access.DENY])
_rule = st.builds(
    SegmentRule,
    resource=st.sampled_from([Resource.NODE, Resource.SERVICE, Resource.AGENT]),
    segment=_segments,
    prefix=st.booleans(),
    access=_access,
)


def _name(rule: SegmentRule) -> str:
    return f"{rule.resource.value}{'_prefix' if rule.prefix else ''}"


def _as_hcl(rules: list[SegmentRule], operator: Access | None) -> str:
    lines = [
        f'{_name(r)} "{r.segment}" {{\n  policy = "{r.access.name.lower()}"\n}}' for r in rules
    ]
    if operator is not None:
        lines.append(f'operator = "{operator.name.lower()}"')
    return "\n".join(lines)


def _as_json(rules: list[SegmentRule], operator: Access | None) -> str:
    document: dict[str, object] = {}
    for rule in rules:
        blocks = document.setdefault(_name(rule), [])
        assert isinstance(blocks, list)
        blocks.append({rule.segment: {"policy": rule.access.name.lower()}})
    if operator is not None:
        document["operator"] = operator.name.lower()
    return json.dumps(document)


@settings(max_examples=150, deadline=None)
@given(st.lists(_rule, max_size=8), st.none() | _access)
def test_generated_rules_decode_identically_from_hcl_and_json(
    rules: list[SegmentRule], operator: Access | None
) -> None:
    from_hcl = parse_rules(_as_hcl(rules, operator))
    from_json = parse_rules(_as_json(rules, operator))
    assert sorted(from_hcl.segments, key=repr) == sorted(rules, key=repr)
    assert sorted(from_json.segments, key=repr) == sorted(rules, key=repr)
    assert from_hcl.operator == from_json.operator == operator


_fragments = st.sampled_from(
    [
        "service",
        "node_prefix",
        "operator",
        "acl",
        '"web"',
        '""',
        "{",
        "}",
        "[",
        "]",
        "=",
        ":",
        ",",
        '"read"',
        '"write"',
        '"deny"',
        "policy",
        "\n",
        " ",
        "#",
        "/*",
        "*/",
        "${",
        "<<EOF\n",
        "EOF\n",
        "1",
        "true",
        "null",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=200), st.lists(_fragments, max_size=40).map("".join)))
def test_any_text_decodes_or_fails_with_a_rules_error(text: str) -> None:
    try:
        rules = parse_rules(text)
    except ACLRulesError as error:
        assert str(error).startswith("Failed to parse ACL rules: ")  # noqa: PT017 - refusal is fine
    else:
        assert isinstance(rules, PolicyRules)


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=8),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(st.text(max_size=8), children, max_size=4)
        ),
        max_leaves=30,
    )
)
def test_any_json_document_decodes_or_fails_with_a_rules_error(document: object) -> None:
    text = json.dumps({"service": document})
    with contextlib.suppress(ACLRulesError):
        parse_rules(text)
