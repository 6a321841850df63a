"""A server's place in the WAN pool: its gossip transport, the pool itself, its joins.

Without WAN federation via mesh gateways, WAN gossip is plain UDP/TCP to
other servers' WAN ports (``retry_join_wan``). With it, gossip to another
datacenter rides mutual TLS through the mesh gateways (the
:class:`GatewayTransport`, which asks the federation's locator for a
gateway), while this datacenter's own servers are still reached directly.

Joining: a server flood-joins the servers of its own datacenter that its
directory knows and the pool does not; a secondary also joins the primary
through the placeholder ``*.<primary>`` — never dialled itself: the gateway
transport sends it to a gateway of the primary — as soon as a gateway of the
primary is known (the locator read one from the store, or discovery found
one), and again ``retry_interval_wan`` after a failed try.
"""

from __future__ import annotations

import logging

from wanfed_agent.config import AgentConfig
from wanfed_agent.gateway_transport import GatewayTransport
from wanfed_agent.gossip import (
    GossipTransport,
    PlainTransport,
    encode_tags,
    fast_profile,
    tcp_pings_allowed_within,
    wan_profile,
)
from wanfed_agent.tls import ServerTls
from wanfed_proto import Alpn

from ._cluster import ServerDirectory
from ._wan import WAN_JOIN_PLACEHOLDER_ADDRESS, WanPool, server_tags
from ._wanfed import WanFederation

__all__ = ["WanGossip"]

logger = logging.getLogger("wanfed_server.runtime")


class WanGossip:
    """The WAN pool of one server and what it takes to be in it."""

    def __init__(
        self,
        config: AgentConfig,
        *,
        federation: WanFederation | None,
        tls: ServerTls | None,
        fast_gossip: bool,
        join_interval: float,
        hello_interval: float,
    ) -> None:
        self._config = config
        self._federation = federation
        self._tls = tls
        self._fast_gossip = fast_gossip
        self._join_interval = join_interval or config.retry_interval_wan
        self._hello_interval = hello_interval
        self.transport = self._make_transport()
        """The WAN gossip transport; none in ``-dev`` (a one-server federation of one)."""
        self.pool: WanPool | None = None

    @property
    def gateway_transport(self) -> GatewayTransport | None:
        """The transport through mesh gateways, when WAN federation uses them."""
        return self.transport if isinstance(self.transport, GatewayTransport) else None

    def _make_transport(self) -> GossipTransport | None:
        config = self._config
        if config.dev_mode:
            return None
        plain = PlainTransport(config.bind_addr, config.ports.serf_wan)
        if self._federation is None:
            return plain
        if self._tls is None:
            raise ValueError("WAN federation via mesh gateways needs TLS material")
        return GatewayTransport(
            local=plain,
            datacenter=config.datacenter,
            domain=config.domain,
            picker=self._federation,
            packet_context=self._tls.client(Alpn.WAN_GOSSIP_PACKET),
            stream_context=self._tls.client(Alpn.WAN_GOSSIP_STREAM),
            policy=self._tls.policy,
        )

    async def start(self, host: str, rpc_port: int) -> str:
        """Start the pool; return its ``host:port`` (empty without a transport)."""
        config, transport = self._config, self.transport
        if transport is None:
            return ""
        profile = fast_profile if self._fast_gossip else wan_profile
        tags = server_tags(
            datacenter=config.datacenter,
            rpc_port=rpc_port,
            expect=config.bootstrap_expect,
            wan_join_port=config.ports.serf_wan,
        )
        gossip = profile(
            config.wan_member_name,
            host,
            config.ports.serf_wan,
            meta=encode_tags(tags),
            encrypt=config.encrypt,
        )
        # Members of other datacenters are already reached over TCP via gateways.
        federated = self._federation is not None
        tcp_ping_allowed = tcp_pings_allowed_within(config.datacenter) if federated else None
        self.pool = WanPool(
            config=gossip,
            transport=transport,
            datacenter=config.datacenter,
            primary_datacenter=config.primary_datacenter or config.datacenter,
            tcp_ping_allowed=tcp_ping_allowed,
        )
        await self.pool.start()
        gateway_transport = self.gateway_transport
        if self._federation is not None and gateway_transport is not None:
            # Pooled gossip connections keep the gateway they were dialled through:
            # when the path to the primary changes, they retire.
            primary = config.primary_datacenter or config.datacenter
            self._federation.locator_service.on_primary_path_change(
                lambda _path: gateway_transport.retire_datacenter(primary)
            )
        address = self.pool.agent.address
        return f"{address[0]}:{address[1]}"

    def start_joins(self, directory: ServerDirectory) -> None:
        """Flood-join this datacenter's servers; a secondary also joins the primary via ``*``."""
        wan, config, federation = self.pool, self._config, self._federation
        if wan is None:
            return
        interval = self._join_interval

        def local_targets() -> list[str]:
            known = {m.name for m in wan.agent.members()}
            return [
                f"{s.node}.{s.datacenter}/{s.wan_gossip_address}"
                for s in directory.peers()
                if s.wan_gossip_address and f"{s.node}.{s.datacenter}" not in known
            ]

        wan.keep_joining(
            local_targets,
            interval=min(interval, self._hello_interval),
            until=lambda: not local_targets(),
            what="local servers",
        )
        if federation is not None and not federation.is_primary:
            primary = config.primary_datacenter or config.datacenter
            placeholder = f"*.{primary}/{WAN_JOIN_PLACEHOLDER_ADDRESS}:8302"  # never dialled
            # Tried when the locator first knows a gateway to the primary (it reads
            # the store once a leader is known; discovery adds fallback addresses),
            # not a whole retry interval after a try that had nothing to dial.
            join = wan.keep_joining(
                lambda: [placeholder],
                interval=interval,
                until=lambda: wan.knows_datacenter(primary),
                what=f"*.{primary}",
                possible=federation.route_to_primary_known,
            )
            federation.on_route_to_primary(join.nudge)
        elif federation is None and config.retry_join_wan:
            wan.keep_joining(
                lambda: list(config.retry_join_wan),
                interval=interval,
                until=lambda: len(wan.datacenters()) > 1,
                what="retry_join_wan",
            )

    async def stop(self, *, leave: bool) -> None:
        if self.pool is not None:
            await self.pool.stop(leave=leave)
