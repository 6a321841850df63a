"""``Server``: one wanfed server, composed from its configuration.

What it wires together: the FSM and its consensus (in-memory for ``-dev``,
pysyncobj Raft with its journal in ``data_dir`` otherwise), the RPC port (one
listener; native TLS with ALPN ``wanfed/rpc-multi`` / ``wanfed/rpc-single``
always demanding a client certificate from the cluster's CA; plain type-byte
clients only in ``-dev`` without TLS), the endpoint table behind one
:class:`Dispatcher`, cluster formation and the leader routines. It implements
the two seams the HTTP API codes against:
:class:`~wanfed_server.interfaces.RpcDispatcher` (``rpc``, and
``http_dispatcher`` for the API's own calls) and
:class:`~wanfed_server.interfaces.ServerView`.

A non-dev server needs TLS material (``ca_file``, ``cert_file``,
``key_file``) and refuses to start without it. Raft traffic is pysyncobj's
pickle, so it rides the mutual-TLS RPC port (ALPN ``wanfed/raft``) and only
for peers whose certificate names a server of this datacenter
(``server.<dc>.<domain>``): the check is made before a byte of theirs is
read. Every servers-only door asks the one
:class:`~wanfed_agent.tls.ServerCertificatePolicy`.

Lifecycle: ``await start()`` returns once the RPC port listens (a fresh
non-dev server then forms its cluster in the background; if that fails,
``wait_failed()`` returns the error); ``await stop()`` closes the port, stops
the leader routines and Raft.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final, TypeVar, cast

import msgspec

from wanfed_agent.config import AgentConfig
from wanfed_agent.gateway_transport import GatewayTransport
from wanfed_agent.gossip import (
    GossipTransport,
    PlainTransport,
    encode_tags,
    fast_profile,
    wan_profile,
)
from wanfed_agent.rpc import PlainDialer, RouteTable, RpcPool, ServerDialer, TlsDialer
from wanfed_agent.tls import ServerCertificatePolicy
from wanfed_fsm import (
    Consensus,
    ConsensusError,
    Fsm,
    LocalConsensus,
    NotLeaderError,
    RaftConfig,
    RaftConsensus,
    RaftLink,
    StateStore,
)
from wanfed_gateway_locator import LocatorStatus
from wanfed_proto import (
    Alpn,
    Connection,
    ConnectionHandler,
    ProtoError,
    RemoteError,
    RpcPortServer,
    RpcType,
    client_context,
    dial_alpn,
    parse_address,
    serve_rpc,
    serve_rpc_port,
    server_context,
    server_sni,
)
from wanfed_server.interfaces import Member, MemberStatus

from ._caller import Caller
from ._cluster import (
    ClusterFile,
    FormingConsensus,
    ServerDirectory,
    form_cluster,
    hello_round,
    write_cluster_file,
)
from ._endpoints_catalog import catalog_endpoints
from ._endpoints_federation import federation_state_endpoints
from ._endpoints_status import status_endpoints
from ._forward import NO_CLUSTER_LEADER, Dispatcher
from ._leader import LeaderRoutines
from ._messages import ClusterInfo, ServerInfo
from ._own_certificate import check_own_certificate
from ._reaper import DEREGISTER_CRITICAL_MINIMUM
from ._router import RemoteServer, Router, StaticRouter
from ._wan import WAN_JOIN_PLACEHOLDER_ADDRESS, WanPool, server_tags
from ._wanfed import FederationOptions, PrimaryPingProbe, WanFederation

__all__ = ["TLS_REQUIRED", "Server", "ServerOptions"]

logger = logging.getLogger("wanfed_server.runtime")

T = TypeVar("T")

HELLO_INTERVAL: Final = 1.0

TLS_REQUIRED: Final = (
    "a server outside -dev needs TLS: set tls.defaults ca_file, cert_file and key_file. "
    "Make a CA once with `wanfed tls ca create`, then a certificate per server with "
    "`wanfed tls cert create -server -dc <datacenter> -node <node>`"
)


class ServerOptions(msgspec.Struct, frozen=True, kw_only=True):
    """Timings that tests and benchmarks tune; the defaults suit production."""

    hold_timeout: float = 7.0
    """How long a request waits for a leader before failing (Consul's rpc_hold_timeout)."""
    hello_interval: float = HELLO_INTERVAL
    formation_retry: float = 0.5
    failure_timeout: float = 3.0
    """A server that answered no hello for this long is critical in ``serfHealth``."""
    reconcile_interval: float = 1.0
    fast_gossip: bool = False
    """The LAN-like gossip profile instead of memberlist's WAN defaults (tests)."""
    wan_join_interval: float = 0.0
    """Flood and placeholder join retry; 0 means ``retry_interval_wan``."""
    federation: FederationOptions = msgspec.field(default_factory=FederationOptions)
    deregister_critical_minimum: float = DEREGISTER_CRITICAL_MINIMUM
    """The shortest ``DeregisterCriticalServiceAfter`` the leader honours (Consul's
    agent: 1 minute); shorter limits are raised to it. Only tests lower it."""

    def __post_init__(self) -> None:
        if not self.deregister_critical_minimum > 0:
            raise ValueError(
                "deregister_critical_minimum must be greater than zero seconds, got "
                f"{self.deregister_critical_minimum!r}"
            )


def _advertise_host(config: AgentConfig) -> str:
    if config.advertise_addr:
        return config.advertise_addr
    if config.bind_addr not in ("0.0.0.0", "::", ""):
        return config.bind_addr
    with contextlib.suppress(OSError):
        return socket.gethostbyname(socket.gethostname())
    return "127.0.0.1"


class _CurrentRouter:
    """Whatever router the server uses now: the WAN pool replaces the static one at start."""

    def __init__(self, server: Server) -> None:
        self._server = server

    def datacenters(self) -> list[str]:
        return self._server.router.datacenters()

    def servers(self, datacenter: str) -> Sequence[RemoteServer] | None:
        return self._server.router.servers(datacenter)

    def notify_failed(self, server: RemoteServer) -> None:
        self._server.router.notify_failed(server)


class HttpDispatcher:
    """A server's :class:`~wanfed_server.interfaces.RpcDispatcher` for the HTTP API."""

    def __init__(self, server: Server) -> None:
        self._server = server

    async def rpc(self, method: str, args: msgspec.Struct, reply_type: type[T]) -> T:
        return await self._server.rpc(method, args, reply_type, caller=Caller.http_api())


class Server:
    """One server of a datacenter; see the module docstring."""

    def __init__(
        self,
        config: AgentConfig,
        *,
        router: Router | None = None,
        options: ServerOptions | None = None,
    ) -> None:
        if not config.server:
            raise ValueError("wanfed_server.runtime.Server runs server agents only (-server)")
        if not config.dev_mode and not config.data_dir:
            raise ValueError("a server needs data_dir outside -dev")
        if not config.dev_mode and not config.tls.mutual_tls_capable:
            raise ValueError(TLS_REQUIRED)
        self._config = config
        self._options = options or ServerOptions()
        self._injected_router = router is not None
        self._router: Router = router or StaticRouter(config.datacenter)
        self._wan: WanPool | None = None
        self._federation: WanFederation | None = None
        self._fsm = Fsm()
        self._consensus: Consensus | None = None
        self._port: RpcPortServer | None = None
        self._pool: RpcPool | None = None
        self._dispatcher: Dispatcher | None = None
        self._directory: ServerDirectory | None = None
        self._leader_routines: LeaderRoutines | None = None
        self._raft_members: list[str] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._unsubscribe: Callable[[], None] | None = None
        self._ready = asyncio.Event()
        self._failed: asyncio.Future[BaseException] | None = None
        self._raft_link: RaftLink | None = None
        self._gateway_transport: GatewayTransport | None = None
        self._policy = ServerCertificatePolicy(config.domain)

    # --- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        config = self._config
        self._failed = asyncio.get_running_loop().create_future()
        if config.wan_federation and not config.dev_mode:
            self._federation = WanFederation(
                self,
                datacenter=config.datacenter,
                primary_datacenter=self.primary_datacenter,
                primary_gateways=config.primary_gateways,
                primary_gateways_interval=config.primary_gateways_interval,
                registry=self,
                options=self._options.federation,
                clock_now=time.monotonic(),
            )
        if not config.dev_mode:
            check_own_certificate(config)
        server_ssl, dialer = self._tls()
        # Retire pooled connections well before a peer's idle timeout closes them.
        paths = None if self._federation is None else self._federation.locator
        self._pool = RpcPool(
            dialer,
            RouteTable(config.datacenter, paths),
            max_idle=config.limits.rpc_idle_timeout / 2,
        )
        if self._federation is not None and not self._federation.is_primary:
            self._federation.locator_service.probe = PrimaryPingProbe(
                primary=self.primary_datacenter, client=self._pool
            )
        # With TLS material no plain connection is served, whatever verify_incoming says.
        plain_allowed = config.dev_mode and server_ssl is None
        policy = self._policy
        endpoints = [
            *status_endpoints(self, datacenter=config.datacenter, policy=policy),
            *catalog_endpoints(self, self),
            *federation_state_endpoints(self, policy),
        ]
        self._dispatcher = Dispatcher(
            datacenter=config.datacenter,
            endpoints=endpoints,
            is_leader=self.is_leader,
            leader=self._leader_info,
            router=_CurrentRouter(self),
            pool=self._pool,
            hold_timeout=self._options.hold_timeout,
            domain=config.domain,
        )
        handlers = self._dispatcher.rpc_handlers()

        async def serve(connection: Connection) -> None:
            await serve_rpc(connection, handlers)

        plain: dict[RpcType, ConnectionHandler] = (
            {RpcType.CONSUL: serve, RpcType.MULTIPLEX_V2: serve} if plain_allowed else {}
        )
        alpn: dict[str, ConnectionHandler] = (
            {Alpn.RPC_MULTI: serve, Alpn.RPC: serve} if server_ssl is not None else {}
        )
        if server_ssl is not None and not config.dev_mode:
            self._raft_link = self._make_raft_link()
            # pickle: nobody but a server of this datacenter may send it a byte
            alpn[Alpn.RAFT] = policy.guard(
                self._raft_link.serve, what="raft", datacenter=config.datacenter
            )
        gossip_transport = self._gossip_transport()
        if isinstance(gossip_transport, GatewayTransport):
            self._gateway_transport = gossip_transport
            if self._federation is not None:
                primary = self.primary_datacenter
                self._federation.locator_service.on_primary_path_change(
                    lambda _path: gossip_transport.retire_datacenter(primary)
                )
            alpn[Alpn.WAN_GOSSIP_PACKET] = gossip_transport.serve_packets
            alpn[Alpn.WAN_GOSSIP_STREAM] = gossip_transport.serve_stream
        self._port = await serve_rpc_port(
            config.bind_addr,
            config.ports.server,
            plain_handlers=plain,
            alpn_handlers=alpn,
            ssl_context=server_ssl,
            handshake_timeout=config.limits.rpc_handshake_timeout,
            max_conns_per_client=config.limits.rpc_max_conns_per_client,
            max_conns=config.limits.rpc_max_conns,
            idle_timeout=config.limits.rpc_idle_timeout,
        )
        host = _advertise_host(config)
        rpc_address = f"{host}:{self._port.address[1]}"
        raft_address = rpc_address if self._raft_link is not None else ""  # rides the RPC port
        wan_gossip_address = ""
        if gossip_transport is not None:
            wan_gossip_address = await self._start_wan(
                gossip_transport, host, self._port.address[1]
            )
        me = ServerInfo(
            node=config.node_name,
            datacenter=config.datacenter,
            rpc_address=rpc_address,
            raft_address=raft_address,
            wan_address=config.advertise_addr_wan or host,
            wan_gossip_address=wan_gossip_address,
        )
        self._directory = ServerDirectory(me)
        self._start_wan_joins()
        logger.info(
            "server starting node=%s dc=%s rpc=%s raft=%s dev=%s tls=%s plain_rpc=%s",
            me.node,
            me.datacenter,
            rpc_address,
            raft_address or "-",
            config.dev_mode,
            server_ssl is not None,
            plain_allowed,
        )
        if config.dev_mode:
            self._use_consensus(LocalConsensus(address=rpc_address, fsm=self._fsm), [])
        else:
            self._spawn(self._form_and_start_raft(), "cluster-formation")

    def _gossip_transport(self) -> GossipTransport | None:
        """The WAN gossip transport; none in ``-dev`` (a one-server federation of one)."""
        config = self._config
        if config.dev_mode:
            return None
        plain = PlainTransport(config.bind_addr, config.ports.serf_wan)
        if self._federation is None:
            return plain
        packet_ssl, stream_ssl = self._gossip_contexts()
        return GatewayTransport(
            local=plain,
            datacenter=config.datacenter,
            domain=config.domain,
            picker=self._federation,
            packet_context=packet_ssl,
            stream_context=stream_ssl,
            policy=self._policy,
        )

    async def _start_wan(self, transport: GossipTransport, host: str, rpc_port: int) -> str:
        config = self._config
        profile = fast_profile if self._options.fast_gossip else wan_profile
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
        local_dc = config.datacenter

        def tcp_ping_allowed(name: str) -> bool:
            # Members of other datacenters are already reached over TCP via gateways.
            dc = name.rpartition(".")[2]
            return self._federation is None or dc == local_dc

        self._wan = WanPool(
            config=gossip,
            transport=transport,
            datacenter=config.datacenter,
            primary_datacenter=self.primary_datacenter,
            tcp_ping_allowed=tcp_ping_allowed,
        )
        await self._wan.start()
        if not self._injected_router:
            self._router = self._wan
        if self._federation is not None:
            self._federation.start()
        address = self._wan.agent.address
        return f"{address[0]}:{address[1]}"

    def _start_wan_joins(self) -> None:
        """Flood-join this DC's servers; a secondary also joins the primary via ``*``."""
        wan, config = self._wan, self._config
        if wan is None:
            return
        interval = self._options.wan_join_interval or config.retry_interval_wan
        directory = self._require_directory()

        def local_targets() -> list[str]:
            known = {m.name for m in wan.agent.members()}
            return [
                f"{s.node}.{s.datacenter}/{s.wan_gossip_address}"
                for s in directory.peers()
                if s.wan_gossip_address and f"{s.node}.{s.datacenter}" not in known
            ]

        wan.keep_joining(
            local_targets,
            interval=min(interval, self._options.hello_interval),
            until=lambda: not local_targets(),
            what="local servers",
        )
        if self._federation is not None and not self._federation.is_primary:
            primary = self.primary_datacenter
            placeholder = f"*.{primary}/{WAN_JOIN_PLACEHOLDER_ADDRESS}:8302"  # never dialled
            wan.keep_joining(
                lambda: [placeholder],
                interval=interval,
                until=lambda: wan.knows_datacenter(primary),
                what=f"*.{primary}",
                wait_for=self._federation.fallback_known,
            )
        elif self._federation is None and config.retry_join_wan:
            wan.keep_joining(
                lambda: list(config.retry_join_wan),
                interval=interval,
                until=lambda: len(wan.datacenters()) > 1,
                what="retry_join_wan",
            )

    async def wait_failed(self) -> BaseException:
        """Return the error that stopped a background part of the server (formation)."""
        if self._failed is None:
            raise RuntimeError("server not started")
        return await asyncio.shield(self._failed)

    async def wait_ready(self) -> None:
        """Until consensus runs (at once in dev; after cluster formation otherwise)."""
        await self._ready.wait()

    async def stop(self, *, leave: bool = True) -> None:
        """Stop everything; ``leave=False`` vanishes from the WAN pool without a word.

        A graceful stop announces the departure, so the other datacenters
        see this server ``left`` rather than ``failed`` (and stop probing it).
        """
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._unsubscribe is not None:
            self._unsubscribe()
        if self._leader_routines is not None:
            await self._leader_routines.stop()
        if self._federation is not None:
            await self._federation.stop()
        if self._wan is not None:
            await self._wan.stop(leave=leave)
        if self._port is not None:
            await self._port.close()
        if self._pool is not None:
            await self._pool.close()
        if self._consensus is not None:
            await self._consensus.shutdown()
        logger.info("server stopped node=%s", self._config.node_name)

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.append(task)

        def done(task: asyncio.Task[None]) -> None:
            if task.cancelled() or task.exception() is None:
                return
            error = task.exception()
            logger.error("server task %s failed: %r; the server must stop", name, error)
            if self._failed is not None and not self._failed.done() and error is not None:
                self._failed.set_result(error)

        task.add_done_callback(done)

    def _tls(self) -> tuple[ssl.SSLContext | None, ServerDialer]:
        tls = self._config.tls
        if not tls.mutual_tls_capable:
            if self._config.wan_federation:
                raise ValueError(
                    "cannot dial via a mesh gateway when outgoing TLS is disabled: "
                    "WAN federation via mesh gateways needs ca_file, cert_file and key_file"
                )
            return None, PlainDialer()
        d = tls.defaults
        assert d.ca_file is not None
        assert d.cert_file is not None
        assert d.key_file is not None
        server_ssl = server_context(d.ca_file, d.cert_file, d.key_file)
        client_ssl = client_context(d.ca_file, d.cert_file, d.key_file, alpn=[Alpn.RPC_MULTI])
        return server_ssl, TlsDialer(client_ssl, self._config.domain, gateways=self._federation)

    def _gossip_contexts(self) -> tuple[ssl.SSLContext, ssl.SSLContext]:
        d = self._config.tls.defaults
        assert d.ca_file is not None
        assert d.cert_file is not None
        assert d.key_file is not None
        return (
            client_context(d.ca_file, d.cert_file, d.key_file, alpn=[Alpn.WAN_GOSSIP_PACKET]),
            client_context(d.ca_file, d.cert_file, d.key_file, alpn=[Alpn.WAN_GOSSIP_STREAM]),
        )

    def _make_raft_link(self) -> RaftLink:
        d = self._config.tls.defaults
        assert d.ca_file is not None
        assert d.cert_file is not None
        assert d.key_file is not None
        context = client_context(d.ca_file, d.cert_file, d.key_file, alpn=[Alpn.RAFT])
        sni = server_sni(self._config.datacenter, self._config.domain)

        async def dial(address: str) -> Connection:
            return await dial_alpn(address, sni, Alpn.RAFT, context)

        return RaftLink(dial)

    async def _form_and_start_raft(self) -> None:
        directory, pool = self._require_directory(), self._require_pool()
        config = self._config
        assert config.data_dir is not None
        data_dir = Path(config.data_dir)
        retry_join = [f"{h}:{p}" for h, p in config.retry_join_addresses()]
        members = await form_cluster(
            pool=pool,
            directory=directory,
            retry_join=retry_join,
            bootstrap=config.bootstrap,
            bootstrap_expect=config.bootstrap_expect,
            data_dir=data_dir,
            retry_interval=self._options.formation_retry,
        )
        me = directory.me.raft_address
        consensus = RaftConsensus(
            RaftConfig(
                address=me,
                peers=[m for m in members if m != me],
                data_dir=str(data_dir / "raft"),
            ).scaled(config.performance.raft_multiplier),
            fsm=self._fsm,
            link=self._raft_link,
        )
        self._use_consensus(consensus, members)
        while True:
            await self._hello_once(retry_join)
            await asyncio.sleep(self._options.hello_interval)

    async def _hello_once(self, retry_join: list[str]) -> None:
        directory, pool = self._require_directory(), self._require_pool()
        answers = await hello_round(pool, directory, retry_join)
        leader = self._consensus.leader_address() if self._consensus is not None else None
        me = directory.me
        for answer in answers:
            if leader is None or answer.server.raft_address != leader or not answer.raft_members:
                continue
            if me.raft_address not in answer.raft_members:
                # the leader dropped a join it could not commit: ask again
                with contextlib.suppress(ProtoError, OSError):
                    await pool.call(
                        "", me.datacenter, answer.server.rpc_address, "Raft.Join", me, ClusterInfo
                    )
            elif sorted(answer.raft_members) != self._raft_members:
                self._set_members(answer.raft_members)

    def _set_members(self, members: list[str]) -> None:
        self._raft_members = sorted(members)
        if self._config.data_dir and not self._config.dev_mode:
            write_cluster_file(
                Path(self._config.data_dir),
                ClusterFile(
                    raft_members=self._raft_members,
                    servers=self._require_directory().servers(),
                ),
            )

    def _use_consensus(self, consensus: Consensus, members: list[str]) -> None:
        self._consensus = consensus
        self._raft_members = sorted(members)
        routines = LeaderRoutines(
            consensus,
            self._require_directory(),
            clock=time.monotonic,
            interval=self._options.reconcile_interval,
            failure_timeout=self._options.failure_timeout,
            raft_members=lambda: self._raft_members,
            deregister_minimum=self._options.deregister_critical_minimum,
        )
        self._leader_routines = routines
        unsubscribe = consensus.on_leadership_change(routines.on_leadership)
        federation = self._federation
        if federation is not None:
            unsubscribe_federation = consensus.on_leadership_change(federation.on_leadership)

            def both() -> None:
                unsubscribe()
                unsubscribe_federation()

            self._unsubscribe = both
        else:
            self._unsubscribe = unsubscribe
        self._ready.set()

    def _require_directory(self) -> ServerDirectory:
        if self._directory is None:
            raise RuntimeError("server not started")
        return self._directory

    def _require_pool(self) -> RpcPool:
        if self._pool is None:
            raise RuntimeError("server not started")
        return self._pool

    # --- EndpointContext ---------------------------------------------------------

    @property
    def datacenter(self) -> str:
        return self._config.datacenter

    @property
    def primary_datacenter(self) -> str:
        return self._config.primary_datacenter or self._config.datacenter

    @property
    def consensus(self) -> Consensus:
        if self._consensus is None:
            return FormingConsensus(self._fsm.store)
        return self._consensus

    @property
    def store(self) -> StateStore:
        return self._fsm.store

    @property
    def router(self) -> Router:
        return self._router

    def last_contact(self) -> float:
        if self.is_leader():
            return 0.0
        leader = self._leader_info()
        if leader is None or self._directory is None:
            return 0.0
        seen = self._directory.last_seen(leader.node)
        return 0.0 if seen is None else max(time.monotonic() - seen, 0.0)

    # --- StatusSource --------------------------------------------------------------

    def peer_rpc_addresses(self) -> list[str]:
        if self._config.dev_mode:
            return [self.rpc_address]
        directory = self._require_directory()
        addresses = []
        for member in self._raft_members:
            server = directory.by_raft_address(member)
            addresses.append(server.rpc_address if server is not None else member)
        return sorted(addresses)

    def cluster_info(self) -> ClusterInfo:
        directory = self._require_directory()
        consensus = self._consensus
        leader = consensus.leader_address() if consensus is not None else None
        return ClusterInfo(
            server=directory.me,
            known=directory.peers(),
            raft_started=consensus is not None,
            raft_members=list(self._raft_members),
            leader_raft_address=leader or "",
        )

    def learn_server(self, server: ServerInfo) -> None:
        directory = self._require_directory()
        directory.learn([server])
        directory.seen(server.node)

    async def add_raft_server(self, server: ServerInfo) -> ClusterInfo:
        consensus = self.consensus
        if server.datacenter.lower() != self.datacenter.lower():
            raise RemoteError(
                f"server {server.node} is in datacenter {server.datacenter}, not {self.datacenter}"
            )
        self.learn_server(server)
        if not consensus.is_leader():
            raise NotLeaderError(consensus.leader_address())
        if server.raft_address not in self._raft_members:
            # The change commits only once the new server runs Raft and acknowledges
            # it, and it starts Raft on this answer: so answer now, commit meanwhile.
            self._set_members([*self._raft_members, server.raft_address])
            self._spawn_membership(consensus, server)
        return self.cluster_info()

    def _spawn_membership(self, consensus: Consensus, server: ServerInfo) -> None:
        async def add() -> None:
            try:
                await consensus.add_server(server.raft_address)
            except (ConsensusError, TimeoutError) as exc:
                self._set_members([m for m in self._raft_members if m != server.raft_address])
                logger.warning(
                    "raft join failed node=%s raft=%s error=%s; it will ask again",
                    server.node,
                    server.raft_address,
                    exc,
                )
                return
            logger.info(
                "server joined the raft cluster node=%s raft=%s", server.node, server.raft_address
            )

        task = asyncio.get_running_loop().create_task(add(), name=f"raft-join-{server.node}")
        self._tasks.append(task)

    # --- RpcDispatcher ---------------------------------------------------------------

    async def rpc(
        self,
        method: str,
        args: msgspec.Struct,
        reply_type: type[T],
        *,
        caller: Caller | None = None,
    ) -> T:
        """Run ``method`` as this server's own code, unless ``caller`` says who asks."""
        if self._dispatcher is None:
            raise RemoteError(NO_CLUSTER_LEADER)
        endpoint = self._dispatcher.endpoint(method)
        request: Any = args
        if endpoint.request_type is not msgspec.Raw and not isinstance(args, endpoint.request_type):
            try:
                request = msgspec.convert(msgspec.to_builtins(args), endpoint.request_type)
            except msgspec.ValidationError as exc:
                raise RemoteError(f"rpc {method}: invalid request: {exc}") from None
        reply = await self._dispatcher.dispatch(endpoint, request, caller)
        if reply_type is endpoint.reply_type:
            return cast(T, reply)
        return msgspec.convert(msgspec.to_builtins(reply), reply_type)

    @property
    def http_dispatcher(self) -> HttpDispatcher:
        """The :class:`RpcDispatcher` the HTTP API uses: its calls are the API's, not
        this server's, so reserved catalog entries and server-to-server methods stay
        closed to it."""
        return HttpDispatcher(self)

    def is_server_node(self, node: str) -> bool:
        """``node`` is a server of this datacenter (the server directory knows it)."""
        directory = self._directory
        if directory is None:
            return node.lower() == self._config.node_name.lower()
        return directory.is_server(node)

    # --- ServerView ---------------------------------------------------------------

    @property
    def node_name(self) -> str:
        return self._config.node_name

    @property
    def config(self) -> AgentConfig:
        return self._config

    @property
    def rpc_address(self) -> str:
        """``host:port`` other servers dial (the bound port when configured as 0)."""
        return self._require_directory().me.rpc_address

    @property
    def rpc_bind_address(self) -> tuple[str, int]:
        if self._port is None:
            raise RuntimeError("server not started")
        return self._port.address

    @property
    def raft_address(self) -> str:
        return self._require_directory().me.raft_address

    def is_leader(self) -> bool:
        return self._consensus is not None and self._consensus.is_leader()

    def _leader_info(self) -> ServerInfo | None:
        consensus = self._consensus
        if consensus is None or self._directory is None:
            return None
        if consensus.is_leader():
            return self._directory.me
        leader = consensus.leader_address()
        return None if leader is None else self._directory.by_raft_address(leader)

    def leader_rpc_address(self) -> str | None:
        leader = self._leader_info()
        return None if leader is None else leader.rpc_address

    def members(self, *, wan: bool) -> list[Member]:
        directory = self._require_directory()
        if wan and self._wan is not None:
            return self._wan.members()
        if wan:
            me = directory.me
            return [self._member(me, f"{me.node}.{me.datacenter}", alive=True)]
        routines = self._leader_routines
        return [
            self._member(
                server,
                server.node,
                alive=routines.alive(server) if routines is not None else server == directory.me,
            )
            for server in directory.servers()
        ]

    def _member(self, server: ServerInfo, name: str, *, alive: bool) -> Member:
        host, port = parse_address(server.rpc_address)
        return Member(
            name=name,
            addr=host,
            port=port,
            tags={
                "role": "consul",
                "dc": server.datacenter,
                "port": str(port),
                "build": "wanfed",
                "expect": str(self._config.bootstrap_expect),
            },
            status=MemberStatus.ALIVE if alive else MemberStatus.FAILED,
        )

    def self_info(self) -> dict[str, object]:
        me = self._require_directory().me
        leader = self.leader_rpc_address()
        return {
            "Config": {
                "Datacenter": self.datacenter,
                "PrimaryDatacenter": self.primary_datacenter,
                "NodeName": self.node_name,
                "Server": True,
                "Domain": self._config.domain,
                "Revision": "",
                "Version": "wanfed",
            },
            "Member": msgspec.to_builtins(self._member(me, me.node, alive=True)),
            "Stats": {
                "consul": {
                    "server": "true",
                    "leader": str(self.is_leader()).lower(),
                    "leader_addr": leader or "",
                    "known_datacenters": str(len(self._router.datacenters())),
                },
                "raft": {
                    "state": "Leader" if self.is_leader() else "Follower",
                    "num_peers": str(max(len(self._raft_members) - 1, 0)),
                    "members": ",".join(self._raft_members),
                },
            },
        }

    # --- federation -----------------------------------------------------------------

    async def rpc_any_server(
        self,
        datacenter: str,
        method: str,
        args: msgspec.Struct,
        reply_type: type[T],
        *,
        timeout: float,  # noqa: ASYNC109 (the call's deadline)
    ) -> T:
        """Through the gateways with SNI ``server.<dc>.<domain>``: no WAN-pool lookup."""
        return await self._require_pool().call(
            "", datacenter, "", method, args, reply_type, timeout=timeout
        )

    async def wait_for_datacenter(self, datacenter: str, within: float) -> bool:
        wan = self._wan
        if datacenter.lower() == self.datacenter.lower():
            return True
        if wan is None:
            return datacenter.lower() in self._router.datacenters()
        return await wan.agent.wait_until(lambda: wan.has_seen_datacenter(datacenter), within)

    def known_datacenters(self) -> list[str]:
        """The datacenters whose federation states pruning keeps: those of the WAN
        pool, failed (partitioned) ones included; only a leave or a reap forgets one."""
        if self._wan is not None and not self._injected_router:
            return self._wan.known_datacenters()
        return self._router.datacenters()

    def federation_status(self) -> LocatorStatus | None:
        return None if self._federation is None else self._federation.locator_service.status()

    @property
    def federation(self) -> WanFederation | None:
        return self._federation

    @property
    def wan_pool(self) -> WanPool | None:
        return self._wan
