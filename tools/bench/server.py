"""Benchmark: one wanfed server over mutual TLS, each number beside a same-run baseline.

Run ``nox -s bench -- server`` or ``python tools/bench/server.py``.

One ``wanfed agent`` process (single-node Raft, bootstrapped, mTLS with
``verify_incoming``, certificates made by ``wanfed_agent.tls``) is measured
from this process:

* RPC: ``Health.ServiceNodes`` calls/s (a service with 10 instances) against
  ``Status.Ping`` (a handler that does nothing: the cost of the RPC path
  itself), rounds interleaved so machine noise hits both alike;
* blocking queries: 1,000 concurrent ``Health.ServiceNodes`` blocking queries,
  one write, and the wake-up latency of each (p50/p99) from the moment the
  write was sent, beside the same write's own send-to-acknowledged latency
  (the write's answer queues behind the 1,000 answers it caused).

Each measurement is one function taking the running server; the HTTP API's
measurements are added the same way. Timings are printed, never asserted.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from _server_http import bench_http_blocking_wakeup, bench_http_health_service

from wanfed_agent.tls import create_ca, create_client_cert, create_server_cert
from wanfed_fsm import (
    HealthCheck,
    IndexedCheckServiceNodes,
    Node,
    RegisterRequest,
    Service,
    ServiceSpecificRequest,
)
from wanfed_proto import Alpn, ProtoError, RpcClient, client_context, dial_alpn

IN_FLIGHT = 64
RPC_CALLS = 20_000
ROUNDS = 3
BLOCKING_QUERIES = 1000
CONNECTIONS = 8
SNI = "server.dc1.consul"


@dataclass
class RunningServer:
    """A ``wanfed agent`` process and what a client needs to reach it."""

    process: subprocess.Popen[bytes]
    rpc_address: tuple[str, int]
    http_address: tuple[str, int]
    ca: Path
    client_cert: Path
    client_key: Path

    async def rpc_client(self) -> RpcClient:
        context = client_context(self.ca, self.client_cert, self.client_key, alpn=[Alpn.RPC_MULTI])
        connection = await dial_alpn(self.rpc_address, SNI, Alpn.RPC_MULTI, context)
        return RpcClient(connection)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(directory: Path) -> RunningServer:
    ca = create_ca()
    server = create_server_cert(ca, "dc1", node="bench")
    client = create_client_cert(ca, "dc1")
    files = {
        "ca.pem": ca.cert_pem,
        "server.pem": server.cert_pem,
        "server-key.pem": server.key_pem,
        "client.pem": client.cert_pem,
        "client-key.pem": client.key_pem,
    }
    for name, data in files.items():
        (directory / name).write_bytes(data)
    rpc_port, http_port = _free_port(), _free_port()
    config = {
        "node_name": "bench",
        "server": True,
        "bootstrap": True,
        "data_dir": str(directory / "data"),
        "bind_addr": "127.0.0.1",
        "log_level": "warn",
        "ports": {
            "server": rpc_port,
            "raft": _free_port(),
            "http": http_port,
            "serf_wan": _free_port(),
        },
        "encrypt": base64.b64encode(os.urandom(32)).decode(),
        "tls": {
            "defaults": {
                "ca_file": str(directory / "ca.pem"),
                "cert_file": str(directory / "server.pem"),
                "key_file": str(directory / "server-key.pem"),
                "verify_incoming": True,
                "verify_outgoing": True,
            }
        },
    }
    config_file = directory / "bench.json"
    config_file.write_text(json.dumps(config))
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from wanfed_server.cli import main; sys.exit(main())",
            "agent",
            "-config-file",
            str(config_file),
        ]
    )
    return RunningServer(
        process=process,
        rpc_address=("127.0.0.1", rpc_port),
        http_address=("127.0.0.1", http_port),
        ca=directory / "ca.pem",
        client_cert=directory / "client.pem",
        client_key=directory / "client-key.pem",
    )


async def wait_until_writable(server: RunningServer, limit: float = 30.0) -> None:
    deadline = time.monotonic() + limit
    while True:
        try:
            client = await server.rpc_client()
            async with client:
                await client.call("Catalog.Register", _instance(0), type=bool, timeout=limit)
                return
        except (ProtoError, OSError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


def _instance(number: int) -> RegisterRequest:
    node = f"web-{number}"
    return RegisterRequest(
        node=Node(node=node, address=f"198.18.1.{number % 250 + 1}"),
        service=Service(id="web", service="web", port=8080, tags=["v1"]),
        checks=[HealthCheck(node=node, check_id="service:web", service_id="web", status="passing")],
    )


async def _calls_per_second(client: RpcClient, method: str, body: object, reply: type) -> float:
    remaining = RPC_CALLS

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await client.call(method, body, type=reply, timeout=30)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))
    return RPC_CALLS / (time.perf_counter() - started)


async def bench_rpc_health_service_nodes(server: RunningServer) -> None:
    """``Health.ServiceNodes`` RPCs/s over mTLS beside ``Status.Ping`` on the same connection."""
    async with await server.rpc_client() as client:
        for number in range(10):
            await client.call("Catalog.Register", _instance(number), type=bool, timeout=30)
        request = ServiceSpecificRequest(service_name="web", allow_stale=True)
        health: list[float] = []
        ping: list[float] = []
        for _ in range(ROUNDS):
            ping.append(await _calls_per_second(client, "Status.Ping", None, bool))
            health.append(
                await _calls_per_second(
                    client, "Health.ServiceNodes", request, IndexedCheckServiceNodes
                )
            )
    best_health, best_ping = max(health), max(ping)
    print(f"\nRPC over mTLS, one connection, {IN_FLIGHT} calls in flight, best of {ROUNDS}:")
    print(f"  {'Status.Ping (baseline)':<42} {best_ping:>10,.0f} calls/s")
    print(
        f"  {'Health.ServiceNodes (10 instances)':<42} {best_health:>10,.0f} calls/s"
        f"   ({best_health / best_ping:.2f}x baseline)"
    )


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(len(ordered) * fraction), len(ordered) - 1)]


async def bench_blocking_wakeup(server: RunningServer) -> None:
    """Wake-up latency of 1,000 concurrent blocking queries after one write."""
    clients = [await server.rpc_client() for _ in range(CONNECTIONS)]
    try:
        first = await clients[0].call(
            "Health.ServiceNodes",
            ServiceSpecificRequest(service_name="web"),
            type=IndexedCheckServiceNodes,
            timeout=30,
        )
        woken: list[float] = []

        async def blocking(client: RpcClient) -> None:
            request = ServiceSpecificRequest(
                service_name="web", min_query_index=first.index, max_query_time=60
            )
            await client.call("Health.ServiceNodes", request, type=IndexedCheckServiceNodes)
            woken.append(time.perf_counter())

        queries = [
            asyncio.ensure_future(blocking(clients[i % CONNECTIONS]))
            for i in range(BLOCKING_QUERIES)
        ]
        await asyncio.sleep(1.0)  # let every query reach the server and block
        write_started = time.perf_counter()
        await clients[0].call("Catalog.Register", _instance(500), type=bool, timeout=30)
        acknowledged = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*queries), 60)
    finally:
        for client in clients:
            await client.close()
    latencies = [(t - write_started) * 1000 for t in woken]
    write_ms = (acknowledged - write_started) * 1000
    print(f"\n{BLOCKING_QUERIES} blocking Health.ServiceNodes queries, one write:")
    print(f"  {'the write, sent to acknowledged (baseline)':<42} {write_ms:>10.2f} ms")
    p50, p99 = statistics.median(latencies), _percentile(latencies, 0.99)
    print(f"  {'query wake-up from the write sent, p50 / p99':<42} {p50:>10.2f} ms / {p99:.2f} ms")


MEASUREMENTS: list[Callable[[RunningServer], Awaitable[None]]] = [
    bench_rpc_health_service_nodes,
    bench_blocking_wakeup,
    bench_http_health_service,
    bench_http_blocking_wakeup,
]


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="wanfed-bench-server-") as directory:
        server = start_server(Path(directory))
        try:
            await wait_until_writable(server)
            for measurement in MEASUREMENTS:
                await measurement(server)
        finally:
            server.process.terminate()
            server.process.wait(10)


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())
