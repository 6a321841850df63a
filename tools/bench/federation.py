"""Benchmark: federation-state propagation and cross-datacenter RPC through two gateways.

Run ``nox -s bench -- federation`` or ``python tools/bench/federation.py``.

For 3 and 10 datacenters, all in this one process on loopback (one
``Server`` and one real ``MeshGateway`` per datacenter, each on its own
127.0.N.x address, mutual TLS with ``wanfed_agent.tls`` certificates, the
secondaries knowing only the primary's gateway through ``primary_gateways``;
a feeder per datacenter keeps its gateways' routes equal to its own server's
store, standing in for the ``wanfed gateway`` watchers):

* propagation: a new mesh gateway (a real listener) is registered through
  ``Catalog.Register`` in dc2 with meta ``consul-wan-federation=1``; timed from
  the moment the registration is sent until the primary's store, then every
  datacenter's store, lists it in dc2's federation state. The path is dc2's
  anti-entropy (AE) → ``FederationState.Apply`` in the primary through dc2's
  gateway and the primary's → each secondary's replication blocking query
  wakes and applies it. Five changes are made each after a quiet spell longer
  than the AE debounce, then twenty back to back (the next as soon as the last
  is everywhere); each is waited for with blocking queries on the stores.
  Two federations per size: one with the production values of every timer on
  that path (AE debounce 5 s, replication 1 round/s, burst 5), in which every
  back-to-back change waits out the debounce *by design*; and one with the
  tests' values (AE debounce 0.1 s, replication 50 rounds/s), labelled so.
  The changes after a quiet spell show what the path itself costs.
* cross-DC RPC: ``Status.Leader`` for dc3 asked of dc2's server, which forwards
  it dc2 server → dc2's gateway → dc3's gateway → dc3's server, beside the same
  call made by a client straight to dc3's server (same-DC direct) in the same
  run, rounds interleaved: sequential latency p50/p99 and calls/s with
  several in flight. Two more rows split the cross path: dc2's RPC client
  alone (``wanfed_agent.rpc``: route, pooled connection, deadline, keepalive;
  no dispatcher), and a bare ``RpcClient`` on one connection through the same
  gateways (no pool, no route: the floor the client's own cost is read against).

Everything shares one event loop (and so one core): the printed loop lag and
CPU-per-wall say how much of each number is this process's own queueing.
Timings are printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
from _common import Column, percentile, print_table, ratio, run

from wanfed_agent.config import load_config
from wanfed_agent.keygen import generate_gossip_key
from wanfed_agent.tls import PemPair, create_ca, create_client_cert, create_server_cert
from wanfed_fsm import (
    CheckServiceNode,
    DCSpecificRequest,
    FederationState,
    Node,
    ReadTxn,
    RegisterRequest,
    Service,
    ServiceAddress,
    blocking_query,
)
from wanfed_proto import Alpn, RpcClient, client_context, dial_alpn
from wanfed_server.gateway import (
    DirectoryServer,
    GatewayConfig,
    MeshGateway,
    RouteInputs,
    build_route_table,
)
from wanfed_server.http._server_directory import directory_body
from wanfed_server.runtime import Server, ServerOptions

SIZES = (3, 10)
CHANGES = 20
IDLE_CHANGES = 5
CHANGED_DC = "dc2"
GOAL_P99_S = 1.0
RPC_SEQUENTIAL = 300
RPC_PIPELINED = 2000
RPC_IN_FLIGHT = 16
RPC_ROUNDS = 3
GOAL_RPC_P50_RATIO = 2.0
SETUP_WITHIN = 120.0
ROUTER_LOOKUPS = 1000

# Setup-only timers are the tests' (WAN join and discovery retries, the
# locator's pace, retry backoff): they decide how fast the federation forms,
# not how fast a change travels. WAN gossip keeps memberlist's WAN profile: the
# fast one declares members failed when the shared loop stalls under load.
# Every other federation timer keeps its production default.
_SETUP = msgspec.structs.replace(
    ServerOptions().federation, locator_rate=50.0, locator_burst=10, leader_loop_backoff_cap=0.5
)


@dataclass(frozen=True)
class Profile:
    """The timers on the propagation path, and how a row of results is labelled."""

    name: str
    label: str
    ae_sync_interval: float
    replication_rate: float
    replication_burst: int

    def options(self) -> ServerOptions:
        federation = msgspec.structs.replace(
            _SETUP,
            ae_sync_interval=self.ae_sync_interval,
            replication_rate=self.replication_rate,
            replication_burst=self.replication_burst,
        )
        return ServerOptions(
            hold_timeout=10.0, fast_gossip=False, wan_join_interval=0.2, federation=federation
        )


PRODUCTION = Profile("production", "AE debounce 5 s, replication 1 round/s burst 5", 5.0, 1.0, 5)
SHORTENED = Profile(
    "SHORTENED",
    "AE debounce 0.1 s, replication 50 rounds/s burst 10 (tests' values)",
    0.1,
    50.0,
    10,
)


# --- the federation -------------------------------------------------------------------------


@dataclass
class Datacenter:
    name: str
    index: int
    server: Server | None = None
    gateways: list[MeshGateway] = field(default_factory=list)
    feeder: asyncio.Task[None] | None = None

    @property
    def server_ip(self) -> str:
        return f"127.0.{self.index}.1"

    def gateway_ip(self, number: int) -> str:
        return f"127.0.{self.index}.{number + 2}"

    def require_server(self) -> Server:
        assert self.server is not None
        return self.server


def _route_inputs(txn: ReadTxn, server: Server, dc: str) -> tuple[int, RouteInputs]:
    i1, _ = txn.check_service_nodes("consul", passing_only=False)
    i2, gateways = txn.mesh_gateways_by_datacenter()
    directory = msgspec.json.decode(directory_body(server), type=list[DirectoryServer])
    return max(i1, i2), RouteInputs(
        local_dc=dc, server_directory=directory, fed_state_gateways=gateways
    )


async def _feed_gateways(dc: Datacenter) -> None:
    """Keep every gateway of ``dc`` routing by what its own server's store says."""
    server = dc.require_server()
    index = 0
    while True:
        meta, inputs = await blocking_query(
            server.store,
            DCSpecificRequest(min_query_index=index, max_query_time=30),
            lambda txn: _route_inputs(txn, server, dc.name),
        )
        index = meta.index
        table = build_route_table(inputs)
        for gateway in dc.gateways:
            gateway.update_routes(table)


