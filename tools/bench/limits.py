"""Benchmark: ``/v1/status/leader`` latency while 2,000 hostile connections are held.

Run ``nox -s bench -- limits`` or ``python tools/bench/limits.py``.

One ``wanfed agent -dev`` process is measured from this one, in three phases
of the same run: nothing held (the baseline), 2,000 idle RPC connections
held (twenty loopback source addresses, 100 each: what the default
``limits.rpc_max_conns_per_client`` admits), then 2,000 slowloris HTTP
connections held instead (ten addresses, 200 each, every one with a request
whose headers never end). Each phase prints p50/p99 of ``GET
/v1/status/leader``, on a fresh connection per request (the accept path an
attack competes with) and on one keep-alive connection, beside the baseline;
the goal is an answer within 100 ms while the connections are held.
Timings are printed, never asserted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from _common import Column, free_port, percentile, print_table, ratio, run

HELD = 2000
REQUESTS = 300
GOAL = 0.100
"""Seconds: the p99 an operator should see while an attack is held."""
RPC_SOURCES = [f"127.0.1.{n}" for n in range(1, 21)]
HTTP_SOURCES = [f"127.0.2.{n}" for n in range(1, 11)]
MULTIPLEX_V2 = b"\x04"
"""The type byte of a multiplexed RPC connection: admitted, then silent."""
SLOW_HEADERS = b"GET /v1/status/leader HTTP/1.1\r\nHost: bench\r\nUser-Agent: slow"

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def start_agent(directory: Path) -> tuple[subprocess.Popen[bytes], int, int]:
    rpc_port, http_port = free_port(), free_port()
    config = {
        "node_name": "bench",
        "bind_addr": "127.0.0.1",
        "log_level": "warn",
        "ports": {"server": rpc_port, "http": http_port, "serf_wan": free_port()},
        # Held for the whole phase, not cut by the header deadline meanwhile.
        "limits": {"http_read_header_timeout": "10m"},
    }
    config_file = directory / "limits.json"
    config_file.write_text(json.dumps(config))
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from wanfed_server.cli import main; sys.exit(main())",
            "agent",
            "-dev",
            "-config-file",
            str(config_file),
        ]
    )
    return process, rpc_port, http_port


async def wait_for_leader(base: str, limit: float = 30.0) -> None:
    deadline = time.monotonic() + limit
    async with aiohttp.ClientSession() as session:
        while True:
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with session.get(f"{base}/v1/status/leader") as response:
                    if response.status == 200 and (await response.json()):
                        return
            if time.monotonic() > deadline:
                raise RuntimeError("the agent did not elect itself within 30 s")
            await asyncio.sleep(0.1)


async def hold(port: int, sources: list[str], first: bytes) -> list[Streams]:
    per_source = HELD // len(sources)

    async def one(source: str) -> Streams:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
        writer.write(first)
        await writer.drain()
        return reader, writer

    held: list[Streams] = []
    for source in sources:
        held += await asyncio.gather(*(one(source) for _ in range(per_source)))
    return held


async def release(held: list[Streams]) -> None:
    for _, writer in held:
        writer.close()
    for _, writer in held:
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def latencies(base: str, *, fresh: bool) -> list[float]:
    """Seconds per sequential ``GET /v1/status/leader``."""
    url = f"{base}/v1/status/leader"
    timeout = aiohttp.ClientTimeout(total=30)
    samples: list[float] = []
    connector = aiohttp.TCPConnector(force_close=fresh, limit=1)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        for _ in range(REQUESTS):
            started = time.perf_counter()
            async with session.get(url) as response:
                await response.read()
                if response.status != 200:
                    raise RuntimeError(f"leader answered {response.status}")
            samples.append(time.perf_counter() - started)
    return samples


async def main() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # 2,000 sockets held here
    with tempfile.TemporaryDirectory(prefix="wanfed-bench-limits-") as tmp:
        process, rpc_port, http_port = start_agent(Path(tmp))
        base = f"http://127.0.0.1:{http_port}"
        try:
            await wait_for_leader(base)
            rows: list[list[object]] = []
            baseline: dict[bool, float] = {}

            async def phase(label: str) -> None:
                for fresh in (True, False):
                    samples = await latencies(base, fresh=fresh)
                    p50, p99 = percentile(samples, 0.5), percentile(samples, 0.99)
                    baseline.setdefault(fresh, p99)
                    rows.append(
                        [
                            label,
                            "new" if fresh else "keep-alive",
                            p50 * 1000,
                            p99 * 1000,
                            ratio(p99, baseline[fresh]),
                            "yes" if p99 < GOAL else "NO",
                        ]
                    )

            await phase("nothing held (baseline)")
            held = await hold(rpc_port, RPC_SOURCES, MULTIPLEX_V2)
            await phase(f"{len(held):,} idle RPC connections")
            await release(held)
            held = await hold(http_port, HTTP_SOURCES, SLOW_HEADERS)
            await phase(f"{len(held):,} slowloris HTTP connections")
            await release(held)
        finally:
            process.terminate()
            process.wait(30)
    print(f"GET /v1/status/leader, {REQUESTS} sequential requests per row, one -dev agent")
    print_table(
        [
            Column("held against the agent", 34, align="<"),
            Column("connection", 11, align="<"),
            Column("p50 ms", 8, ".2f"),
            Column("p99 ms", 8, ".2f"),
            Column("p99×base", 9),
            Column("p99<100ms", 10),
        ],
        rows,
        indent="  ",
    )


if __name__ == "__main__":
    run(main())
