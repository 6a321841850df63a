"""``performance.raft_multiplier``: slower, steadier Raft failure detection.

Consul's key and range. At 1 a server whose event loop stalls for a few
hundred milliseconds (a busy host, a large response) can lose its leadership;
operators of such hosts raise it and trade failover speed for stability.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from wanfed_agent.config import ConfigError, load_config


def test_defaults_to_one() -> None:
    assert load_config((), (), {"node_name": "n1"}).performance.raft_multiplier == 1


def test_read_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "agent.json"
    path.write_text(json.dumps({"node_name": "n1", "performance": {"raft_multiplier": 5}}))
    assert load_config([path], (), {}).performance.raft_multiplier == 5


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (0, "expected an integer from 1 to 10, got 0"),
        (11, "expected an integer from 1 to 10, got 11"),
    ],
)
def test_must_be_between_one_and_ten(value: object, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config((), (), {"performance": {"raft_multiplier": value}})
    assert str(caught.value) == f"command line: performance.raft_multiplier: {problem}"


def test_unknown_performance_keys_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"performance\.raft_multipler"):
        load_config((), (), {"performance": {"raft_multipler": 2}})