async def _start_gateway(dc: Datacenter) -> tuple[str, int]:
    """One more real gateway listener in ``dc``, routed like the others; its address."""
    gateway = MeshGateway(build_route_table(RouteInputs(local_dc=dc.name)), GatewayConfig())
    host, port = await gateway.start(dc.gateway_ip(len(dc.gateways)), 0)
    dc.gateways.append(gateway)
    if dc.server is not None:
        with dc.server.store.read() as txn:
            gateway.update_routes(build_route_table(_route_inputs(txn, dc.server, dc.name)[1]))
    return host, port


async def _register_gateway(dc: Datacenter, number: int, host: str, port: int) -> None:
    address = ServiceAddress(address=host, port=port)
    await dc.require_server().rpc(
        "Catalog.Register",
        RegisterRequest(
            datacenter=dc.name,
            node=Node(node=f"{dc.name}-gw{number}", address=host, datacenter=dc.name),
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


def _tls_files(directory: Path, ca: PemPair, dc: str) -> dict[str, str | bool]:
    pair = create_server_cert(ca, dc, "consul", "s1")
    folder = directory / dc
    folder.mkdir()
    (folder / "ca.pem").write_bytes(ca.cert_pem)
    (folder / "cert.pem").write_bytes(pair.cert_pem)
    (folder / "key.pem").write_bytes(pair.key_pem)
    return {
        "ca_file": str(folder / "ca.pem"),
        "cert_file": str(folder / "cert.pem"),
        "key_file": str(folder / "key.pem"),
        "verify_incoming": True,
        "verify_outgoing": True,
    }


def _gateway_counts(server: Server) -> dict[str, int]:
    with server.store.read() as txn:
        return {s.datacenter: len(s.mesh_gateways) for s in txn.federation_states()[1]}


async def _until(condition: Callable[[], bool], within: float, what: str) -> None:
    """Setup only: wait for several independent loops to converge."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"federation setup: not within {within:.0f} s: {what}")
        await asyncio.sleep(0.05)


@dataclass
class Federation:
    dcs: list[Datacenter]
    ca: PemPair
    directory: Path

    def dc(self, name: str) -> Datacenter:
        return next(dc for dc in self.dcs if dc.name == name)


@contextlib.asynccontextmanager
async def federation(size: int, profile: Profile, directory: Path) -> AsyncIterator[Federation]:
    """``size`` datacenters, every one holding every other's federation state."""
    ca = create_ca()
    gossip_key = generate_gossip_key()  # one WAN pool: every server holds it
    dcs = [Datacenter(f"dc{i}", i) for i in range(1, size + 1)]
    primary = dcs[0]
    try:
        for dc in dcs:
            await _start_gateway(dc)
        listing = directory / "primary-gateways.txt"
        host, port = primary.gateways[0].address
        listing.write_text(f"{host}:{port}\n")
        for dc in dcs:
            overrides: dict[str, object] = {
                "node_name": "s1",
                "datacenter": dc.name,
                "primary_datacenter": primary.name,
                "server": True,
                "bootstrap": True,
                "data_dir": str(directory / f"data-{dc.name}"),
                "bind_addr": dc.server_ip,
                "ports": {"server": 0, "serf_wan": 0},
                "encrypt": gossip_key,
                "connect": {"enabled": True, "enable_mesh_gateway_wan_federation": True},
                "tls": {"defaults": _tls_files(directory, ca, dc.name)},
                "primary_gateways_interval": "1s",
                "retry_interval_wan": "1s",
            }
            if dc is not primary:
                overrides["primary_gateways"] = [f"provider=file path={listing}"]
            dc.server = Server(load_config(overrides=overrides), options=profile.options())
            await dc.server.start()
        for dc in dcs:
            await dc.require_server().wait_ready()
            dc.feeder = asyncio.create_task(_feed_gateways(dc))
            host, port = dc.gateways[0].address
            await _register_gateway(dc, 0, host, port)
        everyone = {dc.name: 1 for dc in dcs}
        try:
            await _until(
                lambda: all(_gateway_counts(dc.require_server()) == everyone for dc in dcs),
                SETUP_WITHIN,
                f"all {size} datacenters hold every federation state",
            )
        except SystemExit:
            for dc in dcs:
                print(f"  {dc.name} holds {_gateway_counts(dc.require_server())}", flush=True)
            raise
        names = set(everyone)
        await _until(
            lambda: all(set(dc.require_server().router.datacenters()) == names for dc in dcs),
            SETUP_WITHIN,
            f"all {size} datacenters' WAN pools know every datacenter",
        )
        yield Federation(dcs, ca, directory)
    finally:
        for dc in dcs:
            if dc.feeder is not None:
                dc.feeder.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await dc.feeder
        # Stop every server before any gateway: a server still replicating
        # through a closed gateway only logs, but costs the next run time.
        for dc in reversed(dcs):
            if dc.server is not None:
                await dc.server.stop(leave=False)
        for dc in dcs:
            for gateway in dc.gateways:
                await gateway.close()


# --- what the shared loop costs --------------------------------------------------------------


class LoopMonitor:
    """Scheduling lag of a 5 ms timer, and process CPU per wall second, while measuring.

    Both say how busy the one event loop all datacenters share was: lag is
    time any callback of the measured path could also have waited in the queue.
    """

    TICK = 0.005

    def __init__(self) -> None:
        self.lags_ms: list[float] = []
        self._task: asyncio.Task[None] | None = None
        self._wall = 0.0
        self._cpu = 0.0

    async def _probe(self) -> None:
        while True:
            started = time.perf_counter()
            await asyncio.sleep(self.TICK)
            self.lags_ms.append((time.perf_counter() - started - self.TICK) * 1000)

    def __enter__(self) -> LoopMonitor:
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        self._task = asyncio.ensure_future(self._probe())
        return self

    def __exit__(self, *_: object) -> None:
        assert self._task is not None
        self._task.cancel()
        self._wall = time.perf_counter() - self._wall
        self._cpu = time.process_time() - self._cpu

    def describe(self) -> str:
        lags = self.lags_ms or [0.0]
        return (
            f"loop lag p50 {percentile(lags, 0.5):.1f} ms / p99 {percentile(lags, 0.99):.1f} ms, "
            f"process CPU {self._cpu / self._wall:.2f} s per wall s"
        )


# --- propagation ----------------------------------------------------------------------------


def _lists(states: Sequence[FederationState], dc: str, host: str, port: int) -> bool:
    def address(gateway: CheckServiceNode) -> tuple[str, int]:
        return (gateway.service.address or gateway.node.address, gateway.service.port)

    return any(
        state.datacenter == dc and any(address(g) == (host, port) for g in state.mesh_gateways)
        for state in states
    )


async def _holds_at(server: Server, dc: str, host: str, port: int) -> float:
    """When ``server``'s store first lists gateway ``host:port`` in ``dc``'s federation state."""
    index = 0
    while True:
        meta, states = await blocking_query(
            server.store,
            DCSpecificRequest(min_query_index=index, max_query_time=60),
            lambda txn: txn.federation_states(),
        )
        if _lists(states, dc, host, port):
            return time.perf_counter()
        index = meta.index


@dataclass
class Propagation:
    """Seconds from each registration sent until the primary / every DC holds it."""

    primary: list[float] = field(default_factory=list)
    everywhere: list[float] = field(default_factory=list)
    idle_everywhere: list[float] = field(default_factory=list)
    """Changes that found the AE idle for longer than its debounce."""
    loop: str = ""


async def _one_change(fed: Federation) -> tuple[float, float]:
    """Register one more (real) gateway in dc2; seconds until the primary, every DC, hold it."""
    changed = fed.dc(CHANGED_DC)
    number = len(changed.gateways)
    host, port = await _start_gateway(changed)
    watchers = [
        asyncio.ensure_future(_holds_at(dc.require_server(), changed.name, host, port))
        for dc in fed.dcs
    ]
    await asyncio.sleep(0)  # every watcher reads its store before the write
    sent = time.perf_counter()
    await _register_gateway(changed, number, host, port)
    held = await asyncio.wait_for(asyncio.gather(*watchers), 120)
    return held[0] - sent, max(held) - sent  # dcs[0] is the primary


async def measure_propagation(
    fed: Federation, changes: int, idle_changes: int, debounce: float
) -> Propagation:
    """``idle_changes`` after a quiet spell each, then ``changes`` back to back."""
    result = Propagation()
    with LoopMonitor() as monitor:
        for _ in range(idle_changes):
            # As after any quiet spell: the AE's last sync is older than its debounce.
            await asyncio.sleep(debounce + 0.5)
            result.idle_everywhere.append((await _one_change(fed))[1])
        for _ in range(changes):
            primary, everywhere = await _one_change(fed)
            result.primary.append(primary)
            result.everywhere.append(everywhere)
    result.loop = monitor.describe()
    return result


# --- cross-DC RPC ---------------------------------------------------------------------------


Call = Callable[[], Awaitable[object]]


async def _sequential_ms(call: Call, count: int) -> list[float]:
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


async def _calls_per_second(call: Call, count: int, in_flight: int) -> float:
    remaining = count

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await call()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return count / (time.perf_counter() - started)


@dataclass
class RpcPath:
    latencies_ms: list[float] = field(default_factory=list)
    rates: list[float] = field(default_factory=list)

    @property
    def p50(self) -> float:
        return percentile(self.latencies_ms, 0.5)


RPC_PATHS = {
    "direct": "client → dc3 server (same-DC direct, baseline)",
    "cross": "dc2 server → dc2-gw → dc3-gw → dc3 server",
    "client": "  of which dc2's RPC client alone (pooled)",
    "bare": "  bare RpcClient via the gateways (floor)",
}


@dataclass
class RpcResult:
    """Every path of one federation, and what says the cross path really crossed."""

    paths: dict[str, RpcPath]
    evidence: str
    loop: str

    @property
    def direct(self) -> RpcPath:
        return self.paths["direct"]

    @property
    def cross(self) -> RpcPath:
        return self.paths["cross"]

    def rows(self, size: int) -> list[list[object]]:
        d = self.direct
        return [
            [
                size,
                RPC_PATHS[name],
                p.p50,
                percentile(p.latencies_ms, 0.99),
                max(p.rates),
                ratio(p.p50, d.p50),
                ratio(max(p.rates), max(d.rates)),
            ]
            for name, p in self.paths.items()
        ]

    def verdict(self) -> str:
        return "met" if self.cross.p50 <= GOAL_RPC_P50_RATIO * self.direct.p50 else "MISSED"


async def _direct_client(fed: Federation, dc: Datacenter, via: str | None = None) -> RpcClient:
    """A client of ``dc`` (its own certificate) connected to any server of ``dc``:
    straight to it, or through the gateway at ``via``."""
    pair = create_client_cert(fed.ca, dc.name)
    folder = fed.directory / f"client-{dc.name}"
    folder.mkdir(exist_ok=True)
    (folder / "cert.pem").write_bytes(pair.cert_pem)
    (folder / "key.pem").write_bytes(pair.key_pem)
    context = client_context(
        fed.directory / dc.name / "ca.pem", folder / "cert.pem", folder / "key.pem"
    )
    connection = await dial_alpn(
        via or dc.require_server().rpc_bind_address,
        f"server.{dc.name}.consul",
        Alpn.RPC_MULTI,
        context,
    )
    return RpcClient(connection)


async def measure_rpc(fed: Federation) -> RpcResult:
    """Cross-DC (dc2 → dc3 through both gateways) and same-DC direct (client → dc3)."""
    dc2, dc3 = fed.dc("dc2"), fed.dc("dc3")
    request = DCSpecificRequest(datacenter="dc3")
    paths = {name: RpcPath() for name in RPC_PATHS}
    leaders: dict[str, str] = {}
    federation = dc2.require_server().federation
    assert federation is not None
    gateway = federation.pick_gateway("dc3")
    pool = dc2.require_server()._pool
    assert pool is not None
    async with (
        await _direct_client(fed, dc3) as client,
        await _direct_client(fed, dc3, via=gateway) as bare_client,
    ):

        async def direct() -> str:
            return await client.call("Status.Leader", request, type=str, timeout=30)

        async def cross() -> str:
            return await dc2.require_server().rpc("Status.Leader", request, str)

        async def client_alone() -> str:
            return await pool.call("", "dc3", "", "Status.Leader", request, str)

        async def bare() -> str:
            return await bare_client.call("Status.Leader", request, type=str, timeout=30)

        calls: dict[str, Callable[[], Awaitable[str]]] = {
            "direct": direct,
            "cross": cross,
            "client": client_alone,
            "bare": bare,
        }
        for name, call in calls.items():
            leaders[name] = await call()
            await _sequential_ms(call, 50)  # warm-up: connections, caches
        before = dc2.gateways[0].stats().routes.get("remote:dc3")
        with LoopMonitor() as monitor:
            for _ in range(RPC_ROUNDS):
                for name, call in calls.items():
                    paths[name].latencies_ms += await _sequential_ms(call, RPC_SEQUENTIAL)
                for name, call in calls.items():
                    paths[name].rates.append(
                        await _calls_per_second(call, RPC_PIPELINED, RPC_IN_FLIGHT)
                    )
        after = dc2.gateways[0].stats().routes["remote:dc3"]
    if len(set(leaders.values())) != 1:
        raise SystemExit(f"the paths reached different servers: {leaders}")
    crossed = after.bytes_to_upstream - (before.bytes_to_upstream if before else 0)
    if crossed <= 0:
        raise SystemExit("the cross-DC calls did not go through dc2's gateway")
    # Every forwarded call asks the router for dc3's servers: what that lookup
    # alone costs, so a reader can tell it from the hops.
    router = dc2.require_server().router
    started = time.perf_counter()
    for _ in range(ROUTER_LOOKUPS):
        router.servers("dc3")
    lookup_ms = (time.perf_counter() - started) / ROUTER_LOOKUPS * 1000
    hops = dc3.gateways[0].stats().routes.get("local-server:s1")
    evidence = (
        f"dc2's gateway forwarded {crossed:,} bytes to dc3's during the rounds; "
        f"dc3's gateway has {hops.bytes_to_upstream if hops else 0:,} bytes to its server; "
        f"dc2's router.servers('dc3'), once per forwarded call, takes {lookup_ms:.3f} ms"
    )
    return RpcResult(paths, evidence, monitor.describe())


# --- report ---------------------------------------------------------------------------------


def _propagation_row(size: int, profile: Profile, p: Propagation) -> list[object]:
    def verdict(samples: list[float]) -> str:
        return "met" if percentile(samples, 0.99) < GOAL_P99_S else "MISSED"

    return [
        size,
        profile.name,
        percentile(p.primary, 0.5),
        percentile(p.primary, 0.99),
        percentile(p.everywhere, 0.5),
        percentile(p.everywhere, 0.99),
        verdict(p.everywhere),
        percentile(p.idle_everywhere, 0.5),
        percentile(p.idle_everywhere, 0.99),
        verdict(p.idle_everywhere),
    ]


PROPAGATION_COLUMNS = [
    Column("DCs", 4),
    Column("timers", 11, align="<"),
    Column("primary p50", 12, ".3f"),
    Column("p99", 7, ".3f"),
    Column("every DC p50", 13, ".3f"),
    Column("p99", 7, ".3f"),
    Column(f"p99<{GOAL_P99_S:g}s", 8),
    Column("after idle p50", 15, ".3f"),
    Column("p99", 7, ".3f"),
    Column(f"p99<{GOAL_P99_S:g}s", 8),
]

RPC_COLUMNS = [
    Column("DCs", 4),
    Column("path", 44, align="<"),
    Column("p50 ms", 8, ".3f"),
    Column("p99 ms", 8, ".3f"),
    Column("calls/s", 9, ",.0f"),
    Column("p50 ×direct", 12),
    Column("calls/s ×direct", 16),
]


async def bench(
    sizes: Sequence[int], changes: int, idle_changes: int, profiles: Sequence[Profile]
) -> None:
    logging.basicConfig(level=logging.CRITICAL)
    propagation_rows: list[list[object]] = []
    rpc: dict[int, RpcResult] = {}
    notes: list[str] = []
    for size in sizes:
        for profile in profiles:
            with tempfile.TemporaryDirectory(prefix="wanfed-bench-federation-") as tmp:
                started = time.perf_counter()
                async with federation(size, profile, Path(tmp)) as fed:
                    setup = time.perf_counter() - started
                    if profile is profiles[0]:  # the RPC path has no timer that differs
                        rpc[size] = await measure_rpc(fed)
                        notes.append(f"  {size} DCs, RPC rounds: {rpc[size].loop}")
                        notes.append(f"    {rpc[size].evidence}")
                    result = await measure_propagation(
                        fed, changes, idle_changes, profile.ae_sync_interval
                    )
                    propagation_rows.append(_propagation_row(size, profile, result))
                    notes.append(
                        f"  {size} DCs, {profile.name} timers: setup {setup:.1f} s; "
                        f"during the changes {result.loop}"
                    )
            print(f"  ({size} DCs, {profile.name} timers: done)", flush=True)

    print(
        f"\npropagation of a gateway registered in {CHANGED_DC}, seconds: {idle_changes} changes "
        f"each after a quiet spell longer than the AE debounce, then {changes} back to back"
    )
    for profile in profiles:
        print(f"  {profile.name}: {profile.label}")
    print_table(PROPAGATION_COLUMNS, propagation_rows, indent="  ")
    print(
        "  primary = the primary's store lists it (dc2's AE wrote it there); every DC = the last\n"
        "  store to list it (the secondaries' replication). Back to back, each change is made\n"
        "  as soon as the previous one is everywhere, so it waits out the rest of the AE\n"
        "  debounce by design (5 s with production timers); after idle, it does not."
    )
    print(
        f"\ncross-DC RPC Status.Leader?dc=dc3, {RPC_ROUNDS} interleaved rounds: "
        f"{RPC_SEQUENTIAL} sequential calls each (p50/p99 over all), "
        f"{RPC_PIPELINED} calls {RPC_IN_FLIGHT} in flight (calls/s best round):"
    )
    print_table(RPC_COLUMNS, [row for size, r in rpc.items() for row in r.rows(size)], indent="  ")
    for size, r in rpc.items():
        print(f"  {size} DCs: cross-DC p50 <= {GOAL_RPC_P50_RATIO:g}x direct: {r.verdict()}")
    print("\nthe one shared event loop (all servers, gateways and this client in one process):")
    for note in notes:
        print(note)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", type=int, nargs="*", default=list(SIZES))
    parser.add_argument("--changes", type=int, default=CHANGES, help="back to back")
    parser.add_argument(
        "--idle-changes", type=int, default=IDLE_CHANGES, help="each after a quiet spell"
    )
    parser.add_argument(
        "--production-only", action="store_true", help="skip the shortened-timers federations"
    )
    args = parser.parse_args()
    if any(size < 3 or size > 250 for size in args.sizes):
        parser.error("--sizes: each federation needs 3 to 250 datacenters (dc2 calls dc3)")
    if args.changes < 1 or args.idle_changes < 1:
        parser.error("--changes and --idle-changes must be at least 1")
    profiles = [PRODUCTION] if args.production_only else [PRODUCTION, SHORTENED]
    print(
        f"federation bench: {', '.join(map(str, args.sizes))} datacenters in one process "
        "(one server + one mesh gateway each, mTLS, loopback); WAN joins, discovery and "
        "retries use the tests' short intervals (setup only), WAN gossip its WAN profile",
        flush=True,
    )
    run(bench(args.sizes, args.changes, args.idle_changes, profiles))


if __name__ == "__main__":
    main()
