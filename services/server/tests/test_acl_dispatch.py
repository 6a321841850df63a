"""Where a request's token is checked: on the server that answers it.

A follower forwards a request to the leader with its token unchanged and
does not judge it (its replicated tables may be behind); the leader resolves
it and decides. This server's own requests present its configured tokens
(``acl.tokens.agent``; ``acl.tokens.replication`` for federation states).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, cast

import pytest

from wanfed_agent.config import ACLConfig
from wanfed_agent.rpc import RpcPool
from wanfed_fsm import (
    ACLPolicy,
    ACLToken,
    ACLTokenPolicyLink,
    DCSpecificRequest,
    IndexedNodes,
    StateStore,
)
from wanfed_server.runtime import (
    AclNotFoundError,
    ACLPolicySetRequest,
    AclSubject,
    ACLTokenSetRequest,
    Caller,
    Dispatcher,
    Endpoint,
    EndpointKind,
    PermissionDeniedError,
    RemoteServer,
    Server,
    ServerInfo,
    StaticRouter,
    TokenResolver,
)

LEADER = ServerInfo(node="s2", datacenter="dc1", rpc_address="127.0.0.1:1")


class _Pool:
    def __init__(self) -> None:
        self.forwarded: list[tuple[str, Any]] = []

    async def call(
        self,
        node: str,
        datacenter: str,
        address: str,
        method: str,
        request: Any,
        *_: Any,
        **__: Any,
    ) -> object:
        self.forwarded.append((method, request))
        return ["from the leader"]


def _store() -> StateStore:
    store = StateStore()
    store.acl_initialize(1, datetime.now(UTC))
    store.acl_policy_set(
        2, [ACLPolicy(id="p1", name="web", rules='service "web" { policy = "read" }')]
    )
    link = ACLTokenPolicyLink(id="p1")
    store.acl_token_set(3, [ACLToken(accessor_id="a1", secret_id="web-secret", policies=[link])])
    return store


def _needs_web(subject: AclSubject, _request: Any) -> None:
    subject.require(subject.authorizer.service_read("web"), "service:read", "web")


def _only_readable(subject: AclSubject, reply: list[str]) -> list[str]:
    return [name for name in reply if subject.authorizer.service_read(name)]


async def _handler(_request: DCSpecificRequest) -> list[str]:
    return ["web", "db"]


def _dispatcher(*, leader: bool, store: StateStore, **tokens: str) -> tuple[Dispatcher, _Pool]:
    pool = _Pool()
    config = ACLConfig(enabled=True, default_policy="deny")
    endpoints = [
        Endpoint(
            method,
            DCSpecificRequest,
            list[str],
            EndpointKind.READ,
            _handler,
            acl_check=_needs_web,
            acl_filter=_only_readable,
        )
        for method in ("Test.Read", "FederationState.List")
    ]
    dispatcher = Dispatcher(
        datacenter="dc1",
        endpoints=endpoints,
        is_leader=lambda: leader,
        leader=lambda: LEADER,
        router=StaticRouter("dc1", {}),
        pool=cast(RpcPool, pool),
        hold_timeout=1.0,
        acl=TokenResolver(store, config, "dc1"),
        **tokens,
    )
    return dispatcher, pool


async def test_a_follower_forwards_the_token_without_judging_it() -> None:
    follower, pool = _dispatcher(leader=False, store=StateStore())  # knows no token yet
    request = DCSpecificRequest(token="web-secret")
    reply = await follower.dispatch(follower.endpoint("Test.Read"), request, Caller.http_api())
    assert reply == ["from the leader"]
    assert pool.forwarded == [("Test.Read", request)]


async def test_the_leader_decides_and_filters() -> None:
    leader, _ = _dispatcher(leader=True, store=_store())
    endpoint = leader.endpoint("Test.Read")
    allowed = DCSpecificRequest(token="web-secret")
    assert await leader.dispatch(endpoint, allowed, Caller.http_api()) == ["web"]
    with pytest.raises(PermissionDeniedError, match="lacks permission 'service:read' on \"web\""):
        await leader.dispatch(endpoint, DCSpecificRequest(), Caller.http_api())
    with pytest.raises(AclNotFoundError):
        await leader.dispatch(endpoint, DCSpecificRequest(token="other"), Caller.http_api())


async def test_own_requests_present_the_configured_tokens() -> None:
    follower, pool = _dispatcher(
        leader=False, store=StateStore(), agent_token="agent-secret", replication_token="repl"
    )
    await follower.dispatch(follower.endpoint("Test.Read"), DCSpecificRequest())
    await follower.dispatch(follower.endpoint("FederationState.List"), DCSpecificRequest())
    # an API caller's empty token stays empty (anonymous), it never borrows the server's
    await follower.dispatch(follower.endpoint("Test.Read"), DCSpecificRequest(), Caller.http_api())
    assert [(method, request.token) for method, request in pool.forwarded] == [
        ("Test.Read", "agent-secret"),
        ("FederationState.List", "repl"),
        ("Test.Read", ""),
    ]


async def test_a_token_is_judged_in_the_datacenter_that_answers(
    start_dev_server: Callable[..., Awaitable[Server]],
) -> None:
    """dc2 forwards ACL writes to the primary and cross-datacenter reads to dc1 with
    the token unchanged; dc1 knows the token, dc2 (no replication yet) does not."""
    acl = {"enabled": True, "default_policy": "deny"}
    primary = await start_dev_server(
        "s1", acl={**acl, "tokens": {"initial_management": "root-secret"}}
    )
    await primary.wait_ready()
    assert primary.acl_leader is not None
    await asyncio.wait_for(primary.acl_leader.initialized.wait(), 30)
    router = StaticRouter(
        "dc2", {"dc1": [RemoteServer(node="s1", datacenter="dc1", address=primary.rpc_address)]}
    )
    secondary = await start_dev_server(
        "r1", router=router, datacenter="dc2", primary_datacenter="dc1", acl=acl
    )
    await secondary.wait_ready()
    api = Caller.http_api()
    policy = await secondary.rpc(
        "ACL.PolicySet",
        ACLPolicySetRequest(
            datacenter="dc2",
            policy=ACLPolicy(name="nodes", rules='node_prefix "" { policy = "read" }'),
            token="root-secret",
        ),
        ACLPolicy,
        caller=api,
    )
    token = await secondary.rpc(
        "ACL.TokenSet",
        ACLTokenSetRequest(
            datacenter="dc2",
            acl_token=ACLToken(policies=[ACLTokenPolicyLink(id=policy.id)]),
            create=True,
            token="root-secret",
        ),
        ACLToken,
        caller=api,
    )
    far = await secondary.rpc(
        "Catalog.ListNodes",
        DCSpecificRequest(datacenter="dc1", token=token.secret_id),
        IndexedNodes,
        caller=api,
    )
    assert [node.node for node in far.nodes] == ["s1"]
    with pytest.raises(AclNotFoundError):
        await secondary.rpc(
            "Catalog.ListNodes",
            DCSpecificRequest(datacenter="dc2", token=token.secret_id),
            IndexedNodes,
            caller=api,
        )
