"""Loading an agent's TLS files, and a real mutual-TLS handshake with created certificates."""

from __future__ import annotations

import datetime
import logging
import ssl
from pathlib import Path
from typing import cast

import pytest

from wanfed_agent.tls import (
    PemPair,
    TLSMaterial,
    TLSMaterialError,
    create_ca,
    create_client_cert,
    create_server_cert,
)


def write(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


def test_load_good_material(tls_files: TLSMaterial) -> None:
    assert tls_files.cert_file is not None
    assert tls_files.key_pem is not None
    assert tls_files.dns_names == ("s1.server.dc1.consul", "server.dc1.consul", "localhost")
    assert tls_files.not_after is not None


def test_ca_only(tls_files: TLSMaterial) -> None:
    material = TLSMaterial.load(tls_files.ca_file)
    assert material.cert_file is None
    assert material.ca_pem == tls_files.ca_pem


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(TLSMaterialError) as caught:
        TLSMaterial.load(tmp_path / "ca.pem")
    assert str(caught.value) == f"CA file {str(tmp_path / 'ca.pem')!r} does not exist"


def test_not_pem(tmp_path: Path) -> None:
    ca = write(tmp_path, "ca.pem", b"hello")
    with pytest.raises(TLSMaterialError, match="does not contain a PEM certificate"):
        TLSMaterial.load(ca)


def test_key_not_pem(tls_files: TLSMaterial, tmp_path: Path) -> None:
    key = write(
        tmp_path, "key.pem", b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
    )
    with pytest.raises(TLSMaterialError, match="does not contain an unencrypted PEM private key"):
        TLSMaterial.load(tls_files.ca_file, tls_files.cert_file, key)


def test_cert_and_key_swapped(tls_files: TLSMaterial) -> None:
    with pytest.raises(TLSMaterialError, match="does not contain a PEM certificate"):
        TLSMaterial.load(tls_files.ca_file, tls_files.key_file, tls_files.cert_file)


def test_key_of_another_cert(tls_files: TLSMaterial, ca_pair: PemPair, tmp_path: Path) -> None:
    other = create_server_cert(ca_pair, "dc1", node="s2")
    key = write(tmp_path, "other-key.pem", other.key_pem)
    with pytest.raises(TLSMaterialError) as caught:
        TLSMaterial.load(tls_files.ca_file, tls_files.cert_file, key)
    assert str(caught.value) == (
        f"key file {str(key)!r} does not match the certificate in {tls_files.cert_file!r}"
    )


def test_cert_from_another_ca(tls_files: TLSMaterial, tmp_path: Path) -> None:
    stranger = create_server_cert(create_ca(), "dc1", node="s1")
    cert = write(tmp_path, "c.pem", stranger.cert_pem)
    key = write(tmp_path, "k.pem", stranger.key_pem)
    with pytest.raises(TLSMaterialError) as caught:
        TLSMaterial.load(tls_files.ca_file, cert, key)
    assert str(caught.value) == (
        f"certificate in {str(cert)!r} was not issued by the CA in {tls_files.ca_file!r}"
    )


def test_ca_bundle_with_several_cas(tls_files: TLSMaterial, tmp_path: Path) -> None:
    bundle = write(tmp_path, "bundle.pem", create_ca().cert_pem + tls_files.ca_pem)
    material = TLSMaterial.load(bundle, tls_files.cert_file, tls_files.key_file)
    assert material.ca_file == str(bundle)


def test_expired_cert(ca_pair: PemPair, tmp_path: Path) -> None:
    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=30)
    old = create_server_cert(ca_pair, "dc1", node="s1", days=2, now=past)
    ca = write(tmp_path, "ca.pem", ca_pair.cert_pem)
    cert = write(tmp_path, "c.pem", old.cert_pem)
    key = write(tmp_path, "k.pem", old.key_pem)
    with pytest.raises(TLSMaterialError, match=r"expired at .*wanfed tls cert create"):
        TLSMaterial.load(ca, cert, key)


def test_not_yet_valid_cert(ca_pair: PemPair, tmp_path: Path) -> None:
    future = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=3)
    early = create_server_cert(ca_pair, "dc1", now=future)
    ca = write(tmp_path, "ca.pem", ca_pair.cert_pem)
    cert = write(tmp_path, "c.pem", early.cert_pem)
    key = write(tmp_path, "k.pem", early.key_pem)
    with pytest.raises(TLSMaterialError, match=r"is not valid before .*clock"):
        TLSMaterial.load(ca, cert, key)


def test_expired_ca(tmp_path: Path) -> None:
    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=30)
    ca = write(tmp_path, "ca.pem", create_ca(days=1, now=past).cert_pem)
    with pytest.raises(TLSMaterialError, match="expired at"):
        TLSMaterial.load(ca)


