"""``wanfed agent`` as an operator runs it: fast dev start, clean stop, refusal of bad config."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from pathlib import Path

from wanfed_proto import RpcClient, RpcType, dial_plain
from wanfed_server.cli import main

_AGENT = [sys.executable, "-c", "import sys; from wanfed_server.cli import main; sys.exit(main())"]


async def _start_dev_agent() -> tuple[asyncio.subprocess.Process, str]:
    """Start ``wanfed agent -dev``; return it once it says it is running, with its RPC
    address. (How long a start takes is measured by ``nox -s bench -- liveness``.)"""
    process = await asyncio.create_subprocess_exec(
        *_AGENT,
        "agent",
        "-dev",
        "-node",
        "dev1",
        "-server-port",
        "0",
        "-http-port",
        "0",
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    try:
        async with asyncio.timeout(60):
            while True:
                line = (await process.stderr.readline()).decode()
                assert line, "the agent exited before it was running"
                match = re.search(r"agent running .* rpc=(\S+);", line)
                if match:
                    return process, match.group(1)
    except BaseException:
        process.kill()
        await process.wait()
        raise


async def _stop(process: asyncio.subprocess.Process) -> int:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
    try:
        return await asyncio.wait_for(process.wait(), 10)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_dev_agent_starts_answers_and_stops_on_sigterm() -> None:
    process, address = await _start_dev_agent()
    try:
        async with RpcClient(await dial_plain(address, RpcType.MULTIPLEX_V2)) as client:
            assert await client.call("Status.Leader", None, type=str, timeout=5) == address
    finally:
        assert await _stop(process) == 0, "SIGTERM is a clean stop"


def test_an_invalid_config_starts_nothing_and_exits_1_with_one_message(
    tmp_path: Path, capsys: object
) -> None:
    config = tmp_path / "bad.json"
    config.write_text('{"server": true, "bootstrap_expect": "three"}')
    assert main(["agent", "-config-file", str(config), "-data-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err  # type: ignore[attr-defined]
    assert err.startswith("error: ")
    assert "bootstrap_expect" in err
    assert str(config) in err
    assert err.count("\n") == 1


def test_a_client_agent_is_refused_with_one_message(tmp_path: Path, capsys: object) -> None:
    assert main(["agent", "-data-dir", str(tmp_path), "-node", "c1"]) == 1
    err = capsys.readouterr().err  # type: ignore[attr-defined]
    assert err == "error: wanfed agent: only server agents are supported; pass -server or -dev\n"


def test_a_server_without_tls_refuses_to_start(tmp_path: Path, capsys: object) -> None:
    # no TLS material and no -dev: servers could not authenticate each other
    code = main(
        [
            "agent",
            "-server",
            "-bootstrap-expect",
            "1",
            "-node",
            "s1",
            "-data-dir",
            str(tmp_path),
            "-bind",
            "127.0.0.1",
            "-server-port",
            "0",
            "-http-port",
            "0",
        ]
    )
    assert code == 1
    err = capsys.readouterr().err  # type: ignore[attr-defined]
    assert "a server outside -dev requires TLS" in err
    assert "wanfed tls ca create" in err
    assert "wanfed tls cert create -server -dc dc1 -node s1" in err
