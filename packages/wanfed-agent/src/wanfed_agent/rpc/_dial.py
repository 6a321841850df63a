"""Dialling another server's RPC port along a route: directly, or via a gateway.

A direct route (this datacenter, or any server when federation via mesh
gateways is off) dials the server's own address. A gateway route opens
native TLS to a gateway of the path with SNI ``<node>.server.<dc>.<domain>``
(``server.<dc>.<domain>`` for any server) and the single ALPN id
``wanfed/rpc-multi``; the gateways route on that name and the far server's
certificate is verified for it. A route pinned to one gateway (a path probe)
dials exactly that gateway.

Every dial attempt, one candidate each, has its own connect-and-handshake
timeout (:data:`DIAL_ATTEMPT_TIMEOUT`): a black-holed gateway costs that
long, not the whole dial, and the next candidate is tried.
"""

from __future__ import annotations

import ssl
from typing import Final, Protocol

from wanfed_proto import (
    Alpn,
    Connection,
    RpcType,
    TransportError,
    dial_alpn,
    dial_plain,
    server_sni,
)

from ._route import DIRECT, GatewayPicker, Route

__all__ = [
    "DC_NOT_AVAILABLE",
    "DIAL_ATTEMPT_TIMEOUT",
    "GATEWAY_ATTEMPTS",
    "NO_OUTGOING_TLS",
    "DialError",
    "NoGatewayKnownError",
    "PlainDialer",
    "ServerDialer",
    "TlsDialer",
    "dial_through_gateway",
]

DC_NOT_AVAILABLE: Final = "Remote DC has no server currently reachable"
NO_OUTGOING_TLS: Final = "cannot dial via a mesh gateway when outgoing TLS is disabled"

GATEWAY_ATTEMPTS: Final = 3
"""Distinct gateways one dial tries before it fails."""

DIAL_ATTEMPT_TIMEOUT: Final = 5.0
"""Seconds one attempt (TCP connect plus TLS handshake to one candidate) may take."""

_DRAWS_PER_ATTEMPT: Final = 4


class DialError(TransportError):
    """The connection could not be opened; the request was never sent."""


class NoGatewayKnownError(DialError):
    """The locator knows no gateway on the path to the datacenter; nothing was sent."""

    def __init__(self, datacenter: str) -> None:
        super().__init__(DC_NOT_AVAILABLE)
        self.datacenter = datacenter


class ServerDialer(Protocol):
    """Opens a multiplexed RPC connection along ``route``."""

    async def dial(self, route: Route) -> Connection: ...


async def dial_through_gateway(
    picker: GatewayPicker,
    datacenter: str,
    sni: str,
    alpn: Alpn,
    context: ssl.SSLContext,
    attempt_timeout: float = DIAL_ATTEMPT_TIMEOUT,
) -> Connection:
    """TLS to the far server through a picked gateway; another one if that dial fails.

    The candidates of a path may mix live and dead gateways: a secondary
    dialling the primary directly uses the union of replicated and discovered
    addresses, stale ones included after the primary's gateways were replaced.
    A failed dial sent nothing, so trying another candidate is always safe; up
    to :data:`GATEWAY_ATTEMPTS` distinct ones are tried, each given
    ``attempt_timeout``, so one black-holed candidate does not use up the dial.
    """
    tried: list[str] = []
    last: TransportError | None = None
    for _ in range(GATEWAY_ATTEMPTS):
        gateway = ""
        for _ in range(_DRAWS_PER_ATTEMPT):
            gateway = picker.pick_gateway(datacenter)
            if gateway not in tried:
                break
        if not gateway:
            raise NoGatewayKnownError(datacenter)
        if gateway in tried:
            break
        tried.append(gateway)
        try:
            return await dial_alpn(gateway, sni, alpn, context, attempt_timeout)
        except TransportError as exc:
            last = exc
    assert last is not None
    raise last


def _require_verified(context: ssl.SSLContext) -> None:
    if not context.check_hostname or context.verify_mode != ssl.CERT_REQUIRED:
        raise ValueError(
            "dialing through mesh gateways requires server certificate and hostname verification"
        )


class TlsDialer:
    """Native TLS with ALPN ``wanfed/rpc-multi``, SNI naming the route's server."""

    def __init__(
        self,
        context: ssl.SSLContext | None,
        domain: str,
        *,
        gateways: GatewayPicker | None = None,
        attempt_timeout: float = DIAL_ATTEMPT_TIMEOUT,
    ) -> None:
        """``context`` is the mTLS client context offering ``wanfed/rpc-multi`` only;
        ``gateways`` is required for routes through gateways."""
        if context is None:
            raise ValueError(NO_OUTGOING_TLS)
        if gateways is not None:
            _require_verified(context)
        if attempt_timeout <= 0:
            raise ValueError(f"attempt_timeout must be positive, got {attempt_timeout!r}")
        self._context = context
        self._domain = domain
        self._gateways = gateways
        self._attempt_timeout = attempt_timeout

    async def dial(self, route: Route) -> Connection:
        sni = server_sni(route.datacenter, self._domain, route.node)
        if route.address is not None:
            if route.path != DIRECT:
                _require_verified(self._context)
            return await dial_alpn(
                route.address, sni, Alpn.RPC_MULTI, self._context, self._attempt_timeout
            )
        if self._gateways is None:
            raise NoGatewayKnownError(route.datacenter)
        return await dial_through_gateway(
            self._gateways,
            route.datacenter,
            sni,
            Alpn.RPC_MULTI,
            self._context,
            self._attempt_timeout,
        )


class PlainDialer:
    """The type byte ``MULTIPLEX_V2`` on plain TCP: dev mode and TLS-less clusters."""

    def __init__(self, attempt_timeout: float = DIAL_ATTEMPT_TIMEOUT) -> None:
        self._attempt_timeout = attempt_timeout

    async def dial(self, route: Route) -> Connection:
        if route.address is None or route.path != DIRECT:
            raise DialError(f"{route.text}: {NO_OUTGOING_TLS}")
        return await dial_plain(route.address, RpcType.MULTIPLEX_V2, self._attempt_timeout)
