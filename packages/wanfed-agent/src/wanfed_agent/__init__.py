"""wanfed agent."""

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
