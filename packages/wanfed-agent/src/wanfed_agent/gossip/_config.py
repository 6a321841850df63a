"""Gossip timing and identity settings, with the WAN and a fast test profile.

The WAN profile mirrors memberlist's ``DefaultWANConfig`` (probe every 5 s with
a 3 s timeout, suspicion multiplier 6, gossip every 500 ms to 4 members,
push/pull every 60 s), plus Serf's reconnect of failed members every 30 s
for 72 h: WAN links are slow and lossy, and a false "dead" costs
more than a late one. The fast profile is LAN-like but shorter still, so tests
and simulations exercise every timer in seconds.
"""

from __future__ import annotations

import ipaddress
from typing import Self

import msgspec

from ._errors import GossipConfigError
from ._keyring import Keyring
from ._messages import META_MAX_SIZE

__all__ = [
    "PROTOCOL_VERSION_MAX",
    "PROTOCOL_VERSION_MIN",
    "GossipConfig",
    "fast_profile",
    "wan_profile",
]

PROTOCOL_VERSION_MIN = 1
PROTOCOL_VERSION_MAX = 5


class GossipConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Everything a :class:`Membership` needs to know about itself; times in seconds.

    ``advertise_port`` 0 means "whatever the transport binds"; the adapter
    fills it in before the core starts.
    """

    name: str
    advertise_host: str
    advertise_port: int
    meta: bytes = b""
    encrypt: str | None = None
    probe_interval: float = 5.0
    probe_timeout: float = 3.0
    indirect_checks: int = 3
    retransmit_mult: int = 4
    suspicion_mult: int = 6
    suspicion_max_timeout_mult: int = 6
    awareness_max_multiplier: int = 8
    gossip_interval: float = 0.5
    gossip_nodes: int = 4
    gossip_to_the_dead_time: float = 60.0
    push_pull_interval: float = 60.0
    reconnect_interval: float = 30.0
    reconnect_timeout: float = 72 * 3600.0
    udp_buffer_size: int = 1400
    protocol_version: int = 2
    delegate_versions: tuple[int, int, int] = (0, 0, 0)

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise GossipConfigError(f"invalid gossip member name {self.name!r}")
        try:
            ipaddress.ip_address(self.advertise_host)
        except ValueError:
            raise GossipConfigError(
                f"advertise address must be an IP address, not {self.advertise_host!r}"
            ) from None
        if not 0 <= self.advertise_port <= 0xFFFF:
            raise GossipConfigError(f"invalid gossip port {self.advertise_port}")
        if len(self.meta) > META_MAX_SIZE:
            raise GossipConfigError(
                f"node metadata is {len(self.meta)} bytes, limit {META_MAX_SIZE}"
            )
        if not PROTOCOL_VERSION_MIN + 1 <= self.protocol_version <= PROTOCOL_VERSION_MAX:
            raise GossipConfigError(f"unsupported protocol version {self.protocol_version}")
        for field in (
            "probe_interval",
            "probe_timeout",
            "gossip_interval",
            "push_pull_interval",
            "reconnect_interval",
        ):
            if getattr(self, field) <= 0:
                raise GossipConfigError(f"{field} must be positive")
        if self.probe_timeout > self.probe_interval:
            raise GossipConfigError("probe_timeout must not exceed probe_interval")
        if self.suspicion_mult < 1 or self.suspicion_max_timeout_mult < 1:
            raise GossipConfigError("suspicion multipliers must be at least 1")
        if self.encrypt is not None:
            self.keyring()  # validates the key now rather than at first packet

    def keyring(self) -> Keyring | None:
        return None if self.encrypt is None else Keyring.from_base64(self.encrypt)

    def with_port(self, port: int) -> Self:
        """The same settings advertising another port (after binding port 0)."""
        return msgspec.structs.replace(self, advertise_port=port)


def wan_profile(name: str, host: str, port: int, **overrides: object) -> GossipConfig:
    """memberlist's WAN defaults; ``overrides`` change any field."""
    fields = {"name": name, "advertise_host": host, "advertise_port": port, **overrides}
    try:
        return msgspec.convert(fields, GossipConfig)
    except msgspec.ValidationError as exc:
        # Keep one error type for callers whether a type or a rule was wrong.
        raise GossipConfigError(str(exc)) from exc


def fast_profile(name: str, host: str, port: int, **overrides: object) -> GossipConfig:
    """Short timers for tests and simulations; same algorithm, same wire."""
    settings: dict[str, object] = {
        "probe_interval": 0.2,
        "probe_timeout": 0.1,
        "suspicion_mult": 4,
        "gossip_interval": 0.05,
        "gossip_nodes": 3,
        "gossip_to_the_dead_time": 5.0,
        "push_pull_interval": 5.0,
        "reconnect_interval": 1.0,
        "reconnect_timeout": 300.0,
    }
    settings.update(overrides)
    return wan_profile(name, host, port, **settings)
