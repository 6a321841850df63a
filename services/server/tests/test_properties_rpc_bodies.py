"""Property tests: the body of every RPC endpoint is untrusted bytes.

For each method of the server's endpoint table, a body that does not decode
as the endpoint's request type is refused with :class:`InvalidRequestError`,
and a body that does decode (however odd its values) is answered, refused as
invalid, or refused with the domain's :class:`RemoteError`; no other
exception escapes the handler. The endpoints are the real ones, over a
one-node in-memory consensus, so registrations and federation-state writes
really apply; only the length of a blocking wait is shortened.
"""

from __future__ import annotations

import asyncio
import contextlib
import typing
from collections.abc import Iterator
from typing import Any
from unittest import mock

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wanfed_agent.config import ACLConfig
from wanfed_agent.rpc import RouteTable, RpcPool
from wanfed_agent.tls import ServerCertificatePolicy
from wanfed_fsm import LocalConsensus, QueryOptions, StateStore, blocking_query
from wanfed_proto import ConnectionInfo, RemoteError, Request, RpcCall
from wanfed_server.runtime import (
    ClusterInfo,
    Dispatcher,
    Endpoint,
    InvalidRequestError,
    Server,
    ServerInfo,
    StaticRouter,
    TokenResolver,
)
from wanfed_server.runtime import _endpoint as endpoint_module
from wanfed_server.runtime._acl_replication_status import AclReplicationTracker
from wanfed_server.runtime._endpoints_acl import acl_endpoints
from wanfed_server.runtime._endpoints_acl_replication import acl_replication_endpoints
from wanfed_server.runtime._endpoints_catalog import catalog_endpoints
from wanfed_server.runtime._endpoints_federation import federation_state_endpoints
from wanfed_server.runtime._endpoints_status import status_endpoints

SELF = ServerInfo(node="s1", datacenter="dc1", rpc_address="127.0.0.1:8300")


class _Context:
    """What the endpoints read from a running server, for a one-node dc1."""

    def __init__(self) -> None:
        self.consensus = LocalConsensus()
        self.router = StaticRouter("dc1", {})
        self.datacenter = "dc1"
        self.primary_datacenter = "dc1"

    @property
    def store(self) -> StateStore:
        return self.consensus.store

    def last_contact(self) -> float:
        return 0.0

    def leader_rpc_address(self) -> str | None:
        return SELF.rpc_address

    def peer_rpc_addresses(self) -> list[str]:
        return [SELF.rpc_address]

    def cluster_info(self) -> ClusterInfo:
        return ClusterInfo(server=SELF)

    def learn_server(self, server: ServerInfo) -> None:
        pass

    async def add_raft_server(self, server: ServerInfo) -> ClusterInfo:
        return self.cluster_info()

    def is_server_node(self, node: str) -> bool:
        return node.lower() == SELF.node


class _NoDialer:
    async def dial(self, *args: object, **kwargs: object) -> Any:
        raise AssertionError("a one-node datacenter never dials")


def _endpoints(context: _Context) -> list[Endpoint[Any, Any]]:
    policy = ServerCertificatePolicy("consul")
    return [
        *status_endpoints(context, datacenter="dc1", policy=policy),
        *catalog_endpoints(context, context),
        *federation_state_endpoints(context, policy),
        *acl_endpoints(context, _acl(context)),
        *acl_replication_endpoints(
            AclReplicationTracker(source_datacenter="dc1", enabled=False, ttl=30.0).status,
            enabled=True,
        ),
    ]


def _acl(context: _Context) -> TokenResolver:
    """ACLs on, so every body also crosses token resolution and the ACL handlers."""
    return TokenResolver(context.store, ACLConfig(enabled=True, default_policy="allow"), "dc1")


def _dispatcher(context: _Context) -> Dispatcher:
    return Dispatcher(
        datacenter="dc1",
        endpoints=_endpoints(context),
        is_leader=lambda: True,
        leader=lambda: SELF,
        router=context.router,
        pool=RpcPool(typing.cast(Any, _NoDialer()), RouteTable("dc1")),
        hold_timeout=0.05,
        acl=_acl(context),
    )


ENDPOINTS = {endpoint.method: endpoint for endpoint in _endpoints(_Context())}
METHODS = sorted(ENDPOINTS)


