"""Agent configuration: the model, loading from files and flags, and validation.

``load_config(files, dirs, overrides)`` returns a frozen :class:`AgentConfig`
or raises one :class:`ConfigError` naming the source, the key and what was
expected. ``AGENT_FLAGS`` is the table of ``wanfed agent`` flags and the keys
they set.
"""

from ._errors import ConfigError
from ._files import CONFIG_SUFFIXES
from ._flags import AGENT_FLAGS, AgentFlag, FlagKind, flag_for_key, flags_to_overrides
from ._loader import COMMAND_LINE, DEV_PRESET, load_config
from ._model import (
    DEFAULT_GATEWAY_PORT,
    ACLConfig,
    ACLTokens,
    Addresses,
    AgentConfig,
    Connect,
    Limits,
    Performance,
    Ports,
    TLSConfig,
    TLSDefaults,
    TLSInternalRPC,
)
from ._validate import validate_config
from ._values import DEFAULT_SERVER_PORT, parse_duration, parse_host_port

__all__ = [
    "AGENT_FLAGS",
    "COMMAND_LINE",
    "CONFIG_SUFFIXES",
    "DEFAULT_GATEWAY_PORT",
    "DEFAULT_SERVER_PORT",
    "DEV_PRESET",
    "ACLConfig",
    "ACLTokens",
    "Addresses",
    "AgentConfig",
    "AgentFlag",
    "ConfigError",
    "Connect",
    "FlagKind",
    "Limits",
    "Performance",
    "Ports",
    "TLSConfig",
    "TLSDefaults",
    "TLSInternalRPC",
    "flag_for_key",
    "flags_to_overrides",
    "load_config",
    "parse_duration",
    "parse_host_port",
    "validate_config",
]
