"""ACLs end to end: Consul's ACL API driven by the unmodified py-consul client,
then tokens allowed and refused exactly per their rules, over HTTP and over
the RPC port; and the token resolver's rules (default token, down policy).

Semantics checked are Consul's documented ones: an exact rule beats any
prefix rule, the longest prefix wins, ``deny`` wins at equal specificity, no
matching rule falls to ``default_policy``; a token nobody knows is ``ACL not
found``; the bootstrap works once.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import consul
import pytest

from wanfed_agent.config import ACLConfig, ACLTokens
from wanfed_fsm import (
    ACLPolicy,
    ACLToken,
    ACLTokenPolicyLink,
    Node,
    RegisterRequest,
    Service,
    StateStore,
)
from wanfed_proto import Alpn, RemoteError, RpcClient, client_context, dial_alpn
from wanfed_server.http import HttpApi, start_http_api
from wanfed_server.runtime import AclNotFoundError, PermissionDeniedError, Server, TokenResolver

if TYPE_CHECKING:
    from .conftest import RuntimePki  # type: ignore[import-not-found]

ANONYMOUS = "00000000-0000-0000-0000-000000000002"
RULES = {
    "node_prefix": {"": {"policy": "write"}},
    "service_prefix": {
        "": {"policy": "read"},
        "web": {"policy": "write"},
        "web-secret": {"policy": "deny"},
    },
    "service": {"web-secret-ok": {"policy": "write"}},
}


class Api:
    def __init__(self, server: Server, http: HttpApi) -> None:
        self.server = server
        self.port = http.port

    def client(self, token: str | None = None) -> consul.Consul:
        return consul.Consul(host="127.0.0.1", port=self.port, token=token)

    def request(
        self, method: str, path: str, body: object = None, token: str = ""
    ) -> tuple[int, str, dict[str, str]]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", data=data, method=method
        )
        if token:
            request.add_header("X-Consul-Token", token)
        try:
            with urllib.request.urlopen(request, timeout=10) as reply:
                return reply.status, reply.read().decode(), dict(reply.headers)
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode(), dict(error.headers)


@pytest.fixture
async def api(start_tls_server: Callable[..., Awaitable[Server]]) -> AsyncIterator[Api]:
    server = await start_tls_server(
        client_addr="127.0.0.1",
        ports={"http": 0},
        acl={"enabled": True, "default_policy": "deny"},
    )
    await server.wait_ready()
    http = await start_http_api(server)
    try:
        leader = server.acl_leader
        assert leader is not None
        await asyncio.wait_for(leader.initialized.wait(), 30)
        yield Api(server, http)
    finally:
        await http.stop()


def _register(name: str, node: str = "n1") -> dict[str, Any]:
    return {"Node": node, "Address": "10.0.0.1", "Service": {"Service": name}}


def _py_consul_scenario(api: Api) -> dict[str, str]:
    anonymous = api.client()
    management = anonymous.acl.bootstrap()
    root = management["SecretID"]
    with pytest.raises(consul.ACLPermissionDenied, match=r"ACL bootstrap no longer allowed"):
        anonymous.acl.bootstrap()
    admin = api.client(root)
    assert admin.acl.token.read_self()["AccessorID"] == management["AccessorID"]
    policy = admin.acl.policy.create("web-rules", rules=RULES, description="web team")
    assert admin.acl.policy.read(policy["ID"])["Name"] == "web-rules"
    assert "web-rules" in {p["Name"] for p in admin.acl.policy.list()}
    token = admin.acl.token.create(description="web", policies_id=[policy["ID"]])
    assert token["Policies"] == [{"ID": policy["ID"], "Name": "web-rules"}]
    assert token["AccessorID"] in {t["AccessorID"] for t in admin.acl.token.list()}
    clone = admin.acl.token.clone(token["AccessorID"], description="web clone")
    assert clone["Policies"] == token["Policies"]
    assert admin.acl.token.delete(clone["AccessorID"])
    with pytest.raises(consul.ACLPermissionDenied, match="ACL not found"):
        admin.acl.token.read(clone["AccessorID"])
    # the management token registers what the web token may not see
    assert admin.catalog.register("n1", "10.0.0.1", service={"service": "web-secret-db"})
    web = api.client(token["SecretID"])
    assert web.acl.token.read_self()["AccessorID"] == token["AccessorID"]
    with pytest.raises(consul.ACLPermissionDenied, match="Permission denied"):
        web.acl.token.list()
    return {"root": root, "web": token["SecretID"], "web_accessor": token["AccessorID"]}


async def test_py_consul_acl_api_and_rule_semantics(api: Api) -> None:
    tokens = await asyncio.to_thread(_py_consul_scenario, api)
    web = tokens["web"]

    def scenario() -> None:
        allowed = ["web-api", "web-secret-ok"]  # prefix "web" write; exact beats deny prefix
        denied = ["web-secret-db", "api"]  # longer prefix deny; prefix "" is read only
        for name in allowed:
            status, text, _ = api.request("PUT", "/v1/catalog/register", _register(name), web)
            assert (status, text) == (200, "true"), name
        for name in denied:
            status, text, _ = api.request("PUT", "/v1/catalog/register", _register(name), web)
            assert status == 403, name
            assert text == (
                f"Permission denied: token with AccessorID '{tokens['web_accessor']}' "
                f"lacks permission 'service:write' on \"{name}\""
            )
        status, text, headers = api.request("GET", "/v1/catalog/services", token=web)
        assert status == 200
        assert set(json.loads(text)) == {"consul", "web-api", "web-secret-ok"}
        assert headers.get("X-Consul-Results-Filtered-By-ACLs") == "true"
        status, text, headers = api.request("GET", "/v1/catalog/services", token=tokens["root"])
        assert "web-secret-db" in json.loads(text)
        assert "X-Consul-Results-Filtered-By-ACLs" not in headers
        # no operator rule: default deny
        status, text, _ = api.request("GET", "/v1/internal/federation-states", token=web)
        assert status == 403
        assert "lacks permission 'operator:read'" in text

    await asyncio.to_thread(scenario)


async def test_refusals_over_http(api: Api) -> None:
    def scenario() -> None:
        status, text, _ = api.request("PUT", "/v1/catalog/register", _register("web"))
        assert status == 403
        assert text.startswith(f"Permission denied: token with AccessorID '{ANONYMOUS}'")
        status, text, _ = api.request("PUT", "/v1/catalog/register", _register("web"), "bogus")
        assert (status, text) == (403, "ACL not found")
        status, text, _ = api.request("GET", "/v1/catalog/nodes", token="bogus")
        assert (status, text) == (403, "ACL not found")
        status, text, _ = api.request("GET", "/v1/status/leader", token="bogus")
        assert status == 200  # status is open, whatever the token

    await asyncio.to_thread(scenario)


def _client_context(pki: RuntimePki) -> ssl.SSLContext:
    files = pki.certs["client"]
    return client_context(pki.ca, files.cert, files.key, alpn=[Alpn.RPC_MULTI])


async def test_refusals_over_rpc(api: Api, runtime_pki: RuntimePki) -> None:
    tokens = await asyncio.to_thread(_py_consul_scenario, api)
    connection = await dial_alpn(
        api.server.rpc_bind_address,
        "server.dc1.consul",
        Alpn.RPC_MULTI,
        _client_context(runtime_pki),
    )

    def register(name: str, token: str) -> RegisterRequest:
        node = Node(node="n2", address="10.0.0.2")
        return RegisterRequest(node=node, service=Service(service=name), token=token)

    async with RpcClient(connection) as client:
        with pytest.raises(
            RemoteError, match=rf"^Permission denied: token with AccessorID '{ANONYMOUS}'"
        ):
            await client.call("Catalog.Register", register("web", ""), type=bool, timeout=10)
        with pytest.raises(RemoteError, match=r"^ACL not found$"):
            await client.call("Catalog.Register", register("web", "bogus"), type=bool, timeout=10)
        with pytest.raises(RemoteError, match=r"lacks permission 'service:write' on \"api\""):
            await client.call(
                "Catalog.Register", register("api", tokens["web"]), type=bool, timeout=10
            )
        assert await client.call(
            "Catalog.Register", register("web-x", tokens["web"]), type=bool, timeout=10
        )


async def test_own_writes_use_the_agent_token(
    start_dev_server: Callable[..., Awaitable[Server]],
) -> None:
    """The server's own calls present ``acl.tokens.agent``; without one they are anonymous."""
    acl = {"enabled": True, "default_policy": "deny"}
    bare = await start_dev_server(node="bare", acl=acl)
    configured = await start_dev_server(
        node="s1",
        acl={**acl, "tokens": {"initial_management": "root-secret", "agent": "root-secret"}},
    )
    for server in (bare, configured):
        await server.wait_ready()
        assert server.acl_leader is not None
        await asyncio.wait_for(server.acl_leader.initialized.wait(), 30)
    request = RegisterRequest(node=Node(node="n3", address="10.0.0.3"))
    with pytest.raises(PermissionDeniedError):
        await bare.rpc("Catalog.Register", request, bool)
    assert await configured.rpc("Catalog.Register", request, bool)


