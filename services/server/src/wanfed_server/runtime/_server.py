"""``Server``: one wanfed server, composed from its configuration.

What it wires together: the FSM and its consensus (in-memory for ``-dev``,
pysyncobj Raft with its journal in ``data_dir`` otherwise), the RPC port (one
listener; plain type-byte clients only where allowed, native TLS with ALPN
``wanfed/rpc-multi`` / ``wanfed/rpc-single`` always demanding a client
certificate), the endpoint table behind one :class:`Dispatcher`, cluster
formation and the leader routines. It implements the two seams the HTTP API
codes against: :class:`~wanfed_server.interfaces.RpcDispatcher` (``rpc``)
and :class:`~wanfed_server.interfaces.ServerView`.

Lifecycle: ``await start()`` returns once the RPC port listens (a fresh
non-dev server then forms its cluster in the background); ``await stop()``
closes the port, stops the leader routines and Raft.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, TypeVar, cast

import msgspec

from wanfed_agent.config import AgentConfig
from wanfed_fsm import (
    Consensus,
    Fsm,
    LocalConsensus,
    NotLeaderError,
    RaftConfig,
    RaftConsensus,
    StateStore,
)
from wanfed_proto import (
    Alpn,
    Connection,
    ConnectionHandler,
    RemoteError,
    RpcPortServer,
    RpcType,
    client_context,
    parse_address,
    serve_rpc,
    serve_rpc_port,
    server_context,
)
from wanfed_server.interfaces import Member, MemberStatus

from ._cluster import (
    ClusterFile,
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
from ._pool import AlpnDialer, PlainDialer, RpcDialer, RpcPool
from ._router import Router, StaticRouter

__all__ = ["Server", "ServerOptions"]

logger = logging.getLogger("wanfed_server.runtime")

T = TypeVar("T")

HELLO_INTERVAL: Final = 1.0


class ServerOptions(msgspec.Struct, frozen=True, kw_only=True):
    """Timings that tests and benchmarks tune; the defaults suit production."""

    hold_timeout: float = 7.0
    """How long a request waits for a leader before failing (Consul's rpc_hold_timeout)."""
    hello_interval: float = HELLO_INTERVAL
    formation_retry: float = 0.5
    failure_timeout: float = 3.0
    """A server that answered no hello for this long is critical in ``serfHealth``."""
    reconcile_interval: float = 1.0


def _advertise_host(config: AgentConfig) -> str:
    if config.advertise_addr:
        return config.advertise_addr
    if config.bind_addr not in ("0.0.0.0", "::", ""):
        return config.bind_addr
    with contextlib.suppress(OSError):
        return socket.gethostbyname(socket.gethostname())
    return "127.0.0.1"


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


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
        self._config = config
        self._options = options or ServerOptions()
        self._router: Router = router or StaticRouter(config.datacenter)
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
        self._started_at = time.time()

    # --- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        config = self._config
        server_ssl, dialer = self._tls()
        self._pool = RpcPool(dialer)
        plain_allowed = config.dev_mode or not config.tls.defaults.verify_incoming
        endpoints = [
            *status_endpoints(self),
            *catalog_endpoints(self),
            *federation_state_endpoints(self),
        ]
        self._dispatcher = Dispatcher(
            datacenter=config.datacenter,
            endpoints=endpoints,
            is_leader=self.is_leader,
            leader=self._leader_info,
            router=self._router,
            pool=self._pool,
            hold_timeout=self._options.hold_timeout,
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
        self._port = await serve_rpc_port(
            config.bind_addr,
            config.ports.server,
            plain_handlers=plain,
            alpn_handlers=alpn,
            ssl_context=server_ssl,
            handshake_timeout=config.limits.rpc_handshake_timeout,
        )
        host = _advertise_host(config)
        rpc_address = f"{host}:{self._port.address[1]}"
        raft_address = ""
        if not config.dev_mode:
            raft_port = config.ports.raft or _free_port(config.bind_addr)
            raft_address = f"{host}:{raft_port}"
        me = ServerInfo(
            node=config.node_name,
            datacenter=config.datacenter,
            rpc_address=rpc_address,
            raft_address=raft_address,
            wan_address=config.advertise_addr_wan or host,
        )
        self._directory = ServerDirectory(me)
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

    async def wait_ready(self) -> None:
        """Until consensus runs (at once in dev; after cluster formation otherwise)."""
        await self._ready.wait()

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._unsubscribe is not None:
            self._unsubscribe()
        if self._leader_routines is not None:
            await self._leader_routines.stop()
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
            if not task.cancelled() and task.exception() is not None:
                logger.error(
                    "server task %s failed: %r; the server keeps running without it",
                    name,
                    task.exception(),
                )

        task.add_done_callback(done)

    def _tls(self) -> tuple[ssl.SSLContext | None, RpcDialer]:
        tls = self._config.tls
        if not tls.mutual_tls_capable:
            return None, PlainDialer()
        d = tls.defaults
        assert d.ca_file is not None
        assert d.cert_file is not None
        assert d.key_file is not None
        server_ssl = server_context(d.ca_file, d.cert_file, d.key_file)
        client_ssl = client_context(d.ca_file, d.cert_file, d.key_file, alpn=[Alpn.RPC_MULTI])
        return server_ssl, AlpnDialer(client_ssl, self._config.domain)

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
                encrypt_key=config.encrypt_key,
            ),
            fsm=self._fsm,
        )
        self._use_consensus(consensus, members)
        while True:
            await self._hello_once(retry_join)
            await asyncio.sleep(self._options.hello_interval)

    async def _hello_once(self, retry_join: list[str]) -> None:
        directory, pool = self._require_directory(), self._require_pool()
        answers = await hello_round(pool, directory, retry_join)
        leader = self._consensus.leader_address() if self._consensus is not None else None
        for answer in answers:
            if (
                leader is not None
                and answer.server.raft_address == leader
                and answer.raft_members
                and sorted(answer.raft_members) != self._raft_members
            ):
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
        )
        self._leader_routines = routines
        self._unsubscribe = consensus.on_leadership_change(routines.on_leadership)
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
            raise NotLeaderError(None)
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
        if server.raft_address not in self._raft_members:
            await consensus.add_server(server.raft_address)
            self._set_members([*self._raft_members, server.raft_address])
            logger.info(
                "server joined the raft cluster node=%s raft=%s",
                server.node,
                server.raft_address,
            )
        return self.cluster_info()

    # --- RpcDispatcher ---------------------------------------------------------------

    async def rpc(self, method: str, args: msgspec.Struct, reply_type: type[T]) -> T:
        if self._dispatcher is None:
            raise RemoteError(NO_CLUSTER_LEADER)
        endpoint = self._dispatcher.endpoint(method)
        request: Any = args
        if endpoint.request_type is not msgspec.Raw and not isinstance(args, endpoint.request_type):
            try:
                request = msgspec.convert(msgspec.to_builtins(args), endpoint.request_type)
            except msgspec.ValidationError as exc:
                raise RemoteError(f"rpc {method}: invalid request: {exc}") from None
        reply = await self._dispatcher.dispatch(endpoint, request)
        if reply_type is endpoint.reply_type:
            return cast(T, reply)
        return msgspec.convert(msgspec.to_builtins(reply), reply_type)

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
