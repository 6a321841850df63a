"""Shared fixtures of the server tests: a throwaway PKI, TLS stand-in servers, and an
in-memory RPC dispatcher for the HTTP API and local agent."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import ipaddress
import json
import os
import signal
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

import msgspec
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from wanfed_agent.config import AgentConfig, load_config
from wanfed_fsm import (
    CommandRejectedError,
    DatacenterIndexedCheckServiceNodes,
    DCSpecificRequest,
    Deregister,
    DeregisterRequest,
    FederationStateQuery,
    FederationStateRequest,
    FederationStateResponse,
    FederationStateWrite,
    IndexedCheckServiceNodes,
    IndexedFederationStates,
    IndexedNodes,
    IndexedServiceNodes,
    IndexedServices,
    LocalConsensus,
    Node,
    QueryMeta,
    QueryOptions,
    ReadTxn,
    Register,
    RegisterRequest,
    Service,
    ServiceAddress,
    ServiceSpecificRequest,
    StateStore,
    blocking_query,
)
from wanfed_proto import RemoteError, TransportError
from wanfed_server.gateway import (
    DirectoryServer,
    GatewayConfig,
    MeshGateway,
    RouteInputs,
    build_route_table,
)
from wanfed_server.http._server_directory import directory_body
from wanfed_server.interfaces import Member
from wanfed_server.local_agent import LocalAgent
from wanfed_server.runtime import (
    IndexedHealthChecks,
    NodeSpecificRequest,
    Router,
    Server,
    ServerOptions,
)
from wanfed_server.runtime._wanfed import FederationOptions


@dataclass(frozen=True)
class CertFiles:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    """A CA plus leaf certificates, all as PEM files (``openssl s_client`` needs files)."""

    ca: Path
    leaves: dict[str, CertFiles]

    def server_context(self, leaf: str) -> ssl.SSLContext:
        """A server context that demands a client certificate from the same CA."""
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(self.ca))
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_cert_chain(str(self.leaves[leaf].cert), str(self.leaves[leaf].key))
        return ctx

    def client_context(self, leaf: str = "client") -> ssl.SSLContext:
        """A client context that verifies the server's name and presents ``leaf``."""
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.ca))
        ctx.load_cert_chain(str(self.leaves[leaf].cert), str(self.leaves[leaf].key))
        return ctx


