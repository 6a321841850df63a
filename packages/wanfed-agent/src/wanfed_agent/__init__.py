"""wanfed agent.

The names below load their module on first use (PEP 562): a command that
only reads a config or talks HTTP should not pay for the X.509 stack that
certificate handling needs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

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

    def __getattr__(name: str) -> object:
        home = _HOMES.get(name)
        if home is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(home), name)
        globals()[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*globals(), *__all__})
