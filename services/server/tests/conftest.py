"""Shared fixtures of the server tests: a throwaway PKI and TLS stand-in servers."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class CertFiles:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    """A CA plus leaf certificates, all as PEM files (``openssl s_client`` needs files)."""

    ca: Path
    leaves: dict[str, CertFiles]

    def server_context(self, leaf: str) -> ssl.SSLContext:
        """A server context that demands a client certificate from the same CA."""
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(self.ca))
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_cert_chain(str(self.leaves[leaf].cert), str(self.leaves[leaf].key))
        return ctx

    def client_context(self, leaf: str = "client") -> ssl.SSLContext:
        """A client context that verifies the server's name and presents ``leaf``."""
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.ca))
        ctx.load_cert_chain(str(self.leaves[leaf].cert), str(self.leaves[leaf].key))
        return ctx


_LEAVES: dict[str, list[str]] = {
    "s1": ["s1.server.dc1.consul", "server.dc1.consul"],
    "s2": ["s2.server.dc1.consul", "server.dc1.consul"],
    "r1": ["r1.server.dc2.consul", "server.dc2.consul"],
    "client": ["c1.server.dc1.consul", "server.dc1.consul"],
}


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "wanfed test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
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
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_path = directory / "ca.pem"
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    leaves: dict[str, CertFiles] = {}
    for name, sans in _LEAVES.items():
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, sans[0])]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName(san) for san in sans]
                    + [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        files = CertFiles(directory / f"{name}.pem", directory / f"{name}-key.pem")
        files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(files.key, key)
        leaves[name] = files
    return Pki(ca=ca_path, leaves=leaves)


@dataclass
class TlsServer:
    """An mTLS stand-in for a wanfed server.

    Greets each client with ``<name> client=<client CN>`` (proof that mutual
    TLS completed end to end), then echoes lines until EOF.
    """

    name: str
    server: asyncio.Server
    writers: set[asyncio.StreamWriter] = field(default_factory=set)
    accepted: int = 0

    @property
    def port(self) -> int:
        return int(self.server.sockets[0].getsockname()[1])

    async def kill(self) -> None:
        """Stop listening and reset every open connection, like a crashed process."""
        self.server.close()
        for writer in list(self.writers):
            writer.transport.abort()
        await self.server.wait_closed()


@pytest.fixture
async def tls_servers(pki: Pki) -> AsyncIterator[Callable[[str], Awaitable[TlsServer]]]:
    """Factory: ``await tls_servers("s1")`` starts an mTLS stand-in with leaf ``s1``."""
    started: list[TlsServer] = []

    async def start(name: str) -> TlsServer:
        holder: list[TlsServer] = []

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            me = holder[0]
            me.accepted += 1
            me.writers.add(writer)
            try:
                peer = writer.get_extra_info("peercert") or {}
                subject = dict(item[0] for item in peer.get("subject", ()))
                writer.write(f"{name} client={subject.get('commonName')}\n".encode())
                while line := await reader.readline():
                    writer.write(line)
                    await writer.drain()
                writer.close()
            except (ConnectionError, ssl.SSLError):
                writer.transport.abort()
            finally:
                me.writers.discard(writer)

        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=pki.server_context(name))
        holder.append(TlsServer(name, server))
        started.append(holder[0])
        return holder[0]

    yield start
    for server in started:
        await server.kill()


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]] | None:
    """Run the gateway data-plane tests on both loops the gateway supports."""
    del config
    if not item.path.name.startswith("test_gateway_proxy"):
        return None
    import uvloop

    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}
