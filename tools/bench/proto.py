"""Benchmark: multiplexed RPC round trips over one mutual-TLS connection.

For each event loop (uvloop, asyncio) a server process serves two ALPN ids on
one RPC port: ``wanfed/rpc-multi`` runs ``serve_rpc`` with an echo handler,
and ``wanfed/rpc-single`` is the baseline, a bare length-prefixed frame echo
with no envelope, no dispatch and no task per message. This process dials
each over TLS and keeps the same number of callers busy on one connection.
The ratio RPC / raw echo is the cost of the RPC layer; the target is >= 0.5.

Run: ``nox -s bench -- proto`` or ``python tools/bench/proto.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple, cast

import msgspec
from _common import Column, Pki, Table, loop_factories, ratio, write_pki

from wanfed_proto import (
    Alpn,
    Connection,
    FrameDecoder,
    RpcCall,
    RpcClient,
    client_context,
    dial_alpn,
    encode_frame,
    serve_rpc,
    serve_rpc_port,
    server_context,
)

TARGET_RATIO = 0.5
SNI = "server.dc1.consul"
PAYLOAD = {"Datacenter": "dc2", "MinQueryIndex": 1234, "Token": "0" * 36, "AllowStale": True}


# --- server process ---------------------------------------------------------


class _FrameEcho(asyncio.Protocol):
    """The baseline: frames back as they come, nothing else."""

    def __init__(self) -> None:
        self.decoder = FrameDecoder()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.decoder.feed(data)
        out = b"".join(encode_frame(frame) for frame in self.decoder.frames())
        if out:
            self.transport.write(out)


async def _echo(call: RpcCall) -> object:
    return call.body


async def _serve_echo(connection: Connection) -> None:
    connection.attach(_FrameEcho())
    await connection.wait_closed()


async def _serve_rpc(connection: Connection) -> None:
    await serve_rpc(connection, {"Bench.Echo": _echo})


async def serve(pki: Path) -> None:
    port = await serve_rpc_port(
        "127.0.0.1",
        0,
        plain_handlers={},
        alpn_handlers={Alpn.RPC_MULTI: _serve_rpc, Alpn.RPC: _serve_echo},
        ssl_context=server_context(*Pki.at(pki).server),
    )
    print(port.address[1], flush=True)
    await asyncio.to_thread(sys.stdin.read)  # run until the parent closes stdin
    await port.close()


# --- client side --------------------------------------------------------------


class _EchoClient(asyncio.Protocol):
    """Matches echoed frames to waiting callers in order (echo keeps order).

    Frames written in one loop iteration go out in one write, as the RPC
    client does, so the baseline is the best a bare framing loop can do.
    """

    def __init__(self) -> None:
        self.decoder = FrameDecoder()
        self.waiting: collections.deque[asyncio.Future[bytes]] = collections.deque()
        self.transport: asyncio.Transport | None = None
        self.outgoing: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.decoder.feed(data)
        for frame in self.decoder.frames():
            self.waiting.popleft().set_result(frame)

    async def round_trip(self, frame: bytes) -> bytes:
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bytes] = loop.create_future()
        self.waiting.append(future)
        if not self.outgoing:
            loop.call_soon(self._flush)
        self.outgoing.append(frame)
        return await future

    def _flush(self) -> None:
        assert self.transport is not None
        self.transport.write(b"".join(self.outgoing))
        self.outgoing.clear()


class Sample(NamedTuple):
    """One measurement: wall-clock rate, and calls per CPU-second of both processes."""

    per_second: float
    per_cpu_second: float


def _cpu_seconds(server_pid: int) -> float:
    """CPU used so far by this process and the server process together."""
    fields = Path(f"/proc/{server_pid}/stat").read_text().rsplit(")", 1)[1].split()
    server = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return time.process_time() + server


async def _drive(
    one_call: Callable[[], Any],
    concurrency: int,
    duration: float,
    warmup: float,
    server_pid: int,
) -> Sample:
    """``concurrency`` callers loop over ``one_call``; counted after a warm-up."""
    done = 0
    counting = False
    stop_at = time.monotonic() + warmup + duration

    async def caller() -> None:
        nonlocal done
        while time.monotonic() < stop_at:
            await one_call()
            if counting:
                done += 1

    workers = [asyncio.ensure_future(caller()) for _ in range(concurrency)]
    await asyncio.sleep(warmup)
    counting = True
    started, cpu_started = time.monotonic(), _cpu_seconds(server_pid)
    await asyncio.gather(*workers)
    wall, cpu = time.monotonic() - started, _cpu_seconds(server_pid) - cpu_started
    return Sample(done / wall, done / cpu if cpu > 0 else 0.0)


def _best(samples: list[Sample]) -> Sample:
    return Sample(max(s.per_second for s in samples), max(s.per_cpu_second for s in samples))


async def measure(
    port: int, server_pid: int, pki: Path, concurrency: int, duration: float, rounds: int
) -> tuple[Sample, Sample]:
    """Best of ``rounds`` interleaved runs of each, to damp noise from other load."""
    ca, cert, key = Pki.at(pki).server
    address = ("127.0.0.1", port)

    raw_context = client_context(ca, cert, key, [Alpn.RPC])
    raw_connection = await dial_alpn(address, SNI, Alpn.RPC, raw_context)
    echo = _EchoClient()
    raw_connection.attach(echo)
    # The raw frame is as large as the RPC request envelope.
    frame = encode_frame(
        msgspec.msgpack.encode({"Seq": 1, "Method": "Bench.Echo", "Body": PAYLOAD})
    )

    rpc_context = client_context(ca, cert, key, [Alpn.RPC_MULTI])
    client = RpcClient(await dial_alpn(address, SNI, Alpn.RPC_MULTI, rpc_context))
    body = msgspec.Raw(msgspec.msgpack.encode(PAYLOAD))

    raw: list[Sample] = []
    rpc: list[Sample] = []
    for _ in range(rounds):
        raw.append(
            await _drive(lambda: echo.round_trip(frame), concurrency, duration, 0.3, server_pid)
        )
        rpc.append(
            await _drive(
                lambda: client.call("Bench.Echo", body), concurrency, duration, 0.3, server_pid
            )
        )
    raw_connection.close()
    await client.close()
    return _best(raw), _best(rpc)


def run_one(
    loop_name: str, pki: Path, concurrency: int, duration: float, rounds: int
) -> tuple[Sample, Sample]:
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", loop_name, "--pki", str(pki)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        with asyncio.Runner(loop_factory=loop_factories()[loop_name]) as runner:
            return runner.run(measure(port, server.pid, pki, concurrency, duration, rounds))
    finally:
        if server.stdin is not None:
            server.stdin.close()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--duration", type=float, default=1.5, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved runs; best counts")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--pki", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        with asyncio.Runner(loop_factory=loop_factories()[args.serve]) as runner:
            runner.run(serve(Path(args.pki)))
        return 0

    with tempfile.TemporaryDirectory(prefix="wanfed-bench-") as tmp:
        pki = Path(tmp)
        write_pki(pki, "dc1")  # server.dc1.consul, presented by both ends
        print(
            f"proto: echo round trips/s over one mutual-TLS connection, "
            f"{args.concurrency} concurrent callers, best of {args.rounds} x {args.duration:g}s, "
            "server in a separate process, same loop on both ends"
        )
        table = Table(
            [
                Column("loop", 8, align="<"),
                Column("raw echo/s", 11, ",.0f"),
                Column("RPC calls/s", 12, ",.0f"),
                Column("RPC/raw", 8),
                Column("raw/CPU-s", 12, ",.0f"),
                Column("RPC/CPU-s", 10, ",.0f"),
                Column("RPC/raw", 8),
            ]
        )
        table.print_header()
        for loop_name in loop_factories():
            raw, rpc = run_one(loop_name, pki, args.concurrency, args.duration, args.rounds)
            table.print_row(
                [
                    loop_name,
                    raw.per_second,
                    rpc.per_second,
                    ratio(rpc.per_second, raw.per_second),
                    raw.per_cpu_second,
                    rpc.per_cpu_second,
                    ratio(rpc.per_cpu_second, raw.per_cpu_second),
                ]
            )
        print(
            f"target: RPC/raw >= {TARGET_RATIO}. Wall-clock rates swing with other load on the "
            "machine; the CPU-second columns (client + server CPU) are the steadier comparison."
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
