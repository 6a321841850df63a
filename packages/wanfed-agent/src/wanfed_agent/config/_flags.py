"""Command-line flags of ``wanfed agent`` and the config keys they set.

A table rather than code: the CLI builds its parser from it, and
:func:`flags_to_overrides` turns parsed values into a nested mapping shaped
like a config file, which then goes through the same checks as any file
(with ``command line`` as its source).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

__all__ = ["AGENT_FLAGS", "AgentFlag", "FlagKind", "flag_for_key", "flags_to_overrides"]


class FlagKind(Enum):
    SWITCH = "switch"
    """Present means true (``-server``)."""
    TEXT = "text"
    """One string value; the last occurrence wins."""
    INT = "int"
    """One integer value (parsed from text by the loader's checks)."""
    REPEATED = "repeated"
    """May be given several times; values accumulate (``-retry-join a -retry-join b``)."""


@dataclass(frozen=True)
class AgentFlag:
    flag: str
    """Single-dash name, as Consul spells it (``-http-port``)."""
    key: str
    """Dotted config key it sets (``ports.http``)."""
    kind: FlagKind
    help: str
    metavar: str | None = None

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


AGENT_FLAGS: tuple[AgentFlag, ...] = (
    AgentFlag("-server", "server", FlagKind.SWITCH, "run in server mode"),
    AgentFlag("-bootstrap", "bootstrap", FlagKind.SWITCH, "elect self as leader (single server)"),
    AgentFlag(
        "-bootstrap-expect",
        "bootstrap_expect",
        FlagKind.INT,
        "number of servers to wait for before bootstrapping",
        "N",
    ),
    AgentFlag("-datacenter", "datacenter", FlagKind.TEXT, "datacenter of this agent", "DC"),
    AgentFlag(
        "-primary-datacenter",
        "primary_datacenter",
        FlagKind.TEXT,
        "the primary datacenter (default: this agent's datacenter)",
        "DC",
    ),
    AgentFlag("-node", "node_name", FlagKind.TEXT, "node name (default: host name)", "NAME"),
    AgentFlag("-data-dir", "data_dir", FlagKind.TEXT, "directory for durable state", "PATH"),
    AgentFlag("-bind", "bind_addr", FlagKind.TEXT, "address to bind server listeners to", "IP"),
    AgentFlag(
        "-advertise", "advertise_addr", FlagKind.TEXT, "address advertised to local peers", "IP"
    ),
    AgentFlag(
        "-advertise-wan",
        "advertise_addr_wan",
        FlagKind.TEXT,
        "address advertised in the WAN pool",
        "IP",
    ),
    AgentFlag("-client", "client_addr", FlagKind.TEXT, "address of the HTTP API", "IP"),
    AgentFlag("-http-port", "ports.http", FlagKind.INT, "HTTP API port (default 8500)", "PORT"),
    AgentFlag(
        "-server-port", "ports.server", FlagKind.INT, "server RPC port (default 8300)", "PORT"
    ),
    AgentFlag(
        "-serf-wan-port", "ports.serf_wan", FlagKind.INT, "WAN gossip port (default 8302)", "PORT"
    ),
    AgentFlag(
        "-retry-join",
        "retry_join",
        FlagKind.REPEATED,
        "host or host:port of a server RPC port to join (repeatable)",
        "ADDR",
    ),
    AgentFlag(
        "-retry-join-wan",
        "retry_join_wan",
        FlagKind.REPEATED,
        "WAN address to join (repeatable; not with mesh gateway federation)",
        "ADDR",
    ),
    AgentFlag("-join-wan", "retry_join_wan", FlagKind.REPEATED, "same as -retry-join-wan", "ADDR"),
    AgentFlag(
        "-retry-interval-wan",
        "retry_interval_wan",
        FlagKind.TEXT,
        "interval between WAN join attempts (default 30s)",
        "DURATION",
    ),
    AgentFlag(
        "-primary-gateway",
        "primary_gateways",
        FlagKind.REPEATED,
        "host:port of a mesh gateway in the primary datacenter (repeatable)",
        "ADDR",
    ),
    AgentFlag(
        "-domain",
        "domain",
        FlagKind.TEXT,
        "domain used in server names (default consul)",
        "DOMAIN",
    ),
    AgentFlag("-encrypt", "encrypt", FlagKind.TEXT, "gossip encryption key (wanfed keygen)", "KEY"),
    AgentFlag(
        "-log-level", "log_level", FlagKind.TEXT, "trace, debug, info, warn or error", "LEVEL"
    ),
    AgentFlag("-log-json", "log_json", FlagKind.SWITCH, "log in JSON"),
)


def flag_for_key(key: str) -> str | None:
    """The first flag that sets ``key``, so command-line errors can name the flag."""
    return next((f.flag for f in AGENT_FLAGS if f.key == key), None)


def flags_to_overrides(values: Mapping[str, Any]) -> dict[str, Any]:
    """Nest parsed flag values (keyed by :attr:`AgentFlag.dest`) into config-key shape.

    Flags that were not given must be absent from ``values`` (argparse's
    ``SUPPRESS`` default) so they cannot override files with defaults. Integers
    arrive as text and are converted here; a non-number is left as text so the
    schema check reports it with the key and what was expected.
    """
    overrides: dict[str, Any] = {}
    for flag in AGENT_FLAGS:
        if flag.dest not in values:
            continue
        value = values[flag.dest]
        if flag.kind is FlagKind.INT and isinstance(value, str):
            value = _maybe_int(value)
        *parents, leaf = flag.key.split(".")
        block = overrides
        for parent in parents:
            block = block.setdefault(parent, {})
        if flag.kind is FlagKind.REPEATED:
            block[leaf] = [*block.get(leaf, []), *value]
        else:
            block[leaf] = value
    return overrides


def _maybe_int(text: str) -> int | str:
    try:
        return int(text.strip())
    except ValueError:
        return text
