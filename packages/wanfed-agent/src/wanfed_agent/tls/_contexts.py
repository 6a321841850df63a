"""A server's TLS in one object: its contexts, its own certificate, its peers' policy.

Every server-to-server door is mutual TLS from the same three files
(``ca_file``, ``cert_file``, ``key_file``): the RPC port's server context,
and one client context per ALPN id it dials with (``wanfed/rpc-multi`` for
RPC, ``wanfed/raft``, the two WAN gossip ids). Client contexts offer exactly
one ALPN id, because the far side picks its handler from it. They are built
once here, so a server never holds two contexts for one purpose, and the
checks that go with them live beside them: the peer policy
(:class:`ServerCertificatePolicy`, which certificate is a server of which
datacenter) and the start-up check that this server's own certificate names
it — a certificate that does not would listen and then fail every cluster
call with nothing but refusals in its peers' logs.
"""

from __future__ import annotations

import ssl

from wanfed_proto import client_context, server_context

from ._identity import ServerCertificatePolicy
from ._material import TLSMaterial

__all__ = ["ServerTls"]


class ServerTls:
    """The TLS contexts and certificate checks of one server."""

    def __init__(self, *, ca_file: str, cert_file: str, key_file: str, domain: str) -> None:
        self._files = (ca_file, cert_file, key_file)
        self.policy = ServerCertificatePolicy(domain)
        """How this server reads its peers' certificates (its cluster domain)."""
        self.server = server_context(ca_file, cert_file, key_file)
        """The RPC port's context: a client certificate from the CA is required."""
        self._clients: dict[str, ssl.SSLContext] = {}

    def client(self, alpn: str) -> ssl.SSLContext:
        """The mutual-TLS client context offering ``alpn`` only (built once)."""
        context = self._clients.get(alpn)
        if context is None:
            context = client_context(*self._files, alpn=[alpn])
            self._clients[alpn] = context
        return context

    def check_own_certificate(self, datacenter: str, node: str) -> None:
        """Raise :class:`ValueError` unless ``cert_file`` names server ``node`` of ``datacenter``.

        The servers-only doors (``Status.Hello``, ``Raft.Join``) need
        ``<node>.server.<datacenter>.<domain>`` for the node the caller claims.
        """
        ca_file, cert_file, key_file = self._files
        material = TLSMaterial.load(ca_file, cert_file, key_file)
        policy = self.policy
        identity = policy.identity({"subjectAltName": [("DNS", n) for n in material.dns_names]})
        if identity.names_node(datacenter, node):
            return
        expected = policy.expected_name(datacenter, node)
        raise ValueError(
            f"the certificate in {cert_file!r} does not name {expected}, so the other servers "
            f"would refuse this server's cluster calls (it presents {identity.describe()}). "
            f"Make one with `wanfed tls cert create -server -dc {datacenter} "
            f"-domain {policy.domain} -node {node}`"
        )
