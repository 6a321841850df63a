"""``wanfed agent`` argument parsing: flags, config files and dirs into one AgentConfig."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from wanfed_agent.config import AGENT_FLAGS, AgentConfig, ConfigError, FlagKind
from wanfed_server import cli
from wanfed_server.commands import UsageError
from wanfed_server.commands.agent import parse_agent_config

GOSSIP_KEY = "pUqJrVyVRj5jsiYEkM/tFQYfWyJIv4s3XkvDwy7Cu5s="


def tls_config_file(tmp_path: Path, dc: str = "dc1", node: str = "s1") -> Path:
    """A config file holding only the ``tls`` section: a server outside -dev needs it."""
    from wanfed_agent.tls import create_ca, create_server_cert

    ca = create_ca()
    cert = create_server_cert(ca, dc, "consul", node)
    folder = tmp_path / "tls"
    folder.mkdir(exist_ok=True)
    (folder / "ca.pem").write_bytes(ca.cert_pem)
    (folder / "cert.pem").write_bytes(cert.cert_pem)
    (folder / "key.pem").write_bytes(cert.key_pem)
    defaults = {f"{kind}_file": str(folder / f"{kind}.pem") for kind in ("ca", "cert", "key")}
    path = folder / "tls.json"
    path.write_text(json.dumps({"tls": {"defaults": defaults}}))
    return path


def test_server_flags(tmp_path: Path) -> None:
    config = parse_agent_config(
        [
            "-config-file", str(tls_config_file(tmp_path, "dc2")),
            "-server", "-datacenter", "dc2", "-node", "s1", "-data-dir", str(tmp_path),
            "-bind", "127.0.0.2", "-advertise", "127.0.0.3", "-advertise-wan", "127.0.0.4",
            "-client", "127.0.0.5", "-http-port", "18500", "-server-port", "18300",
            "-serf-wan-port", "18302", "-retry-join", "127.0.0.6", "-retry-join",
            "127.0.0.7:18300", "-bootstrap-expect", "3", "-domain", "example.",
            "-log-level", "debug", "-log-json", "-retry-interval-wan", "10s",
            "-encrypt", GOSSIP_KEY,
        ]
    )  # fmt: skip
    assert config.server
    assert config.datacenter == "dc2"
    assert config.primary_datacenter == "dc2"
    assert config.node_name == "s1"
    assert config.data_dir == str(tmp_path)
    assert (config.bind_addr, config.advertise_addr, config.advertise_addr_wan) == (
        "127.0.0.2",
        "127.0.0.3",
        "127.0.0.4",
    )
    assert config.client_addr == "127.0.0.5"
    assert (config.ports.http, config.ports.server, config.ports.serf_wan) == (18500, 18300, 18302)
    assert config.retry_join_addresses() == [("127.0.0.6", 8300), ("127.0.0.7", 18300)]
    assert config.bootstrap_expect == 3
    assert config.domain == "example"
    assert config.log_level == "debug"
    assert config.log_json
    assert config.retry_interval_wan == 10.0
    assert not config.dev_mode
    assert config.encrypt == GOSSIP_KEY


def test_dev() -> None:
    config = parse_agent_config(["-dev"])
    assert config.dev_mode
    assert config.server
    assert config.bootstrap
    assert config.http_bind_addr == "127.0.0.1"
    assert config.ports.http == 8500
    assert not config.wan_federation


def test_dev_with_http_port() -> None:
    assert parse_agent_config(["-dev", "-http-port", "0"]).ports.http == 0


def test_files_dirs_then_flags(tmp_path: Path) -> None:
    first = tmp_path / "a.hcl"
    first.write_text('node_name = "from-hcl"\ndatacenter = "dc9"\nretry_join = ["127.0.0.8"]\n')
    second = tmp_path / "b.json"
    second.write_text(json.dumps({"node_name": "from-json", "log_level": "warn"}))
    folder = tmp_path / "conf.d"
    folder.mkdir()
    (folder / "10.json").write_text(json.dumps({"log_level": "error", "retry_join": ["127.0.0.9"]}))
    config = parse_agent_config(
        [
            "-config-file", str(first), "-config-file", str(second), "-config-dir", str(folder),
            "-node", "from-flag", "-retry-join", "127.0.0.10",
        ]
    )  # fmt: skip
    assert config.node_name == "from-flag"
    assert config.datacenter == "dc9"
    assert config.log_level == "error"
    assert config.retry_join == ("127.0.0.8", "127.0.0.9", "127.0.0.10")


def write_secondary(tmp_path: Path, **extra: Any) -> Path:
    """A secondary server config with wanfed on; TLS files made by our own CLI helpers."""
    from wanfed_agent.tls import create_ca, create_server_cert

    ca = create_ca()
    cert = create_server_cert(ca, "dc2", "consul", "s1")
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem)
    (tmp_path / "s1.pem").write_bytes(cert.cert_pem)
    (tmp_path / "s1-key.pem").write_bytes(cert.key_pem)
    body = {
        "datacenter": "dc2",
        "primary_datacenter": "dc1",
        "node_name": "s1",
        "server": True,
        "data_dir": str(tmp_path / "data"),
        "encrypt": GOSSIP_KEY,
        "connect": {"enabled": True, "enable_mesh_gateway_wan_federation": True},
        "tls": {
            "defaults": {
                "ca_file": str(tmp_path / "ca.pem"),
                "cert_file": str(tmp_path / "s1.pem"),
                "key_file": str(tmp_path / "s1-key.pem"),
                "verify_incoming": True,
                "verify_outgoing": True,
            },
            "internal_rpc": {"verify_server_hostname": True},
        },
        **extra,
    }
    path = tmp_path / "secondary.json"
    path.write_text(json.dumps(body))
    return path


def test_primary_gateway_flag_is_repeatable(tmp_path: Path) -> None:
    path = write_secondary(tmp_path, primary_gateways=["127.0.0.20:8443"])
    config = parse_agent_config(
        ["-config-file", str(path), "-primary-gateway", "127.0.0.21:8443",
         "-primary-gateway", "gw.dc1.example:443"]
    )  # fmt: skip
    assert config.primary_gateways == ("127.0.0.20:8443", "127.0.0.21:8443", "gw.dc1.example:443")


@pytest.mark.parametrize("flag", ["-join-wan", "-retry-join-wan"])
def test_join_wan_rejected_with_wanfed(tmp_path: Path, flag: str) -> None:
    path = write_secondary(tmp_path, primary_gateways=["127.0.0.20:8443"])
    with pytest.raises(ConfigError) as caught:
        parse_agent_config(["-config-file", str(path), flag, "127.0.0.30"])
    assert str(caught.value) == (
        "'retry_join_wan' is incompatible with 'connect.enable_mesh_gateway_wan_federation = true'"
    )


def test_bad_flag_value_names_flag() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_agent_config(["-http-port", "web"])
    assert str(caught.value) == (
        "command line: ports.http (-http-port): expected a port number 0-65535, got 'web' "
        "(a string)"
    )


def test_unknown_flag() -> None:
    with pytest.raises(UsageError, match="unrecognized arguments: -wan-federation"):
        parse_agent_config(["-wan-federation"])


def test_missing_flag_value() -> None:
    with pytest.raises(UsageError, match="argument -node: expected one argument"):
        parse_agent_config(["-node"])


def test_double_dash_spelling() -> None:
    assert parse_agent_config(["--dev", "--node=n2"]).node_name == "n2"


def test_flag_not_given_does_not_override_file(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    path.write_text(json.dumps({"log_json": True, "ports": {"http": 1234}}))
    config = parse_agent_config(["-config-file", str(path)])
    assert config.log_json
    assert config.ports.http == 1234


def sample_value(kind: FlagKind, key: str) -> list[str]:
    samples = {
        "bootstrap_expect": "2",
        "datacenter": "dc5",
        "primary_datacenter": "dc5",
        "node_name": "n5",
        "data_dir": "/srv/wanfed",
        "retry_interval_wan": "7s",
        "domain": "example",
        "encrypt": "pUqJrVyVRj5jsiYEkM/tFQYfWyJIv4s3XkvDwy7Cu5s=",
        "log_level": "trace",
        "primary_gateways": "127.0.0.40:8443",
        "retry_join": "127.0.0.41",
        "retry_join_wan": "127.0.0.42",
    }
    if kind is FlagKind.SWITCH:
        return []
    if key.startswith("ports."):
        return ["4321"]
    if key.endswith(("_addr", "_addr_wan")):
        return ["127.0.0.44"]
    return [samples[key]]


@pytest.mark.parametrize("flag", AGENT_FLAGS, ids=lambda f: f.flag)
def test_every_flag_sets_its_key(flag: Any, tmp_path: Path) -> None:
    """Each row of the flag table reaches the config key it names."""
    value = sample_value(flag.kind, flag.key)
    base = ["-dev", "-node", "n0"] if flag.key != "node_name" else ["-dev"]
    if flag.key == "bootstrap_expect":  # -dev bootstraps by itself; use a plain server
        tls = str(tls_config_file(tmp_path, node="n0"))
        base = ["-config-file", tls, "-server", "-data-dir", "/srv/wanfed", "-node", "n0"]
        base += ["-encrypt", GOSSIP_KEY]
    if flag.key == "primary_gateways":
        base += ["-datacenter", "dc2", "-primary-datacenter", "dc1"]
    config = parse_agent_config([*base, flag.flag, *value])
    got: Any = config
    for part in flag.key.split("."):
        got = getattr(got, part)
    expected: Any
    if flag.kind is FlagKind.SWITCH:
        expected = True
    elif flag.kind is FlagKind.REPEATED:
        expected = tuple(value)
    elif flag.kind is FlagKind.INT:
        expected = int(value[0])
    elif flag.key == "retry_interval_wan":
        expected = 7.0
    else:
        expected = value[0]
    assert got == expected


def test_bootstrap_expect_conflicts_with_dev() -> None:
    with pytest.raises(ConfigError, match="mutually exclusive"):
        parse_agent_config(["-dev", "-bootstrap-expect", "3"])


def test_parse_returns_a_frozen_struct() -> None:
    config = parse_agent_config(["-dev"])
    assert isinstance(config, AgentConfig)
    with pytest.raises(AttributeError):
        config.server = False  # type: ignore[misc]


def test_config_file_and_dir_keep_command_line_order(tmp_path: Path) -> None:
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "a.json").write_text(json.dumps({"node_name": "from-dir"}))
    file = tmp_path / "f.json"
    file.write_text(json.dumps({"node_name": "from-file"}))
    dir_last = parse_agent_config(["-config-file", str(file), "-config-dir", str(folder)])
    file_last = parse_agent_config(["-config-dir", str(folder), "-config-file", str(file)])
    assert dir_last.node_name == "from-dir"
    assert file_last.node_name == "from-file"


def test_config_dir_must_be_a_directory(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="is not a directory"):
        parse_agent_config(["-config-dir", str(tmp_path / "missing")])


def test_advertise_cannot_be_a_wildcard() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_agent_config(["-dev", "-advertise", "0.0.0.0"])
    assert str(caught.value) == (
        "command line: advertise_addr (-advertise): expected an address peers can reach, "
        "got the wildcard '0.0.0.0'"
    )


def test_hcl_fragments_after_files_before_flags(tmp_path: Path) -> None:
    file = tmp_path / "a.json"
    file.write_text(json.dumps({"node_name": "from-file", "datacenter": "dc3"}))
    config = parse_agent_config(
        [
            "-config-file", str(file), "-hcl", 'node_name = "from-hcl"',
            "-hcl", "connect {\n enabled = true\n}", "-datacenter", "dc4",
        ]
    )  # fmt: skip
    assert config.node_name == "from-hcl"
    assert config.connect.enabled
    assert config.datacenter == "dc4"


def test_hcl_fragment_errors_name_the_source() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_agent_config(["-hcl", "server = 3"])
    assert (
        str(caught.value) == "-hcl: server: expected a boolean (true or false), got 3 (an integer)"
    )


def test_invalid_config_exits_1_with_one_message(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["agent", "-server", "-node", "s1"]) == 1
    assert capsys.readouterr().err == (
        "error: 'data_dir' is required for a server (use -dev for a server that keeps its "
        "state in memory)\n"
    )


def test_agent_usage_error_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["agent", "-no-such-flag"]) == 1
    assert capsys.readouterr().err == ("error: wanfed: unrecognized arguments: -no-such-flag\n")


def test_agent_help_lists_flags(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["agent", "--help"]) == 0
    out = capsys.readouterr().out
    for flag in AGENT_FLAGS:
        assert flag.flag in out
