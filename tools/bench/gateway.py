"""Benchmark: the wanfed mesh gateway against no proxy and against HAProxy.

Run ``nox -s bench -- gateway`` or ``python tools/bench/gateway.py``.

Three paths to the same mTLS backend on loopback, measured in interleaved
rounds within one run so that machine noise hits every path alike:

* ``direct``  — the client talks to the backend;
* ``haproxy`` — HAProxy routing on ``req.ssl_sni`` (Debian's ``haproxy``;
  this script installs nothing, the column is skipped when it is missing);
* ``wanfed``  — :class:`wanfed_server.gateway.MeshGateway` on uvloop in its
  own process, routing on a table built by ``build_route_table``.

Measured per path: new TLS connections per second (full mTLS handshake plus
one byte each way, 16 concurrent clients), bulk download MiB/s over one TLS
connection, and the round-trip time of a 64-byte request on a reused
connection (p50/p99; "added" is relative to ``direct`` in the same round).
The backend, each proxy and the client are separate processes; everything
shares the same cores, so read ratios, not absolute numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import cast

from _common import (
    Column,
    Pki,
    free_port,
    percentile,
    print_table,
    ratio,
    wait_for_stdin_eof,
    write_pki,
)

SNI = "s1.server.dc1.consul"
CONCURRENCY = 16
CHUNK = 256 * 1024
CHUNK_DATA = os.urandom(CHUNK)
PING = b"p" * 64
TARGETS = {"conns": 0.9, "bulk": 0.95}
ADDED_P50_TARGET_MS = 0.2


# --- certificates -----------------------------------------------------------------------


def tls_context(directory: Path, side: str) -> ssl.SSLContext:
    """Plain ``ssl`` contexts (no wanfed code) for the backend and the client."""
    pki = Pki.at(directory)
    purpose = ssl.Purpose.CLIENT_AUTH if side == "server" else ssl.Purpose.SERVER_AUTH
    ctx = ssl.create_default_context(purpose, cafile=str(pki.ca))
    if side == "server":
        ctx.load_cert_chain(str(pki.cert), str(pki.key))
        ctx.verify_mode = ssl.CERT_REQUIRED
    else:
        ctx.load_cert_chain(str(pki.client_cert), str(pki.client_key))
    return ctx


# --- child processes: backend and gateway ------------------------------------------------


class BackendProtocol(asyncio.Protocol):
    """The TLS backend. First byte: ``C`` answer one byte, ``E`` echo, ``D`` + size download."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.echo = False
        self.remaining = 0
        self.paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        transport = self.transport
        assert transport is not None
        if self.echo:
            transport.write(data)
            return
        self.buffer += data
        command = self.buffer[:1]
        if command == b"C":
            self.buffer = b""
            transport.write(b"k")
        elif command == b"E":
            self.echo = True
            rest, self.buffer = self.buffer[1:], b""
            if rest:
                transport.write(rest)
        elif command == b"D" and len(self.buffer) >= 9:
            self.remaining = int.from_bytes(self.buffer[1:9], "big")
            self.buffer = b""
            self.pump()

    def pump(self) -> None:
        transport = self.transport
        assert transport is not None
        while self.remaining > 0 and not self.paused:
            transport.write(CHUNK_DATA)
            self.remaining -= CHUNK

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self.pump()


async def run_backend(directory: Path) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        BackendProtocol, "127.0.0.1", 0, ssl=tls_context(directory, "server"), backlog=1024
    )
    print(f"READY {server.sockets[0].getsockname()[1]}", flush=True)
    await wait_for_stdin_eof()
    server.close()


async def run_gateway(upstream_port: int, write_buffer_limit: int) -> None:
    from wanfed_server.gateway import (
        DirectoryServer,
        GatewayConfig,
        MeshGateway,
        RouteInputs,
        build_route_table,
    )

    server = DirectoryServer(
        node="s1", datacenter="dc1", address="127.0.0.1", port=upstream_port, alive=True
    )
    table = build_route_table(RouteInputs(local_dc="dc1", server_directory=[server]))
    gateway = MeshGateway(
        table, GatewayConfig(stats_log_interval=0, write_buffer_limit=write_buffer_limit)
    )
    _, port = await gateway.start("127.0.0.1", 0)
    print(f"READY {port}", flush=True)
    await wait_for_stdin_eof()
    await gateway.close()