async def test_the_table_here_is_the_servers_table(start_dev_server: Any) -> None:
    """A method added to the server is covered here too, or this fails."""
    server: Server = await start_dev_server()
    assert server._dispatcher is not None
    assert server._dispatcher.methods == METHODS


# --- bodies ---------------------------------------------------------------------------


def _field_names(tp: Any) -> list[str]:
    """Wire names of ``tp``'s fields and of the Structs nested in it, one level down."""
    names: list[str] = []
    for candidate in (tp, *typing.get_args(tp)):
        if isinstance(candidate, type) and issubclass(candidate, msgspec.Struct):
            for field in msgspec.structs.fields(candidate):
                names.append(field.encode_name)
                for inner in (field.type, *typing.get_args(field.type)):
                    if isinstance(inner, type) and issubclass(inner, msgspec.Struct):
                        names += [f.encode_name for f in msgspec.structs.fields(inner)]
    return names or ["Datacenter"]


_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=True),
    st.text(max_size=12),
    st.binary(max_size=8),
    st.sampled_from(["dc1", "dc2", "", "s1", "web", "mesh-gateway", "upsert", "delete", "passing"]),
)


def _values(keys: st.SearchStrategy[str]) -> st.SearchStrategy[object]:
    return st.recursive(
        _scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=6)
        ),
        max_leaves=15,
    )


def bodies(method: str) -> st.SearchStrategy[bytes]:
    """Garbage, any msgpack value, and maps keyed by the request's own field names."""
    keys = st.sampled_from(_field_names(ENDPOINTS[method].request_type)) | st.text(max_size=6)
    shaped = st.dictionaries(keys, _values(keys), max_size=8)
    deep = st.integers(min_value=1, max_value=3000).map(lambda n: b"\x81\xa4Node" * n + b"\xc0")
    return st.one_of(
        st.binary(max_size=200),
        _values(st.text(max_size=8)).map(msgspec.msgpack.encode),
        shaped.map(msgspec.msgpack.encode),
        shaped.map(msgspec.msgpack.encode),
        deep,
    )


# --- the property ------------------------------------------------------------------------


@contextlib.contextmanager
def _short_blocking_waits() -> Iterator[None]:
    """Blocking queries park for at most 10 ms, so an example never waits minutes."""

    async def short(store: Any, options: QueryOptions, *args: Any, **kw: Any) -> Any:
        options = msgspec.structs.replace(options, max_query_time=0.01)
        return await blocking_query(store, options, *args, **kw)

    with mock.patch.object(endpoint_module, "blocking_query", short):
        yield


def _decodes(body: bytes, tp: Any) -> bool:
    try:
        msgspec.msgpack.decode(body, type=tp)
    except (msgspec.DecodeError, RecursionError):
        return False
    return True


async def _call(method: str, body: bytes) -> object:
    context = _Context()
    handler = _dispatcher(context).rpc_handlers()[method]
    request = Request(Seq=1, Method=method, Body=msgspec.Raw(body))
    call = RpcCall(request=request, peer=ConnectionInfo(peer=("127.0.0.1", 1)))
    try:
        async with asyncio.timeout(10):
            return await handler(call)
    finally:
        await context.consensus.shutdown()


@pytest.mark.parametrize("method", METHODS)
def test_any_body_is_answered_or_refused_never_raised(method: str) -> None:
    tp = ENDPOINTS[method].request_type

    with asyncio.Runner() as runner, _short_blocking_waits():

        @settings(max_examples=40)
        @given(bodies(method))
        def check(body: bytes) -> None:
            outcome: BaseException | None = None
            try:
                runner.run(_call(method, body))
            except RemoteError as error:  # InvalidRequestError is one
                outcome = error
            if not _decodes(body, tp):
                assert isinstance(outcome, InvalidRequestError), outcome

        check()


TYPED_METHODS = [m for m in METHODS if ENDPOINTS[m].request_type is not msgspec.Raw]


@pytest.mark.parametrize("method", TYPED_METHODS)
def test_a_body_of_the_wrong_shape_is_an_invalid_request(method: str) -> None:
    with pytest.raises(InvalidRequestError, match=f"rpc {method}: invalid request body"):
        asyncio.run(_call(method, msgspec.msgpack.encode([[["x"]]])))
