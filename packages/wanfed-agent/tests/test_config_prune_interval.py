"""``federation_state_prune_interval``: how often departed datacenters are forgotten.

A wanfed extension (Consul prunes hourly, fixed): operators and the namespace
integration tests shorten it so a removed datacenter disappears in seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from wanfed_agent.config import ConfigError, load_config


def test_defaults_to_one_hour() -> None:
    assert load_config((), (), {"node_name": "n1"}).federation_state_prune_interval == 3600.0


def test_read_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "agent.json"
    path.write_text(json.dumps({"node_name": "n1", "federation_state_prune_interval": "2s"}))
    assert load_config([path], (), {}).federation_state_prune_interval == 2.0


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("0s", "expected a duration greater than zero, got '0s'"),
        (60, 'expected a duration such as "30s", "5m" or "1h30m", got 60 (an integer)'),
    ],
)
def test_must_be_a_positive_duration(value: object, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config((), (), {"federation_state_prune_interval": value})
    assert str(caught.value) == f"command line: federation_state_prune_interval: {problem}"
