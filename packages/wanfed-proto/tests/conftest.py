"""Shared fixtures: a throw-away PKI and running every async test on both loops.

The PKI mirrors what ``tls cert create`` produces for a server of dc1 (SANs
``s1.server.dc1.consul``, ``server.dc1.consul``, ``localhost``, ``127.0.0.1``)
plus the certificates a hostile or broken client would present: one from an
unrelated CA and one that has expired.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
import uvloop
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SERVER_SANS = ("s1.server.dc1.consul", "server.dc1.consul", "localhost")


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Every async test here runs on plain asyncio and on uvloop."""
    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


class _Authority:
    def __init__(self, common_name: str) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(_name(common_name))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
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
            .sign(self.key, hashes.SHA256())
        )

    def issue(
        self,
        common_name: str,
        dns_names: tuple[str, ...],
        *,
        expired: bool = False,
    ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        if expired:
            start, end = now - datetime.timedelta(days=10), now - datetime.timedelta(days=1)
        else:
            start, end = now - datetime.timedelta(days=1), now + datetime.timedelta(days=30)
        alt_names: list[x509.GeneralName] = [x509.DNSName(name) for name in dns_names]
        alt_names.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        return cert, key


def _issue_pair(directory: Path, stem: str, pair: tuple[x509.Certificate, object]) -> None:
    cert, key = pair
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    _write_cert(directory / f"{stem}.pem", cert)
    _write_key(directory / f"{stem}-key.pem", key)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Paths of the test PKI, keyed ``ca``, ``server``, ``server_key``, ``client``,
    ``client_key``, ``other_ca``, ``foreign``, ``foreign_key``, ``expired``,
    ``expired_key``."""
    directory = tmp_path_factory.mktemp("pki")
    ca = _Authority("wanfed test CA")
    other = _Authority("unrelated CA")
    _write_cert(directory / "ca.pem", ca.cert)
    _write_cert(directory / "other-ca.pem", other.cert)
    _issue_pair(directory, "server", ca.issue("server.dc1.consul", SERVER_SANS))
    _issue_pair(
        directory,
        "client",
        ca.issue("server.dc2.consul", ("s2.server.dc2.consul", "server.dc2.consul")),
    )
    _issue_pair(directory, "foreign", other.issue("server.dc1.consul", SERVER_SANS))
    expired = ca.issue("server.dc2.consul", ("server.dc2.consul",), expired=True)
    _issue_pair(directory, "expired", expired)
    return {
        "ca": directory / "ca.pem",
        "server": directory / "server.pem",
        "server_key": directory / "server-key.pem",
        "client": directory / "client.pem",
        "client_key": directory / "client-key.pem",
        "other_ca": directory / "other-ca.pem",
        "foreign": directory / "foreign.pem",
        "foreign_key": directory / "foreign-key.pem",
        "expired": directory / "expired.pem",
        "expired_key": directory / "expired-key.pem",
    }
