"""A small HTTP status endpoint for the mesh gateway.

Operators (and tests) need to see what the data plane is doing without
parsing logs: ``GET /v1/gateway/status`` answers with every counter, and
``GET /v1/gateway/routes`` with the route table as rendered for golden files.
It serves from the gateway's own process and event loop, reads only
snapshots, and never touches a connection.
"""

from __future__ import annotations

import logging

import msgspec
from aiohttp import web

from ._proxy import MeshGateway
from ._routes import render_route_table

__all__ = ["StatusServer", "status_app"]

log = logging.getLogger("wanfed.gateway.status")

_GATEWAY_KEY: web.AppKey[MeshGateway] = web.AppKey("gateway", MeshGateway)


async def _status(request: web.Request) -> web.Response:
    gateway = request.app[_GATEWAY_KEY]
    body = msgspec.json.encode(gateway.stats())
    return web.Response(body=body, content_type="application/json")


async def _routes(request: web.Request) -> web.Response:
    gateway = request.app[_GATEWAY_KEY]
    return web.Response(text=render_route_table(gateway.routes), content_type="application/json")


def status_app(gateway: MeshGateway) -> web.Application:
    """The aiohttp application; mount it elsewhere or run it with :class:`StatusServer`."""
    app = web.Application()
    app[_GATEWAY_KEY] = gateway
    app.router.add_get("/v1/gateway/status", _status)
    app.router.add_get("/v1/gateway/routes", _routes)
    return app


class StatusServer:
    """Runs :func:`status_app` on its own listener."""

    def __init__(self, gateway: MeshGateway) -> None:
        self._runner = web.AppRunner(status_app(gateway), access_log=None)
        self._site: web.TCPSite | None = None
        self._address: tuple[str, int] | None = None

    async def start(self, host: str, port: int) -> tuple[str, int]:
        """Listen on ``host:port`` (0 picks a port); returns the bound address."""
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, host, port)
        await self._site.start()
        bound = self._runner.addresses[0]
        self._address = (str(bound[0]), int(bound[1]))
        log.info(
            "gateway status endpoint listening",
            extra={"host": self._address[0], "port": self._address[1]},
        )
        return self._address

    @property
    def address(self) -> tuple[str, int]:
        if self._address is None:
            raise RuntimeError("status server is not listening")
        return self._address

    async def close(self) -> None:
        await self._runner.cleanup()
