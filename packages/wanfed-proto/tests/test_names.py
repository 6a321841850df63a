"""Server names (SNI) and WAN member names."""

from __future__ import annotations

import msgspec
import pytest

from wanfed_proto import (
    DEFAULT_DOMAIN,
    InvalidNameError,
    ServerName,
    normalize_domain,
    parse_server_sni,
    server_sni,
    split_node_name,
    validate_datacenter,
    validate_node_label,
    wan_member_name,
)

# --- building server names -------------------------------------------------


@pytest.mark.parametrize(
    ("dc", "domain", "node", "expected"),
    [
        ("primary", "consul", "pri", "pri.server.primary.consul"),
        ("dc1", "consul.", "s1", "s1.server.dc1.consul"),
        ("dc1", "consul", None, "server.dc1.consul"),
        ("dc1", "consul", "", "server.dc1.consul"),
        ("dc1", "consul", "*", "server.dc1.consul"),
        ("dc-2_b", "example.com.", "node-7", "node-7.server.dc-2_b.example.com"),
        ("DC1", "Consul.", "Pri", "pri.server.dc1.consul"),
    ],
)
def test_server_sni(dc: str, domain: str, node: str | None, expected: str) -> None:
    assert server_sni(dc, domain, node) == expected


def test_server_sni_defaults_to_any_server() -> None:
    assert server_sni("dc1", DEFAULT_DOMAIN) == "server.dc1.consul"


@pytest.mark.parametrize(
    ("dc", "domain", "node", "message"),
    [
        ("", "consul", None, "datacenter name is empty"),
        ("dc.1", "consul", None, "datacenter name 'dc.1' is invalid"),
        ("dc 1", "consul", None, "datacenter name 'dc 1' is invalid"),
        ("dc1", "", None, "domain '' is empty"),
        ("dc1", ".", None, "domain '.' is empty"),
        ("dc1", "a..b", None, "domain 'a..b' has an empty label"),
        ("dc1", "consul", "a.b", "node name 'a.b' cannot be used in a server name"),
        ("dc1", "consul", "a/b", "node name 'a/b' cannot be used in a server name"),
        ("dc1", "consul", "x" * 64, "cannot be used in a server name"),
        ("dcü", "consul", None, "datacenter name 'dcü' is invalid"),
    ],
)
def test_server_sni_rejects_names_that_cannot_route(
    dc: str, domain: str, node: str | None, message: str
) -> None:
    with pytest.raises(InvalidNameError, match=message):
        server_sni(dc, domain, node)


# --- parsing server names ----------------------------------------------------


@pytest.mark.parametrize(
    ("name", "domain", "expected"),
    [
        ("pri.server.primary.consul", "consul", ServerName(datacenter="primary", node="pri")),
        ("server.primary.consul", "consul", ServerName(datacenter="primary")),
        ("server.dc1.consul", "consul.", ServerName(datacenter="dc1")),
        ("S1.SERVER.DC1.CONSUL", "consul", ServerName(datacenter="dc1", node="s1")),
        ("n.server.dc_2-x.example.com", "Example.COM.", ServerName(datacenter="dc_2-x", node="n")),
    ],
)
def test_parse_server_sni(name: str, domain: str, expected: ServerName) -> None:
    assert parse_server_sni(name, domain) == expected


def test_parsed_name_says_whether_any_server_will_do() -> None:
    assert parse_server_sni("server.dc1.consul", "consul").any_server
    assert not parse_server_sni("s1.server.dc1.consul", "consul").any_server


def test_parsed_name_is_frozen() -> None:
    parsed = parse_server_sni("s1.server.dc1.consul", "consul")
    with pytest.raises(AttributeError):
        parsed.datacenter = "dc2"  # type: ignore[misc]
    assert msgspec.json.decode(msgspec.json.encode(parsed), type=ServerName) == parsed


@pytest.mark.parametrize(("dc", "node"), [("DC1", None), ("", None), ("dc1", ""), ("dc1", "a.b")])
def test_server_name_cannot_be_built_invalid(dc: str, node: str | None) -> None:
    with pytest.raises(InvalidNameError):
        ServerName(datacenter=dc, node=node)


