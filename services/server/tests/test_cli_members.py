"""``wanfed members`` and ``wanfed info`` against a running HTTP API."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest

from wanfed_server.cli import main
from wanfed_server.commands._base import CommandError
from wanfed_server.commands._http_api import http_base_url
from wanfed_server.commands.info import format_info
from wanfed_server.commands.members import format_members
from wanfed_server.http import HttpApi
from wanfed_server.interfaces import Member, MemberStatus

if TYPE_CHECKING:
    from conftest import FakeServer

SERVERS = [
    Member(
        name="s2.dc2",
        addr="127.0.0.12",
        port=8302,
        tags={"role": "consul", "dc": "dc2", "build": "wanfed"},
        status=MemberStatus.FAILED,
    ),
    Member(
        name="s1.dc1",
        addr="127.0.0.1",
        port=8302,
        tags={"role": "consul", "dc": "dc1", "build": "wanfed"},
    ),
]


def test_members_table_like_consul() -> None:
    assert format_members(SERVERS) == (
        "Node    Address          Status  Type    Build   Protocol  DC\n"
        "s1.dc1  127.0.0.1:8302   alive   server  wanfed  2         dc1\n"
        "s2.dc2  127.0.0.12:8302  failed  server  wanfed  2         dc2\n"
    )


def test_members_detailed_shows_tags() -> None:
    assert format_members(SERVERS[1:], detailed=True) == (
        "Node    Address         Status  Tags\n"
        "s1.dc1  127.0.0.1:8302  alive   build=wanfed,dc=dc1,role=consul\n"
    )


def test_info_prints_sorted_sections() -> None:
    doc = {"Stats": {"raft": {"state": "Leader"}, "consul": {"server": "true", "leader": True}}}
    assert format_info(doc) == (
        "consul:\n\tleader = true\n\tserver = true\nraft:\n\tstate = Leader\n"
    )
    assert format_info({"Config": {"Datacenter": "dc1"}}) == "agent:\n\tDatacenter = dc1\n"


def test_http_address_flag_then_env_then_default() -> None:
    env = {"WANFED_HTTP_ADDR": "127.0.0.2:9500"}
    assert http_base_url("127.0.0.3:1", env) == "http://127.0.0.3:1"
    assert http_base_url(None, env) == "http://127.0.0.2:9500"
    assert http_base_url(None, {}) == "http://127.0.0.1:8500"
    assert http_base_url("http://127.0.0.4:8500/", {}) == "http://127.0.0.4:8500"
    with pytest.raises(CommandError, match="invalid HTTP address"):
        http_base_url("ftp://x", {})


@pytest.fixture
async def http_addr(fake_server: FakeServer) -> AsyncIterator[str]:
    fake_server.view.wan = SERVERS
    api = HttpApi(fake_server.dispatcher, fake_server.view, fake_server.agent, "127.0.0.1", 0)
    await api.start()
    yield api.address
    await api.stop()


async def test_members_command_lan_and_wan(
    http_addr: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await asyncio.to_thread(main, ["members", "-http-addr", http_addr]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[1].split() == ["s1", "127.0.0.1:8301", "alive", "server", "2", "dc1"]
    assert await asyncio.to_thread(main, ["members", "-wan", "-http-addr", http_addr]) == 0
    assert capsys.readouterr().out == format_members(SERVERS)


async def test_members_reads_the_address_from_the_environment(
    http_addr: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANFED_HTTP_ADDR", http_addr)
    assert await asyncio.to_thread(main, ["members", "-detailed"]) == 0
    assert "role=consul" in capsys.readouterr().out


async def test_info_command(http_addr: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert await asyncio.to_thread(main, ["info", "-http-addr", http_addr]) == 0
    out = capsys.readouterr().out
    assert out.startswith("agent:\n")
    assert "\tDatacenter = dc1\n" in out


def test_unreachable_agent_is_one_error_line(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert main(["members", "-http-addr", f"127.0.0.1:{port}"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: Error connecting to agent at http://127.0.0.1:{port}: ")
    assert err.count("\n") == 1
