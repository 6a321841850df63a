"""``/v1/internal/federation-routes``: how this server reaches every datacenter, and why.

The answer is the gateway locator's status: per datacenter the path in use
(local gateways, the primary's gateways directly, same datacenter), the
candidate addresses with where each came from, and the replication history
the choice follows. It is what an operator reads first when cross-datacenter
requests fail.
"""

from __future__ import annotations

import msgspec
from aiohttp import web

from wanfed_server.interfaces import FederationStatusSource

from ._acl_guard import acl_subject
from ._context import context
from ._errors import HttpError

__all__ = ["register_federation_routes_status"]


async def federation_routes(request: web.Request) -> web.Response:
    subject = acl_subject(request)
    subject.require(subject.authorizer.operator_read(), "operator:read")
    view = context(request).view
    status = view.federation_status() if isinstance(view, FederationStatusSource) else None
    if status is None:
        raise HttpError(
            404,
            "WAN federation via mesh gateways is not enabled on this server "
            "(connect.enable_mesh_gateway_wan_federation)",
        )
    return web.Response(
        body=msgspec.json.encode(status), content_type="application/json", charset="utf-8"
    )


def register_federation_routes_status(app: web.Application) -> None:
    app.router.add_get("/v1/internal/federation-routes", federation_routes)
