"""The HTTP API server: Consul's routes on aiohttp, started and stopped with the server.

Every catalog read and write goes through the :class:`RpcDispatcher`, so an
HTTP request takes the same path as an RPC (forwarding to the leader or to
another datacenter included); agent endpoints act on the :class:`LocalAgent`;
``/v1/agent/self`` and ``/v1/agent/members`` read the :class:`ServerView`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from aiohttp import web

from wanfed_fsm import Node
from wanfed_server.interfaces import RpcDispatcher, ServerView
from wanfed_server.local_agent import LocalAgent
from wanfed_server.runtime import Server

from ._agent import register_agent_routes
from ._catalog import register_catalog_routes
from ._context import CONTEXT, ApiContext
from ._errors import error_middleware
from ._federation import register_federation_routes
from ._federation_routes import register_federation_routes_status
from ._health import register_health_routes
from ._internal import register_internal_routes
from ._server_directory import register_server_directory_routes
from ._status import register_status_routes

__all__ = ["HttpApi", "build_app", "start_http_api"]

logger = logging.getLogger(__name__)

SHUTDOWN_GRACE = 1.0
"""Seconds ``stop`` lets in-flight requests finish before cancelling them. Parked
blocking queries (minutes long) are cancelled rather than waited for: a client
simply retries them against another server."""


def build_app(dispatcher: RpcDispatcher, view: ServerView, agent: LocalAgent) -> web.Application:
    """The aiohttp application with every route; tests drive it with aiohttp's test client."""
    app = web.Application(middlewares=[error_middleware], client_max_size=4 * 1024 * 1024)
    app[CONTEXT] = ApiContext(dispatcher=dispatcher, view=view, agent=agent)
    register_status_routes(app)
    register_catalog_routes(app)
    register_health_routes(app)
    register_agent_routes(app)
    register_federation_routes(app)
    register_federation_routes_status(app)
    register_internal_routes(app)
    register_server_directory_routes(app)
    return app


class HttpApi:
    """Serves the API on ``host:port`` (port 0 picks one; see :attr:`port`).

    The local agent's tasks start and stop with the listener, so a server
    that serves its agent API also keeps the agent's services in the catalog.
    """

    def __init__(
        self,
        dispatcher: RpcDispatcher,
        view: ServerView,
        local_agent: LocalAgent,
        host: str,
        port: int,
    ) -> None:
        self._app = build_app(dispatcher, view, local_agent)
        self._agent = local_agent
        self._host = host
        self._requested_port = port
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the HTTP API is not started")
        return self._port

    @property
    def address(self) -> str:
        return f"{self._host}:{self.port}"

    async def start(self) -> None:
        # Blocking queries park handlers for up to 10 minutes; stopping must not
        # wait for them (aiohttp's default grace is 60 s), so they get 1 s.
        runner = web.AppRunner(
            self._app, access_log=None, handle_signals=False, shutdown_timeout=1.0
        )
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._requested_port, reuse_address=True)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        bound = runner.addresses  # the real port when 0 was asked for
        self._port = int(bound[0][1]) if bound else self._requested_port
        await self._agent.start()
        logger.info("http api listening address=%s:%d", self._host, self._port)

    async def stop(self) -> None:
        await self._agent.stop()
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
            logger.info("http api stopped address=%s:%s", self._host, self._port)

    async def close(self) -> None:
        """Same as :meth:`stop`; the name ``wanfed agent`` closes its companions by."""
        await self.stop()


async def start_http_api(server: Server) -> HttpApi:
    """The ``wanfed agent`` companion: the HTTP API and local agent of a started server.

    Listens on ``addresses.http`` (else ``client_addr``) and ``ports.http``.
    Outside ``-dev`` the agent's services are kept in ``data_dir/local-agent``;
    the agent's services belong to the server's node, whose address is the
    host of the server's RPC address (the leader adds the tagged addresses).
    """
    config = server.config
    host = server.rpc_address.rpartition(":")[0].strip("[]")
    services_file = None
    if config.data_dir and not config.dev_mode:
        services_file = Path(config.data_dir) / "local-agent" / "services.json"
    agent = LocalAgent(
        server,
        node=Node(node=server.node_name, address=host, datacenter=server.datacenter),
        datacenter=server.datacenter,
        services_file=services_file,
    )
    api = HttpApi(server, server, agent, config.http_bind_addr, config.ports.http)
    await api.start()
    return api
