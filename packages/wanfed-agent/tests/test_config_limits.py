"""``limits``: connection caps and timeouts of the RPC port and the HTTP API.

Consul names the two per-client caps (``rpc_max_conns_per_client`` 100,
``http_max_conns_per_client`` 200); the total caps and the idle and header
timeouts are wanfed's own keys, in the same block.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from wanfed_agent.config import ConfigError, Limits, load_config


def test_defaults() -> None:
    limits = load_config((), (), {"node_name": "n1"}).limits
    assert limits == Limits()
    assert limits.rpc_max_conns_per_client == 100
    assert limits.http_max_conns_per_client == 200
    assert limits.rpc_max_conns == 4096
    assert limits.http_max_conns == 4096
    assert limits.rpc_idle_timeout == 300.0
    assert limits.http_read_header_timeout == 10.0
    assert limits.http_idle_timeout == 60.0


def test_every_key_is_read_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "agent.json"
    given = {
        "rpc_handshake_timeout": "2s",
        "rpc_max_conns_per_client": 7,
        "rpc_max_conns": 70,
        "rpc_idle_timeout": "90s",
        "http_max_conns_per_client": 8,
        "http_max_conns": 80,
        "http_read_header_timeout": "3s",
        "http_idle_timeout": "1m",
    }
    path.write_text(json.dumps({"node_name": "n1", "limits": given}))
    assert load_config([path], (), {}).limits == Limits(
        rpc_handshake_timeout=2.0,
        rpc_max_conns_per_client=7,
        rpc_max_conns=70,
        rpc_idle_timeout=90.0,
        http_max_conns_per_client=8,
        http_max_conns=80,
        http_read_header_timeout=3.0,
        http_idle_timeout=60.0,
    )


def test_hcl_block_is_read(tmp_path: Path) -> None:
    path = tmp_path / "agent.hcl"
    path.write_text('node_name = "n1"\nlimits {\n  http_max_conns_per_client = 5\n}\n')
    assert load_config([path], (), {}).limits.http_max_conns_per_client == 5


def test_zero_means_no_cap_when_both_are_zero() -> None:
    limits = load_config(
        (), (), {"limits": {"rpc_max_conns": 0, "rpc_max_conns_per_client": 0}}
    ).limits
    assert (limits.rpc_max_conns, limits.rpc_max_conns_per_client) == (0, 0)


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("rpc_max_conns_per_client", -1, "expected an integer of at least 0, got -1"),
        ("rpc_max_conns", "100", "expected an integer, got '100' (a string)"),
        ("http_max_conns_per_client", 1.5, "expected an integer, got 1.5 (a number)"),
        ("http_max_conns", True, "expected an integer, got True (a boolean)"),
        ("rpc_idle_timeout", "0s", "expected a duration greater than zero, got '0s'"),
        (
            "http_read_header_timeout",
            10,
            'expected a duration such as "30s", "5m" or "1h30m", got 10 (an integer)',
        ),
        (
            "http_idle_timeout",
            "-1s",
            'expected a duration such as "30s", "5m" or "1h30m", got \'-1s\'',
        ),
    ],
)
def test_bad_values_are_refused_with_the_key_named(key: str, value: object, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config((), (), {"limits": {key: value}})
    assert str(caught.value) == f"command line: limits.{key}: {problem}"


def test_unknown_limit_key_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'limits\.rpc_max_conn'"):
        load_config((), (), {"limits": {"rpc_max_conn": 1}})


@pytest.mark.parametrize("port", ["rpc", "http"])
def test_per_client_cap_above_the_total_is_refused(port: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(
            (),
            (),
            {
                "node_name": "n1",
                "limits": {f"{port}_max_conns": 10, f"{port}_max_conns_per_client": 11},
            },
        )
    assert str(caught.value) == (
        f"'limits.{port}_max_conns_per_client' (11) must not exceed "
        f"'limits.{port}_max_conns' (10): one client could hold every connection and lock "
        "all others out"
    )
    assert caught.value.key == f"limits.{port}_max_conns_per_client"


def test_no_per_client_cap_under_a_total_cap_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"'limits.rpc_max_conns_per_client' \(0 \(no cap\)\)"):
        load_config((), (), {"node_name": "n1", "limits": {"rpc_max_conns_per_client": 0}})
