"""TLS context builders: settings, clear errors for bad files, in-memory handshakes."""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Callable
from pathlib import Path

import pytest

from wanfed_proto import (
    SERVER_ALPN_PROTOCOLS,
    Alpn,
    TLSConfigError,
    check_dial_context,
    client_context,
    server_context,
)

SNI = "server.dc1.consul"


def handshake(
    server: ssl.SSLContext, client: ssl.SSLContext, sni: str = SNI
) -> tuple[ssl.SSLObject, ssl.SSLObject]:
    """Run a full handshake through memory BIOs; raises the first side's SSLError."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    tls_client = client.wrap_bio(c_in, c_out, server_hostname=sni)
    tls_server = server.wrap_bio(s_in, s_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(20):
        for name, side, out, peer_in in (
            ("client", tls_client, c_out, s_in),
            ("server", tls_server, s_out, c_in),
        ):
            if not done[name]:
                try:
                    side.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
            peer_in.write(out.read())
        if all(done.values()):
            # TLS 1.3: the server judges the client certificate after the
            # client thinks it is done; a read surfaces the verdict.
            for side in (tls_client, tls_server):
                with contextlib.suppress(ssl.SSLWantReadError):
                    side.read(1)
            return tls_client, tls_server
    raise AssertionError("handshake did not finish")


def test_server_context_settings(pki: dict[str, Path]) -> None:
    context = server_context(pki["ca"], pki["server"], pki["server_key"])
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.verify_mode == ssl.CERT_REQUIRED
    optional = server_context(
        pki["ca"], pki["server"], pki["server_key"], require_client_cert=False
    )
    assert optional.verify_mode == ssl.CERT_OPTIONAL


def test_client_context_settings(pki: dict[str, Path]) -> None:
    context = client_context(pki["ca"], pki["client"], pki["client_key"])
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    check_dial_context(context)


def test_mutual_handshake_negotiates_the_clients_alpn(pki: dict[str, Path]) -> None:
    server = server_context(pki["ca"], pki["server"], pki["server_key"])
    client = client_context(pki["ca"], pki["client"], pki["client_key"], [Alpn.WAN_GOSSIP_STREAM])
    tls_client, tls_server = handshake(server, client)
    assert tls_client.selected_alpn_protocol() == "wanfed/wan-gossip/stream"
    assert tls_server.selected_alpn_protocol() == "wanfed/wan-gossip/stream"
    peer = tls_server.getpeercert()
    assert peer is not None
    assert ("DNS", "s2.server.dc2.consul") in peer["subjectAltName"]
    assert tls_client.version() in ("TLSv1.2", "TLSv1.3")


@pytest.mark.parametrize("name", ["s1.server.dc1.consul", "server.dc1.consul", "localhost"])
def test_every_server_san_verifies(pki: dict[str, Path], name: str) -> None:
    server = server_context(pki["ca"], pki["server"], pki["server_key"])
    client = client_context(pki["ca"], pki["client"], pki["client_key"])
    assert client.check_hostname
    assert client.verify_mode is ssl.CERT_REQUIRED
    tls_client, _ = handshake(server, client, sni=name)
    # Verified against ``name`` itself: the certificate the client accepted names it.
    peer = tls_client.getpeercert()
    assert peer is not None
    assert ("DNS", name) in peer["subjectAltName"]


def test_wrong_server_name_fails_verification(pki: dict[str, Path]) -> None:
    server = server_context(pki["ca"], pki["server"], pki["server_key"])
    client = client_context(pki["ca"], pki["client"], pki["client_key"])
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        handshake(server, client, sni="server.dc2.consul")


def test_server_refuses_a_client_without_certificate(pki: dict[str, Path]) -> None:
    server = server_context(pki["ca"], pki["server"], pki["server_key"])
    client = client_context(pki["ca"], None, None)
    with pytest.raises(ssl.SSLError, match=r"PEER_DID_NOT_RETURN_A_CERTIFICATE|alert"):
        handshake(server, client)


@pytest.mark.parametrize(("cert", "key"), [("foreign", "foreign_key"), ("expired", "expired_key")])
def test_server_refuses_untrusted_client_certificates(
    pki: dict[str, Path], cert: str, key: str
) -> None:
    server = server_context(pki["ca"], pki["server"], pki["server_key"])
    client = client_context(pki["ca"], pki[cert], pki[key])
    with pytest.raises(ssl.SSLError):
        handshake(server, client)


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_tls_below_1_2_is_refused(pki: dict[str, Path]) -> None:
    server = server_context(pki["ca"], pki["server"], pki["server_key"])
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.load_verify_locations(pki["ca"])
    old.load_cert_chain(pki["client"], pki["client_key"])
    old.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    old.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises(ssl.SSLError):
        handshake(server, old)


@pytest.mark.parametrize("role", ["ca_file", "cert_file", "key_file"])
def test_missing_file_names_the_role_and_path(
    pki: dict[str, Path], tmp_path: Path, role: str
) -> None:
    files = {"ca_file": pki["ca"], "cert_file": pki["server"], "key_file": pki["server_key"]}
    files[role] = tmp_path / "nope.pem"
    with pytest.raises(TLSConfigError, match=f"^{role} .*nope.pem: file does not exist$"):
        server_context(files["ca_file"], files["cert_file"], files["key_file"])


@pytest.mark.parametrize("role", ["ca_file", "cert_file", "key_file"])
def test_non_pem_file_is_named(pki: dict[str, Path], tmp_path: Path, role: str) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_bytes(b"\x00\x01 definitely not PEM")
    files = {"ca_file": pki["ca"], "cert_file": pki["server"], "key_file": pki["server_key"]}
    files[role] = junk
    with pytest.raises(TLSConfigError, match=f"^{role} .*junk.pem: not a PEM file holding"):
        client_context(files["ca_file"], files["cert_file"], files["key_file"])


def test_key_in_place_of_a_certificate_is_not_pem_certificate(pki: dict[str, Path]) -> None:
    with pytest.raises(TLSConfigError, match=r"cert_file .* not a PEM file holding a certificate"):
        server_context(pki["ca"], pki["server_key"], pki["server_key"])


def test_directory_is_named(pki: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(TLSConfigError, match=r"ca_file .*: is a directory"):
        server_context(tmp_path, pki["server"], pki["server_key"])


def test_corrupt_pem_certificate_is_reported(pki: dict[str, Path], tmp_path: Path) -> None:
    broken = tmp_path / "broken.pem"
    broken.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    with pytest.raises(TLSConfigError, match=r"ca_file .*broken.pem: invalid CA certificate"):
        server_context(broken, pki["server"], pki["server_key"])
    with pytest.raises(TLSConfigError, match=r"cert_file .*broken.pem / key_file"):
        server_context(pki["ca"], broken, pki["server_key"])


def test_key_not_matching_the_certificate_is_named(pki: dict[str, Path]) -> None:
    with pytest.raises(
        TLSConfigError, match=r"^key_file .*client-key\.pem does not match cert_file .*server\.pem$"
    ):
        server_context(pki["ca"], pki["server"], pki["client_key"])


def test_cert_without_key_is_refused(pki: dict[str, Path]) -> None:
    with pytest.raises(TLSConfigError, match="together"):
        client_context(pki["ca"], pki["client"], None)


def test_alpn_must_be_a_non_empty_list(pki: dict[str, Path]) -> None:
    with pytest.raises(TypeError, match="sequence"):
        client_context(pki["ca"], pki["client"], pki["client_key"], Alpn.RPC_MULTI)
    with pytest.raises(ValueError, match="at least one"):
        client_context(pki["ca"], pki["client"], pki["client_key"], [])


def test_server_offers_every_alpn_by_default(pki: dict[str, Path]) -> None:
    server = server_context(pki["ca"], pki["server"], pki["server_key"])
    for alpn in SERVER_ALPN_PROTOCOLS:
        client = client_context(pki["ca"], pki["client"], pki["client_key"], [alpn])
        tls_client, _ = handshake(server, client)
        assert tls_client.selected_alpn_protocol() == alpn


def test_alpn_mismatch_does_not_fail_the_handshake(pki: dict[str, Path]) -> None:
    """Why the listener must check ALPN itself."""
    server = server_context(pki["ca"], pki["server"], pki["server_key"], [Alpn.RAFT])
    client = client_context(pki["ca"], pki["client"], pki["client_key"], [Alpn.RPC_MULTI])
    tls_client, tls_server = handshake(server, client)
    assert tls_client.selected_alpn_protocol() is None
    assert tls_server.selected_alpn_protocol() is None


def _no_hostname_check(context: ssl.SSLContext) -> None:
    context.check_hostname = False


def _no_verification(context: ssl.SSLContext) -> None:
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE


def _tls_1_1(context: ssl.SSLContext) -> None:
    context.minimum_version = ssl.TLSVersion.TLSv1_1


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
@pytest.mark.parametrize("weaken", [_no_hostname_check, _no_verification, _tls_1_1])
def test_dial_context_check_refuses_weakened_contexts(
    pki: dict[str, Path], weaken: Callable[[ssl.SSLContext], None]
) -> None:
    context = client_context(pki["ca"], pki["client"], pki["client_key"])
    weaken(context)
    with pytest.raises(TLSConfigError):
        check_dial_context(context)
