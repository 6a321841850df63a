"""Who a verified peer certificate says its holder is: the one place that decides
"this peer is a server (of that datacenter, that node)".

Mutual TLS only proves that a certificate was signed by the cluster's CA, and
servers and clients hold certificates from the same CA (``wanfed tls cert
create -server`` / ``-client``). What a peer may do depends on the names its
certificate carries (reference 2.3): ``server.<dc>.<domain>`` marks a server
of ``dc``; ``<node>.server.<dc>.<domain>`` also names its node. Every door
that only servers may use (Raft, cluster formation, the server directory,
federation-state writes, WAN gossip through gateways) asks
:class:`ServerCertificatePolicy`, so they all agree on what a server
certificate is, and all refuse with the same kind of message.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

import msgspec

from wanfed_proto import Connection, ConnectionHandler, InvalidNameError, server_sni

__all__ = [
    "REFUSAL_LOG_INTERVAL",
    "NotAServerError",
    "PeerIdentity",
    "ServerCertificatePolicy",
]

logger = logging.getLogger("wanfed_agent.tls.identity")

REFUSAL_LOG_INTERVAL: Final = 10.0
"""Seconds between two log lines about refused connections of one kind."""


class NotAServerError(Exception):
    """The peer's certificate does not name the server the call needs.

    The message starts with ``Permission denied:``, the words Consul uses for
    a refused call (the HTTP API answers it with 403), and says which name was
    expected and which names the certificate has.
    """


class PeerIdentity(msgspec.Struct, frozen=True, kw_only=True):
    """The DNS names of a verified peer certificate, read as server identities."""

    dns_names: tuple[str, ...] = ()
    """Lower-cased DNS SANs; empty without a certificate (a plain connection)."""
    server_datacenters: frozenset[str] = frozenset()
    """Datacenters for which the certificate names ``server.<dc>.<domain>``."""
    server_nodes: frozenset[tuple[str, str]] = frozenset()
    """``(dc, node)`` for each ``<node>.server.<dc>.<domain>`` the certificate names."""
    has_certificate: bool = False

    def is_server(self, datacenter: str | None = None) -> bool:
        """A server certificate (of ``datacenter`` when given)."""
        if datacenter is None:
            return bool(self.server_datacenters)
        return datacenter.lower() in self.server_datacenters

    def names_node(self, datacenter: str, node: str) -> bool:
        return (datacenter.lower(), node.lower()) in self.server_nodes

    def describe(self) -> str:
        """For error messages and logs: what the peer presented."""
        if not self.has_certificate:
            return "no certificate"
        if not self.dns_names:
            return "a certificate without DNS names"
        return "a certificate naming " + ", ".join(self.dns_names)


class ServerCertificatePolicy:
    """Reads peer certificates of one cluster domain; refuses what is not a server."""

    def __init__(self, domain: str, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._domain = domain.removesuffix(".").lower()
        self._suffix = "." + self._domain
        self._clock = clock
        self._refusals: dict[str, tuple[float, int]] = {}

    @property
    def domain(self) -> str:
        return self._domain

    def expected_name(self, datacenter: str | None = None, node: str | None = None) -> str:
        """The certificate name a call needs; ``server.<any dc>`` without a datacenter."""
        if not datacenter:
            return f"server.<dc>.{self._domain}"
        try:
            return server_sni(datacenter, self._domain, node)
        except InvalidNameError:
            # A request may name a datacenter that cannot exist: its refusal must
            # still say what it asked for, not fail on the name.
            prefix = f"{node}." if node else ""
            return f"{prefix}server.{datacenter!r}.{self._domain}"

    def identity(self, peer_cert: Mapping[str, Any] | None) -> PeerIdentity:
        """What ``peer_cert`` (as :meth:`ssl.SSLSocket.getpeercert` gives it) names."""
        if not peer_cert:
            return PeerIdentity()
        names = tuple(
            str(value).lower()
            for kind, value in _pairs(peer_cert.get("subjectAltName", ()))
            if kind == "DNS"
        )
        datacenters: set[str] = set()
        nodes: set[tuple[str, str]] = set()
        for name in names:
            if not name.endswith(self._suffix):
                continue
            parts = name.removesuffix(self._suffix).split(".")
            if len(parts) == 2 and parts[0] == "server" and parts[1]:
                datacenters.add(parts[1])
            elif len(parts) == 3 and parts[1] == "server" and parts[0] and parts[2]:
                nodes.add((parts[2], parts[0]))
        return PeerIdentity(
            dns_names=names,
            server_datacenters=frozenset(datacenters),
            server_nodes=frozenset(nodes),
            has_certificate=True,
        )

    def require_server(
        self,
        identity: PeerIdentity,
        *,
        what: str,
        datacenter: str | None = None,
        node: str | None = None,
        datacenters: Iterable[str] = (),
    ) -> None:
        """Raise :class:`NotAServerError` unless ``identity`` is the server ``what`` needs.

        ``datacenter`` (or any of ``datacenters``): the certificate must name a
        server of it; ``node``: also ``<node>.server.<dc>.<domain>`` — a call
        that speaks for a node must come from that node.
        """
        allowed = [dc for dc in (datacenter, *datacenters) if dc]
        if allowed:
            matching = [dc for dc in allowed if identity.is_server(dc)]
            if not matching:
                expected = " or ".join(self.expected_name(dc) for dc in dict.fromkeys(allowed))
                raise NotAServerError(
                    f"Permission denied: {what} needs a server certificate ({expected}); "
                    f"the peer presented {identity.describe()}"
                )
            if node is not None and not any(identity.names_node(dc, node) for dc in matching):
                raise NotAServerError(
                    f"Permission denied: {what} for node {node!r} needs that node's server "
                    f"certificate ({self.expected_name(matching[0], node)}); the peer presented "
                    f"{identity.describe()}"
                )
            return
        if not identity.is_server():
            raise NotAServerError(
                f"Permission denied: {what} needs a server certificate "
                f"({self.expected_name()}); the peer presented {identity.describe()}"
            )

    def guard(
        self, handler: ConnectionHandler, *, what: str, datacenter: str | None = None
    ) -> ConnectionHandler:
        """``handler`` behind a server-certificate check: anyone else is cut off before
        a single byte of theirs is read."""

        async def guarded(connection: Connection) -> None:
            identity = self.identity(connection.info.peer_cert)
            try:
                self.require_server(identity, what=what, datacenter=datacenter)
            except NotAServerError as refusal:
                self.log_refusal(what, connection.info.peer_text, str(refusal))
                connection.abort()
                return
            await handler(connection)

        return guarded

    def log_refusal(self, what: str, peer: str, reason: str) -> None:
        """At most one line per kind of door per interval: an attacker can repeat the
        attempt per connection, and must not be able to flood the log."""
        now = self._clock()
        logged_at, suppressed = self._refusals.get(what, (float("-inf"), 0))
        if now - logged_at < REFUSAL_LOG_INTERVAL:
            self._refusals[what] = (logged_at, suppressed + 1)
            return
        self._refusals[what] = (now, 0)
        more = f" ({suppressed} more refused since the last report)" if suppressed else ""
        logger.warning(
            "refused %s connection peer=%s reason=%s; closed it%s",
            what,
            peer,
            reason,
            more,
            extra={"peer": peer, "door": what},
        )


def _pairs(values: Any) -> Iterable[tuple[str, str]]:
    for item in values or ():
        if isinstance(item, tuple | list) and len(item) == 2:
            yield str(item[0]), str(item[1])
