"""``/v1/internal/server-directory``: this datacenter's servers, as the servers know them.

The mesh gateway routes ``<node>.server.<dc>`` and ``server.<dc>`` to the
local servers. It must learn them from a source only servers write: the
catalog's ``consul`` service is not one (anyone who reaches the HTTP API can
register a row there naming any address). This endpoint answers from the
server's own directory instead — the LAN member list, which holds exactly
the servers learned through the servers' hellos and Raft membership — with
each server's node name, RPC address and whether it is alive (answered
recently and is a Raft voter).

The answer is not in the Raft store, so it has no index to block on. As
Consul's agent endpoints do, it blocks on its content instead: the answer
carries ``X-Consul-ContentHash``; a request with ``?hash=<that hash>`` and
``?wait=`` is held until the content differs or the wait ends (at most
:data:`MAX_WAIT`), re-reading the directory every :data:`RECHECK_INTERVAL`
(liveness changes with time, not with an event).
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Final

import msgspec
from aiohttp import web

from wanfed_agent.config import parse_duration
from wanfed_server.interfaces import MemberStatus, ServerView

from ._acl_guard import acl_subject
from ._context import context
from ._errors import HttpError
from ._query import JSON_CONTENT_TYPE

__all__ = [
    "DEFAULT_WAIT",
    "MAX_WAIT",
    "RECHECK_INTERVAL",
    "directory_body",
    "register_server_directory_routes",
]

DEFAULT_WAIT: Final = 300.0
MAX_WAIT: Final = 600.0
"""Consul's cap on a blocking query's ``wait``."""
RECHECK_INTERVAL: Final = 1.0
"""Seconds between two reads of the directory while a request blocks."""

SERVER_ROLE: Final = "consul"
"""The ``role`` tag of a server in the LAN member list."""


def directory_body(view: ServerView) -> bytes:
    """The JSON list of this datacenter's servers, sorted by node name."""
    datacenter = view.datacenter.lower()
    entries = [
        {
            "Node": member.name,
            "Datacenter": member.tags.get("dc", ""),
            "Address": member.addr,
            "Port": member.port,
            "Alive": member.status == MemberStatus.ALIVE,
        }
        for member in view.members(wan=False)
        if member.tags.get("role") == SERVER_ROLE
        and member.tags.get("dc", "").lower() == datacenter
    ]
    entries.sort(key=lambda entry: str(entry["Node"]))
    return msgspec.json.encode(entries)


def _content_hash(body: bytes) -> str:
    return hashlib.blake2b(body, digest_size=8).hexdigest()


def _wait(request: web.Request) -> float:
    text = request.query.get("wait")
    if text is None:
        return DEFAULT_WAIT
    try:
        seconds = parse_duration(text)
    except ValueError:
        raise HttpError(400, "Invalid wait time") from None
    if seconds < 0:
        raise HttpError(400, "Invalid wait time")
    return min(seconds, MAX_WAIT)


async def server_directory(request: web.Request) -> web.Response:
    subject = acl_subject(request)
    subject.require(subject.authorizer.service_read("consul"), "service:read", "consul")
    view = context(request).view
    known = request.query.get("hash", "")
    deadline = asyncio.get_running_loop().time() + _wait(request) if known else 0.0
    body = directory_body(view)
    while known and _content_hash(body) == known:
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            break
        await asyncio.sleep(min(RECHECK_INTERVAL, remaining))
        body = directory_body(view)
    response = web.Response(body=body, content_type=JSON_CONTENT_TYPE)
    response.headers["X-Consul-ContentHash"] = _content_hash(body)
    return response


def register_server_directory_routes(app: web.Application) -> None:
    app.router.add_get("/v1/internal/server-directory", server_directory)
