"""Loading and checking an agent's CA, certificate and key files.

Problems that would otherwise surface as an opaque handshake failure on some
later connection (a key that belongs to another certificate, a certificate
from another CA, an expired certificate) are found at start-up and reported
with the file that holds them.
"""

from __future__ import annotations

import datetime
import logging
from pathlib import Path

import msgspec
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from ._authority import spki
from ._errors import TLSMaterialError

__all__ = ["EXPIRY_WARNING", "TLSMaterial"]

log = logging.getLogger(__name__)

EXPIRY_WARNING = datetime.timedelta(days=30)
"""A certificate expiring sooner than this is loaded but logged as a warning."""


class TLSMaterial(msgspec.Struct, frozen=True, kw_only=True):
    """Checked TLS files: a CA bundle and, optionally, a certificate chain with its key.

    Paths are kept because :meth:`ssl.SSLContext.load_cert_chain` reads files;
    the PEM bytes are what was checked.
    """

    ca_file: str
    ca_pem: bytes
    cert_file: str | None = None
    cert_pem: bytes | None = None
    key_file: str | None = None
    key_pem: bytes | None = None
    not_after: datetime.datetime | None = None
    """Expiry of the leaf certificate, if there is one."""
    dns_names: tuple[str, ...] = ()
    """DNS SANs of the leaf certificate."""

    @classmethod
    def load(
        cls,
        ca_file: str | Path,
        cert_file: str | Path | None = None,
        key_file: str | Path | None = None,
        *,
        now: datetime.datetime | None = None,
    ) -> TLSMaterial:
        """Read and cross-check the files; raise :class:`TLSMaterialError` naming the file."""
        if (cert_file is None) != (key_file is None):
            raise TLSMaterialError("a certificate file and a key file must be given together")
        when = now if now is not None else datetime.datetime.now(datetime.UTC)
        ca_pem = _read(ca_file, "CA file")
        cas = _certificates(ca_pem, ca_file, "CA file")
        for ca in cas:
            _check_validity(ca, ca_file, when)
        if cert_file is None or key_file is None:
            return cls(ca_file=str(ca_file), ca_pem=ca_pem)
        cert_pem = _read(cert_file, "certificate file")
        chain = _certificates(cert_pem, cert_file, "certificate file")
        key_pem = _read(key_file, "key file")
        try:
            key = serialization.load_pem_private_key(key_pem, password=None)
        except (ValueError, TypeError):
            raise TLSMaterialError(
                f"key file {str(key_file)!r} does not contain an unencrypted PEM private key"
            ) from None
        if not isinstance(
            key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
        ):
            raise TLSMaterialError(f"key file {str(key_file)!r} holds an unsupported key type")
        leaf = chain[0]
        if spki(key.public_key()) != spki(leaf.public_key()):
            raise TLSMaterialError(
                f"key file {str(key_file)!r} does not match the certificate in {str(cert_file)!r}"
            )
        _check_validity(leaf, cert_file, when)
        _check_issued_by(chain, cas, cert_file, ca_file)
        return cls(
            ca_file=str(ca_file),
            ca_pem=ca_pem,
            cert_file=str(cert_file),
            cert_pem=cert_pem,
            key_file=str(key_file),
            key_pem=key_pem,
            not_after=leaf.not_valid_after_utc,
            dns_names=_dns_names(leaf),
        )


def _read(path: str | Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise TLSMaterialError(f"{what} {str(path)!r} does not exist") from None
    except OSError as error:
        raise TLSMaterialError(f"{what} {str(path)!r} cannot be read: {error.strerror}") from None


def _certificates(pem: bytes, path: str | Path, what: str) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError:
        certs = []
    if not certs:
        raise TLSMaterialError(f"{what} {str(path)!r} does not contain a PEM certificate")
    return certs


def _check_validity(cert: x509.Certificate, path: str | Path, now: datetime.datetime) -> None:
    if now > cert.not_valid_after_utc:
        raise TLSMaterialError(
            f"certificate in {str(path)!r} expired at {cert.not_valid_after_utc.isoformat()}; "
            "create a new one (wanfed tls cert create)"
        )
    if now < cert.not_valid_before_utc:
        raise TLSMaterialError(
            f"certificate in {str(path)!r} is not valid before "
            f"{cert.not_valid_before_utc.isoformat()}; check this machine's clock"
        )
    if cert.not_valid_after_utc - now < EXPIRY_WARNING:
        log.warning(
            "certificate expires soon; replace it before then",
            extra={"file": str(path), "not_after": cert.not_valid_after_utc.isoformat()},
        )


def _check_issued_by(
    chain: list[x509.Certificate],
    cas: list[x509.Certificate],
    cert_file: str | Path,
    ca_file: str | Path,
) -> None:
    """Walk leaf → intermediates (from the cert file) until a CA from the CA file signs."""
    current = chain[0]
    intermediates = chain[1:]
    for _ in range(len(chain) + 1):
        if any(_signed_by(current, ca) for ca in cas):
            return
        parent = next((c for c in intermediates if _signed_by(current, c)), None)
        if parent is None:
            break
        current = parent
    raise TLSMaterialError(
        f"certificate in {str(cert_file)!r} was not issued by the CA in {str(ca_file)!r}"
    )


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _dns_names(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    return tuple(sans.get_values_for_type(x509.DNSName))
