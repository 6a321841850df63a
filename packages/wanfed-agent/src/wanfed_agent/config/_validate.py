"""Rules that span several keys, checked once all sources are merged.

The first six messages are the ones Consul's config builder prints, word for
word, because operators search for them. The rest are checks an operator
would expect up front instead of a confusing failure at run time.
"""

from __future__ import annotations

from ._errors import ConfigError
from ._model import AgentConfig

__all__ = ["GOSSIP_KEY_REQUIRED", "validate_config"]

_WANFED = "connect.enable_mesh_gateway_wan_federation"


def validate_config(config: AgentConfig) -> None:
    """Raise :class:`ConfigError` for the first broken rule; no I/O."""
    for message, key in _problems(config):
        raise ConfigError(message, key=key)


def _problems(c: AgentConfig) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    if c.wan_federation:
        if not c.connect.enabled:
            found.append((f"'{_WANFED}=true' requires 'connect.enabled=true'", _WANFED))
        if not c.server:
            found.append((f"'{_WANFED} = true' requires 'server = true'", _WANFED))
        if "/" in c.node_name:
            found.append(
                (
                    f"'{_WANFED} = true' requires that 'node_name' not contain '/' characters",
                    "node_name",
                )
            )
        if c.retry_join_wan:
            found.append(
                (f"'retry_join_wan' is incompatible with '{_WANFED} = true'", "retry_join_wan")
            )
    if "/" in c.node_name:
        found.append(
            (
                f"'node_name' must not contain '/' characters, got {c.node_name!r}: '/' "
                "separates name and address in join strings",
                "node_name",
            )
        )
    if c.primary_gateways:
        if not c.server:
            found.append(("'primary_gateways' requires 'server = true'", "primary_gateways"))
        if c.primary_datacenter == c.datacenter:
            found.append(
                (
                    "'primary_gateways' should only be configured in a secondary datacenter",
                    "primary_gateways",
                )
            )
    if c.wan_federation and "." in c.node_name:
        found.append(
            (
                f"'{_WANFED} = true' requires that 'node_name' not contain '.' characters: the "
                f"WAN member name is '<node_name>.<datacenter>' and is split at the dot to find "
                f"the datacenter, so {c.node_name!r} would make '{c.wan_member_name}' unreadable",
                "node_name",
            )
        )
    if c.wan_federation and not c.tls.mutual_tls_capable:
        found.append(
            (
                f"'{_WANFED} = true' requires 'tls.defaults.ca_file', 'tls.defaults.cert_file' "
                "and 'tls.defaults.key_file': all traffic through mesh gateways is mutual TLS",
                "tls.defaults",
            )
        )
    found += _server_problems(c)
    found += _tls_problems(c)
    found += _port_problems(c)
    found += _limit_problems(c)
    found += _gossip_problems(c)
    found += _acl_problems(c)
    return found


def _limit_problems(c: AgentConfig) -> list[tuple[str, str]]:
    """A per-client cap above the total cap would let one client take every connection."""
    found: list[tuple[str, str]] = []
    for port in ("rpc", "http"):
        per_client = getattr(c.limits, f"{port}_max_conns_per_client")
        total = getattr(c.limits, f"{port}_max_conns")
        if total and (per_client == 0 or per_client > total):
            shown = "0 (no cap)" if per_client == 0 else str(per_client)
            found.append(
                (
                    f"'limits.{port}_max_conns_per_client' ({shown}) must not exceed "
                    f"'limits.{port}_max_conns' ({total}): one client could hold every "
                    "connection and lock all others out",
                    f"limits.{port}_max_conns_per_client",
                )
            )
    return found


def _server_problems(c: AgentConfig) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    if c.bootstrap_expect and not c.server:
        found.append(("'bootstrap_expect' requires 'server = true'", "bootstrap_expect"))
    if c.bootstrap and not c.server:
        found.append(("'bootstrap' requires 'server = true'", "bootstrap"))
    if c.bootstrap and c.bootstrap_expect:
        found.append(
            (
                "'bootstrap' and 'bootstrap_expect' are mutually exclusive: use 'bootstrap' for a "
                "single server, 'bootstrap_expect' for a cluster",
                "bootstrap_expect",
            )
        )
    if c.server and not c.dev_mode and not c.data_dir:
        found.append(
            (
                "'data_dir' is required for a server (use -dev for a server that keeps its state "
                "in memory)",
                "data_dir",
            )
        )
    found += _server_tls_problems(c)
    return found