def test_soon_expiring_cert_warns(
    ca_pair: PemPair, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    short = create_server_cert(ca_pair, "dc1", days=3)
    ca = write(tmp_path, "ca.pem", ca_pair.cert_pem)
    cert = write(tmp_path, "c.pem", short.cert_pem)
    key = write(tmp_path, "k.pem", short.key_pem)
    with caplog.at_level(logging.WARNING, logger="wanfed_agent.tls"):
        TLSMaterial.load(ca, cert, key)
    assert [r.getMessage() for r in caplog.records] == [
        "certificate expires soon; replace it before then"
    ]
    assert getattr(caplog.records[0], "file", None) == str(cert)


def test_cert_without_key(tls_files: TLSMaterial) -> None:
    with pytest.raises(TLSMaterialError, match="must be given together"):
        TLSMaterial.load(tls_files.ca_file, tls_files.cert_file, None)


def _handshake(client: ssl.SSLContext, server: ssl.SSLContext, hostname: str) -> ssl.SSLObject:
    """Drive both ends of a TLS handshake through memory buffers; return the client side."""
    return _handshake_both(client, server, hostname)[0]


def _handshake_both(
    client: ssl.SSLContext, server: ssl.SSLContext, hostname: str
) -> tuple[ssl.SSLObject, ssl.SSLObject]:
    """The same, returning the client side and the server side."""
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    client_side = client.wrap_bio(c_in, c_out, server_hostname=hostname)
    server_side = server.wrap_bio(s_in, s_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(20):
        for name, side in (("client", client_side), ("server", server_side)):
            if done[name]:
                continue
            try:
                side.do_handshake()
                done[name] = True
            except ssl.SSLWantReadError:
                pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            return client_side, server_side
    raise AssertionError("handshake did not finish")


def _contexts(
    ca: PemPair, server: PemPair, client: PemPair, tmp_path: Path
) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    s_cert, s_key = (
        write(tmp_path, "s.pem", server.cert_pem),
        write(tmp_path, "sk.pem", server.key_pem),
    )
    c_cert, c_key = (
        write(tmp_path, "c.pem", client.cert_pem),
        write(tmp_path, "ck.pem", client.key_pem),
    )
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(s_cert, s_key)
    server_ctx.load_verify_locations(cadata=ca.cert_pem.decode())
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.load_cert_chain(c_cert, c_key)
    client_ctx.load_verify_locations(cadata=ca.cert_pem.decode())
    return client_ctx, server_ctx


@pytest.mark.parametrize("hostname", ["server.dc1.consul", "s1.server.dc1.consul"])
def test_mutual_tls_handshake_with_created_certs(
    ca_pair: PemPair, tmp_path: Path, hostname: str
) -> None:
    server = create_server_cert(ca_pair, "dc1", "consul", "s1")
    peer = create_server_cert(ca_pair, "dc2", "consul", "s9")  # servers dial each other
    client_ctx, server_ctx = _contexts(ca_pair, server, peer, tmp_path)
    side = _handshake(client_ctx, server_ctx, hostname)
    peer_cert = side.getpeercert()
    assert peer_cert is not None
    assert peer_cert["subject"] == ((("commonName", "server.dc1.consul"),),)


def test_client_cert_accepted_by_server(ca_pair: PemPair, tmp_path: Path) -> None:
    server = create_server_cert(ca_pair, "dc1", "consul", "s1")
    client = create_client_cert(ca_pair, "dc1")
    client_ctx, server_ctx = _contexts(ca_pair, server, client, tmp_path)
    _, server_side = _handshake_both(client_ctx, server_ctx, "server.dc1.consul")
    # The server verified the client's certificate (CERT_REQUIRED) and sees it
    # for what it is: a client of dc1, not a server (which is why TLS alone never
    # admits a caller to server-only methods).
    seen = server_side.getpeercert()
    assert seen is not None
    assert seen["subject"] == ((("commonName", "client.dc1.consul"),),)
    sans = cast("tuple[tuple[str, str], ...]", seen["subjectAltName"])
    names = {value for kind, value in sans if kind == "DNS"}
    assert "client.dc1.consul" in names
    assert not any(".server." in n or n.startswith("server.") for n in names)


def test_wrong_datacenter_name_fails_hostname_check(ca_pair: PemPair, tmp_path: Path) -> None:
    server = create_server_cert(ca_pair, "dc1", "consul", "s1")
    client_ctx, server_ctx = _contexts(ca_pair, server, server, tmp_path)
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        _handshake(client_ctx, server_ctx, "server.dc2.consul")


def test_server_rejects_client_from_another_ca(ca_pair: PemPair, tmp_path: Path) -> None:
    server = create_server_cert(ca_pair, "dc1", "consul", "s1")
    stranger = create_server_cert(create_ca(), "dc1", "consul", "evil")
    client_ctx, server_ctx = _contexts(ca_pair, server, stranger, tmp_path)
    with pytest.raises(ssl.SSLError):
        _handshake(client_ctx, server_ctx, "server.dc1.consul")
