"""Consul's query parameters and response headers, shared by every read endpoint.

``?dc=`` routes, ``?index=`` + ``?wait=`` block, ``?stale`` / ``?consistent``
choose the consistency mode, and the token comes from ``X-Consul-Token``,
``Authorization: Bearer`` or ``?token=``. Answers carry ``X-Consul-Index``,
``X-Consul-KnownLeader`` and ``X-Consul-LastContact`` (milliseconds), which is
what blocking clients loop on, and ``X-Consul-Results-Filtered-By-ACLs`` when
the token could not read everything.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, Protocol, TypeVar

import msgspec
from aiohttp import web

from wanfed_agent.config import parse_duration
from wanfed_fsm import DCSpecificRequest, QueryMeta, Service

from ._context import context
from ._errors import HttpError

__all__ = [
    "JSON_CONTENT_TYPE",
    "QueryParams",
    "datacenter_read",
    "filter_by_tag",
    "json_response",
    "parse_query",
    "request_token",
]

JSON_CONTENT_TYPE: Final = "application/json"
_MAX_INDEX: Final = 2**64 - 1
"""Raft indexes are uint64 (msgpack cannot carry more to another server)."""
_encoder = msgspec.json.Encoder()

Reply = TypeVar("Reply", bound=QueryMeta)


class _Instance(Protocol):
    @property
    def service(self) -> Service: ...


Instance = TypeVar("Instance", bound=_Instance)


class QueryParams(msgspec.Struct, frozen=True, kw_only=True):
    """The parsed standard parameters; ``datacenter`` is already defaulted."""

    datacenter: str
    min_query_index: int = 0
    max_query_time: float = 0.0
    allow_stale: bool = False
    require_consistent: bool = False
    token: str = ""

    def options(self) -> dict[str, Any]:
        """Keyword arguments for any ``QueryOptions`` subclass."""
        return {
            "min_query_index": self.min_query_index,
            "max_query_time": self.max_query_time,
            "allow_stale": self.allow_stale,
            "require_consistent": self.require_consistent,
            "token": self.token,
        }


def request_token(request: web.Request) -> str:
    """``X-Consul-Token``, else ``Authorization: Bearer``, else ``?token=``; ``""`` if none."""
    token = request.headers.get("X-Consul-Token", "")
    if not token:
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            token = value.strip()
    return token or request.query.get("token", "")


def parse_query(request: web.Request, default_datacenter: str) -> QueryParams:
    """Validate the standard parameters; bad values are the caller's error (400)."""
    query = request.query
    index = 0
    if "index" in query:
        try:
            index = int(query["index"])
        except ValueError:
            raise HttpError(400, "Invalid index") from None
        if not 0 <= index <= _MAX_INDEX:
            raise HttpError(400, "Invalid index")
    wait = 0.0
    if "wait" in query:
        try:
            wait = parse_duration(query["wait"])
        except ValueError:
            raise HttpError(400, "Invalid wait time") from None
    stale = "stale" in query
    consistent = "consistent" in query
    if stale and consistent:
        raise HttpError(400, "Cannot specify ?stale with ?consistent, conflicting semantics.")
    return QueryParams(
        datacenter=query.get("dc") or default_datacenter,
        min_query_index=index,
        max_query_time=wait,
        allow_stale=stale,
        require_consistent=consistent,
        token=request_token(request),
    )


def filter_by_tag(request: web.Request, entries: Sequence[Instance]) -> list[Instance]:
    """``?tag=``: only the instances whose service carries that tag; all without it."""
    tag = request.query.get("tag")
    if tag is None:
        return list(entries)
    return [entry for entry in entries if tag in entry.service.tags]


def json_response(
    body: object, meta: QueryMeta | None = None, *, status: int = 200
) -> web.Response:
    """Encode ``body`` (Structs, lists, dicts) as JSON, with the query-meta headers if given."""
    response = web.Response(
        status=status, body=_encoder.encode(body), content_type=JSON_CONTENT_TYPE
    )
    if meta is not None:
        set_meta_headers(response, meta)
    return response


def set_meta_headers(response: web.StreamResponse, meta: QueryMeta) -> None:
    response.headers["X-Consul-Index"] = str(meta.index)
    response.headers["X-Consul-KnownLeader"] = "true" if meta.known_leader else "false"
    response.headers["X-Consul-LastContact"] = str(int(meta.last_contact * 1000))
    if meta.results_filtered_by_acls:
        response.headers["X-Consul-Results-Filtered-By-ACLs"] = "true"


def datacenter_read(
    method: str, reply_type: type[Reply], body: Callable[[Reply], object]
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """A route whose only input is the standard parameters: ``?dc=``, blocking, consistency, token.

    Consul's list endpoints (nodes, services, federation states, mesh
    gateways) all run one RPC with a ``DCSpecificRequest`` and answer a part of
    the reply (``body``) with the reply's query-meta headers.
    """

    async def handle(request: web.Request) -> web.Response:
        ctx = context(request)
        params = parse_query(request, ctx.view.datacenter)
        reply = await ctx.dispatcher.rpc(
            method,
            DCSpecificRequest(datacenter=params.datacenter, **params.options()),
            reply_type,
        )
        return json_response(body(reply), reply)

    return handle