def _server_tls_problems(c: AgentConfig) -> list[tuple[str, str]]:
    """Servers trust each other by certificate alone (Raft is pickle on the wire), so a
    server outside -dev cannot run without its TLS material."""
    if not c.server or c.dev_mode or c.tls.mutual_tls_capable:
        return []
    missing = [
        f"'tls.defaults.{key}'"
        for key in ("ca_file", "cert_file", "key_file")
        if getattr(c.tls.defaults, key) is None
    ]
    return [
        (
            f"a server outside -dev requires TLS: {', '.join(missing)} not set. Make a CA once "
            "with 'wanfed tls ca create', then a certificate for each server with 'wanfed tls "
            f"cert create -server -dc {c.datacenter} -node {c.node_name or '<node>'}'",
            f"tls.defaults.{'ca_file' if c.tls.defaults.ca_file is None else 'cert_file'}",
        )
    ]


def _tls_problems(c: AgentConfig) -> list[tuple[str, str]]:
    d = c.tls.defaults
    found: list[tuple[str, str]] = []
    if (d.cert_file is None) != (d.key_file is None):
        found.append(
            (
                "'tls.defaults.cert_file' and 'tls.defaults.key_file' must be given together",
                "tls.defaults.cert_file" if d.cert_file is None else "tls.defaults.key_file",
            )
        )
    if d.cert_file is not None and d.ca_file is None:
        found.append(
            (
                "'tls.defaults.cert_file' requires 'tls.defaults.ca_file' to verify peers",
                "tls.defaults.ca_file",
            )
        )
    for flag in ("verify_incoming", "verify_outgoing"):
        if getattr(d, flag) and d.ca_file is None:
            found.append(
                (
                    f"'tls.defaults.{flag} = true' requires 'tls.defaults.ca_file'",
                    "tls.defaults.ca_file",
                )
            )
    if d.verify_incoming and d.cert_file is None:
        found.append(
            (
                "'tls.defaults.verify_incoming = true' requires 'tls.defaults.cert_file' and "
                "'tls.defaults.key_file'",
                "tls.defaults.cert_file",
            )
        )
    return found


def _port_problems(c: AgentConfig) -> list[tuple[str, str]]:
    """Two listeners on one fixed port would fail at bind time with a vaguer error.

    ``ports.raft`` is left out: Raft normally rides the server RPC port and its
    own port is then never bound.
    """
    used: dict[int, str] = {}
    found: list[tuple[str, str]] = []
    for name in ("http", "server", "serf_wan"):
        port = getattr(c.ports, name)
        if port == 0:
            continue
        if port in used:
            found.append(
                (
                    f"'ports.{used[port]}' and 'ports.{name}' are both {port}; each listener "
                    "needs its own port",
                    f"ports.{name}",
                )
            )
        used[port] = name
    return found


GOSSIP_KEY_REQUIRED = (
    "a server outside -dev requires a gossip encryption key: without one, anyone who can "
    "send a UDP packet to the WAN gossip port can add members and datacenters. Create a key "
    "with 'wanfed keygen' and set it as 'encrypt' (the same key on every server of every "
    'datacenter) in a config file, e.g. encrypt = "<key>", or pass -encrypt <key>'
)
"""What a non-dev server without ``encrypt`` is told; kept in one place for the tests."""


def _gossip_problems(c: AgentConfig) -> list[tuple[str, str]]:
    """Unauthenticated gossip lets anyone on the network forge members (fake datacenters).

    Only ``-dev``, a single server that joins no pool, may run without a key.
    """
    if c.server and not c.dev_mode and c.encrypt is None:
        return [(GOSSIP_KEY_REQUIRED, "encrypt")]
    return []


def _acl_problems(c: AgentConfig) -> list[tuple[str, str]]:
    """A configured token equal to the anonymous token's secret would make its holder
    anonymous (or, for the management token, make every anonymous request management)."""
    tokens = c.acl.tokens
    return [
        (
            f"'acl.tokens.{name}' must not be 'anonymous': that is the secret of the built-in "
            "anonymous token",
            f"acl.tokens.{name}",
        )
        for name in ("initial_management", "replication", "agent", "default")
        if getattr(tokens, name) == "anonymous"
    ]
