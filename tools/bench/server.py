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
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from _common import Pki, free_port, print_against_baseline, run, write_pki
from _server_http import bench_http_blocking_wakeup, bench_http_health_service, print_wakeup

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
    pki: Pki

    async def rpc_client(self) -> RpcClient:
        context = client_context(*self.pki.client, alpn=[Alpn.RPC_MULTI])
        connection = await dial_alpn(self.rpc_address, SNI, Alpn.RPC_MULTI, context)
        return RpcClient(connection)


def start_server(directory: Path) -> RunningServer:
    pki = write_pki(directory, "dc1", node="bench")
    rpc_port, http_port = free_port(), free_port()
    config = {
        "node_name": "bench",
        "server": True,
        "bootstrap": True,
        "data_dir": str(directory / "data"),
        "bind_addr": "127.0.0.1",
        "log_level": "warn",
        "ports": {
            "server": rpc_port,
            "raft": free_port(),
            "http": http_port,
            "serf_wan": free_port(),
        },
        "encrypt": base64.b64encode(os.urandom(32)).decode(),
        "tls": {
            "defaults": {
                "ca_file": str(pki.ca),
                "cert_file": str(pki.cert),
                "key_file": str(pki.key),
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
        pki=pki,
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
    print_against_baseline(
        "calls/s",
        [
            ("Status.Ping (baseline)", best_ping),
            ("Health.ServiceNodes (10 instances)", best_health),
        ],
    )


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
    print_wakeup(
        f"{BLOCKING_QUERIES} blocking Health.ServiceNodes queries, one write:",
        "the write, sent to acknowledged (baseline)",
        (acknowledged - write_started) * 1000,
        [(t - write_started) * 1000 for t in woken],
    )


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
    run(main())
