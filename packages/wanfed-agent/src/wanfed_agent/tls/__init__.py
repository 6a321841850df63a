"""TLS material for agents: a small CA, server/client certificates, and file loading.

``create_ca`` / ``create_server_cert`` / ``create_client_cert`` return
:class:`PemPair` (PEM bytes); :meth:`TLSMaterial.load` reads and cross-checks
an agent's ``ca_file``, ``cert_file`` and ``key_file``.
:class:`ServerCertificatePolicy` decides whether a verified peer certificate
belongs to a server (of a datacenter, of a node): every servers-only door asks it.
:class:`ServerTls` holds a server's contexts (one per ALPN id it dials with),
its peer policy and the check that its own certificate names it.

Everything that needs ``cryptography`` loads on first use (PEP 562), so code
that only catches :class:`TLSMaterialError` or builds SNI names stays cheap to
import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from wanfed_agent._lazy import lazy_exports

from ._errors import TLSMaterialError
from ._names import client_name

if TYPE_CHECKING:
    from ._authority import (
        DEFAULT_CA_DAYS,
        DEFAULT_CERT_DAYS,
        PemPair,
        create_ca,
        create_client_cert,
        create_server_cert,
    )
    from ._contexts import ServerTls
    from ._identity import NotAServerError, PeerIdentity, ServerCertificatePolicy
    from ._material import EXPIRY_WARNING, TLSMaterial

__all__ = [
    "DEFAULT_CA_DAYS",
    "DEFAULT_CERT_DAYS",
    "EXPIRY_WARNING",
    "NotAServerError",
    "PeerIdentity",
    "PemPair",
    "ServerCertificatePolicy",
    "ServerTls",
    "TLSMaterial",
    "TLSMaterialError",
    "client_name",
    "create_ca",
    "create_client_cert",
    "create_server_cert",
]

_HOMES = {
    "DEFAULT_CA_DAYS": "._authority",
    "DEFAULT_CERT_DAYS": "._authority",
    "PemPair": "._authority",
    "create_ca": "._authority",
    "create_client_cert": "._authority",
    "create_server_cert": "._authority",
    "EXPIRY_WARNING": "._material",
    "TLSMaterial": "._material",
    "NotAServerError": "._identity",
    "PeerIdentity": "._identity",
    "ServerCertificatePolicy": "._identity",
    "ServerTls": "._contexts",
}


if not TYPE_CHECKING:  # mypy sees the imports above, so a misspelt name stays an error
    __getattr__, __dir__ = lazy_exports(__name__, _HOMES, __all__)
