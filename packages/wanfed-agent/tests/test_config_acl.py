"""The ``acl`` block: Consul's keys in HCL and JSON, validation, and secrets kept quiet."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from wanfed_agent.config import ACLConfig, ACLTokens, AgentConfig, ConfigError, load_config

SECRET = "b1gS3cret-0000-4000-8000-0123456789ab"

ACL_HCL = f"""
acl {{
  enabled = true
  default_policy = "deny"
  down_policy = "async-cache"
  enable_token_persistence = true
  token_ttl = "1m"
  tokens {{
    initial_management = "{SECRET}"
    replication = "replication-secret"
    agent = "agent-secret"
    default = "default-secret"
  }}
}}
"""

EXPECTED = ACLConfig(
    enabled=True,
    default_policy="deny",
    down_policy="async-cache",
    enable_token_persistence=True,
    token_ttl=60.0,
    tokens=ACLTokens(
        initial_management=SECRET,
        replication="replication-secret",
        agent="agent-secret",
        default="default-secret",
    ),
)


def _load(tmp_path: Path, name: str, text: str) -> AgentConfig:
    path = tmp_path / name
    path.write_text(text)
    return load_config([path], (), {"node_name": "n1"}, check_tls_files=False)


def _error(tmp_path: Path, name: str, text: str) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, name, text)
    return caught.value


def test_defaults_are_consuls() -> None:
    acl = load_config((), (), {"node_name": "n1"}, check_tls_files=False).acl
    assert acl == ACLConfig()
    assert (acl.enabled, acl.default_policy, acl.down_policy) == (False, "allow", "extend-cache")
    assert acl.tokens == ACLTokens()


def test_hcl_and_json_give_the_same_acl_config(tmp_path: Path) -> None:
    as_json = json.dumps(
        {
            "acl": {
                "enabled": True,
                "default_policy": "deny",
                "down_policy": "async-cache",
                "enable_token_persistence": True,
                "token_ttl": "1m",
                "tokens": {
                    "initial_management": SECRET,
                    "replication": "replication-secret",
                    "agent": "agent-secret",
                    "default": "default-secret",
                },
            }
        }
    )
    assert _load(tmp_path, "a.hcl", ACL_HCL).acl == EXPECTED
    assert _load(tmp_path, "a.json", as_json).acl == EXPECTED


def test_the_deprecated_master_name_sets_initial_management(tmp_path: Path) -> None:
    config = _load(tmp_path, "a.hcl", f'acl {{ tokens {{ master = "{SECRET}" }} }}')
    assert config.acl.tokens.initial_management == SECRET


def test_a_later_source_overrides_one_token_only(tmp_path: Path) -> None:
    first, second = tmp_path / "1.hcl", tmp_path / "2.json"
    first.write_text(ACL_HCL)
    second.write_text(json.dumps({"acl": {"tokens": {"agent": "other-agent"}}}))
    config = load_config([first, second], (), {"node_name": "n1"}, check_tls_files=False)
    assert config.acl.tokens.agent == "other-agent"
    assert config.acl.tokens.initial_management == SECRET


@pytest.mark.parametrize(
    ("acl", "key", "message"),
    [
        ({"default_policy": "maybe"}, "acl.default_policy", "expected one of allow, deny"),
        ({"down_policy": "cache"}, "acl.down_policy", "extend-cache, deny, allow, async-cache"),
        ({"enabled": "yes"}, "acl.enabled", "expected a boolean"),
        ({"token_ttl": "0s"}, "acl.token_ttl", "greater than zero"),
        ({"tokens": {"agentt": "x"}}, "acl.tokens.agentt", "unknown key"),
        ({"tokens": "x"}, "acl.tokens", "expected a block"),
        ({"tokens": {"agent": ""}}, "acl.tokens.agent", "1 to 256 characters"),
        ({"tokens": {"agent": "x" * 257}}, "acl.tokens.agent", "1 to 256 characters"),
        ({"tokens": {"replication": "a b"}}, "acl.tokens.replication", "without spaces"),
        ({"tokens": {"default": 42}}, "acl.tokens.default", "as a string"),
        ({"tokens": {"agent": "anonymous"}}, "acl.tokens.agent", "anonymous token"),
        ({"policy": "deny"}, "acl.policy", "unknown key"),
    ],
)
def test_bad_acl_settings_name_the_key(
    tmp_path: Path, acl: dict[str, Any], key: str, message: str
) -> None:
    error = _error(tmp_path, "a.json", json.dumps({"acl": acl}))
    assert error.key == key
    assert message in str(error)


@pytest.mark.parametrize(
    "value",
    [12345678, "has space-b1gS3cret", "b1gS3cret\x07", "b1gS3cret" * 40, ["b1gS3cret"]],
)
def test_a_rejected_token_is_never_echoed(tmp_path: Path, value: object) -> None:
    error = _error(tmp_path, "a.json", json.dumps({"acl": {"tokens": {"agent": value}}}))
    assert "b1gS3cret" not in str(error)
    assert "12345678" not in str(error)


def test_a_syntax_error_next_to_a_token_does_not_quote_it(tmp_path: Path) -> None:
    # the parser stops at text that holds the secret (its message would quote it)
    error = _error(tmp_path, "a.hcl", "acl { tokens { agent = x.\nb1gS3cret\n } }")
    assert "invalid HCL" in str(error)
    assert "line 1" in str(error)
    assert "b1gS3cret" not in str(error)


def test_secrets_never_appear_in_repr_or_the_load_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        config = _load(tmp_path, "a.hcl", ACL_HCL)
    for text in (repr(config), str(config), repr(config.acl), f"{config.acl.tokens}"):
        assert SECRET not in text
        assert "agent-secret" not in text
    assert "initial_management=<redacted>" in repr(config.acl.tokens)
    assert SECRET not in repr(list(config.acl.tokens.__rich_repr__()))
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert logged  # the load was logged...
    assert SECRET not in logged  # ...without the secret