# --- the client --------------------------------------------------------------------------


class OneShot(asyncio.Protocol):
    def __init__(self, done: asyncio.Future[None]) -> None:
        self.done = done
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(b"C")

    def data_received(self, data: bytes) -> None:
        if not self.done.done():
            self.done.set_result(None)
        assert self.transport is not None
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(exc or ConnectionError("closed before the answer"))


class Download(asyncio.Protocol):
    def __init__(self, size: int, done: asyncio.Future[None]) -> None:
        self.size = size
        self.received = 0
        self.done = done

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        cast(asyncio.Transport, transport).write(b"D" + self.size.to_bytes(8, "big"))

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        if self.received >= self.size and not self.done.done():
            self.done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(exc or ConnectionError("closed during download"))


class Echo(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.waiting: asyncio.Future[None] | None = None
        self.pending = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(b"E")

    def data_received(self, data: bytes) -> None:
        self.pending -= len(data)
        if self.pending <= 0 and self.waiting is not None and not self.waiting.done():
            self.waiting.set_result(None)

    async def round_trip(self) -> None:
        assert self.transport is not None
        self.waiting = asyncio.get_running_loop().create_future()
        self.pending = len(PING)
        self.transport.write(PING)
        await self.waiting


@dataclass
class Client:
    ctx: ssl.SSLContext
    seconds: float
    bulk_bytes: int
    pings: int
    errors: int = 0

    async def conns_per_second(self, port: int) -> tuple[float, int]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.seconds
        completed = 0

        async def worker() -> None:
            nonlocal completed
            while loop.time() < deadline:
                done: asyncio.Future[None] = loop.create_future()
                try:
                    await loop.create_connection(
                        partial(OneShot, done), "127.0.0.1", port, ssl=self.ctx, server_hostname=SNI
                    )
                    await done
                except (OSError, ssl.SSLError) as exc:
                    self.errors += 1
                    if self.errors == 1:
                        print(f"  connection failed (counted, not timed): {exc!r}", flush=True)
                    continue
                completed += 1

        start = loop.time()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        return completed / (loop.time() - start), completed

    async def bulk_mib_per_second(self, port: int) -> float:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        start = time.perf_counter()
        transport, _ = await loop.create_connection(
            partial(Download, self.bulk_bytes, done),
            "127.0.0.1",
            port,
            ssl=self.ctx,
            server_hostname=SNI,
        )
        await done
        elapsed = time.perf_counter() - start
        transport.close()
        return self.bulk_bytes / elapsed / 2**20

    async def round_trips_ms(self, port: int) -> list[float]:
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_connection(
            Echo, "127.0.0.1", port, ssl=self.ctx, server_hostname=SNI
        )
        for _ in range(50):  # warm up the path before timing it
            await protocol.round_trip()
        samples = []
        for _ in range(self.pings):
            start = time.perf_counter_ns()
            await protocol.round_trip()
            samples.append((time.perf_counter_ns() - start) / 1e6)
        transport.close()
        return samples


# --- orchestration -----------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One path under test: where to connect, and the proxy process to account CPU to."""

    port: int
    pid: int | None = None


def cpu_ns(pid: int | None) -> int:
    """Nanoseconds the process's main thread has run (``/proc/PID/schedstat``), 0 if unknown."""
    if pid is None:
        return 0
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


@dataclass
class PathResults:
    conns: list[float] = field(default_factory=list)
    bulk: list[float] = field(default_factory=list)
    cpu_ns: dict[str, int] = field(default_factory=lambda: {"conns": 0, "bulk": 0})
    work: dict[str, float] = field(default_factory=lambda: {"conns": 0.0, "bulk": 0.0})
    p50: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    added_p50: list[float] = field(default_factory=list)
    added_p99: list[float] = field(default_factory=list)


class Children:
    """Child processes of this run, stopped in reverse order whatever happens."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start_python(self, *args: str) -> Target:
        proc = subprocess.Popen(
            [sys.executable, __file__, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        self.procs.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline().decode().split()
        if len(line) != 2 or line[0] != "READY":
            raise RuntimeError(f"child {args} did not start: {line}")
        return Target(int(line[1]), proc.pid)

    def start_haproxy(self, directory: Path, backend_port: int) -> Target:
        port = free_port()
        config = directory / "haproxy.cfg"
        config.write_text(
            f"""global
  nbthread 1
  maxconn 4000
defaults
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend fe_sni
  bind 127.0.0.1:{port}
  tcp-request inspect-delay 5s
  tcp-request content accept if {{ req.ssl_hello_type 1 }}
  use_backend be_s1 if {{ req.ssl_sni -i {SNI} }}
  default_backend be_none
backend be_s1
  server s1 127.0.0.1:{backend_port}
backend be_none
  tcp-request content reject
"""
        )
        haproxy = shutil.which("haproxy")
        assert haproxy is not None
        proc = subprocess.Popen([haproxy, "-db", "-f", str(config)], stdout=subprocess.DEVNULL)
        self.procs.append(proc)
        deadline = time.monotonic() + 10
        while True:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    return Target(port, proc.pid)
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"haproxy did not start (exit status {proc.poll()})")
            time.sleep(0.05)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.stdin is not None:
                with contextlib.suppress(OSError):
                    proc.stdin.close()
            else:
                proc.send_signal(signal.SIGTERM)
        for proc in reversed(self.procs):
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextlib.contextmanager
def children() -> Iterator[Children]:
    group = Children()
    try:
        yield group
    finally:
        group.stop()


def rotate(items: list[str], by: int) -> list[str]:
    by %= len(items)
    return items[by:] + items[:by]


async def measure(paths: dict[str, Target], client: Client, rounds: int) -> dict[str, PathResults]:
    results = {name: PathResults() for name in paths}
    for target in paths.values():  # warm-up: caches, first-connection costs
        await client.round_trips_ms(target.port)
    for round_number in range(rounds):
        order = rotate(list(paths), round_number)
        for name in order:
            target, result = paths[name], results[name]
            before = cpu_ns(target.pid)
            rate, count = await client.conns_per_second(target.port)
            result.cpu_ns["conns"] += cpu_ns(target.pid) - before
            result.work["conns"] += count
            result.conns.append(rate)
        for name in order:
            target, result = paths[name], results[name]
            before = cpu_ns(target.pid)
            result.bulk.append(await client.bulk_mib_per_second(target.port))
            result.cpu_ns["bulk"] += cpu_ns(target.pid) - before
            result.work["bulk"] += client.bulk_bytes / 2**20
        medians: dict[str, tuple[float, float]] = {}
        for name in order:
            samples = await client.round_trips_ms(paths[name].port)
            medians[name] = (percentile(samples, 0.5), percentile(samples, 0.99))
        for name, (p50, p99) in medians.items():
            results[name].p50.append(p50)
            results[name].p99.append(p99)
            results[name].added_p50.append(p50 - medians["direct"][0])
            results[name].added_p99.append(p99 - medians["direct"][1])
        print(f"  round {round_number + 1}/{rounds} done", flush=True)
    return results


def report(results: dict[str, PathResults]) -> None:
    med: Callable[[list[float]], float] = statistics.median
    hap = results.get("haproxy")
    base_conns = med(hap.conns) if hap else None
    base_bulk = med(hap.bulk) if hap else None
    direct = results["direct"]
    print_table(
        [
            Column("path", 8, align="<"),
            Column("conns/s", 8, ".0f"),
            Column("×direct", 7),
            Column("×HAProxy", 8),
            Column("MiB/s", 8, ".0f"),
            Column("×direct", 7),
            Column("×HAProxy", 8),
            Column("p50 ms", 8, ".3f"),
            Column("p99 ms", 7, ".3f"),
            Column("+p50 ms", 8, ".3f"),
            Column("+p99 ms", 8, ".3f"),
        ],
        [
            [
                name,
                med(r.conns),
                ratio(med(r.conns), med(direct.conns)),
                ratio(med(r.conns), base_conns),
                med(r.bulk),
                ratio(med(r.bulk), med(direct.bulk)),
                ratio(med(r.bulk), base_bulk),
                med(r.p50),
                med(r.p99),
                med(r.added_p50),
                med(r.added_p99),
            ]
            for name, r in results.items()
        ],
    )
    print("(medians over rounds; spreads per round:)")
    for name, r in results.items():
        print(
            f"  {name:<8} conns/s {' '.join(f'{v:.0f}' for v in r.conns)}  "
            f"MiB/s {' '.join(f'{v:.0f}' for v in r.bulk)}"
        )
    print("proxy CPU (main thread, summed over rounds):")
    for name, r in results.items():
        if name == "direct":
            continue
        per_conn = r.cpu_ns["conns"] / max(r.work["conns"], 1) / 1e3
        per_mib = r.cpu_ns["bulk"] / max(r.work["bulk"], 1) / 1e6
        print(f"  {name:<8} {per_conn:7.0f} µs per new connection  {per_mib:6.2f} ms per MiB")
    wanfed = results["wanfed"]
    if hap is not None:
        for what, unit in (("conns", "connection"), ("bulk", "MiB")):
            mine = wanfed.cpu_ns[what] / max(wanfed.work[what], 1)
            theirs = hap.cpu_ns[what] / max(hap.work[what], 1)
            print(f"  wanfed/HAProxy CPU per {unit}: {ratio(mine, theirs)}")
    added = med(wanfed.added_p50)
    print(f"added p50 (wanfed): {added:.3f} ms  target ≤ {ADDED_P50_TARGET_MS} ms  ", end="")
    print("MET" if added <= ADDED_P50_TARGET_MS else "MISSED")
    if hap is None:
        return
    # Each round measures the paths back to back, so a per-round ratio
    # cancels most of the load other processes put on the machine; the
    # median of those ratios is the verdict.
    for what, target in TARGETS.items():
        mine, theirs = getattr(wanfed, what), getattr(hap, what)
        paired = [a / b for a, b in zip(mine, theirs, strict=True) if b]
        got = med(paired)
        verdict = "MET" if got >= target else "MISSED"
        spread = " ".join(f"{r:.2f}" for r in paired)
        print(
            f"{what} wanfed/HAProxy: {got:.2f} (median of per-round ratios {spread})  "
            f"target ≥ {target}  {verdict}"
        )


async def orchestrate(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp, children() as procs:
        directory = Path(tmp)
        write_pki(directory, "dc1", node="s1")  # names s1.server.dc1.consul, the SNI
        backend = procs.start_python("--role", "backend", "--dir", tmp)
        paths = {"direct": Target(backend.port)}
        if shutil.which("haproxy"):
            paths["haproxy"] = procs.start_haproxy(directory, backend.port)
        else:
            print(
                "HAProxy column unavailable: 'haproxy' is not installed "
                "(install it with: apt-get install haproxy)"
            )
        paths["wanfed"] = procs.start_python("--role", "gateway", "--upstream", str(backend.port))
        client = Client(
            tls_context(directory, "client"), args.seconds, args.bulk_mib * 2**20, args.pings
        )
        print(
            f"gateway benchmark: {args.rounds} interleaved rounds, {args.seconds}s conns/s "
            f"windows, {CONCURRENCY} concurrent clients, {args.bulk_mib} MiB download, "
            f"{args.pings} pings; mTLS, ECDSA P-256"
        )
        started = time.monotonic()
        results = await measure(paths, client, args.rounds)
        report(results)
        if client.errors:
            print(f"{client.errors} new connections failed during the conns/s windows")
        print(f"total {time.monotonic() - started:.1f}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--role", choices=["bench", "backend", "gateway"], default="bench")
    parser.add_argument("--dir", type=Path)
    parser.add_argument("--upstream", type=int)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--bulk-mib", type=int, default=128)
    parser.add_argument("--pings", type=int, default=1500)
    parser.add_argument(
        "--write-buffer-limit", type=int, default=64 * 1024, help="the gateway's, in bytes"
    )
    args = parser.parse_args()
    import uvloop

    if args.role == "backend":
        assert args.dir is not None
        uvloop.run(run_backend(args.dir))
    elif args.role == "gateway":
        assert args.upstream is not None
        uvloop.run(run_gateway(args.upstream, args.write_buffer_limit))
    else:
        uvloop.run(orchestrate(args))


if __name__ == "__main__":
    main()
