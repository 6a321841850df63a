"""Dialling another server's RPC port: directly in this datacenter, via a gateway across.

Servers of one datacenter reach each other directly. A server of another
datacenter is never dialled directly when WAN federation via mesh gateways is
on: the dialer asks the gateway picker (the gateway locator) for a gateway on
the path to that datacenter and opens native TLS to it with SNI
``<node>.server.<dc>.<domain>`` and the single ALPN id ``wanfed/rpc-multi``;
the gateways route on that name and the far server's certificate is verified
for it, whatever ``verify_outgoing`` says for same-datacenter traffic.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Final, Protocol

from wanfed_proto import (
    DEFAULT_DIAL_TIMEOUT,
    Alpn,
    Connection,
    TransportError,
    dial_alpn,
    server_sni,
)

__all__ = [
    "DC_NOT_AVAILABLE",
    "GATEWAY_ATTEMPTS",
    "NO_OUTGOING_TLS",
    "GatewayDialer",
    "GatewayPicker",
    "NoGatewayKnownError",
    "ServerDialer",
    "dial_through_gateway",
]

DC_NOT_AVAILABLE: Final = "Remote DC has no server currently reachable"
NO_OUTGOING_TLS: Final = "cannot dial via a mesh gateway when outgoing TLS is disabled"


GATEWAY_ATTEMPTS: Final = 3
"""Distinct gateways one dial tries before it fails (all within one dial timeout)."""

_DRAWS_PER_ATTEMPT: Final = 4


class GatewayPicker(Protocol):
    def pick_gateway(self, datacenter: str) -> str: ...


class ServerDialer(Protocol):
    """Opens a multiplexed RPC connection to server ``node`` of ``datacenter``."""

    async def dial(self, node: str, datacenter: str, address: str) -> Connection: ...


class NoGatewayKnownError(TransportError):
    """The locator knows no gateway on the path to the datacenter; nothing was sent."""

    def __init__(self, datacenter: str) -> None:
        super().__init__(DC_NOT_AVAILABLE)
        self.datacenter = datacenter


async def dial_through_gateway(
    picker: GatewayPicker,
    datacenter: str,
    sni: str,
    alpn: Alpn,
    context: ssl.SSLContext,
    timeout: float,  # noqa: ASYNC109 (shared by the attempts, not one await)
) -> Connection:
    """TLS to the far server through a picked gateway; another one if that dial fails.

    The candidates of a path may mix live and dead gateways: a secondary
    dialling the primary directly uses the union of replicated and discovered
    addresses, stale ones included after the primary's gateways were replaced.
    A failed dial sent nothing, so trying another candidate is always safe;
    up to :data:`GATEWAY_ATTEMPTS` distinct ones are tried, sharing ``timeout``
    so a black-holed path fails no later than a single dial would.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
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
        remaining = deadline - loop.time()
        if gateway in tried or remaining <= 0:
            break
        tried.append(gateway)
        try:
            return await dial_alpn(gateway, sni, alpn, context, remaining)
        except TransportError as exc:
            last = exc
    assert last is not None
    raise last


class GatewayDialer:
    """Same datacenter: ``direct``; any other: TLS through a picked gateway."""

    def __init__(
        self,
        *,
        datacenter: str,
        domain: str,
        picker: GatewayPicker,
        direct: ServerDialer,
        context: ssl.SSLContext | None,
        timeout: float = DEFAULT_DIAL_TIMEOUT,
    ) -> None:
        """``context`` is the mTLS client context offering ``wanfed/rpc-multi`` only."""
        if context is None:
            raise ValueError(NO_OUTGOING_TLS)
        if not context.check_hostname or context.verify_mode != ssl.CERT_REQUIRED:
            raise ValueError(
                "dialing through mesh gateways requires server certificate and hostname "
                "verification"
            )
        self._datacenter = datacenter
        self._domain = domain
        self._picker = picker
        self._direct = direct
        self._context = context
        self._timeout = timeout

    async def dial(self, node: str, datacenter: str, address: str) -> Connection:
        """``address`` is the server's advertised address: the pool key, not the TCP peer."""
        if datacenter.lower() == self._datacenter.lower():
            return await self._direct.dial(node, datacenter, address)
        sni = server_sni(datacenter, self._domain, node or None)
        return await dial_through_gateway(
            self._picker, datacenter, sni, Alpn.RPC_MULTI, self._context, self._timeout
        )
