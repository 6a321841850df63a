"""The server's one RPC port, and how it dials the other servers' ports.

One listener serves everything a server is asked: a known first type byte
selects a plain protocol (only in ``-dev`` without TLS material: with TLS
material no plain connection is served, whatever ``verify_incoming`` says);
anything else is native TLS whose ALPN id selects the handler — multiplexed
RPC, Raft (pysyncobj's pickle, so guarded: only a server of this datacenter
may send it a byte), and WAN gossip through mesh gateways. Outgoing RPC uses
the matching client side: plain type bytes in ``-dev``, mutual TLS with the
single ALPN id ``wanfed/rpc-multi`` otherwise, through a gateway for another
datacenter when WAN federation via mesh gateways is on.
"""

from __future__ import annotations

from wanfed_agent.config import AgentConfig
from wanfed_agent.gateway_transport import GatewayTransport
from wanfed_agent.rpc import (
    GatewayPicker,
    PlainDialer,
    RouteTable,
    RpcPool,
    ServerDialer,
    TlsDialer,
)
from wanfed_agent.tls import ServerCertificatePolicy, ServerTls
from wanfed_fsm import RaftLink
from wanfed_proto import (
    Alpn,
    Connection,
    ConnectionHandler,
    RpcPortServer,
    RpcType,
    dial_alpn,
    serve_rpc,
    serve_rpc_port,
    server_sni,
)

from ._forward import Dispatcher
from ._wanfed import WanFederation

__all__ = ["plain_allowed", "raft_link", "rpc_dialer", "rpc_pool", "serve_server_port"]


def plain_allowed(config: AgentConfig, tls: ServerTls | None) -> bool:
    """Plain type-byte RPC: only ``-dev`` without TLS material."""
    return config.dev_mode and tls is None


def rpc_dialer(
    config: AgentConfig, tls: ServerTls | None, picker: GatewayPicker | None
) -> ServerDialer:
    """Direct to this datacenter's servers; through a gateway ``picker`` picks for others."""
    if tls is None:
        if config.wan_federation:
            raise ValueError(
                "cannot dial via a mesh gateway when outgoing TLS is disabled: "
                "WAN federation via mesh gateways needs ca_file, cert_file and key_file"
            )
        return PlainDialer()
    return TlsDialer(tls.client(Alpn.RPC_MULTI), config.domain, gateways=picker)


def rpc_pool(
    config: AgentConfig, tls: ServerTls | None, federation: WanFederation | None
) -> RpcPool:
    """The server's one RPC client: routes from the federation's locator when there is one."""
    paths = None if federation is None else federation.locator
    return RpcPool(
        rpc_dialer(config, tls, federation),
        RouteTable(config.datacenter, paths),
        # Retire pooled connections well before a peer's idle timeout closes them.
        max_idle=config.limits.rpc_idle_timeout / 2,
    )


def raft_link(config: AgentConfig, tls: ServerTls) -> RaftLink:
    """Raft over the RPC port: ALPN ``wanfed/raft``, SNI of any server of this datacenter."""
    context = tls.client(Alpn.RAFT)
    sni = server_sni(config.datacenter, config.domain)

    async def dial(address: str) -> Connection:
        return await dial_alpn(address, sni, Alpn.RAFT, context)

    return RaftLink(dial)


async def serve_server_port(
    config: AgentConfig,
    *,
    tls: ServerTls | None,
    policy: ServerCertificatePolicy,
    dispatcher: Dispatcher,
    raft: RaftLink | None,
    gossip: GatewayTransport | None,
) -> RpcPortServer:
    """Listen on ``ports.server`` with every handler this server has."""
    handlers = dispatcher.rpc_handlers()

    async def serve(connection: Connection) -> None:
        await serve_rpc(connection, handlers)

    plain: dict[RpcType, ConnectionHandler] = (
        {RpcType.CONSUL: serve, RpcType.MULTIPLEX_V2: serve} if plain_allowed(config, tls) else {}
    )
    alpn: dict[str, ConnectionHandler] = (
        {Alpn.RPC_MULTI: serve, Alpn.RPC: serve} if tls is not None else {}
    )
    if raft is not None:
        # pickle: nobody but a server of this datacenter may send it a byte
        alpn[Alpn.RAFT] = policy.guard(raft.serve, what="raft", datacenter=config.datacenter)
    if gossip is not None:
        alpn[Alpn.WAN_GOSSIP_PACKET] = gossip.serve_packets
        alpn[Alpn.WAN_GOSSIP_STREAM] = gossip.serve_stream
    return await serve_rpc_port(
        config.bind_addr,
        config.ports.server,
        plain_handlers=plain,
        alpn_handlers=alpn,
        ssl_context=tls.server if tls is not None else None,
        handshake_timeout=config.limits.rpc_handshake_timeout,
        max_conns_per_client=config.limits.rpc_max_conns_per_client,
        max_conns=config.limits.rpc_max_conns,
        idle_timeout=config.limits.rpc_idle_timeout,
    )
