"""Single-value rules: durations, ports, encrypt keys, names and addresses."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wanfed_agent.config import ConfigError, load_config, parse_duration, parse_host_port


def error_of(overrides: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config((), (), overrides)
    return str(caught.value)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("250ms", 0.25),
        ("1.5s", 1.5),
        ("2h", 7200.0),
        ("10us", 1e-5),
        ("0", 0.0),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["30", "5 m", "s", "1x", "", "m5", "1h 30m", "-5s"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="expected a duration"):
        parse_duration(text)


def test_duration_must_be_text() -> None:
    assert error_of({"primary_gateways_interval": 30}) == (
        'command line: primary_gateways_interval: expected a duration such as "30s", "5m" '
        'or "1h30m", got 30 (an integer)'
    )


def test_interval_must_be_positive() -> None:
    assert error_of({"retry_interval_wan": "0s"}) == (
        "command line: retry_interval_wan (-retry-interval-wan): expected a duration greater "
        "than zero, got '0s'"
    )


@given(st.integers(min_value=0, max_value=10**6), st.sampled_from(["ms", "s", "m", "h"]))
def test_duration_round_trip(amount: int, unit: str) -> None:
    scale = {"ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}[unit]
    assert parse_duration(f"{amount}{unit}") == pytest.approx(amount * scale)


@pytest.mark.parametrize("port", [-1, 65536])
def test_ports_in_range(port: int) -> None:
    assert error_of({"ports": {"serf_wan": port}}) == (
        f"command line: ports.serf_wan (-serf-wan-port): expected a port number 0-65535, got {port}"
    )


@pytest.mark.parametrize("size", [16, 24, 32])
def test_encrypt_key_sizes(size: int) -> None:
    key = base64.b64encode(bytes(range(size))).decode()
    config = load_config((), (), {"encrypt": key})
    assert config.encrypt_key == bytes(range(size))


def test_encrypt_key_wrong_size() -> None:
    key = base64.b64encode(bytes(20)).decode()
    assert error_of({"encrypt": key}) == (
        "command line: encrypt (-encrypt): expected a base64-encoded key of 16, 24 or 32 "
        "bytes, got 20 bytes"
    )


def test_encrypt_key_not_base64() -> None:
    assert "not base64" in error_of({"encrypt": "not a key!"})


@pytest.mark.parametrize("name", ["DC1", "dc 1", "dc.1", "", "dc/1"])
def test_datacenter_names(name: str) -> None:
    assert error_of({"datacenter": name}) == (
        "command line: datacenter (-datacenter): expected a datacenter name of lowercase "
        f"letters, digits, '-' and '_', got {name!r}"
    )


def test_primary_datacenter_name_checked_too() -> None:
    assert "expected a datacenter name" in error_of({"primary_datacenter": "Primary"})


def test_good_datacenter_names() -> None:
    config = load_config((), (), {"datacenter": "dc_east-1", "primary_datacenter": "p0"})
    assert (config.datacenter, config.primary_datacenter) == ("dc_east-1", "p0")


@pytest.mark.parametrize("domain", ["consul.", "Consul", "consul"])
def test_domain_normalised(domain: str) -> None:
    assert load_config((), (), {"domain": domain}).domain == "consul"


@pytest.mark.parametrize("domain", ["", ".", "a..b", "under_score", "-x"])
def test_bad_domain(domain: str) -> None:
    assert "expected a DNS domain" in error_of({"domain": domain})


@pytest.mark.parametrize("addr", ["localhost", "10.0.0", "::g"])
def test_bind_must_be_an_ip(addr: str) -> None:
    assert error_of({"bind_addr": addr}) == (
        f"command line: bind_addr (-bind): expected an IP address, got {addr!r}"
    )


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("198.18.0.1", ("198.18.0.1", 8300)),
        ("198.18.0.1:8301", ("198.18.0.1", 8301)),
        ("server-1.example", ("server-1.example", 8300)),
        ("[::1]:9000", ("::1", 9000)),
        ("[::1]", ("::1", 8300)),
        ("::1", ("::1", 8300)),
    ],
)
def test_retry_join_entries(entry: str, expected: tuple[str, int]) -> None:
    assert parse_host_port(entry, 8300) == expected
    config = load_config((), (), {"retry_join": [entry]})
    assert config.retry_join_addresses() == [expected]


@pytest.mark.parametrize("entry", ["", "host:0", "host:99999", "host:http", "[::1", "a b"])
def test_bad_retry_join_entries(entry: str) -> None:
    message = error_of({"retry_join": [entry]})
    assert message.startswith("command line: retry_join (-retry-join): expected ")


def test_primary_gateway_needs_a_port() -> None:
    assert error_of({"primary_gateways": ["gw.example"]}) == (
        "command line: primary_gateways (-primary-gateway): expected host:port (the port is "
        "required), got 'gw.example'"
    )


def test_primary_gateway_unknown_provider_names_the_installed_ones() -> None:
    message = error_of({"primary_gateways": ["provider=aws tag_key=gw"]})
    assert "unknown discovery provider 'aws'; installed providers: dns, file" in message


def test_primary_gateway_malformed_provider_entry() -> None:
    message = error_of({"primary_gateways": ["provider=dns name"]})
    assert "expected key=value pairs, got 'name'" in message


def test_primary_gateway_provider_entries_accepted() -> None:
    config = load_config(
        [],
        [],
        {
            "server": True,
            "encrypt": "pUqJrVyVRj5jsiYEkM/tFQYfWyJIv4s3XkvDwy7Cu5s=",
            "datacenter": "dc2",
            "primary_datacenter": "dc1",
            "data_dir": "/tmp/wanfed-test-unused",
            "primary_gateways": ["provider=file path=/etc/wanfed/gw.txt", "198.18.1.20:8443"],
            # a server outside -dev needs TLS (the files are not read here)
            "tls": {
                "defaults": {
                    "ca_file": "/etc/wanfed/ca.pem",
                    "cert_file": "/etc/wanfed/cert.pem",
                    "key_file": "/etc/wanfed/key.pem",
                }
            },
        },
        check_tls_files=False,
    )
    assert config.primary_gateways == (
        "provider=file path=/etc/wanfed/gw.txt",
        "198.18.1.20:8443",
    )


def test_primary_gateway_templates_rejected() -> None:
    message = error_of({"primary_gateways": ["{{ GetPrivateIP }}:8443"]})
    assert "address templates are not supported" in message


@pytest.mark.parametrize(("given_level", "level"), [("WARN", "warn"), ("warning", "warn")])
def test_log_level(given_level: str, level: str) -> None:
    assert load_config((), (), {"log_level": given_level}).log_level == level


def test_bad_log_level() -> None:
    assert error_of({"log_level": "loud"}) == (
        "command line: log_level (-log-level): expected one of trace, debug, info, warn, "
        "error, got 'loud'"
    )


def test_empty_node_name() -> None:
    assert error_of({"node_name": ""}) == (
        "command line: node_name (-node): expected a non-empty node name"
    )


@given(st.text(max_size=40))
def test_host_port_parser_accepts_or_raises_value_error(text: str) -> None:
    try:
        host, port = parse_host_port(text, 8300)
    except ValueError as error:
        message = str(error)
    else:
        message = "expected "
        assert host
        assert 1 <= port <= 65535
    assert message.startswith("expected ")


@given(st.text(max_size=20))
def test_duration_parser_accepts_or_raises_value_error(text: str) -> None:
    try:
        seconds = parse_duration(text)
    except ValueError as error:
        message = str(error)
    else:
        message = "expected a duration"
        assert seconds >= 0
    assert message.startswith("expected a duration")


@pytest.mark.parametrize(
    ("given_level", "python_level"),
    [("trace", 5), ("debug", 10), ("info", 20), ("warn", 30), ("error", 40)],
)
def test_python_log_level(given_level: str, python_level: int) -> None:
    assert load_config((), (), {"log_level": given_level}).python_log_level == python_level


def test_retry_join_provider_strings_rejected() -> None:
    message = error_of({"retry_join": ["provider=aws tag_key=consul"]})
    assert message == (
        "command line: retry_join (-retry-join): expected host or host:port, got "
        "'provider=aws tag_key=consul': cloud auto-join ('provider=') is not supported; list "
        "server addresses or a DNS name that resolves to them"
    )
