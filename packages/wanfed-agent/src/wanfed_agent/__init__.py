"""wanfed agent.

The names below load their module on first use (PEP 562): a command that
only reads a config or talks HTTP should not pay for the X.509 stack that
certificate handling needs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from wanfed_agent._lazy import lazy_exports

if TYPE_CHECKING:
    from wanfed_agent.config import AgentConfig, ConfigError, load_config
    from wanfed_agent.keygen import generate_gossip_key
    from wanfed_agent.tls import TLSMaterial, TLSMaterialError

__all__: list[str] = [
    "AgentConfig",
    "ConfigError",
    "TLSMaterial",
    "TLSMaterialError",
    "generate_gossip_key",
    "load_config",
]

_HOMES = {
    "AgentConfig": "wanfed_agent.config",
    "ConfigError": "wanfed_agent.config",
    "load_config": "wanfed_agent.config",
    "generate_gossip_key": "wanfed_agent.keygen",
    "TLSMaterial": "wanfed_agent.tls",
    "TLSMaterialError": "wanfed_agent.tls",
}


if not TYPE_CHECKING:  # mypy sees the imports above, so a misspelt name stays an error
    __getattr__, __dir__ = lazy_exports(__name__, _HOMES, __all__)
