"""``wanfed acl ...`` against a running server with ACLs on and default deny:
bootstrap, a policy and a token made with the CLI, the token's rights
checked through the API, refusals shown as one line, and the token taken
from ``-token``, ``WANFED_HTTP_TOKEN`` or ``CONSUL_HTTP_TOKEN``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from wanfed_server.cli import main
from wanfed_server.commands._http_api import http_token
from wanfed_server.http import start_http_api
from wanfed_server.runtime import Server


@pytest.fixture
async def address(start_dev_server: Callable[..., Awaitable[Server]]) -> AsyncIterator[str]:
    server = await start_dev_server(
        client_addr="127.0.0.1",
        ports={"server": 0, "http": 0},
        acl={"enabled": True, "default_policy": "deny"},
    )
    await server.wait_ready()
    http = await start_http_api(server)
    try:
        assert server.acl_leader is not None
        await asyncio.wait_for(server.acl_leader.initialized.wait(), 30)
        yield f"127.0.0.1:{http.port}"
    finally:
        await http.stop()


async def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = await asyncio.to_thread(main, list(argv))
    out, err = capsys.readouterr()
    return code, out, err


async def test_bootstrap_policy_token_round_trip(
    address: str, capsys: pytest.CaptureFixture[str]
) -> None:
    http = ("-http-addr", address)
    code, out, _ = await _run(capsys, "acl", "bootstrap", *http, "-format", "json")
    assert code == 0
    root = json.loads(out)["SecretID"]
    code, _, err = await _run(capsys, "acl", "bootstrap", *http)
    assert code == 1
    assert "403 Permission denied: ACL bootstrap no longer allowed (reset index:" in err
    admin = (*http, "-token", root)
    rules = 'node_prefix "" { policy = "read" }'
    code, out, _ = await _run(
        capsys, "acl", "policy", "create", *admin, "-name", "nodes", "-rules", rules
    )
    assert code == 0
    assert "Name:         nodes" in out
    code, out, _ = await _run(
        capsys, "acl", "token", "create", *admin, "-policy-name", "nodes", "-format", "json"
    )
    assert code == 0
    token = json.loads(out)
    assert [p["Name"] for p in token["Policies"]] == ["nodes"]
    code, out, _ = await _run(
        capsys, "acl", "token", "read", *http, "-token", token["SecretID"], "-self"
    )
    assert code == 0
    assert f"AccessorID:       {token['AccessorID']}" in out
    code, out, _ = await _run(capsys, "acl", "token", "list", *admin)
    assert token["AccessorID"] in out
    code, out, _ = await _run(capsys, "acl", "policy", "list", *admin)
    assert "nodes" in out
    assert "global-management" in out
    # the new token may read nodes but not ACLs
    code, _, err = await _run(capsys, "acl", "policy", "list", *http, "-token", token["SecretID"])
    assert code == 1
    assert "lacks permission 'acl:read'" in err
    code, out, _ = await _run(capsys, "acl", "token", "delete", *admin, "-id", token["AccessorID"])
    assert code == 0
    code, _, err = await _run(capsys, "acl", "token", "read", *admin, "-id", token["AccessorID"])
    assert code == 1
    assert "403 ACL not found" in err
    code, out, _ = await _run(capsys, "acl", "policy", "delete", *admin, "-name", "nodes")
    assert code == 0
    assert "deleted" in out


async def test_anonymous_cli_is_refused(address: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = await _run(capsys, "acl", "token", "list", "-http-addr", address)
    assert code == 1
    assert (
        "403 Permission denied: token with AccessorID '00000000-0000-0000-0000-000000000002'" in err
    )
    code, _, err = await _run(capsys, "members", "-http-addr", address, "-token", "bogus")
    assert code == 1
    assert "403 ACL not found" in err


def test_token_precedence() -> None:
    both = {"WANFED_HTTP_TOKEN": "w", "CONSUL_HTTP_TOKEN": "c"}
    assert http_token("flag", both) == "flag"
    assert http_token(None, both) == "w"
    assert http_token(None, {"CONSUL_HTTP_TOKEN": "c"}) == "c"
    assert http_token(None, {}) == ""
