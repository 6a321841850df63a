"""Which keys a config source may contain, and how each value is checked.

The schema is data: a tree of blocks whose leaves are :class:`Key` entries
(a parser and, for lists, the element parser). :func:`check_source` walks one
source against it, so unknown keys and wrong types are reported per source
(naming the file or ``command line``) before anything is merged.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Union

from ._errors import ConfigError
from ._values import (
    describe,
    normalise_domain,
    parse_acl_default_policy,
    parse_acl_down_policy,
    parse_acl_token,
    parse_advertise_ip,
    parse_bool,
    parse_bootstrap_expect,
    parse_datacenter,
    parse_encrypt_key,
    parse_ip,
    parse_log_level,
    parse_node_name,
    parse_non_negative_int,
    parse_port,
    parse_positive_duration,
    parse_primary_gateway,
    parse_raft_multiplier,
    parse_retry_join,
    parse_str,
)

__all__ = ["SCHEMA", "Key", "check_source"]


@dataclass(frozen=True)
class Key:
    """A leaf of the schema.

    ``parse`` checks one value (each element, when ``is_list``). Lists from
    several sources are concatenated, as Consul does for ``retry_join``.
    ``alias_of`` folds an old or alternative name into another key.
    """

    parse: Callable[[object], object]
    is_list: bool = False
    alias_of: str | None = None


Block = Mapping[str, Union[Key, "Block"]]

SCHEMA: Block = {
    "datacenter": Key(parse_datacenter),
    "primary_datacenter": Key(parse_datacenter),
    "node_name": Key(parse_node_name),
    "server": Key(parse_bool),
    "bootstrap": Key(parse_bool),
    "bootstrap_expect": Key(parse_bootstrap_expect),
    "retry_join": Key(parse_retry_join, is_list=True),
    "retry_join_wan": Key(parse_retry_join, is_list=True),
    "start_join_wan": Key(parse_retry_join, is_list=True, alias_of="retry_join_wan"),
    "retry_interval_wan": Key(parse_positive_duration),
    "retry_max_wan": Key(parse_non_negative_int),
    "primary_gateways": Key(parse_primary_gateway, is_list=True),
    "primary_gateways_interval": Key(parse_positive_duration),
    "federation_state_prune_interval": Key(parse_positive_duration),
    "connect": {
        "enabled": Key(parse_bool),
        "enable_mesh_gateway_wan_federation": Key(parse_bool),
    },
    "domain": Key(normalise_domain),
    "data_dir": Key(parse_str),
    "bind_addr": Key(parse_ip),
    "client_addr": Key(parse_ip),
    "advertise_addr": Key(parse_advertise_ip),
    "advertise_addr_wan": Key(parse_advertise_ip),
    "ports": {
        "http": Key(parse_port),
        "server": Key(parse_port),
        "serf_wan": Key(parse_port),
        "raft": Key(parse_port),
    },
    "addresses": {"http": Key(parse_ip)},
    "tls": {
        "defaults": {
            "ca_file": Key(parse_str),
            "cert_file": Key(parse_str),
            "key_file": Key(parse_str),
            "verify_incoming": Key(parse_bool),
            "verify_outgoing": Key(parse_bool),
        },
        "internal_rpc": {"verify_server_hostname": Key(parse_bool)},
    },
    "limits": {
        "rpc_handshake_timeout": Key(parse_positive_duration),
        "rpc_max_conns_per_client": Key(parse_non_negative_int),
        "rpc_max_conns": Key(parse_non_negative_int),
        "rpc_idle_timeout": Key(parse_positive_duration),
        "http_max_conns_per_client": Key(parse_non_negative_int),
        "http_max_conns": Key(parse_non_negative_int),
        "http_read_header_timeout": Key(parse_positive_duration),
        "http_idle_timeout": Key(parse_positive_duration),
    },
    "performance": {"raft_multiplier": Key(parse_raft_multiplier)},
    "encrypt": Key(parse_encrypt_key),
    "log_level": Key(parse_log_level),
    "log_json": Key(parse_bool),
    "acl": {
        "enabled": Key(parse_bool),
        "default_policy": Key(parse_acl_default_policy),
        "down_policy": Key(parse_acl_down_policy),
        "enable_token_persistence": Key(parse_bool),
        "token_ttl": Key(parse_positive_duration),
        "policy_ttl": Key(parse_positive_duration),
        "tokens": {
            "initial_management": Key(parse_acl_token),
            "master": Key(parse_acl_token, alias_of="initial_management"),
            "replication": Key(parse_acl_token),
            "agent": Key(parse_acl_token),
            "default": Key(parse_acl_token),
        },
    },
}


def check_source(
    raw: Mapping[str, Any], source: str, label: Callable[[str], str] = str
) -> dict[str, Any]:
    """Validate one source and return it with typed values and aliases folded in.

    ``label`` renders a key path in messages; the command line uses it to add
    the flag name (``ports.http (-http-port)``).
    """
    return _Checker(source, label).block(raw, SCHEMA, "")


@dataclass(frozen=True)
class _Checker:
    source: str
    label: Callable[[str], str]

    def fail(self, path: str, problem: str) -> ConfigError:
        return ConfigError(
            f"{self.source}: {self.label(path)}: {problem}", source=self.source, key=path
        )

    def block(self, raw: Mapping[str, Any], block: Block, prefix: str) -> dict[str, Any]:
        checked: dict[str, Any] = {}
        for name, value in raw.items():
            path = f"{prefix}{name}"
            spec = block.get(name)
            if spec is None:
                known = ", ".join(sorted(block))
                raise ConfigError(
                    f"{self.source}: unknown key {path!r}; expected one of: {known}",
                    source=self.source,
                    key=path,
                )
            if not isinstance(spec, Key):
                if not isinstance(value, Mapping):
                    raise self.fail(path, f"expected a block (an object), got {describe(value)}")
                checked[name] = self.block(value, spec, f"{path}.")
                continue
            parsed = self.leaf(spec, value, path)
            target = spec.alias_of or name
            if spec.is_list and target in checked:
                checked[target] = [*checked[target], *parsed]
            else:
                checked[target] = parsed
        return checked

    def leaf(self, spec: Key, value: object, path: str) -> Any:
        try:
            if not spec.is_list:
                return spec.parse(value)
            if not isinstance(value, list | tuple):
                raise ValueError(f"expected a list, got {describe(value)}")
            return [spec.parse(element) for element in value]
        except ValueError as error:
            raise self.fail(path, str(error)) from None
