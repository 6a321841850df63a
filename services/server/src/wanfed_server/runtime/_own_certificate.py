"""A server's own certificate must name it, or its peers refuse it.

The servers-only doors check the caller's certificate: ``Status.Hello`` and
``Raft.Join`` need ``<node>.server.<dc>.<domain>`` for the node they claim.
A server started with a certificate that lacks its node name (made without
``-node``, or another node's) would listen, then fail to form or join its
cluster with nothing but refusals in its peers' logs; so it is refused at
start, with what to run instead.
"""

from __future__ import annotations

from wanfed_agent.config import AgentConfig
from wanfed_agent.tls import ServerCertificatePolicy, TLSMaterial

__all__ = ["check_own_certificate"]


def check_own_certificate(config: AgentConfig) -> None:
    """Raise :class:`ValueError` unless ``cert_file`` names this server's node."""
    d = config.tls.defaults
    if d.ca_file is None or d.cert_file is None or d.key_file is None:
        return
    material = TLSMaterial.load(d.ca_file, d.cert_file, d.key_file)
    policy = ServerCertificatePolicy(config.domain)
    identity = policy.identity({"subjectAltName": [("DNS", n) for n in material.dns_names]})
    if identity.names_node(config.datacenter, config.node_name):
        return
    expected = policy.expected_name(config.datacenter, config.node_name)
    raise ValueError(
        f"the certificate in {d.cert_file!r} does not name {expected}, so the other servers "
        f"would refuse this server's cluster calls (it presents {identity.describe()}). "
        f"Make one with `wanfed tls cert create -server -dc {config.datacenter} "
        f"-domain {policy.domain} -node {config.node_name}`"
    )
