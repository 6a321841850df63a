"""The gateway process's decisions without I/O: registration body, backoff, server
pool, blocking index rules, and the command line's validation."""

from __future__ import annotations

import re

import msgspec
import pytest

from wanfed_fsm import (
    CheckServiceNode,
    HealthCheck,
    HealthCheckDefinition,
    Node,
    Service,
    ServiceAddress,
)
from wanfed_server.cli import build_parser, main
from wanfed_server.commands._base import CommandError
from wanfed_server.commands.gateway import settings_from_args
from wanfed_server.gateway import (
    Backoff,
    BlockingIndex,
    ContentHash,
    GatewayRegistration,
    GatewaySettings,
    ServerPool,
    is_registered,
    refresh_interval,
)


def _registration(expose: bool = True) -> GatewayRegistration:
    return GatewayRegistration(
        node="gw1",
        datacenter="dc1",
        lan_host="127.0.0.2",
        lan_port=8443,
        wan_host="198.18.0.9",
        wan_port=443,
        expose_servers=expose,
    )


def test_register_body_is_a_passing_mesh_gateway_with_tagged_addresses_meta_and_ttl_check() -> None:
    body = _registration().register_body("refresh 1")
    assert body["Node"] == "gw1"
    assert body["Datacenter"] == "dc1"
    assert body["Address"] == "127.0.0.2"
    service = body["Service"]
    assert service["Kind"] == "mesh-gateway"
    assert service["ID"] == "mesh-gateway"
    assert (service["Address"], service["Port"]) == ("127.0.0.2", 8443)
    assert service["TaggedAddresses"] == {
        "lan": {"Address": "127.0.0.2", "Port": 8443},
        "wan": {"Address": "198.18.0.9", "Port": 443},
    }
    assert service["Meta"] == {"consul-wan-federation": "1"}
    check = body["Check"]
    assert check["CheckID"] == "service:mesh-gateway"
    assert check["Name"] == "Mesh Gateway Alive"
    assert check["ServiceID"] == "mesh-gateway"
    assert (check["Status"], check["Output"]) == ("passing", "refresh 1")
    # No TCP: no server ever dials the gateway; the gateway refreshes the TTL itself.
    assert check["Definition"] == {"TTL": "30s", "DeregisterCriticalServiceAfter": "6h"}


def test_the_ttl_is_refreshed_three_times_per_ttl() -> None:
    assert refresh_interval(_registration()) == 10.0
    short = msgspec.structs.replace(_registration(), check_ttl="1500ms")
    assert refresh_interval(short) == 0.5


