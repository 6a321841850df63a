"""Shared fixtures: a throw-away PKI for raft over mutual TLS, and loop choice.

One CA and, per test, server certificates valid for ``server.dc1.consul``
(both server and client use), plus a certificate from an unrelated CA that
must not get a raft connection anywhere.
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
import uvloop
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SERVER_NAME = "server.dc1.consul"  # test_raft_link.py dials this name too


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    """The raft link touches asyncio transports directly: run its tests on uvloop too
    (servers run on uvloop, whose transports are not asyncio.Transport subclasses)."""
    if item.path.name == "test_raft_link.py":
        return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}
    return {"asyncio": asyncio.new_event_loop}


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _authority(common_name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _leaf(
    ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(SERVER_NAME))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(SERVER_NAME)]),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def _write(
    directory: Path, stem: str, key: ec.EllipticCurvePrivateKey | None, cert: x509.Certificate
) -> tuple[Path, Path]:
    cert_path = directory / f"{stem}.pem"
    key_path = directory / f"{stem}-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return cert_path, key_path


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Paths: ``ca``, ``cert``, ``key`` for this cluster; ``rogue_*`` for an outsider."""
    directory = tmp_path_factory.mktemp("pki")
    ca_key, ca_cert = _authority("wanfed test CA")
    rogue_ca_key, rogue_ca_cert = _authority("someone else's CA")
    ca_file, _ = _write(directory, "ca", None, ca_cert)
    rogue_ca_file, _ = _write(directory, "rogue-ca", None, rogue_ca_cert)
    cert_file, key_file = _write(directory, "server", *_leaf(ca_key, ca_cert))
    rogue_cert_file, rogue_key_file = _write(
        directory, "rogue", *_leaf(rogue_ca_key, rogue_ca_cert)
    )
    return {
        "ca": ca_file,
        "cert": cert_file,
        "key": key_file,
        "rogue_ca": rogue_ca_file,
        "rogue_cert": rogue_cert_file,
        "rogue_key": rogue_key_file,
    }