# --- the resolver's rules, over a store written directly ------------------------------


def _store_with_token(secret: str, rules: str) -> StateStore:
    store = StateStore()
    store.acl_initialize(1, datetime.now(UTC))
    store.acl_policy_set(2, [ACLPolicy(id="p1", name="p1", rules=rules)])
    link = ACLTokenPolicyLink(id="p1")
    store.acl_token_set(3, [ACLToken(accessor_id="a1", secret_id=secret, policies=[link])])
    return store


def _resolver(store: StateStore, **acl: Any) -> TokenResolver:
    tokens = acl.pop("tokens", ACLTokens())
    config = ACLConfig(enabled=True, default_policy="deny", tokens=tokens, **acl)
    return TokenResolver(store, config, "dc1")


def test_resolver_default_token_unknown_secret_and_acls_off() -> None:
    store = _store_with_token("s1", 'service "web" { policy = "write" }')
    assert not _resolver(store).resolve("").authorizer.service_read("web")
    defaulted = _resolver(store, tokens=ACLTokens(default="s1")).resolve("")
    assert defaulted.accessor_id == "a1"
    assert defaulted.authorizer.service_write("web")
    with pytest.raises(AclNotFoundError, match=r"^ACL not found$"):
        _resolver(store).resolve("s2")
    off = TokenResolver(store, ACLConfig(enabled=False), "dc1")
    assert off.resolve("whatever").is_management


@pytest.mark.parametrize(
    ("down_policy", "web_write", "api_read"),
    [
        ("extend-cache", True, False),
        ("async-cache", True, False),
        ("deny", False, False),
        ("allow", True, True),
    ],
)
def test_resolver_down_policy_when_replicated_data_is_stale(
    down_policy: str, web_write: bool, api_read: bool
) -> None:
    resolver = _resolver(
        _store_with_token("s1", 'service "web" { policy = "write" }'), down_policy=down_policy
    )
    resolver.set_stale(True)
    subject = resolver.resolve("s1")
    assert subject.authorizer.service_write("web") is web_write
    assert subject.authorizer.service_read("api") is api_read
    resolver.set_stale(False)
    assert resolver.resolve("s1").authorizer.service_write("web")
