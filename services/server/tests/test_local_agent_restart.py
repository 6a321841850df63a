"""A real ``wanfed agent -server`` keeps its agent services across a restart."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest

from wanfed_agent.keygen import generate_gossip_key

_HTTP_LISTENING = re.compile(rb"http api listening address=([\d.]+):(\d+)")


def _tls_config(folder: Path) -> Path:
    """A config file with the TLS material a server outside -dev needs."""
    from wanfed_agent.tls import create_ca, create_server_cert

    folder.mkdir(exist_ok=True)
    ca = create_ca()
    pair = create_server_cert(ca, "dc1", "consul", "s1")
    (folder / "ca.pem").write_bytes(ca.cert_pem)
    (folder / "cert.pem").write_bytes(pair.cert_pem)
    (folder / "key.pem").write_bytes(pair.key_pem)
    defaults = {f"{kind}_file": str(folder / f"{kind}.pem") for kind in ("ca", "cert", "key")}
    path = folder / "tls.json"
    path.write_text(json.dumps({"tls": {"defaults": defaults}}))
    return path


@asynccontextmanager
async def _server(data_dir: Path, key: str, rpc_port: int) -> AsyncIterator[str]:
    """One bootstrapped server; yields its HTTP base URL, stops it with SIGTERM.

    Raft rides the RPC port, so a restarted server keeps it (its raft address)."""
    tls = data_dir / "tls" / "tls.json"
    if not tls.exists():
        _tls_config(tls.parent)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "wanfed_server.cli",
        "agent",
        "-server",
        "-bootstrap-expect",
        "1",
        "-node",
        "s1",
        "-data-dir",
        str(data_dir),
        "-bind",
        "127.0.0.1",
        "-server-port",
        str(rpc_port),
        "-http-port",
        "0",
        "-encrypt",
        key,
        "-config-file",
        str(tls),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    log: list[bytes] = []

    async def ready() -> str:
        assert process.stderr is not None
        while line := await process.stderr.readline():
            log.append(line)
            if match := _HTTP_LISTENING.search(line):
                return f"http://{match[1].decode()}:{int(match[2])}"
        raise AssertionError(b"".join(log).decode())

    async def drain() -> None:
        assert process.stderr is not None
        while line := await process.stderr.readline():
            log.append(line)

    drainer: asyncio.Task[None] | None = None
    try:
        base = await asyncio.wait_for(ready(), 30)
        drainer = asyncio.create_task(drain())
        yield base
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 15)
            except TimeoutError:
                process.kill()
                await process.wait()
        if drainer is not None:
            await drainer
    assert process.returncode == 0, b"".join(log).decode()


async def _until(what: str, check: Callable[[], Awaitable[bool]], within: float = 30) -> None:
    """Retry ``check`` until true; the server elects itself and syncs in the background."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"not within {within:.0f} s: {what}")
        await asyncio.sleep(0.1)


@pytest.mark.slow
async def test_agent_services_survive_a_server_restart(tmp_path: Path) -> None:
    key = generate_gossip_key()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        rpc_port = int(probe.getsockname()[1])
    definition = {"Name": "web", "ID": "web-1", "Port": 80, "Check": {"TTL": "1h"}}
    async with aiohttp.ClientSession() as session:

        async def in_catalog(base: str) -> bool:
            async with session.get(base + "/v1/health/node/s1") as response:
                if response.status != 200:
                    return False
                checks = json.loads(await response.text())
            return any(check["CheckID"] == "service:web-1" for check in checks)

        async with _server(tmp_path, key, rpc_port) as base:
            async with session.put(base + "/v1/agent/service/register", json=definition) as r:
                assert r.status == 200, await r.text()
            await _until("the service reaches the catalog", lambda: in_catalog(base))

        assert (tmp_path / "local-agent" / "services.json").exists()

        async with _server(tmp_path, key, rpc_port) as base:
            async with session.get(base + "/v1/agent/services") as response:
                services = json.loads(await response.text())
            assert services["web-1"]["Port"] == 80
            async with session.get(base + "/v1/agent/checks") as response:
                assert "service:web-1" in json.loads(await response.text())
            await _until("the restored agent syncs its service", lambda: in_catalog(base))
            # the server's node is written only by the servers: the catalog API
            # cannot remove the restored agent's service behind its back
            gone = {"Node": "s1", "ServiceID": "web-1"}
            async with session.put(base + "/v1/catalog/deregister", json=gone) as r:
                assert r.status == 403, await r.text()
                assert (await r.text()).startswith("Permission denied: ")
            assert await in_catalog(base)
