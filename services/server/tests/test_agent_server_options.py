"""The agent config's ``federation_state_prune_interval`` reaches the pruner's timing."""

from __future__ import annotations

from wanfed_agent.config import load_config
from wanfed_server.commands.agent import server_options


def test_prune_interval_comes_from_the_config() -> None:
    config = load_config((), (), {"node_name": "n1", "federation_state_prune_interval": "3s"})
    assert server_options(config).federation.prune_interval == 3.0


def test_other_timings_keep_their_defaults() -> None:
    options = server_options(load_config((), (), {"node_name": "n1"}))
    assert options.federation.prune_interval == 3600.0
    assert options.federation.replication_wait == 300.0
