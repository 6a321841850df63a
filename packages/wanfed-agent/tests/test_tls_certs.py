"""Certificates made by the CA helpers, checked by parsing them back with cryptography."""

from __future__ import annotations

import datetime
import ipaddress

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from wanfed_agent.tls import (
    PemPair,
    TLSMaterialError,
    create_ca,
    create_client_cert,
    create_server_cert,
)

NOW = datetime.datetime(2030, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)


def parse(pair: PemPair) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pair.cert_pem)


def sans(cert: x509.Certificate) -> tuple[list[str], list[str]]:
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    dns = ext.get_values_for_type(x509.DNSName)
    ips = [str(ip) for ip in ext.get_values_for_type(x509.IPAddress)]
    return dns, ips


def common_name(cert: x509.Certificate) -> str:
    value = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert isinstance(value, str)
    return value


def test_ca_is_a_signing_only_ca() -> None:
    ca = parse(create_ca(now=NOW, days=10))
    basic = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical
    assert basic.value.ca
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign
    assert usage.crl_sign
    assert ca.issuer == ca.subject
    assert common_name(ca).startswith("wanfed Agent CA ")
    assert ca.not_valid_after_utc == NOW + datetime.timedelta(days=10)
    assert ca.not_valid_before_utc <= NOW
    public = ca.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert public.curve.name == "secp256r1"
    ca.verify_directly_issued_by(ca)


def test_ca_key_is_unencrypted_p256() -> None:
    pair = create_ca()
    key = serialization.load_pem_private_key(pair.key_pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.curve.name == "secp256r1"


def test_server_cert_names_in_reference_order(ca_pair: PemPair) -> None:
    cert = parse(
        create_server_cert(
            ca_pair,
            "dc1",
            "consul",
            "s1",
            additional_dns=["s1.example.net"],
            additional_ips=["198.18.0.5", "::1"],
        )
    )
    dns, ips = sans(cert)
    assert dns == ["s1.server.dc1.consul", "server.dc1.consul", "localhost", "s1.example.net"]
    assert ips == ["127.0.0.1", "198.18.0.5", "::1"]
    assert common_name(cert) == "server.dc1.consul"


def test_server_cert_without_node(ca_pair: PemPair) -> None:
    dns, ips = sans(parse(create_server_cert(ca_pair, "dc2", "example")))
    assert dns == ["server.dc2.example", "localhost"]
    assert ips == ["127.0.0.1"]


def test_server_cert_usages_and_issuer(ca_pair: PemPair) -> None:
    cert = parse(create_server_cert(ca_pair, "dc1", "consul", "s1"))
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical
    assert usage.value.digital_signature
    assert not usage.value.key_cert_sign
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    cert.verify_directly_issued_by(parse(ca_pair))
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = parse(ca_pair).extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest


def test_cert_validity_from_days(ca_pair: PemPair) -> None:
    cert = parse(create_server_cert(ca_pair, "dc1", days=7, now=NOW))
    assert cert.not_valid_after_utc == NOW + datetime.timedelta(days=7)
    assert NOW - datetime.timedelta(minutes=5) < cert.not_valid_before_utc <= NOW


def test_default_cert_validity_is_a_year(ca_pair: PemPair) -> None:
    cert = parse(create_server_cert(ca_pair, "dc1", now=NOW))
    assert cert.not_valid_after_utc == NOW + datetime.timedelta(days=365)


def test_client_cert(ca_pair: PemPair) -> None:
    cert = parse(create_client_cert(ca_pair, "dc1", "consul", additional_ips=["198.18.0.9"]))
    dns, ips = sans(cert)
    assert dns == ["client.dc1.consul", "localhost"]
    assert ips == ["127.0.0.1", "198.18.0.9"]
    assert common_name(cert) == "client.dc1.consul"
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CLIENT_AUTH in list(eku)


def test_each_cert_has_its_own_key_and_serial(ca_pair: PemPair) -> None:
    a = create_server_cert(ca_pair, "dc1", node="s1")
    b = create_server_cert(ca_pair, "dc1", node="s1")
    assert a.key_pem != b.key_pem
    assert parse(a).serial_number != parse(b).serial_number


def test_domain_trailing_dot_dropped(ca_pair: PemPair) -> None:
    dns, _ = sans(parse(create_server_cert(ca_pair, "dc1", "consul.", "s1")))
    assert dns[:2] == ["s1.server.dc1.consul", "server.dc1.consul"]


def test_a_node_name_that_cannot_stand_in_a_server_name_is_refused(ca_pair: PemPair) -> None:
    with pytest.raises(ValueError, match="cannot be used in a server name"):
        create_server_cert(ca_pair, "dc1", "consul", "s 1")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dc": "DC1"}, "datacenter 'DC1' must be lowercase"),
        ({"dc": "dc1", "node": "a.b"}, "node name 'a.b' cannot be used"),
        ({"dc": "dc1", "additional_ips": ["300.1.1.1"]}, "'300.1.1.1' is not a valid IP"),
        ({"dc": "dc1", "additional_dns": ["bad name"]}, "'bad name' is not a valid DNS name"),
        ({"dc": "dc1", "days": 0}, "days must be at least 1"),
    ],
)
def test_bad_arguments(ca_pair: PemPair, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        create_server_cert(ca_pair, **kwargs)  # type: ignore[arg-type]


def test_ca_key_must_match_ca_cert(ca_pair: PemPair) -> None:
    other = create_ca()
    mixed = PemPair(cert_pem=ca_pair.cert_pem, key_pem=other.key_pem)
    with pytest.raises(TLSMaterialError, match="does not belong to the CA certificate"):
        create_server_cert(mixed, "dc1")


def test_leaf_cannot_act_as_ca(ca_pair: PemPair) -> None:
    leaf = create_server_cert(ca_pair, "dc1")
    with pytest.raises(TLSMaterialError, match="is not a CA"):
        create_server_cert(leaf, "dc1")


def test_ip_sans_are_ip_addresses(ca_pair: PemPair) -> None:
    cert = parse(create_server_cert(ca_pair, "dc1", additional_ips=["198.18.0.7"]))
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("198.18.0.7") in ext.get_values_for_type(x509.IPAddress)
