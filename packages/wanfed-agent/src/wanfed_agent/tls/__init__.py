"""TLS material for agents: a small CA, server/client certificates, and file loading.

``create_ca`` / ``create_server_cert`` / ``create_client_cert`` return
:class:`PemPair` (PEM bytes); :meth:`TLSMaterial.load` reads and cross-checks
an agent's ``ca_file``, ``cert_file`` and ``key_file``.
"""

from ._authority import (
    DEFAULT_CA_DAYS,
    DEFAULT_CERT_DAYS,
    PemPair,
    create_ca,
    create_client_cert,
    create_server_cert,
)
from ._errors import TLSMaterialError
from ._material import EXPIRY_WARNING, TLSMaterial
from ._names import client_name, server_name

__all__ = [
    "DEFAULT_CA_DAYS",
    "DEFAULT_CERT_DAYS",
    "EXPIRY_WARNING",
    "PemPair",
    "TLSMaterial",
    "TLSMaterialError",
    "client_name",
    "create_ca",
    "create_client_cert",
    "create_server_cert",
    "server_name",
]
