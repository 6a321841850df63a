"""The HTTP API server: Consul's routes on aiohttp, started and stopped with the server.

Every catalog read and write goes through the :class:`RpcDispatcher`, so an
HTTP request takes the same path as an RPC (forwarding to the leader or to
another datacenter included); agent endpoints act on the :class:`LocalAgent`;
``/v1/agent/self`` and ``/v1/agent/members`` read the :class:`ServerView`.

The listener caps connections per client address and in total and bounds
how long a request's headers and a keep-alive wait may take
(:class:`HttpLimits`, from the agent config's ``limits.http_*`` keys), so
idle or slowloris clients cannot exhaust the server's file descriptors.
"""

from __future__ import annotations

import logging
from pathlib import Path

from aiohttp import web

from wanfed_fsm import Node
from wanfed_server.interfaces import RpcDispatcher, ServerView
from wanfed_server.local_agent import LocalAgent
from wanfed_server.runtime import Server, TokenResolver

from ._acl import register_acl_routes
from ._acl_replication import register_acl_replication_routes
from ._agent import register_agent_routes
from ._catalog import register_catalog_routes
from ._context import CONTEXT, ApiContext
from ._errors import error_middleware
from ._federation import register_federation_routes
from ._federation_routes import register_federation_routes_status
from ._guard import GuardedSite, HttpGuard, HttpLimits, HttpStats
from ._health import register_health_routes
from ._internal import register_internal_routes
from ._server_directory import register_server_directory_routes
from ._status import register_status_routes

__all__ = ["HttpApi", "HttpLimits", "HttpStats", "build_app", "start_http_api"]

logger = logging.getLogger(__name__)

SHUTDOWN_GRACE = 1.0
"""Seconds ``stop`` lets in-flight requests finish before cancelling them. Parked
blocking queries (minutes long) are cancelled rather than waited for: a client
simply retries them against another server."""


def build_app(
    dispatcher: RpcDispatcher,
    view: ServerView,
    agent: LocalAgent,
    acl: TokenResolver | None = None,
) -> web.Application:
    """The aiohttp application with every route; tests drive it with aiohttp's test client.

    ``acl`` resolves tokens for the routes that do not go through an RPC
    endpoint (``/v1/agent/*``...); without it they allow everything."""
    app = web.Application(middlewares=[error_middleware], client_max_size=4 * 1024 * 1024)
    app[CONTEXT] = ApiContext(dispatcher=dispatcher, view=view, agent=agent, acl=acl)
    register_acl_routes(app)
    register_acl_replication_routes(app)
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
        limits: HttpLimits | None = None,
        acl: TokenResolver | None = None,
    ) -> None:
        self._app = build_app(dispatcher, view, local_agent, acl)
        self._guard = HttpGuard(limits or HttpLimits())
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

    def stats(self) -> HttpStats:
        """Open connections and what the caps and the header timeout refused."""
        return self._guard.stats()

    async def start(self) -> None:
        # Blocking queries park handlers for up to 10 minutes; stopping must not
        # wait for them (aiohttp's default grace is 60 s), so they get 1 s.
        runner = web.AppRunner(
            self._app, access_log=None, handle_signals=False, shutdown_timeout=1.0
        )
        await runner.setup()
        site = GuardedSite(runner, self._host, self._requested_port, self._guard)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        bound = runner.addresses  # the real port when 0 was asked for
        self._port = int(bound[0][1]) if bound else self._requested_port
        await self._agent.start()
        limits = self._guard.limits
        logger.info(
            "http api listening address=%s:%d max_conns_per_client=%d max_conns=%d "
            "read_header_timeout=%g idle_timeout=%g",
            self._host,
            self._port,
            limits.max_conns_per_client,
            limits.max_conns,
            limits.read_header_timeout,
            limits.idle_timeout,
        )

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
    limits = HttpLimits(
        max_conns_per_client=config.limits.http_max_conns_per_client,
        max_conns=config.limits.http_max_conns,
        read_header_timeout=config.limits.http_read_header_timeout,
        idle_timeout=config.limits.http_idle_timeout,
    )
    # The local agent is the server's own code; API requests are not (reserved entries).
    api = HttpApi(
        server.http_dispatcher,
        server,
        agent,
        config.http_bind_addr,
        config.ports.http,
        limits,
        acl=server.acl,
    )
    await api.start()
    return api
