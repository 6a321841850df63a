"""The Consul-compatible HTTP API of a wanfed server.

``HttpApi(dispatcher, view, local_agent, host, port, limits)`` serves ``/v1/status``,
``/v1/catalog``, ``/v1/health``, ``/v1/agent`` and the federation-state
endpoints with Consul's JSON shapes, query parameters, headers and status
codes; ``build_app`` gives the bare aiohttp application for tests.
"""

from ._app import HttpApi, HttpLimits, HttpStats, build_app, start_http_api
from ._errors import HttpError
from ._query import QueryParams, parse_query

__all__ = [
    "HttpApi",
    "HttpError",
    "HttpLimits",
    "HttpStats",
    "QueryParams",
    "build_app",
    "parse_query",
    "start_http_api",
]
