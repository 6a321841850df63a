"""Benchmark: how soon the things happen that the unit tests only require to happen.

Run ``nox -s bench -- liveness`` or ``python tools/bench/liveness.py``.

The unit tests prove that a blocking query is woken by a write, that a dev
agent starts and answers, and that writes resume after the leader is killed —
on events, never against a stopwatch, because a shared, loaded machine
stretches any wall-clock budget. The times live here, each beside a same-run
baseline or the budget the tests used to assert:

* store wake-up: a federation-state write from another thread to the wake-up
  of a query parked on the store (p50/p99), beside the bare cost of handing a
  callback from a thread to the loop (``call_soon_threadsafe``), its floor;
  the old unit-test budget was a median under 10 ms;
* dev agent start: ``wanfed agent -dev`` until it logs that it runs (best of
  three, wall and CPU), beside a bare interpreter start; old budget 2 s;
* failover: three ``wanfed agent`` servers (mTLS, ``bootstrap_expect = 3``);
  ``kill -9`` of the leader until a write through a survivor is acknowledged
  (best of ``FAILOVER_ROUNDS`` clusters); old budget 2 s (1.5 s for the
  first write at the Raft layer).

Timings are printed, never asserted.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _common import Column, free_port, percentile, print_table

from wanfed_fsm import (
    FederationState,
    Node,
    QueryOptions,
    ReadTxn,
    RegisterRequest,
    StateStore,
    blocking_query,
)
from wanfed_proto import Alpn, ProtoError, RpcClient, client_context, dial_alpn

WAKE_ROUNDS = 300
START_ROUNDS = 3
FAILOVER_ROUNDS = 2
AGENT = [sys.executable, "-c", "import sys; from wanfed_server.cli import main; sys.exit(main())"]


# --- store wake-up ----------------------------------------------------------------------


def _states(txn: ReadTxn) -> tuple[int, list[FederationState]]:
    return txn.federation_states()


async def _parked(store: StateStore) -> None:
    for _ in range(1_000_000):
        if store.watch_count():
            return
        await asyncio.sleep(0)
    raise RuntimeError("the query never parked")


async def _wake_once(store: StateStore, index: int) -> float:
    query = asyncio.ensure_future(
        blocking_query(store, QueryOptions(min_query_index=index, max_query_time=60), _states)
    )
    await _parked(store)
    woke: list[float] = []
    query.add_done_callback(lambda _: woke.append(time.perf_counter()))
    wrote: list[float] = []

    def write() -> None:
        wrote.append(time.perf_counter())
        store.federation_state_set(index + 1, FederationState(datacenter=f"dc{index}"))

    threading.Thread(target=write).start()
    await asyncio.wait_for(query, 60)
    return woke[0] - wrote[0]


async def _handoff_once(loop: asyncio.AbstractEventLoop) -> float:
    done: asyncio.Future[float] = loop.create_future()

    def hand() -> None:
        sent = time.perf_counter()
        loop.call_soon_threadsafe(lambda: done.set_result(time.perf_counter() - sent))

    threading.Thread(target=hand).start()
    return await done


async def store_wakeup() -> tuple[list[float], list[float]]:
    loop = asyncio.get_running_loop()
    store = StateStore()
    store.federation_state_set(1, FederationState(datacenter="dc0"))
    wakes, handoffs = [], []
    for round_ in range(WAKE_ROUNDS):  # interleaved, so machine noise hits both alike
        handoffs.append(await _handoff_once(loop))
        wakes.append(await _wake_once(store, round_ + 1))
    return wakes, handoffs


# --- dev agent start --------------------------------------------------------------------


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def dev_agent_start() -> tuple[float, float]:
    """Wall and CPU seconds from exec to "agent running", stopped with SIGTERM."""
    started = time.perf_counter()
    process = subprocess.Popen(
        [*AGENT, "agent", "-dev", "-node", "dev1", "-server-port", "0", "-http-port", "0"],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    try:
        for line in process.stderr:
            if re.search(r"agent running .* rpc=\S+;", line):
                return time.perf_counter() - started, _cpu_seconds(process.pid)
        raise RuntimeError("the dev agent exited before it was running")
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def bare_interpreter_start() -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return time.perf_counter() - started


# --- failover ---------------------------------------------------------------------------


class Cluster:
    """Three ``wanfed agent`` servers from config files, mTLS on, in ``directory``."""

    NODES = ("s1", "s2", "s3")

    def __init__(self, directory: Path) -> None:
        from wanfed_agent.tls import create_ca, create_client_cert, create_server_cert

        ca = create_ca()
        (directory / "ca.pem").write_bytes(ca.cert_pem)
        client = create_client_cert(ca, "dc1")
        (directory / "client.pem").write_bytes(client.cert_pem)
        (directory / "client-key.pem").write_bytes(client.key_pem)
        self._context = client_context(
            directory / "ca.pem",
            directory / "client.pem",
            directory / "client-key.pem",
            alpn=[Alpn.RPC_MULTI],
        )
        self.rpc_ports = {node: free_port() for node in self.NODES}
        key = base64.b64encode(os.urandom(32)).decode()
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        for node in self.NODES:
            pair = create_server_cert(ca, "dc1", node=node)
            (directory / f"{node}.pem").write_bytes(pair.cert_pem)
            (directory / f"{node}-key.pem").write_bytes(pair.key_pem)
            config = {
                "node_name": node,
                "datacenter": "dc1",
                "server": True,
                "bootstrap_expect": 3,
                "data_dir": str(directory / node),
                "bind_addr": "127.0.0.1",
                "log_level": "warn",
                "ports": {
                    "server": self.rpc_ports[node],
                    "raft": free_port(),
                    "http": free_port(),
                    "serf_wan": free_port(),
                },
                "retry_join": [f"127.0.0.1:{p}" for n, p in self.rpc_ports.items() if n != node],
                "encrypt": key,
                "tls": {
                    "defaults": {
                        "ca_file": str(directory / "ca.pem"),
                        "cert_file": str(directory / f"{node}.pem"),
                        "key_file": str(directory / f"{node}-key.pem"),
                        "verify_incoming": True,
                        "verify_outgoing": True,
                    },
                    "internal_rpc": {"verify_server_hostname": True},
                },
            }
            config_file = directory / f"{node}.json"
            config_file.write_text(json.dumps(config))
            with open(directory / f"{node}.log", "ab") as log:
                self.processes[node] = subprocess.Popen(
                    [*AGENT, "agent", "-config-file", str(config_file)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )

    async def call(self, node: str, method: str, body: object, reply: type, limit: float) -> object:
        connection = await dial_alpn(
            ("127.0.0.1", self.rpc_ports[node]), "server.dc1.consul", Alpn.RPC_MULTI,
            self._context, limit,
        )  # fmt: skip
        async with RpcClient(connection) as client:
            return await client.call(method, body, type=reply, timeout=limit)

    async def leader(self, limit: float = 60.0) -> str:
        by_port = {f"127.0.0.1:{port}": node for node, port in self.rpc_ports.items()}
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            for node in self.NODES:
                if self.processes[node].poll() is not None:
                    continue
                try:
                    answer = await self.call(node, "Status.Leader", None, str, 2.0)
                except (ProtoError, OSError):
                    continue
                if answer in by_port:
                    return by_port[str(answer)]
            await asyncio.sleep(0.05)
        raise RuntimeError(f"no leader within {limit:.0f} s")

    async def write(self, node: str, name: str, limit: float = 60.0) -> None:
        request = RegisterRequest(node=Node(node=name, address="198.18.0.9"))
        deadline = time.monotonic() + limit
        while True:
            try:
                if await self.call(node, "Catalog.Register", request, bool, 1.0):
                    return
            except (ProtoError, OSError):
                if time.monotonic() > deadline:
                    raise
            await asyncio.sleep(0.01)

    def kill(self, node: str) -> None:
        self.processes[node].send_signal(signal.SIGKILL)
        self.processes[node].wait()

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def failover_once() -> float:
    with tempfile.TemporaryDirectory(prefix="wanfed-bench-failover-") as directory:
        cluster = Cluster(Path(directory))
        try:
            old = await cluster.leader()
            survivor = next(n for n in cluster.NODES if n != old)
            await cluster.write(survivor, "before")
            cluster.kill(old)
            killed_at = time.perf_counter()
            await cluster.write(survivor, "after")
            return time.perf_counter() - killed_at
        finally:
            cluster.stop()


# --- the tables -------------------------------------------------------------------------


def _ms(seconds: float) -> float:
    return seconds * 1000.0


def main() -> None:
    wakes, handoffs = asyncio.run(store_wakeup())
    print(f"store wake-up, {WAKE_ROUNDS} rounds (old unit-test budget: median < 10 ms)")
    print_table(
        [Column("what", 44, align="<"), Column("p50 ms", 9, ".3f"), Column("p99 ms", 9, ".3f")],
        [
            ["thread → loop hand-off (baseline)", _ms(percentile(handoffs, 0.5)),
             _ms(percentile(handoffs, 0.99))],
            ["write in a thread → parked query woken", _ms(percentile(wakes, 0.5)),
             _ms(percentile(wakes, 0.99))],
        ],
        indent="  ",
    )  # fmt: skip

    bare = min(bare_interpreter_start() for _ in range(START_ROUNDS))
    starts = [dev_agent_start() for _ in range(START_ROUNDS)]
    wall = min(w for w, _ in starts)
    cpu = min(c for _, c in starts)
    print(f"\ndev agent start, best of {START_ROUNDS} (old unit-test budget: 2 s)")
    print_table(
        [Column("what", 44, align="<"), Column("seconds", 9, ".2f"), Column("×baseline", 10)],
        [
            ["bare interpreter start (baseline)", bare, "1.00"],
            ["wanfed agent -dev until running: wall", wall, f"{wall / bare:.1f}"],
            ["wanfed agent -dev until running: cpu", cpu, f"{cpu / bare:.1f}"],
        ],
        indent="  ",
    )

    failovers = [asyncio.run(failover_once()) for _ in range(FAILOVER_ROUNDS)]
    print(f"\nfailover, {FAILOVER_ROUNDS} clusters (old unit-test budget: 2 s)")
    print_table(
        [Column("what", 44, align="<"), Column("seconds", 9, ".2f")],
        [
            ["kill -9 leader → write acknowledged: best", min(failovers)],
            ["kill -9 leader → write acknowledged: worst", max(failovers)],
        ],
        indent="  ",
    )


if __name__ == "__main__":
    main()
