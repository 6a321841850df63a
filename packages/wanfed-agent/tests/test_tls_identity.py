"""``ServerCertificatePolicy``: what a verified certificate says its holder is."""

from __future__ import annotations

from typing import Any

import pytest

from wanfed_agent.tls import NotAServerError, PeerIdentity, ServerCertificatePolicy


def cert(*names: str) -> dict[str, Any]:
    """A peer certificate as ``ssl.SSLSocket.getpeercert`` returns it."""
    return {
        "subject": ((("commonName", names[0] if names else "x"),),),
        "subjectAltName": (*(("DNS", n) for n in names), ("IP Address", "127.0.0.1")),
    }


SERVER_S1 = cert("s1.server.dc1.consul", "server.dc1.consul", "localhost")
CLIENT = cert("client.dc1.consul", "localhost")


def test_a_server_certificate_names_its_datacenter_and_node() -> None:
    identity = ServerCertificatePolicy("consul").identity(SERVER_S1)
    assert identity.is_server()
    assert identity.is_server("DC1")
    assert not identity.is_server("dc2")
    assert identity.names_node("dc1", "S1")
    assert not identity.names_node("dc1", "s2")


def test_a_client_certificate_and_no_certificate_are_not_servers() -> None:
    policy = ServerCertificatePolicy("consul")
    assert not policy.identity(CLIENT).is_server()
    assert policy.identity(CLIENT).describe() == (
        "a certificate naming client.dc1.consul, localhost"
    )
    assert policy.identity(None) == PeerIdentity()
    assert policy.identity(None).describe() == "no certificate"
    assert policy.identity({"subject": ()}).describe() == "a certificate without DNS names"


@pytest.mark.parametrize("domain", ["example", "corp.example.", "CORP.example"])
def test_other_domains_and_dotted_domains(domain: str) -> None:
    base = domain.removesuffix(".").lower()
    policy = ServerCertificatePolicy(domain)
    identity = policy.identity(cert(f"s1.server.dc1.{base}", f"server.dc1.{base}"))
    assert identity.is_server("dc1")
    assert identity.names_node("dc1", "s1")
    # the default domain's names mean nothing in another domain
    assert not policy.identity(SERVER_S1).is_server()


@pytest.mark.parametrize(
    "name",
    [
        "server.consul",  # no datacenter
        "server..consul",
        "x.y.server.dc1.consul",  # a node name with a dot is not a server name
        "server.dc1.consul.evil",
        "evilserver.dc1.consul",
        "server.dc1.consulx",
    ],
)
def test_names_that_only_look_like_server_names_are_not(name: str) -> None:
    identity = ServerCertificatePolicy("consul").identity(cert(name))
    assert not identity.is_server()
    assert identity.server_nodes == frozenset()


def test_require_server_names_what_was_expected_and_what_was_presented() -> None:
    policy = ServerCertificatePolicy("consul")
    client = policy.identity(CLIENT)
    with pytest.raises(NotAServerError) as refused:
        policy.require_server(client, what="Raft.Join", datacenter="dc1")
    assert str(refused.value) == (
        "Permission denied: Raft.Join needs a server certificate (server.dc1.consul); the peer "
        "presented a certificate naming client.dc1.consul, localhost"
    )
    with pytest.raises(NotAServerError, match=r"\(server\.<dc>\.consul\)"):
        policy.require_server(client, what="wan gossip packet")
    server = policy.identity(SERVER_S1)
    policy.require_server(server, what="wan gossip packet")
    policy.require_server(server, what="Raft.Join", datacenter="dc1", node="s1")
    with pytest.raises(NotAServerError) as wrong_node:
        policy.require_server(server, what="Status.Hello", datacenter="dc1", node="s3")
    assert str(wrong_node.value).startswith(
        "Permission denied: Status.Hello for node 's3' needs that node's server certificate "
        "(s3.server.dc1.consul)"
    )
    with pytest.raises(NotAServerError, match=r"\(server\.dc2\.consul or server\.dc3\.consul\)"):
        policy.require_server(server, what="FederationState.Apply", datacenters=("dc2", "dc3"))
    policy.require_server(server, what="FederationState.Apply", datacenters=("dc2", "dc1"))


def test_refusals_are_logged_at_most_once_per_interval_per_door(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    policy = ServerCertificatePolicy("consul", clock=lambda: now[0])
    caplog.set_level("WARNING", logger="wanfed_agent.tls.identity")
    for _ in range(5):
        policy.log_refusal("raft", "127.0.0.1:1", "no")
    policy.log_refusal("wan gossip packet", "127.0.0.1:1", "no")
    now[0] = 10.0
    policy.log_refusal("raft", "127.0.0.1:1", "no")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3
    assert lines[0].startswith("refused raft connection peer=127.0.0.1:1 reason=no; closed it")
    assert lines[2].endswith("(4 more refused since the last report)")


def test_a_request_for_a_datacenter_that_cannot_exist_is_refused_not_crashed() -> None:
    """Found by fuzzing the RPC bodies: the refusal's text once built the expected
    name with the validating SNI builder and raised on the bad name instead."""
    policy = ServerCertificatePolicy("consul")
    client = policy.identity(CLIENT)
    with pytest.raises(NotAServerError, match=r"server\.'d!2'\.consul"):
        policy.require_server(client, what="FederationState.Apply", datacenter="d!2")
    with pytest.raises(NotAServerError, match=r"\(server\.'D 1'\.consul\)"):
        policy.require_server(
            policy.identity(SERVER_S1), what="Raft.Join", datacenter="D 1", node="s1"
        )