@pytest.mark.parametrize(
    ("ttl", "message"),
    [("", "gateway check TTL"), ("soon", "gateway check TTL"), ("0s", "greater than zero")],
)
def test_registration_refuses_an_unusable_ttl(ttl: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        GatewayRegistration(
            node="gw1",
            datacenter="dc1",
            lan_host="h",
            lan_port=1,
            wan_host="h",
            wan_port=1,
            check_ttl=ttl,
        )


def test_meta_only_with_expose_servers() -> None:
    assert _registration(expose=False).register_body()["Service"]["Meta"] == {}


def test_registration_rejects_unusable_addresses() -> None:
    with pytest.raises(ValueError, match="port 0"):
        GatewayRegistration(
            node="gw1", datacenter="dc1", lan_host="h", lan_port=0, wan_host="h", wan_port=1
        )
    with pytest.raises(ValueError, match="WAN address has no host"):
        GatewayRegistration(
            node="gw1", datacenter="dc1", lan_host="h", lan_port=1, wan_host="", wan_port=1
        )


def _catalog_entry(registration: GatewayRegistration) -> CheckServiceNode:
    """What the health endpoint answers after ``registration`` was written."""
    body = registration.register_body()
    service = body["Service"]
    return CheckServiceNode(
        node=Node(node=body["Node"], address=body["Address"], datacenter="dc1"),
        service=Service(
            kind="mesh-gateway",
            id=service["ID"],
            service=service["Service"],
            address=service["Address"],
            port=service["Port"],
            tagged_addresses={
                k: ServiceAddress(address=v["Address"], port=v["Port"])
                for k, v in service["TaggedAddresses"].items()
            },
            meta=service["Meta"],
        ),
        checks=[
            HealthCheck(
                node="gw1",
                check_id="service:mesh-gateway",
                status="passing",
                definition=HealthCheckDefinition(
                    ttl=body["Check"]["Definition"]["TTL"],
                    deregister_critical_service_after="6h",
                ),
            )
        ],
    )


def test_is_registered_notices_absence_and_drift() -> None:
    registration = _registration()
    entry = _catalog_entry(registration)
    assert is_registered(registration, [entry])
    assert not is_registered(registration, [])
    assert not is_registered(registration, [msgspec.structs.replace(entry, checks=[])])
    moved = msgspec.structs.replace(entry.service, port=9999)
    assert not is_registered(registration, [msgspec.structs.replace(entry, service=moved)])
    # the operator turned -expose-servers off: the meta must go away
    assert not is_registered(_registration(expose=False), [entry])
    other_node = msgspec.structs.replace(entry, node=Node(node="gw2"))
    assert not is_registered(registration, [other_node])
    # an older gateway's TCP check under the same id is replaced by the TTL check
    tcp = HealthCheck(
        node="gw1",
        check_id="service:mesh-gateway",
        definition=HealthCheckDefinition(tcp="127.0.0.2:8443", interval="10s"),
    )
    assert not is_registered(registration, [msgspec.structs.replace(entry, checks=[tcp])])


def test_backoff_doubles_to_the_cap_and_resets() -> None:
    backoff = Backoff(1.0, 30.0)
    assert [backoff.failed() for _ in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    assert backoff.failures == 7
    backoff.succeeded()
    assert backoff.failed() == 1
    with pytest.raises(ValueError):
        Backoff(0, 1)


def test_server_pool_moves_once_per_loss_and_wraps() -> None:
    pool = ServerPool(["http://a", "http://b"])
    assert pool.failed("http://a") == "http://b"
    # a second watch that also saw "a" fail must not skip "b"
    assert pool.failed("http://a") == "http://b"
    assert pool.failed("http://b") == "http://a"
    with pytest.raises(ValueError):
        ServerPool([])


def test_blocking_index_never_zero_and_resets_when_going_backwards() -> None:
    index = BlockingIndex()
    assert index.observe(0)
    assert index.value == 1
    assert index.observe(42)
    assert index.value == 42
    assert not index.observe(7)
    assert index.value == 0
    assert index.observe(7)
    assert index.value == 7
    assert index.query("5s") == {"index": "7", "wait": "5s"}
    index.reset()
    assert index.query("5s") == {}, "a full read after a reset"


def test_content_hash_blocks_on_the_last_hash_and_reads_in_full_without_one() -> None:
    cursor = ContentHash()
    assert cursor.query("5s") == {}, "the first read does not block"
    assert cursor.observe_answer(0, "abc")
    assert cursor.query("5s") == {"hash": "abc", "wait": "5s"}
    cursor.observe_answer(0, "")
    assert cursor.query("5s") == {}, "an answer without a hash cannot be blocked on"
    cursor.observe_answer(0, "def")
    cursor.reset()
    assert cursor.query("5s") == {}


def _settings(*argv: str) -> GatewaySettings:
    args = build_parser().parse_args(["gateway", *argv])
    return settings_from_args(args)


def test_flags_to_settings_with_default_ports_and_fallback_servers() -> None:
    settings = _settings(
        "-register",
        "-expose-servers",
        "-address",
        "127.0.0.2",
        "-wan-address",
        "198.18.0.9:443",
        "-http-addr",
        "127.0.0.1:8500,127.0.0.3:8500",
        "-http-addr",
        "http://127.0.0.4:8500",
        "-handshake-timeout",
        "2s",
        "-max-connections",
        "10",
    )
    assert (settings.lan_host, settings.lan_port) == ("127.0.0.2", 8443)
    assert (settings.bind_host, settings.bind_port) == ("127.0.0.2", 8443)
    assert (settings.wan_host, settings.wan_port) == ("198.18.0.9", 443)
    assert settings.http_urls == (
        "http://127.0.0.1:8500",
        "http://127.0.0.3:8500",
        "http://127.0.0.4:8500",
    )
    assert settings.gateway.hello_timeout == 2.0
    assert settings.gateway.max_connections == 10
    assert settings.expose_servers
    assert settings.register


def test_servers_come_from_the_environment_when_no_flag_names_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WANFED_HTTP_ADDR", "127.0.0.5:8500, 127.0.0.6:8500")
    assert _settings().http_urls == ("http://127.0.0.5:8500", "http://127.0.0.6:8500")
    monkeypatch.delenv("WANFED_HTTP_ADDR")
    assert _settings().http_urls == ("http://127.0.0.1:8500",)


def test_wan_address_defaults_to_the_lan_address() -> None:
    settings = _settings("-register", "-address", "127.0.0.2:9000")
    assert (settings.wan_host, settings.wan_port) == ("127.0.0.2", 9000)
    assert not settings.expose_servers


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-expose-servers"], "'-expose-servers' requires '-register'"),
        (["-register"], "-register needs -address"),
        (["-register", "-address", "127.0.0.1:99999"], "invalid -address '127.0.0.1:99999'"),
        (["-register", "-address", "0.0.0.0:8443"], "a wildcard cannot be dialed"),
        (["-address", "h:1", "-wan-address", "h:x"], "invalid -wan-address 'h:x'"),
        (["-bind", "a b"], "invalid -bind 'a b'"),
        (["-status-addr", "127.0.0.1"], "invalid -status-addr '127.0.0.1'"),
        (["-handshake-timeout", "soon"], "invalid -handshake-timeout 'soon'"),
        (["-max-connections", "0"], "max_connections must be at least 1"),
        (["-http-addr", "ftp://x"], "invalid HTTP address"),
        (["-domain", "cönsul"], "is not ASCII"),
        (["-http-addr", " , "], "-http-addr names no server"),
    ],
)
def test_bad_flags_are_one_clear_error(argv: list[str], message: str) -> None:
    with pytest.raises(CommandError, match=re.escape(message)) as info:
        _settings(*argv)
    assert "\n" not in str(info.value)


def test_expose_servers_without_register_exits_1_with_the_exact_message(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["gateway", "-expose-servers", "-address", "127.0.0.1:8443"]) == 1
    assert capsys.readouterr().err == "error: '-expose-servers' requires '-register'\n"
