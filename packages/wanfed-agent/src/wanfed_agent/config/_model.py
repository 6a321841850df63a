"""The validated agent configuration.

Defaults follow Consul's, so an operator's existing mental model (and config
files) carry over. Everything here is already checked: a value of these types
only exists after :func:`load_config` accepted it, so the runtime never
re-validates. Durations are float seconds.
"""

from __future__ import annotations

import base64
import logging
from typing import Any, Literal

import msgspec

from ._values import DEFAULT_SERVER_PORT, parse_host_port

__all__ = [
    "DEFAULT_GATEWAY_PORT",
    "ACLConfig",
    "ACLTokens",
    "Addresses",
    "AgentConfig",
    "Connect",
    "Limits",
    "Ports",
    "TLSConfig",
    "TLSDefaults",
    "TLSInternalRPC",
]

DEFAULT_GATEWAY_PORT = 8443

_PYTHON_LOG_LEVELS = {
    "trace": 5,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "error": logging.ERROR,
}


class Ports(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Listening ports; 0 means "let the operating system choose"."""

    http: int = 8500
    server: int = DEFAULT_SERVER_PORT
    serf_wan: int = 8302
    raft: int = 8303
    """Only used if Raft cannot ride the server RPC port (ALPN ``wanfed/raft``)."""


class Addresses(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Per-listener bind addresses overriding ``client_addr``."""

    http: str | None = None


class Connect(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    enabled: bool = False
    enable_mesh_gateway_wan_federation: bool = False


class TLSDefaults(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    verify_incoming: bool = False
    verify_outgoing: bool = False


class TLSInternalRPC(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    verify_server_hostname: bool = False


class TLSConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    defaults: TLSDefaults = msgspec.field(default_factory=TLSDefaults)
    internal_rpc: TLSInternalRPC = msgspec.field(default_factory=TLSInternalRPC)

    @property
    def mutual_tls_capable(self) -> bool:
        """CA, certificate and key are all present: the ALPN/gateway path can be used."""
        d = self.defaults
        return d.ca_file is not None and d.cert_file is not None and d.key_file is not None


class Limits(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How much of a server one client, or all of them together, may hold.

    Every listener caps its open connections per client address and in total,
    so that idle or slow clients cannot exhaust the server's file descriptors;
    a cap of 0 means "no cap" (as in Consul). Behind a mesh gateway every
    connection of a remote datacenter comes from the gateway's address, which
    the per-client caps count as one client.
    """

    rpc_handshake_timeout: float = 5.0
    """Seconds allowed for the first byte and the TLS handshake of an RPC connection."""
    rpc_max_conns_per_client: int = 100
    """Open RPC connections one client address may hold (Consul's key and default)."""
    rpc_max_conns: int = 4096
    """Open RPC connections in total (a wanfed key)."""
    rpc_idle_timeout: float = 300.0
    """Seconds an RPC connection with no request in flight may stay silent (a wanfed key)."""
    http_max_conns_per_client: int = 200
    """Open HTTP API connections one client address may hold (Consul's key and default)."""
    http_max_conns: int = 4096
    """Open HTTP API connections in total (a wanfed key)."""
    http_read_header_timeout: float = 10.0
    """Seconds a client may take to send a request's headers, from its first byte
    (a wanfed key; Go's ``ReadHeaderTimeout``): slowloris clients are cut."""
    http_idle_timeout: float = 60.0
    """Seconds a keep-alive HTTP connection may wait for its next request (a wanfed key)."""


class Performance(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    raft_multiplier: int = 1
    """Scales Raft's failure detection (election timeout 0.15-0.3 s, heartbeat
    30 ms, leader lease 1 s at 1). Consul's key and range (1-10); its default
    is 5 on a 1 s base, wanfed's base is the measured loopback one."""


class ACLTokens(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Tokens the agent itself uses; Consul's names. ``None`` means "not configured".

    These are bearer secrets: ``repr`` (and so every log line or error that
    formats a config) shows only which ones are set.
    """

    initial_management: str | None = None
    """Secret of the management token the primary's leader creates at start-up (instead of
    ``wanfed acl bootstrap``)."""
    replication: str | None = None
    """What a secondary's leader presents to the primary to replicate policies and tokens."""
    agent: str | None = None
    """What the server presents for its own writes (registering itself, anti-entropy)."""
    default: str | None = None
    """What a request without a token acts as, instead of the anonymous token."""

    def __repr__(self) -> str:
        names = ("initial_management", "replication", "agent", "default")
        shown = ", ".join(f"{n}=<redacted>" for n in names if getattr(self, n) is not None)
        return f"ACLTokens({shown})"

    __str__ = __repr__

    def __rich_repr__(self) -> list[tuple[str, Any]]:
        """What pretty-printers (rich) show instead of msgspec's field-by-field default."""
        names = ("initial_management", "replication", "agent", "default")
        return [(n, "<redacted>") for n in names if getattr(self, n) is not None]


class ACLConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The ``acl`` block. Defaults are Consul's: off; when on, ``allow`` unless told
    ``deny`` (production federations set ``deny``); ``extend-cache`` when the primary is
    unreachable."""

    enabled: bool = False
    default_policy: Literal["allow", "deny"] = "allow"
    down_policy: Literal["extend-cache", "deny", "allow", "async-cache"] = "extend-cache"
    enable_token_persistence: bool = False
    """Tokens set through the agent API are written under ``data_dir`` and survive restarts
    (accepted; not implemented yet: such tokens do not survive a restart)."""
    token_ttl: float = 30.0
    """Seconds a secondary keeps trusting its replicated ACL tables after replication
    from the primary last succeeded; past it, ``down_policy`` decides."""
    policy_ttl: float = 30.0
    """Seconds a resolved policy is cached likewise."""
    tokens: ACLTokens = msgspec.field(default_factory=ACLTokens)


class AgentConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One agent's complete configuration, after merging files, flags and defaults.

    ``dev_mode`` (``wanfed agent -dev``) means: one server that bootstraps
    itself, Raft kept in memory (``data_dir`` is ignored), plain non-TLS RPC
    accepted, WAN federation off unless explicitly enabled.
    """

    node_name: str
    datacenter: str = "dc1"
    primary_datacenter: str = ""
    """Filled in by the loader (defaults to ``datacenter``); empty only if built by hand."""
    server: bool = False
    bootstrap: bool = False
    bootstrap_expect: int = 0
    """0 means "not set"; the loader rejects explicit values below 1."""
    retry_join: tuple[str, ...] = ()
    retry_join_wan: tuple[str, ...] = ()
    retry_interval_wan: float = 30.0
    retry_max_wan: int = 0
    primary_gateways: tuple[str, ...] = ()
    primary_gateways_interval: float = 30.0
    federation_state_prune_interval: float = 3600.0
    """How often the primary's leader deletes the federation states of datacenters
    that left the WAN pool (a wanfed extension; Consul hard-codes one hour)."""
    connect: Connect = msgspec.field(default_factory=Connect)
    domain: str = "consul"
    data_dir: str | None = None
    bind_addr: str = "0.0.0.0"
    client_addr: str = "127.0.0.1"
    advertise_addr: str | None = None
    advertise_addr_wan: str | None = None
    ports: Ports = msgspec.field(default_factory=Ports)
    addresses: Addresses = msgspec.field(default_factory=Addresses)
    tls: TLSConfig = msgspec.field(default_factory=TLSConfig)
    limits: Limits = msgspec.field(default_factory=Limits)
    performance: Performance = msgspec.field(default_factory=Performance)
    acl: ACLConfig = msgspec.field(default_factory=ACLConfig)
    encrypt: str | None = None
    log_level: str = "info"
    log_json: bool = False
    dev_mode: bool = False

    @property
    def wan_federation(self) -> bool:
        """WAN federation via mesh gateways is on."""
        return self.connect.enable_mesh_gateway_wan_federation

    @property
    def is_primary(self) -> bool:
        return self.primary_datacenter in ("", self.datacenter)

    @property
    def wan_member_name(self) -> str:
        """This server's name in the WAN gossip pool, ``<node>.<dc>``."""
        return f"{self.node_name}.{self.datacenter}"

    @property
    def encrypt_key(self) -> bytes | None:
        """The decoded gossip encryption key, if ``encrypt`` is set."""
        return None if self.encrypt is None else base64.b64decode(self.encrypt)

    @property
    def python_log_level(self) -> int:
        """``log_level`` as a :mod:`logging` level; ``trace`` is finer than DEBUG (5)."""
        return _PYTHON_LOG_LEVELS[self.log_level]

    @property
    def http_bind_addr(self) -> str:
        return self.addresses.http or self.client_addr

    def retry_join_addresses(self) -> list[tuple[str, int]]:
        """``retry_join`` entries as (host, port); a bare host means the RPC port 8300."""
        return [parse_host_port(entry, DEFAULT_SERVER_PORT) for entry in self.retry_join]
