"""Loading: JSON and HCL files and dirs merged in order, flags last, errors naming the source."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings

from wanfed_agent.config import AgentConfig, ConfigError, load_config

WriteConfig = Callable[[str, str | dict[str, Any]], Path]

FULL_HCL = """
# every block the agent understands, HCL style
datacenter = "dc2"
primary_datacenter = "dc1"
node_name = "s2"
server = true
bootstrap_expect = 3
data_dir = "/var/lib/wanfed"
bind_addr = "198.18.1.2"
client_addr = "127.0.0.2"
advertise_addr = "198.18.1.2"
advertise_addr_wan = "198.18.2.2"
retry_join = ["198.18.1.3", "198.18.1.4:8301"]
primary_gateways = ["198.18.0.10:8443"]
primary_gateways_interval = "5s"
retry_interval_wan = "1m30s"
retry_max_wan = 4
domain = "Example.Internal."
encrypt = "pUqJrVyVRj5jsiYEkM/tFQYfWyJIv4s3XkvDwy7Cu5s="
log_level = "DEBUG"
log_json = true
connect {
  enabled = true
}
ports {
  http = 18500
  server = 18300
  serf_wan = 18302
  raft = 18303
}
addresses {
  http = "127.0.0.3"
}
tls {
  defaults {
    ca_file = "ca.pem"
    cert_file = "server.pem"
    key_file = "server-key.pem"
    verify_incoming = true
  }
}
tls {
  internal_rpc {
    verify_server_hostname = true
  }
}
limits {
  rpc_handshake_timeout = "750ms"
}
"""


def load(*files: Path, overrides: dict[str, Any] | None = None, **kw: Any) -> AgentConfig:
    return load_config(files, (), overrides, check_tls_files=False, **kw)


def error_of(*files: Path, overrides: dict[str, Any] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load(*files, overrides=overrides)
    return caught.value


def test_defaults_follow_consul() -> None:
    config = load(overrides={"node_name": "n1"})
    assert config.datacenter == "dc1"
    assert config.primary_datacenter == "dc1"
    assert (config.ports.http, config.ports.server, config.ports.serf_wan) == (8500, 8300, 8302)
    assert config.ports.raft == 8303
    assert config.domain == "consul"
    assert config.primary_gateways_interval == 30.0
    assert config.retry_interval_wan == 30.0
    assert config.limits.rpc_handshake_timeout == 5.0
    assert not config.server
    assert not config.connect.enabled
    assert not config.wan_federation
    assert config.log_level == "info"


def test_every_hcl_key_is_read(write_config: WriteConfig) -> None:
    config = load(write_config("agent.hcl", FULL_HCL))
    assert config.datacenter == "dc2"
    assert config.primary_datacenter == "dc1"
    assert config.node_name == "s2"
    assert config.server
    assert config.bootstrap_expect == 3
    assert config.data_dir == "/var/lib/wanfed"
    assert config.bind_addr == "198.18.1.2"
    assert config.client_addr == "127.0.0.2"
    assert config.advertise_addr == "198.18.1.2"
    assert config.advertise_addr_wan == "198.18.2.2"
    assert config.retry_join == ("198.18.1.3", "198.18.1.4:8301")
    assert config.retry_join_addresses() == [("198.18.1.3", 8300), ("198.18.1.4", 8301)]
    assert config.primary_gateways == ("198.18.0.10:8443",)
    assert config.primary_gateways_interval == 5.0
    assert config.retry_interval_wan == 90.0
    assert config.retry_max_wan == 4
    assert config.domain == "example.internal"
    assert config.encrypt_key is not None
    assert len(config.encrypt_key) == 32
    assert config.log_level == "debug"
    assert config.log_json
    assert config.connect.enabled
    assert config.ports.http == 18500
    assert config.ports.server == 18300
    assert config.ports.serf_wan == 18302
    assert config.ports.raft == 18303
    assert config.http_bind_addr == "127.0.0.3"
    assert config.tls.defaults.verify_incoming
    assert config.tls.defaults.key_file == "server-key.pem"
    assert config.tls.internal_rpc.verify_server_hostname
    assert config.limits.rpc_handshake_timeout == pytest.approx(0.75)


def test_json_and_hcl_give_the_same_config(write_config: WriteConfig) -> None:
    from_hcl = load(write_config("a.hcl", FULL_HCL))
    as_json = {
        "datacenter": "dc2",
        "primary_datacenter": "dc1",
        "node_name": "s2",
        "server": True,
        "bootstrap_expect": 3,
        "data_dir": "/var/lib/wanfed",
        "bind_addr": "198.18.1.2",
        "client_addr": "127.0.0.2",
        "advertise_addr": "198.18.1.2",
        "advertise_addr_wan": "198.18.2.2",
        "retry_join": ["198.18.1.3", "198.18.1.4:8301"],
        "primary_gateways": ["198.18.0.10:8443"],
        "primary_gateways_interval": "5s",
        "retry_interval_wan": "1m30s",
        "retry_max_wan": 4,
        "domain": "example.internal",
        "encrypt": "pUqJrVyVRj5jsiYEkM/tFQYfWyJIv4s3XkvDwy7Cu5s=",
        "log_level": "debug",
        "log_json": True,
        "connect": {"enabled": True},
        "ports": {"http": 18500, "server": 18300, "serf_wan": 18302, "raft": 18303},
        "addresses": {"http": "127.0.0.3"},
        "tls": {
            "defaults": {
                "ca_file": "ca.pem",
                "cert_file": "server.pem",
                "key_file": "server-key.pem",
                "verify_incoming": True,
            },
            "internal_rpc": {"verify_server_hostname": True},
        },
        "limits": {"rpc_handshake_timeout": "750ms"},
    }
    assert load(write_config("a.json", as_json)) == from_hcl


def test_files_merge_in_order_and_flags_win(write_config: WriteConfig) -> None:
    first = write_config("1.json", {"datacenter": "dc1", "node_name": "a", "retry_join": ["x"]})
    second = write_config("2.hcl", 'node_name = "b"\nretry_join = ["y"]\nports {\n  http = 1\n}\n')
    config = load(
        first, second, overrides={"node_name": "c", "retry_join": ["z"], "ports": {"server": 2}}
    )
    assert config.node_name == "c"
    assert config.datacenter == "dc1"
    assert config.retry_join == ("x", "y", "z")
    assert (config.ports.http, config.ports.server) == (1, 2)
    assert config.ports.serf_wan == 8302  # a block merges key by key


def test_later_file_replaces_earlier_scalar(write_config: WriteConfig) -> None:
    a = write_config("a.json", {"node_name": "a"})
    b = write_config("b.json", {"node_name": "b"})
    assert load(a, b).node_name == "b"
    assert load(b, a).node_name == "a"


def test_config_dir_lexical_order_skips_other_files(
    write_config: WriteConfig, tmp_path: Path
) -> None:
    write_config("d/20-b.hcl", 'node_name = "second"\n')
    write_config("d/10-a.json", {"node_name": "first", "datacenter": "dc7"})
    write_config("d/README.md", "not config")
    write_config("d/30-c.json~", "{ broken")
    (tmp_path / "conf" / "d" / "sub.json").mkdir()
    file = write_config("top.json", {"node_name": "from-file", "log_level": "warn"})
    config = load_config([file], [tmp_path / "conf" / "d"], None)
    assert config.node_name == "second"  # dirs come after files
    assert config.datacenter == "dc7"
    assert config.log_level == "warn"


def test_missing_config_dir(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config dir does not exist"):
        load_config([], [tmp_path / "nope"], None)


def test_missing_config_file(tmp_path: Path) -> None:
    error = error_of(tmp_path / "nope.hcl")
    assert str(error) == f"{tmp_path / 'nope.hcl'}: config file does not exist"


def test_config_file_needs_known_suffix(write_config: WriteConfig) -> None:
    path = write_config("agent.yaml", "datacenter: dc1")
    assert str(error_of(path)) == f"{path}: expected a config file named *.json or *.hcl"


def test_unknown_key_names_file_key_and_expected(write_config: WriteConfig) -> None:
    path = write_config("agent.json", {"connect": {"enabeld": True}})
    error = error_of(path)
    assert str(error) == (
        f"{path}: unknown key 'connect.enabeld'; expected one of: "
        "enable_mesh_gateway_wan_federation, enabled"
    )
    assert error.source == str(path)
    assert error.key == "connect.enabeld"


def test_unknown_top_level_key_in_hcl(write_config: WriteConfig) -> None:
    path = write_config("agent.hcl", 'datacentre = "dc1"\n')
    message = str(error_of(path))
    assert message.startswith(f"{path}: unknown key 'datacentre'; expected one of: ")
    assert "datacenter" in message


def test_wrong_type_names_file_key_and_expected(write_config: WriteConfig) -> None:
    path = write_config(
        "agent.json", {"connect": {"enabled": True, "enable_mesh_gateway_wan_federation": "yes"}}
    )
    error = error_of(path)
    assert str(error) == (
        f"{path}: connect.enable_mesh_gateway_wan_federation: expected a boolean "
        "(true or false), got 'yes' (a string)"
    )
    assert error.key == "connect.enable_mesh_gateway_wan_federation"


def test_wrong_type_in_hcl(write_config: WriteConfig) -> None:
    path = write_config("agent.hcl", 'ports {\n  http = "8500"\n}\n')
    assert str(error_of(path)) == (
        f"{path}: ports.http: expected a port number 0-65535, got '8500' (a string)"
    )


def test_block_expected(write_config: WriteConfig) -> None:
    path = write_config("agent.json", {"ports": 8500})
    assert (
        str(error_of(path)) == f"{path}: ports: expected a block (an object), got 8500 (an integer)"
    )


def test_list_expected(write_config: WriteConfig) -> None:
    path = write_config("agent.json", {"retry_join": "198.18.0.1"})
    assert str(error_of(path)) == (
        f"{path}: retry_join: expected a list, got '198.18.0.1' (a string)"
    )


def test_bool_is_not_an_integer(write_config: WriteConfig) -> None:
    path = write_config("agent.json", {"bootstrap_expect": True})
    assert str(error_of(path)) == (
        f"{path}: bootstrap_expect: expected an integer, got True (a boolean)"
    )


def test_error_in_second_file_names_that_file(write_config: WriteConfig) -> None:
    good = write_config("good.json", {"server": False})
    bad = write_config("bad.hcl", "server = 1\n")
    error = error_of(good, bad)
    assert error.source == str(bad)
    assert str(error).startswith(f"{bad}: server: expected a boolean")


def test_invalid_json(write_config: WriteConfig) -> None:
    path = write_config("agent.json", '{"server": true,,}')
    assert str(error_of(path)).startswith(f"{path}: invalid JSON: ")


def test_json_top_level_must_be_object(write_config: WriteConfig) -> None:
    path = write_config("agent.json", "[1]")
    assert str(error_of(path)) == f"{path}: expected a JSON object at the top level"


def test_invalid_hcl(write_config: WriteConfig) -> None:
    path = write_config("agent.hcl", "server = = true\n")
    assert str(error_of(path)).startswith(f"{path}: invalid HCL: ")


def test_hcl_key_set_twice_in_repeated_blocks(write_config: WriteConfig) -> None:
    path = write_config("agent.hcl", "ports {\n http = 1\n}\nports {\n http = 2\n}\n")
    assert str(error_of(path)) == f"{path}: ports.http: set more than once"


def test_empty_hcl_file_is_fine(write_config: WriteConfig) -> None:
    assert (
        load(write_config("empty.hcl", "# nothing\n"), overrides={"node_name": "n"}).node_name
        == "n"
    )


def test_command_line_errors_name_the_flag() -> None:
    error = error_of(overrides={"ports": {"http": 70000}})
    assert str(error) == (
        "command line: ports.http (-http-port): expected a port number 0-65535, got 70000"
    )
    assert error.source == "command line"


def test_start_join_wan_folds_into_retry_join_wan(write_config: WriteConfig) -> None:
    path = write_config("a.json", {"retry_join_wan": ["a"], "start_join_wan": ["b"]})
    assert load(path).retry_join_wan == ("a", "b")


def test_config_round_trips_through_json() -> None:
    """The struct is plain data: the runtime may log or ship it."""
    import msgspec

    config = load(overrides={"node_name": "n"})
    assert msgspec.json.decode(msgspec.json.encode(config), type=AgentConfig) == config


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=200), suffix=st.sampled_from([".json", ".hcl"]))
def test_arbitrary_file_content_gives_config_or_config_error(
    write_config: WriteConfig, text: str, suffix: str
) -> None:
    path = write_config(f"fuzz{suffix}", text)
    with contextlib.suppress(ConfigError):
        load(path, overrides={"node_name": "n"})


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
known_keys = st.sampled_from(
    [
        "datacenter",
        "server",
        "ports",
        "connect",
        "tls",
        "retry_join",
        "limits",
        "encrypt",
        "primary_gateways",
        "domain",
        "bootstrap_expect",
        "node_name",
    ]
)


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(document=st.dictionaries(known_keys, json_values, max_size=4))
def test_arbitrary_json_values_give_config_or_config_error(
    write_config: WriteConfig, document: dict[str, Any]
) -> None:
    path = write_config("fuzz.json", json.dumps(document))
    with contextlib.suppress(ConfigError):
        load(path, overrides={"node_name": "n"})


def test_null_is_reported_as_null(write_config: WriteConfig) -> None:
    path = write_config("agent.json", {"tls": {"defaults": None}})
    assert str(error_of(path)) == f"{path}: tls.defaults: expected a block (an object), got null"
