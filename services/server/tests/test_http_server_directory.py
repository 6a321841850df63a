"""``/v1/internal/server-directory``: the servers' own list, which the gateway routes by.

Answers come from the server's LAN member list (the directory learned through
the servers' hellos and Raft membership), never from the catalog; blocking
is on the content hash.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import aiohttp
import msgspec
import pytest

from wanfed_fsm import Node, RegisterRequest, Service
from wanfed_server.gateway import DirectoryServer
from wanfed_server.http import HttpApi
from wanfed_server.http import _server_directory as server_directory
from wanfed_server.interfaces import Member, MemberStatus

if TYPE_CHECKING:
    from conftest import FakeServer

PATH = "/v1/internal/server-directory"


class Client:
    def __init__(self, base: str, session: aiohttp.ClientSession) -> None:
        self.base = base
        self.session = session

    async def get(self, **params: str) -> tuple[int, Any, str]:
        async with self.session.get(self.base + PATH, params=params) as response:
            text = await response.text()
            body = msgspec.json.decode(text) if response.status == 200 else text
            return response.status, body, response.headers.get("X-Consul-ContentHash", "")


@pytest.fixture
async def client(fake_server: FakeServer) -> AsyncIterator[Client]:
    http = HttpApi(fake_server.dispatcher, fake_server.view, fake_server.agent, "127.0.0.1", 0)
    await http.start()
    async with aiohttp.ClientSession() as session:
        yield Client(f"http://127.0.0.1:{http.port}", session)
    await http.stop()


def _member(
    name: str, addr: str, *, dc: str = "dc1", role: str = "consul", alive: bool = True
) -> Member:
    return Member(
        name=name,
        addr=addr,
        port=8300,
        tags={"dc": dc, "role": role},
        status=MemberStatus.ALIVE if alive else MemberStatus.FAILED,
    )


async def test_lists_the_servers_of_this_datacenter_with_address_and_liveness(
    client: Client, fake_server: FakeServer
) -> None:
    fake_server.view.lan = [
        _member("s2", "127.0.0.12", alive=False),
        _member("s1", "127.0.0.11"),
        _member("x1", "127.0.0.50", dc="dc2"),  # another datacenter's server
        _member("c1", "127.0.0.60", role="node"),  # not a server
    ]
    status, body, content_hash = await client.get()
    assert status == 200
    assert body == [
        {"Node": "s1", "Datacenter": "dc1", "Address": "127.0.0.11", "Port": 8300, "Alive": True},
        {"Node": "s2", "Datacenter": "dc1", "Address": "127.0.0.12", "Port": 8300, "Alive": False},
    ]
    assert content_hash
    # the gateway decodes exactly this shape
    decoded = msgspec.convert(body, list[DirectoryServer])
    assert [(d.node, d.alive) for d in decoded] == [("s1", True), ("s2", False)]


async def test_a_catalog_row_of_service_consul_is_not_in_the_directory(
    client: Client, fake_server: FakeServer
) -> None:
    await fake_server.dispatcher.rpc(
        "Catalog.Register",
        RegisterRequest(
            node=Node(node="ghost", address="198.18.66.6"),
            service=Service(id="consul", service="consul", port=8300),
        ),
        bool,
    )
    _, body, _ = await client.get()
    assert [entry["Node"] for entry in body] == ["s1"]


async def test_a_request_with_the_current_hash_blocks_until_the_directory_changes(
    client: Client, fake_server: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server_directory, "RECHECK_INTERVAL", 0.02)
    _, first, content_hash = await client.get()
    blocked = asyncio.ensure_future(client.get(hash=content_hash, wait="30s"))
    fake_server.view.lan = [*fake_server.view.lan, _member("s2", "127.0.0.12")]
    status, body, new_hash = await asyncio.wait_for(blocked, 10)
    assert status == 200
    assert [entry["Node"] for entry in body] == ["s1", "s2"]
    assert new_hash != content_hash
    assert first != body


async def test_a_blocking_request_returns_the_same_content_when_its_wait_ends(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server_directory, "RECHECK_INTERVAL", 0.02)
    _, first, content_hash = await client.get()
    status, body, again = await client.get(hash=content_hash, wait="100ms")
    assert (status, body, again) == (200, first, content_hash)


async def test_a_stale_hash_answers_at_once(client: Client) -> None:
    _, body, content_hash = await client.get(hash="not-the-current-hash", wait="10m")
    assert body
    assert content_hash != "not-the-current-hash"


@pytest.mark.parametrize("wait", ["soon", "-1s"])
async def test_an_invalid_wait_is_a_400(client: Client, wait: str) -> None:
    status, body, _ = await client.get(hash="x", wait=wait)
    assert (status, body) == (400, "Invalid wait time")
