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
    "NO_OUTGOING_TLS",
    "GatewayDialer",
    "GatewayPicker",
    "NoGatewayKnownError",
    "ServerDialer",
]

DC_NOT_AVAILABLE: Final = "Remote DC has no server currently reachable"
NO_OUTGOING_TLS: Final = "cannot dial via a mesh gateway when outgoing TLS is disabled"


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
        gateway = self._picker.pick_gateway(datacenter)
        if not gateway:
            raise NoGatewayKnownError(datacenter)
        sni = server_sni(datacenter, self._domain, node or None)
        return await dial_alpn(gateway, sni, Alpn.RPC_MULTI, self._context, self._timeout)