_LEAVES: dict[str, list[str]] = {
    "s1": ["s1.server.dc1.consul", "server.dc1.consul"],
    "s2": ["s2.server.dc1.consul", "server.dc1.consul"],
    "r1": ["r1.server.dc2.consul", "server.dc2.consul"],
    "client": ["c1.server.dc1.consul", "server.dc1.consul"],
}


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "wanfed test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_path = directory / "ca.pem"
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    leaves: dict[str, CertFiles] = {}
    for name, sans in _LEAVES.items():
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, sans[0])]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName(san) for san in sans]
                    + [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        files = CertFiles(directory / f"{name}.pem", directory / f"{name}-key.pem")
        files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(files.key, key)
        leaves[name] = files
    return Pki(ca=ca_path, leaves=leaves)


@dataclass
class TlsServer:
    """An mTLS stand-in for a wanfed server.

    Greets each client with ``<name> client=<client CN>`` (proof that mutual
    TLS completed end to end), then echoes lines until EOF.
    """

    name: str
    server: asyncio.Server
    writers: set[asyncio.StreamWriter] = field(default_factory=set)
    accepted: int = 0

    @property
    def port(self) -> int:
        return int(self.server.sockets[0].getsockname()[1])

    async def kill(self) -> None:
        """Stop listening and reset every open connection, like a crashed process."""
        self.server.close()
        for writer in list(self.writers):
            writer.transport.abort()
        await self.server.wait_closed()


@pytest.fixture
async def tls_servers(pki: Pki) -> AsyncIterator[Callable[[str], Awaitable[TlsServer]]]:
    """Factory: ``await tls_servers("s1")`` starts an mTLS stand-in with leaf ``s1``."""
    started: list[TlsServer] = []

    async def start(name: str) -> TlsServer:
        holder: list[TlsServer] = []

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            me = holder[0]
            me.accepted += 1
            me.writers.add(writer)
            try:
                peer = writer.get_extra_info("peercert") or {}
                subject = dict(item[0] for item in peer.get("subject", ()))
                writer.write(f"{name} client={subject.get('commonName')}\n".encode())
                while line := await reader.readline():
                    writer.write(line)
                    await writer.drain()
                writer.close()
            except (ConnectionError, ssl.SSLError):
                writer.transport.abort()
            finally:
                me.writers.discard(writer)

        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=pki.server_context(name))
        holder.append(TlsServer(name, server))
        started.append(holder[0])
        return holder[0]

    yield start
    for server in started:
        await server.kill()


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Run the gateway data-plane and connection-limit tests on both loops.

    Agents and gateways run on uvloop, whose callbacks interleave differently
    (data can arrive before a protocol's first task step). Every other test
    gets the default loop: pytest-asyncio rejects an empty answer."""
    del config
    both = ("test_gateway_proxy", "test_gateway_limits", "test_http_limits", "test_attack")
    if not item.path.name.startswith(both):
        return {"asyncio": asyncio.new_event_loop}
    import uvloop

    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


# --- an in-memory RPC dispatcher for the HTTP API and the local agent ----------------


T = TypeVar("T")
R = TypeVar("R")


class FakeDispatcher:
    """Runs the catalog and federation-state RPC methods on one in-memory store.

    It keeps the dispatcher contract the HTTP API relies on: blocking reads,
    ``No path to datacenter`` for a datacenter it does not serve, FSM
    rejections as :class:`RemoteError`. ``fail_methods`` makes chosen methods
    raise :class:`TransportError`, the way a lost leader connection does.
    """

    def __init__(self, datacenter: str = "dc1", leader: str = "127.0.0.1:8300") -> None:
        self.datacenter = datacenter
        self.leader = leader
        self.consensus = LocalConsensus(address=leader)
        self.calls: list[tuple[str, msgspec.Struct]] = []
        self.fail_methods: set[str] = set()
        self._called = asyncio.Event()
        self._parked: dict[str, asyncio.Event] = {}

    @property
    def store(self) -> StateStore:
        return self.consensus.store

    def _route(self, datacenter: str) -> None:
        if datacenter not in ("", self.datacenter):
            raise RemoteError("No path to datacenter")

    async def wait_parked(self, method: str) -> None:
        """Return once a blocking read (one with an index) of ``method`` has started.

        The query's watch is registered before the event loop runs anything
        else, so a write made after this returns is one the query waits for.
        """
        await self._parked.setdefault(method, asyncio.Event()).wait()

    async def _read(
        self, method: str, options: QueryOptions, query: Callable[[ReadTxn], tuple[int, R]]
    ) -> tuple[QueryMeta, R]:
        if options.min_query_index:
            self._parked.setdefault(method, asyncio.Event()).set()
        return await blocking_query(self.store, options, query, leadership=self.consensus)

    async def _apply(self, command: Register | Deregister | FederationStateWrite) -> bool:
        try:
            await self.consensus.apply(command)
        except CommandRejectedError as error:
            raise RemoteError(str(error)) from None
        return True

    async def rpc(self, method: str, args: msgspec.Struct, reply_type: type[T]) -> T:
        self.calls.append((method, args))
        self._called.set()
        if method in self.fail_methods:
            raise TransportError(f"{method}: connection to the leader lost")
        return cast(T, await self._call(method, args))

    async def wait_for_calls(self, method: str, count: int) -> None:
        """Return once ``method`` has been called ``count`` times in all."""
        while sum(1 for called, _ in self.calls if called == method) < count:
            self._called.clear()
            await self._called.wait()

    async def _call(self, method: str, args: msgspec.Struct) -> object:
        if isinstance(args, FederationStateQuery):
            self._route(args.target_datacenter)
        elif method != "FederationState.Apply":
            self._route(getattr(args, "datacenter", ""))
        match method:
            case "Status.Leader":
                return self.leader
            case "Status.Peers":
                return [self.leader]
            case "Catalog.ListDatacenters":
                return [self.datacenter]
            case "Catalog.Register":
                assert isinstance(args, RegisterRequest)
                return await self._apply(Register(request=args))
            case "Catalog.Deregister":
                assert isinstance(args, DeregisterRequest)
                return await self._apply(Deregister(request=args))
            case "FederationState.Apply":
                assert isinstance(args, FederationStateRequest)
                return await self._apply(FederationStateWrite(request=args))
            case "Catalog.ListNodes":
                assert isinstance(args, DCSpecificRequest)
                meta, nodes = await self._read(method, args, lambda txn: txn.nodes())
                return IndexedNodes(nodes=nodes, **msgspec.structs.asdict(meta))
            case "Catalog.ListServices":
                assert isinstance(args, DCSpecificRequest)
                meta, services = await self._read(method, args, lambda txn: txn.services())
                return IndexedServices(services=services, **msgspec.structs.asdict(meta))
            case "Catalog.ServiceNodes":
                assert isinstance(args, ServiceSpecificRequest)
                name = args.service_name
                meta, entries = await self._read(method, args, lambda txn: txn.service_nodes(name))
                return IndexedServiceNodes(service_nodes=entries, **msgspec.structs.asdict(meta))
            case "Health.ServiceNodes":
                assert isinstance(args, ServiceSpecificRequest)
                name, passing = args.service_name, args.passing_only
                meta, health_entries = await self._read(
                    method, args, lambda txn: txn.check_service_nodes(name, passing_only=passing)
                )
                return IndexedCheckServiceNodes(
                    nodes=health_entries, **msgspec.structs.asdict(meta)
                )
            case "Health.NodeChecks":
                assert isinstance(args, NodeSpecificRequest)
                node = args.node
                meta, checks = await self._read(method, args, lambda txn: txn.node_checks(node))
                return IndexedHealthChecks(health_checks=checks, **msgspec.structs.asdict(meta))
            case "FederationState.Get":
                assert isinstance(args, FederationStateQuery)
                record = args.datacenter
                meta, state = await self._read(
                    method, args, lambda txn: txn.federation_state(record)
                )
                return FederationStateResponse(state=state, **msgspec.structs.asdict(meta))
            case "FederationState.List":
                assert isinstance(args, DCSpecificRequest)
                meta, states = await self._read(method, args, lambda txn: txn.federation_states())
                return IndexedFederationStates(states=states, **msgspec.structs.asdict(meta))
            case "FederationState.ListMeshGateways":
                assert isinstance(args, DCSpecificRequest)
                meta, gateways = await self._read(
                    method, args, lambda txn: txn.mesh_gateways_by_datacenter()
                )
                return DatacenterIndexedCheckServiceNodes(
                    datacenter_nodes=gateways, **msgspec.structs.asdict(meta)
                )
        raise RemoteError(f"rpc: can't find method {method}")


class FakeServerView:
    """A one-server datacenter as ``/v1/agent/self`` and ``/v1/agent/members`` show it."""

    def __init__(self, datacenter: str = "dc1", node_name: str = "s1") -> None:
        self._datacenter = datacenter
        self._node_name = node_name
        self.lan = [
            Member(
                name=node_name,
                addr="127.0.0.1",
                port=8301,
                tags={"dc": datacenter, "role": "consul"},
            )
        ]
        self.wan = [
            Member(
                name=f"{node_name}.{datacenter}",
                addr="127.0.0.1",
                port=8302,
                tags={"dc": datacenter, "role": "consul"},
            )
        ]

    @property
    def datacenter(self) -> str:
        return self._datacenter

    @property
    def node_name(self) -> str:
        return self._node_name

    def is_leader(self) -> bool:
        return True

    def leader_rpc_address(self) -> str | None:
        return "127.0.0.1:8300"

    def members(self, *, wan: bool) -> list[Member]:
        return list(self.wan if wan else self.lan)

    def self_info(self) -> dict[str, object]:
        return {
            "Config": {"Datacenter": self._datacenter, "NodeName": self._node_name, "Server": True},
            "Member": msgspec.to_builtins(self.lan[0]),
        }


@dataclass
class FakeServer:
    dispatcher: FakeDispatcher
    view: FakeServerView
    agent: LocalAgent


@pytest.fixture
async def fake_server() -> AsyncIterator[FakeServer]:
    """A dispatcher, a view and a (not yet started) local agent on node ``s1`` of ``dc1``."""
    dispatcher = FakeDispatcher()
    agent = LocalAgent(
        dispatcher,
        node=Node(node="s1", address="127.0.0.1", datacenter="dc1"),
        datacenter="dc1",
        sync_interval=30.0,
        retry_interval=0.05,
    )
    yield FakeServer(dispatcher=dispatcher, view=FakeServerView(), agent=agent)
    await agent.stop()


# --- server runtime: certificates from wanfed_agent.tls, configs, free ports --------


@dataclass(frozen=True)
class RuntimePki:
    """A CA made by ``wanfed_agent.tls`` with server certs per node, a client cert,
    and a second, unrelated CA with a server cert (the "other CA" client)."""

    ca: Path
    certs: dict[str, CertFiles]
    """``s1``..``s3`` (dc1 servers), ``r1`` (dc2 server), ``client`` (dc1), ``foreign``."""
    foreign_ca: Path

    def mutual_tls(self, node: str) -> dict[str, Any]:
        """The agent config's ``tls`` section for ``node``: its certificate, both
        directions verified."""
        files = self.certs[node]
        return {
            "defaults": {
                "ca_file": str(self.ca),
                "cert_file": str(files.cert),
                "key_file": str(files.key),
                "verify_incoming": True,
                "verify_outgoing": True,
            }
        }


@pytest.fixture(scope="session")
def runtime_pki(tmp_path_factory: pytest.TempPathFactory) -> RuntimePki:
    from wanfed_agent.tls import create_ca, create_client_cert, create_server_cert

    directory = tmp_path_factory.mktemp("runtime-pki")
    ca = create_ca()
    foreign = create_ca()
    pairs = {
        "s1": create_server_cert(ca, "dc1", node="s1"),
        "s2": create_server_cert(ca, "dc1", node="s2"),
        "s3": create_server_cert(ca, "dc1", node="s3"),
        "r1": create_server_cert(ca, "dc2", node="r1"),
        "client": create_client_cert(ca, "dc1"),
        "foreign": create_server_cert(foreign, "dc1", node="s1"),
    }
    certs: dict[str, CertFiles] = {}
    for name, pair in pairs.items():
        files = CertFiles(directory / f"{name}.pem", directory / f"{name}-key.pem")
        files.cert.write_bytes(pair.cert_pem)
        files.key.write_bytes(pair.key_pem)
        certs[name] = files
    (directory / "ca.pem").write_bytes(ca.cert_pem)
    (directory / "foreign-ca.pem").write_bytes(foreign.cert_pem)
    return RuntimePki(ca=directory / "ca.pem", certs=certs, foreign_ca=directory / "foreign-ca.pem")


_PORTS_BELOW_EPHEMERAL = range(20000, 32768)
"""Where :func:`free_tcp_port` looks: below Linux's ephemeral range (32768-60999).
A port the kernel hands out as free (``bind(0)``) is an ephemeral one, and every
outgoing connection on the machine draws from that range too: between the pick
and the listener's bind, another test's dial may take it."""


def free_tcp_port() -> int:
    """A port free right now on 127.0.0.1, for listeners whose address peers must know
    in advance (raft, retry_join targets)."""
    import random
    import socket

    for _ in range(200):
        port = random.choice(_PORTS_BELOW_EPHEMERAL)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free TCP port below the ephemeral range on 127.0.0.1")


@pytest.fixture
def free_port() -> Callable[[], int]:
    return free_tcp_port


# --- one bootstrapped non-dev server with mutual TLS --------------------------------


@pytest.fixture
async def start_tls_server(
    runtime_pki: RuntimePki, tmp_path: Path
) -> AsyncIterator[Callable[..., Awaitable[Server]]]:
    """``await start_tls_server(verify_incoming=True, **config_overrides)``: server
    ``s1`` of dc1, a one-member Raft cluster, with the runtime PKI's certificate
    and a gossip key, as a production server is configured; it has started and
    runs Raft when returned (its first election may still be under way). Every
    one started is stopped."""
    from wanfed_agent.keygen import generate_gossip_key

    started: list[Server] = []

    async def start(*, verify_incoming: bool = True, **overrides: Any) -> Server:
        tls = runtime_pki.mutual_tls("s1")
        tls["defaults"]["verify_incoming"] = verify_incoming
        ports = {"server": 0, "serf_wan": free_tcp_port(), **overrides.pop("ports", {})}
        config = load_config(
            overrides={
                "node_name": "s1",
                "server": True,
                "bootstrap": True,
                "data_dir": str(tmp_path / "s1"),
                "bind_addr": "127.0.0.1",
                "ports": ports,
                "tls": tls,
                "encrypt": generate_gossip_key(),
                **overrides,
            }
        )
        server = Server(config)
        await server.start()
        started.append(server)
        await server.wait_ready()
        return server

    yield start
    for server in started:
        await server.stop()


# --- one in-process dev server per call ---------------------------------------------


@pytest.fixture
async def start_dev_server() -> AsyncIterator[Callable[..., Awaitable[Server]]]:
    """``await start_dev_server(node="s1", router=None, **config_overrides)``: a ``-dev``
    server with its RPC port on an ephemeral port; every one started is stopped."""
    started: list[Server] = []

    async def start(node: str = "s1", router: Router | None = None, **overrides: Any) -> Server:
        config = load_config(
            overrides={"node_name": node, "ports": {"server": 0}, **overrides}, dev=True
        )
        server = Server(config, router=router)
        await server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        await server.stop()


# --- a 3-server datacenter of real ``wanfed agent`` processes -------------------------

AGENT_NODES = ("s1", "s2", "s3")


@dataclass
class AgentProcess:
    """One ``wanfed agent`` subprocess of the 3-server datacenter fixture."""

    node: str
    config_file: Path
    rpc_port: int
    http_port: int
    log: Path
    process: subprocess.Popen[bytes] | None = field(default=None)

    @property
    def base(self) -> str:
        """The agent's HTTP API."""
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "wanfed_server.cli", "agent", "-config-file",
                 str(self.config_file)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def agents(runtime_pki: RuntimePki, tmp_path: Path) -> Iterator[dict[str, AgentProcess]]:
    """Three servers from config files, mTLS on, ``bootstrap_expect = 3``; all started."""
    rpc_ports = {node: free_tcp_port() for node in AGENT_NODES}
    key = base64.b64encode(os.urandom(32)).decode()
    started: dict[str, AgentProcess] = {}
    for node in AGENT_NODES:
        http_port = free_tcp_port()
        config = {
            "node_name": node,
            "datacenter": "dc1",
            "server": True,
            "bootstrap_expect": 3,
            "data_dir": str(tmp_path / node),
            "bind_addr": "127.0.0.1",
            "ports": {
                "server": rpc_ports[node],
                "raft": free_tcp_port(),
                "http": http_port,
                "serf_wan": free_tcp_port(),
            },
            "retry_join": [f"127.0.0.1:{p}" for n, p in rpc_ports.items() if n != node],
            "encrypt": key,
            "tls": {
                **runtime_pki.mutual_tls(node),
                "internal_rpc": {"verify_server_hostname": True},
            },
        }
        config_file = tmp_path / f"{node}.json"
        config_file.write_text(json.dumps(config))
        started[node] = AgentProcess(
            node, config_file, rpc_ports[node], http_port, tmp_path / f"{node}.log"
        )
    for agent in started.values():
        agent.start()
    try:
        yield started
    finally:
        for agent in started.values():
            agent.stop()


# --- federated datacenters in one process (real servers, gateways, TLS) --------------


FED_PRIMARY = "dc1"


def fed_fast_options(
    *, prune_interval: float = 3600.0, replication_wait: float = 1.0
) -> ServerOptions:
    """Short federation timings; pruning hourly unless a test prunes on purpose.

    ``replication_wait`` (the long-poll of replication) may be the production
    300 s: recovery must not depend on a round ending early."""
    return ServerOptions(
        hold_timeout=10.0,
        fast_gossip=True,
        wan_join_interval=0.2,
        formation_retry=0.1,
        federation=FederationOptions(
            replication_wait=replication_wait,
            replication_rate=50.0,
            replication_burst=10,
            replication_max_retry_wait=1.0,
            ae_sync_interval=0.1,
            ae_wait=1.0,
            locator_rate=50.0,
            locator_burst=10,
            leader_loop_backoff_cap=0.5,
            locator_wait=1.0,
            prune_interval=prune_interval,
        ),
    )


def name_is_primary(datacenter: str) -> bool:
    return datacenter == FED_PRIMARY


def _free_port_on(host: str) -> int:
    import socket

    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class FedDatacenter:
    """One datacenter: servers ``s1``.. at ``<network>.<n>``, gateways at ``.200``+."""

    name: str
    network: str
    """``127.<xdist worker>.<dc number>``: parallel workers never share an address, so
    a port picked free for one of them cannot be taken by the other."""
    configs: dict[str, AgentConfig] = field(default_factory=dict)
    servers: dict[str, Server] = field(default_factory=dict)
    gateway: MeshGateway | None = None
    gateway_ip: str = ""
    gateway_port: int = 0
    feeder: asyncio.Task[None] | None = None

    def server_ip(self, node: str) -> str:
        return f"{self.network}.{int(node.removeprefix('s'))}"

    @property
    def server(self) -> Server | None:
        """``s1``, the only server of a one-server datacenter."""
        return self.servers.get("s1")

    def require_server(self, node: str = "s1") -> Server:
        return self.servers[node]

    def leader(self) -> Server | None:
        return next((s for s in self.servers.values() if s.is_leader()), None)

    def has_leader(self) -> bool:
        return self.leader() is not None

    @property
    def gateway_address(self) -> str:
        assert self.gateway is not None
        host, port = self.gateway.address
        return f"{host}:{port}"


def server_directory(server: Server) -> list[DirectoryServer]:
    """What ``/v1/internal/server-directory`` of ``server`` answers, decoded as the gateway does."""
    return msgspec.json.decode(directory_body(server), type=list[DirectoryServer])


def _gateway_inputs(txn: ReadTxn, server: Server, dc: str) -> tuple[int, RouteInputs]:
    # The store's index wakes the feeder (the leader writes serfHealth when a
    # server's liveness changes); the local servers come from the directory.
    i1, _ = txn.check_service_nodes("consul", passing_only=False)
    i2, gateways = txn.mesh_gateways_by_datacenter()
    return max(i1, i2), RouteInputs(
        local_dc=dc, server_directory=server_directory(server), fed_state_gateways=gateways
    )


async def _feed_gateway(server: Server, gateway: MeshGateway, dc: str) -> None:
    """Keep the gateway's routes equal to what one server's store says.

    A stand-in for the ``wanfed gateway`` watchers; it must follow a *running*
    server: fed from a stopped one it would freeze the routes."""
    index = 0
    while True:
        meta, inputs = await blocking_query(
            server.store,
            DCSpecificRequest(min_query_index=index, max_query_time=5),
            lambda txn: _gateway_inputs(txn, server, dc),
        )
        index = meta.index
        gateway.update_routes(build_route_table(inputs))


async def fed_eventually(condition: Callable[[], bool], within: float, what: str) -> None:
    """Wait for a condition that several independent loops converge to."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"not within {within:.0f} s: {what}")
        await asyncio.sleep(0.05)


class Federation:
    """Datacenters of real servers and real ``MeshGateway`` data planes on loopback.

    Secondaries know the primary only through ``primary_gateways =
    ["provider=file path=..."]``: :meth:`publish_primary_gateways` rewrites that
    file, the operator's source of truth (#7339)."""

    def __init__(
        self,
        tmp_path: Path,
        options: ServerOptions,
        *,
        agent_timings: Mapping[str, str] | None = None,
        acl: Callable[[str], Mapping[str, object]] | None = None,
    ) -> None:
        """``agent_timings`` replaces the short agent intervals (``retry_interval_wan``,
        ``primary_gateways_interval``: 1 s) with the given values, e.g. the defaults.
        ``acl(datacenter)`` is the ``acl`` block of that datacenter's servers; the
        gateways are then registered with its ``acl.tokens.agent``."""
        self.acl = acl
        from wanfed_agent.keygen import generate_gossip_key
        from wanfed_agent.tls import create_ca

        self.tmp_path = tmp_path
        self.options = options
        self.agent_timings: dict[str, str] = {
            "primary_gateways_interval": "1s",
            "retry_interval_wan": "1s",
            **(agent_timings or {}),
        }
        self.ca = create_ca()
        self.gossip_key = generate_gossip_key()  # one WAN pool: every server holds it
        self.dcs: dict[str, FedDatacenter] = {}
        self.listing = tmp_path / "primary-gateways.txt"
        self._gateway_serial: dict[str, int] = {}
        self._worker = 10 + int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))

    def __getitem__(self, name: str) -> FedDatacenter:
        return self.dcs[name]

    def publish_primary_gateways(self) -> None:
        self.listing.write_text(self.dcs[FED_PRIMARY].gateway_address + "\n")

    async def start(self, layout: Mapping[str, int]) -> None:
        """Start ``{dc: number of servers}``; return once every leader is elected."""
        for index, (name, count) in enumerate(layout.items(), start=1):
            dc = self.dcs[name] = FedDatacenter(name, f"127.{self._worker}.{index}")
            await self._start_gateway(dc)
            nodes = [f"s{n}" for n in range(1, count + 1)]
            # Fixed ports: a restarted server keeps its raft address.
            ports = {node: _free_port_on(dc.server_ip(node)) for node in nodes}
            for node in nodes:
                peers = [f"{dc.server_ip(n)}:{p}" for n, p in ports.items() if n != node]
                dc.configs[node] = self._config(dc, node, ports[node], peers)
        self.publish_primary_gateways()
        for dc in self.dcs.values():
            for node in dc.configs:
                await self.start_server(dc.name, node)
        for dc in self.dcs.values():
            await fed_eventually(dc.has_leader, 30, f"{dc.name} elects a leader")
            leader = dc.leader()
            assert leader is not None
            if self.acl is not None and name_is_primary(dc.name) and leader.acl_leader:
                await asyncio.wait_for(leader.acl_leader.initialized.wait(), 30)
            self.start_feeder(dc.name, leader)
            await self.register_gateway(dc.name)

    def _config(self, dc: FedDatacenter, node: str, port: int, peers: list[str]) -> AgentConfig:
        from wanfed_agent.tls import create_server_cert

        folder = self.tmp_path / f"tls-{dc.name}-{node}"
        folder.mkdir()
        pair = create_server_cert(self.ca, dc.name, "consul", node)
        (folder / "ca.pem").write_bytes(self.ca.cert_pem)
        (folder / "cert.pem").write_bytes(pair.cert_pem)
        (folder / "key.pem").write_bytes(pair.key_pem)
        ip = dc.server_ip(node)
        overrides: dict[str, object] = {
            "node_name": node,
            "datacenter": dc.name,
            "primary_datacenter": FED_PRIMARY,
            "server": True,
            "data_dir": str(self.tmp_path / f"data-{dc.name}-{node}"),
            "bind_addr": ip,
            "ports": {"server": port, "serf_wan": _free_port_on(ip)},
            "encrypt": self.gossip_key,
            "connect": {"enabled": True, "enable_mesh_gateway_wan_federation": True},
            "tls": {
                "defaults": {
                    "ca_file": str(folder / "ca.pem"),
                    "cert_file": str(folder / "cert.pem"),
                    "key_file": str(folder / "key.pem"),
                    "verify_incoming": True,
                    "verify_outgoing": True,
                }
            },
            **self.agent_timings,
        }
        if peers:
            overrides["bootstrap_expect"] = len(peers) + 1
            overrides["retry_join"] = peers
        else:
            overrides["bootstrap"] = True
        if self.acl is not None:
            overrides["acl"] = dict(self.acl(dc.name))
        if dc.name != FED_PRIMARY:
            overrides["primary_gateways"] = [f"provider=file path={self.listing}"]
        return load_config(overrides=overrides)

    async def start_server(self, dc_name: str, node: str) -> Server:
        """Start (or restart, from its data dir and on its old ports) one server."""
        dc = self.dcs[dc_name]
        server = Server(dc.configs[node], options=self.options)
        dc.servers[node] = server
        await server.start()
        return server

    async def stop_server(self, dc_name: str, node: str, *, leave: bool = True) -> None:
        dc = self.dcs[dc_name]
        server = dc.servers.pop(node)
        if dc.feeder is not None and not dc.servers:
            await self.stop_feeder(dc_name)
        await server.stop(leave=leave)

    def start_feeder(self, dc_name: str, server: Server) -> None:
        dc = self.dcs[dc_name]
        assert dc.gateway is not None
        if dc.feeder is not None:
            dc.feeder.cancel()
        dc.feeder = asyncio.create_task(_feed_gateway(server, dc.gateway, dc.name))

    async def stop_feeder(self, dc_name: str) -> None:
        dc = self.dcs[dc_name]
        feeder, dc.feeder = dc.feeder, None
        if feeder is not None:
            feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await feeder

    async def _start_gateway(self, dc: FedDatacenter, *, port: int = 0) -> None:
        if not port:  # a new gateway host: .200, .201, ...
            serial = self._gateway_serial.get(dc.name, 199) + 1
            self._gateway_serial[dc.name] = serial
            dc.gateway_ip = f"{dc.network}.{serial}"
        dc.gateway = MeshGateway(build_route_table(RouteInputs(local_dc=dc.name)), GatewayConfig())
        dc.gateway_port = (await dc.gateway.start(dc.gateway_ip, port))[1]

    async def replace_gateway(self, dc_name: str, *, new_address: bool) -> None:
        """Stop a DC's gateway; start a new one on the same or a new address, re-fed
        from a running server and (if moved) re-registered under the same node name."""
        dc = self.dcs[dc_name]
        assert dc.gateway is not None
        old_port = dc.gateway_port
        await self.stop_feeder(dc_name)
        await dc.gateway.close()
        await self._start_gateway(dc, port=0 if new_address else old_port)
        if dc.servers:
            self.start_feeder(dc_name, next(iter(dc.servers.values())))
            if new_address:
                await self.register_gateway(dc_name)

    async def register_gateway(self, dc_name: str) -> None:
        dc = self.dcs[dc_name]
        server = next(iter(dc.servers.values()))
        host, port = dc.gateway_ip, dc.gateway_port
        address = ServiceAddress(address=host, port=port)
        await server.rpc(
            "Catalog.Register",
            RegisterRequest(
                datacenter=dc.name,
                node=Node(node=f"{dc.name}-gw1", address=host, datacenter=dc.name),
                service=Service(
                    kind="mesh-gateway",
                    id="mesh-gateway",
                    service="mesh-gateway",
                    address=host,
                    port=port,
                    meta={"consul-wan-federation": "1"},
                    tagged_addresses={"lan": address, "wan": address},
                ),
            ),
            bool,
        )

    async def close(self) -> None:
        for dc in self.dcs.values():
            await self.stop_feeder(dc.name)
            for server in list(dc.servers.values()):
                await server.stop()
            dc.servers.clear()
            if dc.gateway is not None:
                await dc.gateway.close()


@pytest.fixture
async def make_federation(
    tmp_path: Path,
) -> AsyncIterator[Callable[..., Awaitable[Federation]]]:
    """``await make_federation({"dc1": 1, "dc2": 3})``: datacenters and their server
    counts, the first one primary; everything is stopped after the test."""
    made: list[Federation] = []

    async def make(
        layout: Mapping[str, int],
        *,
        prune_interval: float = 3600.0,
        replication_wait: float = 1.0,
        options: ServerOptions | None = None,
        agent_timings: Mapping[str, str] | None = None,
        acl: Callable[[str], Mapping[str, object]] | None = None,
    ) -> Federation:
        """``options`` replaces the short server timings (``fed_fast_options``);
        ``acl(datacenter)``: that datacenter's ``acl`` block."""
        federation = Federation(
            tmp_path,
            options
            or fed_fast_options(prune_interval=prune_interval, replication_wait=replication_wait),
            agent_timings=agent_timings,
            acl=acl,
        )
        made.append(federation)
        await federation.start(layout)
        return federation

    yield make
    for federation in made:
        await federation.close()
