"""Cross-key validation: the reference's exact messages, one test each, plus our own rules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

from wanfed_agent.config import AgentConfig, ConfigError, Connect, load_config, validate_config
from wanfed_agent.config._validate import GOSSIP_KEY_REQUIRED
from wanfed_agent.tls import TLSMaterial

WANFED = "connect.enable_mesh_gateway_wan_federation"
GOSSIP_KEY = "pUqJrVyVRj5jsiYEkM/tFQYfWyJIv4s3XkvDwy7Cu5s="


def tls_block(tls: TLSMaterial) -> dict[str, Any]:
    return {
        "defaults": {
            "ca_file": tls.ca_file,
            "cert_file": tls.cert_file,
            "key_file": tls.key_file,
            "verify_incoming": True,
            "verify_outgoing": True,
        },
        "internal_rpc": {"verify_server_hostname": True},
    }


def secondary(material: TLSMaterial, tmp_path: Path, **changes: Any) -> dict[str, Any]:
    """A valid secondary server with wanfed on; ``changes`` replace top-level keys."""
    config: dict[str, Any] = {
        "datacenter": "dc2",
        "primary_datacenter": "dc1",
        "node_name": "s1",
        "server": True,
        "data_dir": str(tmp_path / "data"),
        "connect": {"enabled": True, "enable_mesh_gateway_wan_federation": True},
        "primary_gateways": ["198.18.0.10:8443", "gw.dc1.example:443"],
        "tls": tls_block(material),
        "encrypt": GOSSIP_KEY,
    }
    config.update(changes)
    return {k: v for k, v in config.items() if v is not None}


def load(overrides: dict[str, Any], **kwargs: Any) -> AgentConfig:
    return load_config((), (), overrides, **kwargs)


def error_of(overrides: dict[str, Any], **kwargs: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        load(overrides, **kwargs)
    return str(caught.value)


def test_valid_secondary_with_wanfed_and_primary_gateways(
    tls_files: TLSMaterial, tmp_path: Path
) -> None:
    config = load(secondary(tls_files, tmp_path))
    assert config.wan_federation
    assert not config.is_primary
    assert config.primary_gateways == ("198.18.0.10:8443", "gw.dc1.example:443")
    assert config.wan_member_name == "s1.dc2"
    assert config.tls.mutual_tls_capable


def test_valid_primary_with_wanfed(tls_files: TLSMaterial, tmp_path: Path) -> None:
    config = load(
        secondary(
            tls_files, tmp_path, datacenter="dc1", primary_datacenter=None, primary_gateways=None
        )
    )
    assert config.is_primary
    assert config.primary_datacenter == "dc1"


def test_wanfed_requires_connect_enabled(tls_files: TLSMaterial, tmp_path: Path) -> None:
    overrides = secondary(tls_files, tmp_path, connect={"enable_mesh_gateway_wan_federation": True})
    assert error_of(overrides) == (
        "'connect.enable_mesh_gateway_wan_federation=true' requires 'connect.enabled=true'"
    )


def test_wanfed_requires_server(tls_files: TLSMaterial, tmp_path: Path) -> None:
    overrides = secondary(tls_files, tmp_path, server=False, primary_gateways=None)
    assert error_of(overrides) == (
        "'connect.enable_mesh_gateway_wan_federation = true' requires 'server = true'"
    )


def test_wanfed_rejects_slash_in_node_name(tls_files: TLSMaterial, tmp_path: Path) -> None:
    assert error_of(secondary(tls_files, tmp_path, node_name="a/b")) == (
        "'connect.enable_mesh_gateway_wan_federation = true' requires that 'node_name' "
        "not contain '/' characters"
    )


def test_validate_config_checks_structs_built_in_code(
    tls_files: TLSMaterial, tmp_path: Path
) -> None:
    config = load(secondary(tls_files, tmp_path))
    broken = msgspec.structs.replace(
        config, connect=Connect(enabled=False, enable_mesh_gateway_wan_federation=True)
    )
    with pytest.raises(ConfigError) as caught:
        validate_config(broken)
    assert str(caught.value) == (
        "'connect.enable_mesh_gateway_wan_federation=true' requires 'connect.enabled=true'"
    )
    assert caught.value.key == "connect.enable_mesh_gateway_wan_federation"


def test_slash_in_node_name_rejected_without_wanfed() -> None:
    assert error_of({"node_name": "a/b"}) == (
        "'node_name' must not contain '/' characters, got 'a/b': '/' separates name and "
        "address in join strings"
    )


@pytest.mark.parametrize("key", ["retry_join_wan", "start_join_wan"])
def test_wanfed_rejects_retry_join_wan(tls_files: TLSMaterial, tmp_path: Path, key: str) -> None:
    overrides = secondary(tls_files, tmp_path, **{key: ["198.18.0.20"]})
    assert error_of(overrides) == (
        "'retry_join_wan' is incompatible with 'connect.enable_mesh_gateway_wan_federation = true'"
    )


def test_primary_gateways_require_server() -> None:
    overrides = {
        "datacenter": "dc2",
        "primary_datacenter": "dc1",
        "primary_gateways": ["198.18.0.10:8443"],
    }
    assert error_of(overrides) == "'primary_gateways' requires 'server = true'"


def test_primary_gateways_only_in_a_secondary(tls_files: TLSMaterial, tmp_path: Path) -> None:
    overrides = secondary(tls_files, tmp_path, primary_datacenter="dc2")
    assert error_of(overrides) == (
        "'primary_gateways' should only be configured in a secondary datacenter"
    )


def test_primary_datacenter_defaults_to_datacenter_so_gateways_fail(
    tls_files: TLSMaterial, tmp_path: Path
) -> None:
    overrides = secondary(tls_files, tmp_path, primary_datacenter=None)
    assert error_of(overrides) == (
        "'primary_gateways' should only be configured in a secondary datacenter"
    )


def test_wanfed_rejects_dot_in_node_name_and_says_why(
    tls_files: TLSMaterial, tmp_path: Path
) -> None:
    message = error_of(secondary(tls_files, tmp_path, node_name="s1.example"))
    assert message.startswith(
        "'connect.enable_mesh_gateway_wan_federation = true' requires that 'node_name' not "
        "contain '.' characters"
    )
    assert "'s1.example.dc2'" in message


def test_dot_in_node_name_is_fine_without_wanfed(tls_files: TLSMaterial, tmp_path: Path) -> None:
    config = load(
        {
            "node_name": "s1.example",
            "server": True,
            "data_dir": str(tmp_path),
            "tls": tls_block(tls_files),
            "encrypt": GOSSIP_KEY,
        }
    )
    assert config.node_name == "s1.example"


@pytest.mark.parametrize("missing", ["ca_file", "cert_file", "key_file"])
def test_a_server_outside_dev_requires_tls_material(
    tls_files: TLSMaterial, tmp_path: Path, missing: str
) -> None:
    tls = tls_block(tls_files)
    del tls["defaults"][missing]
    if missing != "ca_file":  # cert and key go together; drop both
        tls["defaults"].pop("cert_file", None)
        tls["defaults"].pop("key_file", None)
        tls["defaults"]["verify_incoming"] = False
    message = error_of(
        {"node_name": "s7", "datacenter": "dc3", "server": True, "data_dir": str(tmp_path),
         "tls": tls}
    )  # fmt: skip
    assert "requires TLS" in message or "requires 'tls.defaults" in message, message


def test_the_missing_tls_error_says_how_to_make_the_files(tmp_path: Path) -> None:
    message = error_of(
        {"node_name": "s7", "datacenter": "dc3", "server": True, "data_dir": str(tmp_path)}
    )
    assert "a server outside -dev requires TLS" in message
    assert "'tls.defaults.ca_file', 'tls.defaults.cert_file', 'tls.defaults.key_file'" in message
    assert "wanfed tls ca create" in message
    assert "wanfed tls cert create -server -dc dc3 -node s7" in message


def test_dev_mode_needs_no_tls() -> None:
    config = load({"node_name": "s1"}, dev=True)
    assert config.dev_mode
    assert not config.tls.mutual_tls_capable


def test_wanfed_requires_tls_files(tls_files: TLSMaterial, tmp_path: Path) -> None:
    message = error_of(secondary(tls_files, tmp_path, tls=None))
    assert message.startswith(
        "'connect.enable_mesh_gateway_wan_federation = true' requires 'tls.defaults.ca_file', "
        "'tls.defaults.cert_file' and 'tls.defaults.key_file'"
    )


def test_bootstrap_expect_requires_server() -> None:
    assert error_of({"bootstrap_expect": 3}) == "'bootstrap_expect' requires 'server = true'"


@pytest.mark.parametrize("value", [0, -1])
def test_bootstrap_expect_at_least_one(value: int) -> None:
    assert error_of({"server": True, "bootstrap_expect": value}) == (
        f"command line: bootstrap_expect (-bootstrap-expect): expected an integer of at "
        f"least 1, got {value}"
    )


def test_bootstrap_and_bootstrap_expect_exclusive(tmp_path: Path) -> None:
    message = error_of(
        {"server": True, "bootstrap": True, "bootstrap_expect": 3, "data_dir": str(tmp_path)}
    )
    assert message.startswith("'bootstrap' and 'bootstrap_expect' are mutually exclusive")


def test_bootstrap_requires_server() -> None:
    assert error_of({"bootstrap": True}) == "'bootstrap' requires 'server = true'"


def test_server_requires_data_dir() -> None:
    assert error_of({"server": True}) == (
        "'data_dir' is required for a server (use -dev for a server that keeps its state in memory)"
    )


def test_client_agent_needs_no_data_dir() -> None:
    assert load({}).data_dir is None


def test_server_refuses_to_start_without_a_gossip_key(
    tls_files: TLSMaterial, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError) as caught:
        load({"server": True, "data_dir": str(tmp_path), "tls": tls_block(tls_files)})
    assert str(caught.value) == GOSSIP_KEY_REQUIRED
    assert caught.value.key == "encrypt"
    # The message tells the operator how to make a key and where it goes.
    assert "'wanfed keygen'" in GOSSIP_KEY_REQUIRED
    assert "'encrypt'" in GOSSIP_KEY_REQUIRED
    assert "-encrypt" in GOSSIP_KEY_REQUIRED


def test_wanfed_server_without_a_gossip_key_is_refused(
    tls_files: TLSMaterial, tmp_path: Path
) -> None:
    assert error_of(secondary(tls_files, tmp_path, encrypt=None)) == GOSSIP_KEY_REQUIRED


def test_server_with_a_gossip_key_starts(tls_files: TLSMaterial, tmp_path: Path) -> None:
    config = load(
        {
            "server": True,
            "data_dir": str(tmp_path),
            "encrypt": GOSSIP_KEY,
            "tls": tls_block(tls_files),
        }
    )
    assert config.encrypt_key is not None


def test_dev_server_needs_no_gossip_key() -> None:
    assert load({}, dev=True).encrypt is None


def test_a_bad_gossip_key_is_reported_as_bad_not_as_missing(tmp_path: Path) -> None:
    message = error_of({"server": True, "data_dir": str(tmp_path), "encrypt": "short"})
    assert "wanfed keygen" in message
    assert message != GOSSIP_KEY_REQUIRED


def test_cert_and_key_go_together(tls_files: TLSMaterial) -> None:
    message = error_of(
        {"tls": {"defaults": {"ca_file": tls_files.ca_file, "cert_file": tls_files.cert_file}}}
    )
    assert message == (
        "'tls.defaults.cert_file' and 'tls.defaults.key_file' must be given together"
    )


def test_cert_requires_ca(tls_files: TLSMaterial) -> None:
    message = error_of(
        {"tls": {"defaults": {"cert_file": tls_files.cert_file, "key_file": tls_files.key_file}}}
    )
    assert message == "'tls.defaults.cert_file' requires 'tls.defaults.ca_file' to verify peers"


@pytest.mark.parametrize("flag", ["verify_incoming", "verify_outgoing"])
def test_verify_requires_ca(flag: str) -> None:
    assert error_of({"tls": {"defaults": {flag: True}}}) == (
        f"'tls.defaults.{flag} = true' requires 'tls.defaults.ca_file'"
    )


def test_verify_incoming_requires_a_certificate(tls_files: TLSMaterial) -> None:
    message = error_of(
        {"tls": {"defaults": {"ca_file": tls_files.ca_file, "verify_incoming": True}}}
    )
    assert message.startswith("'tls.defaults.verify_incoming = true' requires")


def test_duplicate_ports_rejected() -> None:
    assert error_of({"ports": {"http": 8300}}) == (
        "'ports.http' and 'ports.server' are both 8300; each listener needs its own port"
    )


def test_port_zero_may_repeat() -> None:
    config = load({"ports": {"http": 0, "server": 0, "serf_wan": 0}})
    assert (config.ports.http, config.ports.server, config.ports.serf_wan) == (0, 0, 0)


def test_missing_tls_file_named(tls_files: TLSMaterial, tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.pem")
    block = tls_block(tls_files)
    block["defaults"]["ca_file"] = missing
    assert error_of({"tls": block}) == f"tls.defaults: CA file {missing!r} does not exist"


def test_tls_file_checks_can_be_skipped(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.pem")
    config = load({"tls": {"defaults": {"ca_file": missing}}}, check_tls_files=False)
    assert config.tls.defaults.ca_file == missing


def test_dev_config_is_complete() -> None:
    config = load({}, dev=True)
    assert config.dev_mode
    assert config.server
    assert config.bootstrap
    assert config.bootstrap_expect == 0
    assert config.data_dir is None
    assert config.http_bind_addr == "127.0.0.1"
    assert config.ports.http == 8500
    assert config.connect.enabled
    assert not config.wan_federation


def test_dev_config_takes_flags() -> None:
    config = load({"ports": {"http": 18500}, "node_name": "dev1"}, dev=True)
    assert config.ports.http == 18500
    assert config.node_name == "dev1"
