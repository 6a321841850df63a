"""A small certificate authority for agent TLS, like ``consul tls``.

Everything returns PEM bytes and takes ``now`` as a parameter, so tests can
make certificates that are expired or not yet valid without touching clocks.
Keys are ECDSA P-256, the curve every TLS stack supports. Server certificates
carry the names that SNI routing through mesh gateways depends on
(reference 2.3): ``<node>.server.<dc>.<domain>`` and ``server.<dc>.<domain>``.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
from collections.abc import Sequence

import msgspec
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ._errors import TLSMaterialError
from ._names import client_name

__all__ = [
    "DEFAULT_CA_DAYS",
    "DEFAULT_CERT_DAYS",
    "PemPair",
    "create_ca",
    "create_client_cert",
    "create_server_cert",
]

DEFAULT_CA_DAYS = 1825
DEFAULT_CERT_DAYS = 365

_CLOCK_SKEW = datetime.timedelta(minutes=1)
_DATACENTER = re.compile(r"[a-z0-9_-]+")
_DNS_NAME = re.compile(r"(\*\.)?([A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\.?)+")


class PemPair(msgspec.Struct, frozen=True, kw_only=True):
    """A certificate and its private key, both PEM-encoded."""

    cert_pem: bytes
    key_pem: bytes


def create_ca(
    *,
    days: int = DEFAULT_CA_DAYS,
    common_name: str | None = None,
    now: datetime.datetime | None = None,
) -> PemPair:
    """A self-signed CA that may only sign (keyCertSign, cRLSign)."""
    _check_days(days)
    key = ec.generate_private_key(ec.SECP256R1())
    serial = x509.random_serial_number()
    name = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, common_name or f"wanfed Agent CA {serial}")]
    )
    start = _now(now)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(start - _CLOCK_SKEW)
        .not_valid_after(start + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return PemPair(cert_pem=cert.public_bytes(serialization.Encoding.PEM), key_pem=_key_pem(key))


def create_server_cert(
    ca: PemPair,
    dc: str,
    domain: str = "consul",
    node: str | None = None,
    additional_dns: Sequence[str] = (),
    additional_ips: Sequence[str] = (),
    days: int = DEFAULT_CERT_DAYS,
    *,
    now: datetime.datetime | None = None,
) -> PemPair:
    """A server certificate for ``dc``.

    DNS SANs in this order: ``<node>.server.<dc>.<domain>`` (only with a node),
    ``server.<dc>.<domain>``, ``localhost``, then ``additional_dns``; IP SANs
    ``127.0.0.1`` then ``additional_ips``; CN ``server.<dc>.<domain>``.
    """
    _check_dc(dc)
    if node is not None and (not node or "/" in node or "." in node):
        raise ValueError(f"node name {node!r} cannot be used in a server name")
    # Here, not at the top: the tls commands stay free of the asyncio code that
    # importing wanfed_proto loads (``wanfed tls ca create`` never needs it).
    from wanfed_proto import InvalidNameError, server_sni

    try:
        dns = [server_sni(dc, domain, node)] if node else []
        any_server = server_sni(dc, domain)
    except InvalidNameError as exc:
        raise ValueError(str(exc)) from None
    dns += [any_server, "localhost", *additional_dns]
    return _leaf(ca, any_server, dns, additional_ips, days, now)


def create_client_cert(
    ca: PemPair,
    dc: str,
    domain: str = "consul",
    additional_dns: Sequence[str] = (),
    additional_ips: Sequence[str] = (),
    days: int = DEFAULT_CERT_DAYS,
    *,
    now: datetime.datetime | None = None,
) -> PemPair:
    """A client certificate: CN and first SAN ``client.<dc>.<domain>``, then ``localhost``."""
    _check_dc(dc)
    name = client_name(dc, domain)
    return _leaf(ca, name, [name, "localhost", *additional_dns], additional_ips, days, now)


def _leaf(
    ca: PemPair,
    common_name: str,
    dns: Sequence[str],
    extra_ips: Sequence[str],
    days: int,
    now: datetime.datetime | None,
) -> PemPair:
    _check_days(days)
    ca_cert, ca_key = _load_ca(ca)
    for name in dns:
        if not _DNS_NAME.fullmatch(name):
            raise ValueError(f"{name!r} is not a valid DNS name")
    ips: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    for text in extra_ips:
        try:
            ips.append(x509.IPAddress(ipaddress.ip_address(text)))
        except ValueError:
            raise ValueError(f"{text!r} is not a valid IP address") from None
    key = ec.generate_private_key(ec.SECP256R1())
    start = _now(now)
    try:
        ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_cert.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start - _CLOCK_SKEW)
        .not_valid_after(start + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            # Consul's set; keyEncipherment/keyAgreement are ignored for ECDSA keys
            # by TLS stacks, digitalSignature is the one ECDHE handshakes need.
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.SubjectAlternativeName([*(x509.DNSName(n) for n in dns), *ips]), critical=False
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return PemPair(cert_pem=cert.public_bytes(serialization.Encoding.PEM), key_pem=_key_pem(key))


_SigningKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def _load_ca(ca: PemPair) -> tuple[x509.Certificate, _SigningKey]:
    try:
        cert = x509.load_pem_x509_certificate(ca.cert_pem)
    except ValueError:
        raise TLSMaterialError("the CA certificate is not a PEM certificate") from None
    try:
        key = serialization.load_pem_private_key(ca.key_pem, password=None)
    except (ValueError, TypeError):
        raise TLSMaterialError("the CA key is not an unencrypted PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise TLSMaterialError("the CA key is neither an ECDSA nor an RSA key")
    if spki(key.public_key()) != spki(cert.public_key()):
        raise TLSMaterialError("the CA key does not belong to the CA certificate")
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise TLSMaterialError("the CA certificate is not a CA (no basicConstraints CA=true)")
    return cert, key


def spki(key: CertificatePublicKeyTypes) -> bytes:
    """DER SubjectPublicKeyInfo: compares public keys of any algorithm."""
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _now(now: datetime.datetime | None) -> datetime.datetime:
    return now if now is not None else datetime.datetime.now(datetime.UTC)


def _check_days(days: int) -> None:
    if days < 1:
        raise ValueError(f"days must be at least 1, got {days}")


def _check_dc(dc: str) -> None:
    if not _DATACENTER.fullmatch(dc):
        raise ValueError(f"datacenter {dc!r} must be lowercase letters, digits, '-' and '_'")
