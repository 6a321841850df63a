"""ACL replication between datacenters, in one process on loopback.

Three datacenters with ACLs on and ``default_policy = "deny"``, federated
through mesh gateways with only their configured tokens: the primary's
``initial_management`` token, and in the secondaries ``acl.tokens.replication``
and ``acl.tokens.agent``. dc2 says ``down_policy = "deny"``, dc3
``extend-cache``; ``token_ttl`` is short so staleness comes within seconds.
The primary is cut off silently: its gateway's address becomes a listener
that accepts and never answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest

from wanfed_fsm import (
    ZERO_TIME,
    ACLPolicy,
    ACLToken,
    ACLTokenPolicyLink,
    DCSpecificRequest,
    Node,
    RegisterRequest,
    Service,
)
from wanfed_proto import RemoteError
from wanfed_server.http import start_http_api
from wanfed_server.runtime import (
    ACLPolicySetRequest,
    AclReplicationStatus,
    ACLTokenSetRequest,
    Server,
)

if TYPE_CHECKING:
    from .conftest import Federation  # type: ignore[import-not-found]

    MakeFederation = Callable[..., Awaitable[Federation]]

ROOT = "00000000-root-secret-for-tests-0001"
TTL = 2.0
WEB_RULES = """
service "web" { policy = "write" }
node "web-node" { policy = "write" }
service_prefix "" { policy = "read" }
node_prefix "" { policy = "read" }
"""


def _acl(datacenter: str) -> Mapping[str, object]:
    block: dict[str, object] = {
        "enabled": True,
        "default_policy": "deny",
        "token_ttl": f"{TTL}s",
    }
    if datacenter == "dc1":
        block["tokens"] = {"initial_management": ROOT, "agent": ROOT}
    else:
        block["down_policy"] = "deny" if datacenter == "dc2" else "extend-cache"
        block["tokens"] = {"replication": ROOT, "agent": ROOT}
    return block


@pytest.fixture
async def federation(make_federation: MakeFederation) -> Federation:
    return await make_federation({"dc1": 1, "dc2": 1, "dc3": 1}, acl=_acl)


async def until(condition: Callable[[], Awaitable[bool]], within: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await condition():
        if loop.time() > deadline:
            raise AssertionError(f"not within {within:.0f} s: {what}")
        await asyncio.sleep(0.05)


async def status_of(server: Server) -> AclReplicationStatus:
    return await server.rpc(
        "ACL.ReplicationStatus",
        DCSpecificRequest(datacenter=server.datacenter),
        AclReplicationStatus,
    )


def knows_secret(server: Server, secret: str) -> bool:
    with server.store.read() as txn:
        return txn.acl_token_by_secret(secret)[1] is not None


async def register_web(server: Server, secret: str) -> None:
    await server.rpc(
        "Catalog.Register",
        RegisterRequest(
            datacenter=server.datacenter,
            node=Node(node="web-node", address="198.18.0.9", datacenter=server.datacenter),
            service=Service(id="web", service="web", port=80),
            token=secret,
        ),
        bool,
    )


async def allowed(server: Server, secret: str) -> bool:
    try:
        await register_web(server, secret)
    except RemoteError as exc:
        if "Permission denied" in str(exc):
            return False
        raise
    return True


@contextlib.asynccontextmanager
async def black_hole(host: str, port: int) -> AsyncIterator[None]:
    """A listener that accepts and never answers: a host that went silent."""
    held: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        with contextlib.suppress(Exception):
            while await reader.read(65536):
                pass

    server = await asyncio.start_server(swallow, host, port)
    try:
        yield
    finally:
        server.close()
        for writer in held:
            writer.transport.abort()
        await server.wait_closed()


async def test_acl_replication_staleness_and_status(federation: Federation) -> None:
    dc1, dc2, dc3 = (federation[name].require_server() for name in ("dc1", "dc2", "dc3"))

    # The primary does not replicate, and says so.
    primary_status = await status_of(dc1)
    assert (primary_status.enabled, primary_status.running) == (False, False)
    assert primary_status.source_datacenter == "dc1"
    assert primary_status.last_success == ZERO_TIME

    # Secondaries replicate the built-ins and the primary's global tokens.
    for server in (dc2, dc3):
        await until(functools.partial(_replicated, server), 60, f"{server.datacenter} replicates")
        status = await status_of(server)
        assert (status.enabled, status.running) == (True, True)
        assert status.replication_type == "tokens"
        assert status.source_datacenter == "dc1"
        assert status.last_success > ZERO_TIME

    # A policy and a token made in the primary authorize a request in dc2 once replicated.
    policy = await dc1.rpc(
        "ACL.PolicySet",
        ACLPolicySetRequest(
            datacenter="dc1", policy=ACLPolicy(name="web", rules=WEB_RULES), token=ROOT
        ),
        ACLPolicy,
    )
    web = await dc1.rpc(
        "ACL.TokenSet",
        ACLTokenSetRequest(
            datacenter="dc1",
            acl_token=ACLToken(policies=[ACLTokenPolicyLink(id=policy.id)]),
            create=True,
            token=ROOT,
        ),
        ACLToken,
    )
    for server in (dc2, dc3):
        await until(
            functools.partial(_known, server, web.secret_id),
            30,
            f"the web token reaches {server.datacenter}",
        )
        assert await allowed(server, web.secret_id)
    # ...and denied where its rules say: no write on another service.
    with pytest.raises(RemoteError, match="Permission denied"):
        await dc2.rpc(
            "Catalog.Register",
            RegisterRequest(
                datacenter="dc2",
                node=Node(node="web-node", address="198.18.0.9", datacenter="dc2"),
                service=Service(id="db", service="db", port=5432),
                token=web.secret_id,
            ),
            bool,
        )

    # A Local token of dc2 stays in dc2: never in the primary, never deleted by replication.
    local = await dc2.rpc(
        "ACL.TokenSet",
        ACLTokenSetRequest(
            datacenter="dc2",
            acl_token=ACLToken(local=True, policies=[ACLTokenPolicyLink(id=policy.id)]),
            create=True,
            token=ROOT,
        ),
        ACLToken,
    )
    before = (await status_of(dc2)).replicated_token_index
    await dc1.rpc(
        "ACL.TokenSet",
        ACLTokenSetRequest(datacenter="dc1", acl_token=ACLToken(), create=True, token=ROOT),
        ACLToken,
    )
    await until(lambda: _token_index_above(dc2, before), 30, "dc2 replicates the next token write")
    assert knows_secret(dc2, local.secret_id)
    assert not knows_secret(dc1, local.secret_id)

    # The HTTP answer has Consul's shape.
    http = await start_http_api(dc2)
    try:
        body = await _get_json(f"http://{http.address}/v1/acl/replication")
    finally:
        await http.stop()
    assert set(body) == {
        "Enabled",
        "Running",
        "SourceDatacenter",
        "ReplicationType",
        "ReplicatedIndex",
        "ReplicatedRoleIndex",
        "ReplicatedTokenIndex",
        "LastSuccess",
        "LastError",
        "LastErrorMessage",
    }
    assert body["ReplicatedTokenIndex"] > 0

    # The primary goes silent: after the TTL, dc2 (deny) denies, dc3 (extend-cache) serves.
    primary_dc = federation["dc1"]
    await federation.stop_feeder("dc1")
    assert primary_dc.gateway is not None
    await primary_dc.gateway.close()
    async with black_hole(primary_dc.gateway_ip, primary_dc.gateway_port):
        await until(lambda: _stale(dc2), 60, "dc2 notices the primary is gone")
        await until(lambda: _stale(dc3), 60, "dc3 notices the primary is gone")
        assert not await allowed(dc2, web.secret_id)
        assert await allowed(dc3, web.secret_id)
        assert await allowed(dc2, ROOT)  # management keeps working under deny
        outage = await status_of(dc2)
        assert outage.running
        assert outage.last_error > outage.last_success
        assert outage.last_error_message
    await federation.replace_gateway("dc1", new_address=False)

    # The primary is back: fresh again, and the token works in dc2 again. (Right
    # after the heal one table may still fail a round on a path not yet re-learnt:
    # the status says so, so only the success after the outage is asserted.)
    await until(lambda: _fresh_since(dc2, outage.last_error), 60, "dc2 replicates again")
    assert await allowed(dc2, web.secret_id)


async def _replicated(server: Server) -> bool:
    status = await status_of(server)
    return status.replicated_index > 0 and status.replicated_token_index > 0


async def _known(server: Server, secret: str) -> bool:
    return knows_secret(server, secret)


async def _token_index_above(server: Server, index: int) -> bool:
    return (await status_of(server)).replicated_token_index > index


async def _stale(server: Server) -> bool:
    return server.acl.stale


async def _fresh_since(server: Server, moment: datetime) -> bool:
    status = await status_of(server)
    return not server.acl.stale and status.last_success > moment


async def _get_json(url: str) -> Any:
    async with aiohttp.ClientSession() as session, session.get(url) as reply:
        assert reply.status == 200, await reply.text()
        return await reply.json()
