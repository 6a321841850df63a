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
import time
from collections.abc import Callable, Sequence
from typing import Final, TypeVar

import msgspec

from wanfed_agent.config import AgentConfig
from wanfed_agent.rpc import RpcPool
from wanfed_agent.tls import ServerCertificatePolicy, ServerTls
from wanfed_fsm import (
    Consensus,
    Fsm,
    LocalConsensus,
    RaftLink,
    StateStore,
)
from wanfed_gateway_locator import LocatorStatus
from wanfed_proto import (
    RemoteError,
    RpcPortServer,
)
from wanfed_server.interfaces import Member

from ._acl import TokenResolver
from ._acl_leader import AclLeader
from ._acl_replication import AclReplication, AclReplicationOptions
from ._acl_replication_status import AclReplicationStatus, AclReplicationTracker
from ._background import Background
from ._caller import Caller
from ._cluster import ServerDirectory
from ._endpoints_acl import acl_endpoints
from ._endpoints_acl_replication import acl_replication_endpoints
from ._endpoints_catalog import catalog_endpoints
from ._endpoints_federation import federation_state_endpoints
from ._endpoints_status import status_endpoints
from ._federation_host import ServerFederationHost
from ._forward import NO_CLUSTER_LEADER, Dispatcher
from ._leader import LeaderRoutines
from ._leadership import Leadership
from ._membership import RaftMembership
from ._messages import ClusterInfo, ServerInfo
from ._reaper import DEREGISTER_CRITICAL_MINIMUM
from ._router import RemoteServer, Router, StaticRouter
from ._rpc_port import plain_allowed, raft_link, rpc_pool, serve_server_port
from ._self_report import lan_members, member, self_info
from ._wan import WanPool
from ._wan_gossip import WanGossip
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
        self._tls = _server_tls(config)
        self._policy = self._tls.policy if self._tls else ServerCertificatePolicy(config.domain)
        self._wan: WanGossip | None = None
        self._federation: WanFederation | None = None
        self._fsm = Fsm()
        self._leadership = Leadership(self._fsm.store)
        primary = config.datacenter.lower() == self.primary_datacenter.lower()
        self._acl = TokenResolver(self._fsm.store, config.acl, config.datacenter, primary=primary)
        self._acl_leader: AclLeader | None = None
        self._acl_tracker = AclReplicationTracker(
            source_datacenter=self.primary_datacenter,
            enabled=config.acl.enabled and not primary,
            ttl=config.acl.token_ttl,
        )
        self._acl_replication: AclReplication | None = None
        self._port: RpcPortServer | None = None
        self._pool: RpcPool | None = None
        self._dispatcher: Dispatcher | None = None
        self._directory: ServerDirectory | None = None
        self._membership: RaftMembership | None = None
        self._leader_routines: LeaderRoutines | None = None
        self._background = Background()
        self._unsubscribe: list[Callable[[], None]] = []
        self._ready = asyncio.Event()
        self._raft_link: RaftLink | None = None

    # --- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        config = self._config
        self._background.start()
        if config.wan_federation and not config.dev_mode:
            self._federation = self._make_federation()
        if self._tls is not None and not config.dev_mode:
            self._tls.check_own_certificate(config.datacenter, config.node_name)
        self._pool = rpc_pool(config, self._tls, self._federation)
        if self._federation is not None and not self._federation.is_primary:
            self._federation.locator_service.probe = PrimaryPingProbe(
                primary=self.primary_datacenter, client=self._pool
            )
        self._dispatcher = self._make_dispatcher(self._pool)
        self._wan = WanGossip(
            config,
            federation=self._federation,
            tls=self._tls,
            fast_gossip=self._options.fast_gossip,
            join_interval=self._options.wan_join_interval,
            hello_interval=self._options.hello_interval,
        )
        if self._tls is not None and not config.dev_mode:
            self._raft_link = raft_link(config, self._tls)
        self._port = await serve_server_port(
            config,
            tls=self._tls,
            policy=self._policy,
            dispatcher=self._dispatcher,
            raft=self._raft_link,
            gossip=self._wan.gateway_transport,
        )
        host = _advertise_host(config)
        rpc_address = f"{host}:{self._port.address[1]}"
        raft_address = rpc_address if self._raft_link is not None else ""  # rides the RPC port
        wan_gossip_address = await self._wan.start(host, self._port.address[1])
        if self._wan.pool is not None and not self._injected_router:
            self._router = self._wan.pool
        if self._federation is not None:
            self._federation.start()
        me = ServerInfo(
            node=config.node_name,
            datacenter=config.datacenter,
            rpc_address=rpc_address,
            raft_address=raft_address,
            wan_address=config.advertise_addr_wan or host,
            wan_gossip_address=wan_gossip_address,
        )
        self._directory = ServerDirectory(me)
        self._leadership.directory = self._directory
        self._membership = RaftMembership(
            config=config,
            directory=self._directory,
            pool=self._pool,
            spawn=self._background.track,
            hello_interval=self._options.hello_interval,
            formation_retry=self._options.formation_retry,
        )
        self._wan.start_joins(self._directory)
        logger.info(
            "server starting node=%s dc=%s rpc=%s raft=%s dev=%s tls=%s plain_rpc=%s",
            me.node,
            me.datacenter,
            rpc_address,
            raft_address or "-",
            config.dev_mode,
            self._tls is not None,
            plain_allowed(config, self._tls),
        )
        if config.dev_mode:
            self._use_consensus(LocalConsensus(address=rpc_address, fsm=self._fsm), [])
        else:
            formation = self._membership.form_and_keep(
                self._fsm, self._raft_link, self._use_consensus
            )
            self._background.essential(formation, "cluster-formation")

    def _make_federation(self) -> WanFederation:
        config = self._config
        host = ServerFederationHost(
            datacenter=config.datacenter,
            store=self.store,
            leadership=self._leadership,
            rpc=self.rpc,
            pool=self._require_pool,
            router=lambda: self._router,
            wan_pool=lambda: self.wan_pool,
            router_injected=self._injected_router,
        )
        return WanFederation(
            host,
            datacenter=config.datacenter,
            primary_datacenter=self.primary_datacenter,
            primary_gateways=config.primary_gateways,
            primary_gateways_interval=config.primary_gateways_interval,
            registry=host,
            options=self._options.federation,
            clock_now=time.monotonic(),
        )

    def _make_dispatcher(self, pool: RpcPool) -> Dispatcher:
        config, policy = self._config, self._policy
        endpoints = [
            *status_endpoints(self, datacenter=config.datacenter, policy=policy),
            *catalog_endpoints(self, self),
            *federation_state_endpoints(self, policy),
            *acl_endpoints(self, self._acl),
            *acl_replication_endpoints(self._acl_tracker.status, enabled=config.acl.enabled),
        ]
        tokens = config.acl.tokens
        return Dispatcher(
            datacenter=config.datacenter,
            endpoints=endpoints,
            is_leader=self.is_leader,
            leader=self._leadership.leader,
            router=_CurrentRouter(self),
            pool=pool,
            hold_timeout=self._options.hold_timeout,
            domain=config.domain,
            acl=self._acl,
            agent_token=tokens.agent or "",
            replication_token=tokens.replication or "",
        )

    async def wait_failed(self) -> BaseException:
        """Return the error that stopped a background part of the server (formation)."""
        return await self._background.wait_failed()

    async def wait_ready(self) -> None:
        """Until consensus runs (at once in dev; after cluster formation otherwise)."""
        await self._ready.wait()

    async def stop(self, *, leave: bool = True) -> None:
        """Stop everything; ``leave=False`` vanishes from the WAN pool without a word.

        A graceful stop announces the departure, so the other datacenters
        see this server ``left`` rather than ``failed`` (and stop probing it).
        """
        await self._background.stop()
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        if self._leader_routines is not None:
            await self._leader_routines.stop()
        if self._acl_leader is not None:
            await self._acl_leader.stop()
        if self._acl_replication is not None:
            await self._acl_replication.stop()
        if self._federation is not None:
            await self._federation.stop()
        if self._wan is not None:
            await self._wan.stop(leave=leave)
        if self._port is not None:
            await self._port.close()
        if self._pool is not None:
            await self._pool.close()
        if self._leadership.running is not None:
            await self._leadership.running.shutdown()
        logger.info("server stopped node=%s", self._config.node_name)

    def _use_consensus(self, consensus: Consensus, members: list[str]) -> None:
        self._leadership.running = consensus
        membership = self._require_membership()
        membership.adopt(consensus, members)
        routines = LeaderRoutines(
            consensus,
            self._require_directory(),
            clock=time.monotonic,
            interval=self._options.reconcile_interval,
            failure_timeout=self._options.failure_timeout,
            raft_members=lambda: membership.members,
            deregister_minimum=self._options.deregister_critical_minimum,
        )
        self._leader_routines = routines
        self._unsubscribe.append(consensus.on_leadership_change(routines.on_leadership))
        primary = self._config.datacenter.lower() == self.primary_datacenter.lower()
        self._acl_leader = AclLeader(consensus, self._config.acl, primary=primary)
        self._unsubscribe.append(consensus.on_leadership_change(self._acl_leader.on_leadership))
        if self._config.acl.enabled and not primary:
            federation = self._options.federation
            self._acl_replication = AclReplication(
                primary=self.primary_datacenter,
                rpc=self,
                consensus=consensus,
                resolver=self._acl,
                tracker=self._acl_tracker,
                token=self._config.acl.tokens.replication or "",
                options=AclReplicationOptions(
                    wait=federation.replication_wait,
                    rate=federation.replication_rate,
                    burst=federation.replication_burst,
                    max_retry_wait=federation.replication_max_retry_wait,
                ),
            )
            self._unsubscribe.append(
                consensus.on_leadership_change(self._acl_replication.on_leadership)
            )
        if self._federation is not None:
            self._unsubscribe.append(consensus.on_leadership_change(self._federation.on_leadership))
        self._ready.set()

    def _require_directory(self) -> ServerDirectory:
        if self._directory is None:
            raise RuntimeError("server not started")
        return self._directory

    def _require_membership(self) -> RaftMembership:
        if self._membership is None:
            raise RuntimeError("server not started")
        return self._membership

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
        return self._leadership.consensus

    @property
    def store(self) -> StateStore:
        return self._fsm.store

    @property
    def router(self) -> Router:
        return self._router

    def last_contact(self) -> float:
        return self._leadership.last_contact()

    # --- StatusSource --------------------------------------------------------------

    def peer_rpc_addresses(self) -> list[str]:
        if self._config.dev_mode:
            return [self.rpc_address]
        return self._require_membership().peer_rpc_addresses()

    def cluster_info(self) -> ClusterInfo:
        return self._require_membership().cluster_info()

    def learn_server(self, server: ServerInfo) -> None:
        self._require_membership().learn_server(server)

    async def add_raft_server(self, server: ServerInfo) -> ClusterInfo:
        return await self._require_membership().add_raft_server(self.consensus, server)

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
        return await self._dispatcher.call(method, args, reply_type, caller)

    @property
    def acl(self) -> TokenResolver:
        """Resolves ACL tokens against this server's tables (the HTTP API's agent routes)."""
        return self._acl

    @property
    def acl_leader(self) -> AclLeader | None:
        """What this server writes for ACLs when it leads the primary (``None`` before Raft)."""
        return self._acl_leader

    def acl_replication_status(self) -> AclReplicationStatus:
        """This server's view of ACL replication (only a secondary's leader replicates)."""
        return self._acl_tracker.status()

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
        return self._leadership.is_leader()

    def leader_rpc_address(self) -> str | None:
        return self._leadership.leader_rpc_address()

    def members(self, *, wan: bool) -> list[Member]:
        directory = self._require_directory()
        expect = self._config.bootstrap_expect
        if wan and self.wan_pool is not None:
            return self.wan_pool.members()
        me = directory.me
        if wan:
            return [member(me, f"{me.node}.{me.datacenter}", alive=True, expect=expect)]
        routines = self._leader_routines
        alive = routines.alive if routines is not None else (lambda s: s == me)
        return lan_members(directory.servers(), alive, expect)

    def self_info(self) -> dict[str, object]:
        membership = self._membership
        return self_info(
            self._config,
            self._require_directory().me,
            is_leader=self.is_leader(),
            leader_rpc_address=self.leader_rpc_address(),
            known_datacenters=len(self._router.datacenters()),
            raft_members=membership.members if membership is not None else [],
        )

    # --- federation -----------------------------------------------------------------

    def federation_status(self) -> LocatorStatus | None:
        return None if self._federation is None else self._federation.locator_service.status()

    @property
    def federation(self) -> WanFederation | None:
        return self._federation

    @property
    def wan_pool(self) -> WanPool | None:
        return None if self._wan is None else self._wan.pool


def _server_tls(config: AgentConfig) -> ServerTls | None:
    """The server's TLS, when its configuration has the material for mutual TLS."""
    if not config.tls.mutual_tls_capable:
        return None
    d = config.tls.defaults
    assert d.ca_file is not None
    assert d.cert_file is not None
    assert d.key_file is not None
    return ServerTls(
        ca_file=d.ca_file, cert_file=d.cert_file, key_file=d.key_file, domain=config.domain
    )
