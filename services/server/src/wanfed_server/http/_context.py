"""What every handler reaches through the aiohttp application."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from aiohttp import web

from wanfed_server.interfaces import RpcDispatcher, ServerView
from wanfed_server.local_agent import LocalAgent
from wanfed_server.runtime import TokenResolver

__all__ = ["CONTEXT", "ApiContext", "context"]


@dataclass(frozen=True)
class ApiContext:
    dispatcher: RpcDispatcher
    view: ServerView
    agent: LocalAgent
    acl: TokenResolver | None = None
    """Resolves tokens for the routes that decide here; ``None``: everything is allowed."""


CONTEXT: Final = web.AppKey("wanfed_api_context", ApiContext)


def context(request: web.Request) -> ApiContext:
    return request.app[CONTEXT]