@pytest.mark.parametrize(
    "name",
    [
        "",
        "consul",
        ".consul",
        "server.consul",
        "dc1.consul",
        "server.dc1.consul.",  # trailing dot is not allowed in SNI
        "server.dc1.consulx",
        "server.dc1.xconsul",
        "server.dc1.other",
        "servers.dc1.consul",
        "s1.servers.dc1.consul",
        "s1.client.dc1.consul",
        "a.s1.server.dc1.consul",  # a node label with a dot
        ".server.dc1.consul",  # empty node label
        "s1..dc1.consul",
        "server..consul",  # empty datacenter
        "s1.server..consul",
        "*.server.dc1.consul",  # a wildcard is a certificate name, never an SNI
        "s1.server.dc 1.consul",
        "s1.server.dc1.consul\x00",
        "s\x00.server.dc1.consul",
        "web.default.dc1.internal.11111111-2222-3333-4444-555555555555.consul",
        "s1.server.dc1.\u212aonsul",  # KELVIN SIGN lower-cases to ASCII "k"
        "\u212a.server.dc1.consul",
    ],
)
def test_parse_server_sni_rejects_everything_else(name: str) -> None:
    with pytest.raises(InvalidNameError):
        parse_server_sni(name, "consul")


def test_parse_server_sni_rejects_a_bad_domain_argument() -> None:
    with pytest.raises(InvalidNameError, match="domain '' is empty"):
        parse_server_sni("server.dc1.consul", "")


def test_parse_server_sni_names_the_problem() -> None:
    with pytest.raises(InvalidNameError, match=r"'server\.dc1\.other' is not a server name of"):
        parse_server_sni("server.dc1.other", "consul")
    with pytest.raises(InvalidNameError, match=r"want \[<node>\.\]server\.<dc>\.consul"):
        parse_server_sni("s1.client.dc1.consul", "consul")
    with pytest.raises(InvalidNameError, match="datacenter name 'd!' is invalid"):
        parse_server_sni("server.d!.consul", "consul")


@pytest.mark.parametrize(("node", "dc"), [("pri", "primary"), (None, "dc1"), ("n-1_x", "a_b-c")])
def test_server_sni_and_parse_round_trip(node: str | None, dc: str) -> None:
    assert parse_server_sni(server_sni(dc, "consul", node), "consul") == ServerName(
        datacenter=dc, node=node
    )


# --- domains, datacenters, node labels ---------------------------------------


@pytest.mark.parametrize(
    ("domain", "expected"),
    [("consul.", "consul"), ("consul", "consul"), ("CONSUL.", "consul"), ("a.b.", "a.b")],
)
def test_normalize_domain(domain: str, expected: str) -> None:
    assert normalize_domain(domain) == expected


@pytest.mark.parametrize("domain", ["", ".", "..", "consul..", "a b", "ä", "-/"])
def test_normalize_domain_rejects(domain: str) -> None:
    with pytest.raises(InvalidNameError):
        normalize_domain(domain)


@pytest.mark.parametrize("dc", ["dc1", "primary", "a_b-c", "0"])
def test_valid_datacenters(dc: str) -> None:
    assert validate_datacenter(dc) == dc


@pytest.mark.parametrize("dc", ["", "DC1", "dc.1", "dc/1", "dc 1", "d" * 64, "dc1\n"])
def test_invalid_datacenters(dc: str) -> None:
    with pytest.raises(InvalidNameError):
        validate_datacenter(dc)


@pytest.mark.parametrize("node", ["", "a.b", "a/b", "*", "n" * 64, "Pri"])
def test_invalid_node_labels(node: str) -> None:
    with pytest.raises(InvalidNameError):
        validate_node_label(node)


# --- WAN member names (TestSplitNodeName) --------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("foo.bar", ("foo", "bar")),
        (".bar", ("", "bar")),  # accepted by the reference, so accepted here
        ("foo.", ("foo", "")),
        ("pri.primary", ("pri", "primary")),
    ],
)
def test_split_node_name(name: str, expected: tuple[str, str]) -> None:
    assert split_node_name(name) == expected


@pytest.mark.parametrize("name", ["", "foo", "foo.bar.baz", "..", "a.b.c.d"])
def test_split_node_name_requires_exactly_two_parts(name: str) -> None:
    with pytest.raises(InvalidNameError) as caught:
        split_node_name(name)
    assert str(caught.value) == f"node name does not encode a datacenter: {name}"


def test_wan_member_name() -> None:
    assert wan_member_name("pri", "primary") == "pri.primary"
    assert split_node_name(wan_member_name("Node-1", "dc1")) == ("Node-1", "dc1")


@pytest.mark.parametrize(
    ("node", "dc", "message"),
    [
        ("", "dc1", "node name is empty"),
        ("a.b", "dc1", "must not contain '.' or '/'"),
        ("a/b", "dc1", "must not contain '.' or '/'"),
        ("a", "", "datacenter name is empty"),
        ("a", "dc.1", "datacenter name 'dc.1' is invalid"),
    ],
)
def test_wan_member_name_refuses_names_that_would_not_split_back(
    node: str, dc: str, message: str
) -> None:
    with pytest.raises(InvalidNameError, match=message):
        wan_member_name(node, dc)
