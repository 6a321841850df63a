"""What an RPC endpoint is, and the context every endpoint family reads.

An :class:`Endpoint` is data: its method name, request and reply types, whether
it reads or writes, and which datacenter a request targets. Routing (to
another datacenter, to the leader) is decided once, in ``_forward``, from
these fields; the handler only ever runs on the server that must answer. So
the RPC port, the HTTP API and local callers share one path and one set of
rules. Who may call is decided first, by ``authorize``, on the server the
request reaches, before it is forwarded anywhere. What the request's ACL
token may do is decided by ``acl_check`` (and ``acl_filter`` for lists) on the
server that answers, where the data lives (``_acl_rules``).
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import msgspec

from wanfed_fsm import Consensus, QueryMeta, QueryOptions, ReadTxn, StateStore, blocking_query

from ._acl import AclSubject
from ._acl_rules import requires_management
from ._caller import Caller
from ._router import Router

__all__ = [
    "Endpoint",
    "EndpointContext",
    "EndpointKind",
    "anyone",
    "meta_fields",
    "run_query",
]

Req = TypeVar("Req")
Rep = TypeVar("Rep")
T = TypeVar("T")


class EndpointKind(enum.Enum):
    READ = "read"
    """Served by the leader unless the request allows stale results."""
    WRITE = "write"
    """Always served by the leader."""
    LOCAL = "local"
    """Answered by whichever server receives it (status, cluster formation)."""


def _no_datacenter(_: Any) -> str:
    return ""


def _unchanged(request: Req) -> Req:
    return request


def anyone(_caller: Caller, _request: Any) -> None:
    """Every caller may make the call (reads, status, writes of ordinary entries)."""


@dataclass(frozen=True)
class Endpoint(Generic[Req, Rep]):
    method: str
    request_type: type[Req]
    reply_type: type[Rep]
    kind: EndpointKind
    handler: Callable[[Req], Awaitable[Rep]]
    target_datacenter: Callable[[Req], str] = _no_datacenter
    """The datacenter that must answer; ``""`` means the local one."""
    prepare: Callable[[Req], Req] = _unchanged
    """Rewrites a request before it is routed (``FederationState.Apply`` → primary)."""
    authorize: Callable[[Caller, Req], None] = anyone
    """Raises :class:`~._caller.PermissionDeniedError` when this caller may not make
    this request; runs before ``prepare`` and before any forwarding."""
    acl_check: Callable[[AclSubject, Req], None] = requires_management
    """Raises ``Permission denied`` when the request's token may not make it; runs
    where the handler runs. An endpoint that declares nothing needs a management token."""
    acl_filter: Callable[[AclSubject, Rep], Rep] | None = None
    """Drops from a reply what the token may not read (list endpoints)."""

    def allows_stale(self, request: Req) -> bool:
        return isinstance(request, QueryOptions) and request.allow_stale


class EndpointContext(Protocol):
    """What endpoint handlers need from the running server."""

    @property
    def datacenter(self) -> str: ...

    @property
    def primary_datacenter(self) -> str: ...

    @property
    def consensus(self) -> Consensus: ...

    @property
    def store(self) -> StateStore: ...

    @property
    def router(self) -> Router: ...

    def last_contact(self) -> float:
        """Seconds since this server last heard from the leader (0 on the leader)."""
        ...


async def run_query(
    context: EndpointContext, options: QueryOptions, query: Callable[[ReadTxn], tuple[int, T]]
) -> tuple[QueryMeta, T]:
    """A blocking query with the server's leadership and ``LastContact`` filled in."""
    meta, result = await blocking_query(context.store, options, query, leadership=context.consensus)
    return msgspec.structs.replace(meta, last_contact=context.last_contact()), result


def meta_fields(meta: QueryMeta) -> dict[str, Any]:
    """Keyword arguments that copy ``meta`` into an ``Indexed*`` reply."""
    return {
        "index": meta.index,
        "last_contact": meta.last_contact,
        "known_leader": meta.known_leader,
    }
