"""The HTTP half of ``tools/bench/server.py``: the Consul-compatible API of one server.

* ``GET /v1/health/service/web`` requests/s (10 instances) beside a trivial
  aiohttp handler in its own process on the same loop type (the cost of
  aiohttp + HTTP/1.1 itself), rounds interleaved;
* wake-up latency p50/p99 of 1,000 concurrent blocking HTTP queries
  (``?index=&wait=``, one connection each) after one write through
  ``PUT /v1/catalog/register``, measured from the moment the write was sent,
  beside that write's own latency.

Each function takes the running server (anything with ``http_address``).
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Protocol

import aiohttp
from _common import free_port, percentile, print_against_baseline

IN_FLIGHT = 64
REQUESTS = 5_000
ROUNDS = 3
BLOCKING_QUERIES = 1000

_BASELINE_SERVER = """
import sys
from aiohttp import web

async def handle(request):
    return web.json_response([])

app = web.Application()
app.router.add_get("/v1/health/service/web", handle)
try:
    import uvloop
    loop_factory = uvloop.new_event_loop
except ImportError:
    loop_factory = None
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None,
            loop=loop_factory() if loop_factory else None)
"""


class HttpServer(Protocol):
    @property
    def http_address(self) -> tuple[str, int]: ...


def _registration(number: int) -> dict[str, object]:
    node = f"http-web-{number}"
    return {
        "Node": node,
        "Address": f"198.18.2.{number % 250 + 1}",
        "Service": {"ID": "web", "Service": "web", "Port": 8080, "Tags": ["v1"]},
        "Check": {"CheckID": "service:web", "ServiceID": "web", "Status": "passing"},
    }


async def _wait_for_http(session: aiohttp.ClientSession, url: str, within: float = 30) -> None:
    deadline = time.monotonic() + within
    while True:
        try:
            async with session.get(url) as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer 200 within {within}s")
        await asyncio.sleep(0.1)


async def _requests_per_second(session: aiohttp.ClientSession, url: str) -> float:
    remaining = REQUESTS

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            async with session.get(url) as response:
                await response.read()
                if response.status != 200:
                    raise RuntimeError(f"{url} answered {response.status}")

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))
    return REQUESTS / (time.perf_counter() - started)


async def bench_http_health_service(server: HttpServer) -> None:
    """``GET /v1/health/service/web`` req/s beside a trivial aiohttp handler."""
    host, port = server.http_address
    base = f"http://{host}:{port}"
    baseline_port = free_port()
    baseline = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _BASELINE_SERVER, str(baseline_port)
    )
    connector = aiohttp.TCPConnector(limit=IN_FLIGHT)
    try:
        async with aiohttp.ClientSession(connector=connector) as session:
            for number in range(10):
                async with session.put(base + "/v1/catalog/register", json=_registration(number)):
                    pass
            baseline_url = f"http://127.0.0.1:{baseline_port}/v1/health/service/web"
            await _wait_for_http(session, baseline_url)
            api_url = base + "/v1/health/service/web?stale"
            ours: list[float] = []
            trivial: list[float] = []
            for _ in range(ROUNDS):
                trivial.append(await _requests_per_second(session, baseline_url))
                ours.append(await _requests_per_second(session, api_url))
    finally:
        baseline.terminate()
        await asyncio.wait_for(baseline.wait(), 10)
    best, best_trivial = max(ours), max(trivial)
    print(f"\nHTTP/1.1 keep-alive, {IN_FLIGHT} requests in flight, best of {ROUNDS}:")
    print_against_baseline(
        "req/s",
        [
            ("trivial aiohttp handler (baseline)", best_trivial),
            ("GET /v1/health/service/web (10 inst.)", best),
        ],
    )


async def bench_http_blocking_wakeup(server: HttpServer) -> None:
    """Wake-up latency of 1,000 concurrent blocking HTTP queries after one write."""
    host, port = server.http_address
    base = f"http://{host}:{port}"
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        async with session.get(base + "/v1/health/service/web") as response:
            index = int(response.headers["X-Consul-Index"])
        woken: list[float] = []

        async def blocking() -> None:
            url = f"{base}/v1/health/service/web?index={index}&wait=60s"
            async with session.get(url) as response:
                await response.read()
                if int(response.headers["X-Consul-Index"]) <= index:
                    raise RuntimeError("a blocking query returned without a change")
            woken.append(time.perf_counter())

        queries = [asyncio.ensure_future(blocking()) for _ in range(BLOCKING_QUERIES)]
        await asyncio.sleep(2.0)  # let every query connect and park on the server
        write_started = time.perf_counter()
        async with session.put(base + "/v1/catalog/register", json=_registration(700)) as response:
            await response.read()
        acknowledged = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*queries), 60)
    latencies = [(t - write_started) * 1000 for t in woken]
    print_wakeup(
        f"{BLOCKING_QUERIES} blocking GET /v1/health/service/web (a connection each), one write:",
        "the PUT, sent to acknowledged (baseline)",
        (acknowledged - write_started) * 1000,
        latencies,
    )


def print_wakeup(title: str, write_label: str, write_ms: float, latencies: list[float]) -> None:
    """Blocking-query wake-ups beside the write that caused them (RPC and HTTP alike)."""
    print(f"\n{title}")
    print_against_baseline(
        "ms",
        [
            (write_label, write_ms),
            ("query wake-up from the write sent, p50", percentile(latencies, 0.5)),
            ("query wake-up from the write sent, p99", percentile(latencies, 0.99)),
        ],
        spec=".2f",
        ratio_title="×write",
        label_width=44,
    )
