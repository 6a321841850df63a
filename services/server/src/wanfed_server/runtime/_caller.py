"""Who is calling an endpoint, so that endpoints can refuse what a caller may not do.

Four kinds of caller reach the one dispatch path:

* this server's own code (leader routines, anti-entropy, its local agent):
  it is trusted with everything;
* an RPC peer whose verified certificate names a server
  (``server.<dc>.<domain>``, maybe ``<node>.server.<dc>.<domain>``): another
  server, of this datacenter or of another one;
* any other RPC peer: a client certificate of the same CA, or a plain
  (type-byte) connection, which only ``-dev`` without TLS accepts;
* the HTTP API, which authenticates nobody until ACLs exist.

The certificate is read by :class:`~wanfed_agent.tls.ServerCertificatePolicy`,
the same object that guards the Raft link and WAN gossip.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from wanfed_agent.tls import NotAServerError, PeerIdentity, ServerCertificatePolicy
from wanfed_proto import ConnectionInfo, RemoteError

__all__ = ["Caller", "CallerKind", "PermissionDeniedError"]


class PermissionDeniedError(RemoteError):
    """The caller may not make this call; the message starts with ``Permission denied:``
    (the HTTP API answers 403, as Consul does for a refused write)."""

    def __init__(self, reason: str) -> None:
        prefix = "Permission denied: "
        super().__init__(reason if reason.startswith(prefix) else prefix + reason)


class CallerKind(enum.Enum):
    SELF = "this server"
    RPC_PEER = "rpc peer"
    HTTP = "http api"


@dataclass(frozen=True)
class Caller:
    """One caller of an endpoint; build it with the class methods."""

    kind: CallerKind
    identity: PeerIdentity = field(default_factory=PeerIdentity)
    """What the peer's certificate names (RPC peers only)."""
    peer: str = ""
    """The peer's address, for messages."""

    @classmethod
    def this_server(cls) -> Caller:
        return cls(CallerKind.SELF)

    @classmethod
    def http_api(cls) -> Caller:
        return cls(CallerKind.HTTP)

    @classmethod
    def rpc_peer(cls, info: ConnectionInfo, policy: ServerCertificatePolicy) -> Caller:
        """A peer of the RPC port: a plain connection presents no certificate."""
        cert = info.peer_cert if info.alpn is not None else None
        return cls(CallerKind.RPC_PEER, policy.identity(cert), info.peer_text)

    @property
    def is_self(self) -> bool:
        return self.kind is CallerKind.SELF

    def is_server_of(self, datacenter: str) -> bool:
        """This server, or a peer with a server certificate of ``datacenter``."""
        return self.is_self or (
            self.kind is CallerKind.RPC_PEER and self.identity.is_server(datacenter)
        )

    def require_server(
        self,
        policy: ServerCertificatePolicy,
        *,
        what: str,
        datacenters: tuple[str, ...],
        node: str | None = None,
    ) -> None:
        """Refuse with :class:`PermissionDeniedError` unless a server of one of
        ``datacenters`` (and, with ``node``, that node) calls; this server always may."""
        if self.is_self:
            return
        if self.kind is CallerKind.HTTP:
            raise PermissionDeniedError(
                f"{what} is a server-to-server call; the HTTP API cannot make it"
            )
        try:
            policy.require_server(self.identity, what=what, datacenters=datacenters, node=node)
        except NotAServerError as refusal:
            raise PermissionDeniedError(str(refusal)) from None
