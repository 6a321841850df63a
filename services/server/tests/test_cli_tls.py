"""``wanfed tls``/``wanfed keygen`` through ``main(argv)`` and the installed console script."""

from __future__ import annotations

import base64
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509

from wanfed_agent.tls import TLSMaterial
from wanfed_server.cli import main

WANFED = Path(sys.executable).with_name("wanfed")


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The tls commands write into the current directory, like Consul's."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def ca(workdir: Path) -> Path:
    assert main(["tls", "ca", "create"]) == 0
    return workdir


def sans(path: Path) -> tuple[list[str], list[str]]:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    ips = [str(ip) for ip in ext.get_values_for_type(x509.IPAddress)]
    return ext.get_values_for_type(x509.DNSName), ips


def test_ca_create(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tls", "ca", "create", "-days", "30"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "==> Saved wanfed-agent-ca.pem",
        "==> Saved wanfed-agent-ca-key.pem",
    ]
    cert = x509.load_pem_x509_certificate((workdir / "wanfed-agent-ca.pem").read_bytes())
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days == 30
    assert stat.S_IMODE((workdir / "wanfed-agent-ca-key.pem").stat().st_mode) == 0o600


def test_ca_create_refuses_to_overwrite(ca: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = (ca / "wanfed-agent-ca.pem").read_bytes()
    capsys.readouterr()
    assert main(["tls", "ca", "create"]) == 1
    err = capsys.readouterr().err
    assert err == "error: wanfed-agent-ca.pem already exists; refusing to overwrite it\n"
    assert (ca / "wanfed-agent-ca.pem").read_bytes() == before


def test_ca_create_refuses_when_only_the_key_exists(workdir: Path) -> None:
    (workdir / "wanfed-agent-ca-key.pem").write_text("keep me")
    assert main(["tls", "ca", "create"]) == 1
    assert not (workdir / "wanfed-agent-ca.pem").exists()
    assert (workdir / "wanfed-agent-ca-key.pem").read_text() == "keep me"


def test_server_cert_create_names_and_numbers(ca: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    args = ["tls", "cert", "create", "-server", "-dc", "dc1", "-domain", "consul", "-node", "s1"]
    assert main(args) == 0
    assert capsys.readouterr().out.splitlines() == [
        "==> Saved dc1-server-consul-0.pem",
        "==> Saved dc1-server-consul-0-key.pem",
    ]
    assert main(args) == 0
    assert sans(ca / "dc1-server-consul-0.pem") == (
        ["s1.server.dc1.consul", "server.dc1.consul", "localhost"],
        ["127.0.0.1"],
    )
    assert (ca / "dc1-server-consul-1.pem").exists()
    assert stat.S_IMODE((ca / "dc1-server-consul-1-key.pem").stat().st_mode) == 0o600
    material = TLSMaterial.load(
        ca / "wanfed-agent-ca.pem",
        ca / "dc1-server-consul-1.pem",
        ca / "dc1-server-consul-1-key.pem",
    )
    assert material.dns_names[0] == "s1.server.dc1.consul"


def test_cert_number_skips_a_leftover_key(ca: Path) -> None:
    (ca / "dc1-server-consul-0-key.pem").write_text("someone else's key")
    assert main(["tls", "cert", "create", "-server"]) == 0
    assert (ca / "dc1-server-consul-0-key.pem").read_text() == "someone else's key"
    assert not (ca / "dc1-server-consul-0.pem").exists()
    assert (ca / "dc1-server-consul-1.pem").exists()


def test_additional_names_and_days(ca: Path) -> None:
    args = [
        "tls", "cert", "create", "-server", "-dc", "dc2", "-domain", "example", "-node", "s9",
        "-additional-dnsname", "s9.example.net", "-additional-dnsname", "alt.example.net",
        "-additional-ipaddress", "198.18.0.9", "-days", "10",
    ]  # fmt: skip
    assert main(args) == 0
    path = ca / "dc2-server-example-0.pem"
    assert sans(path) == (
        ["s9.server.dc2.example", "server.dc2.example", "localhost", "s9.example.net",
         "alt.example.net"],
        ["127.0.0.1", "198.18.0.9"],
    )  # fmt: skip
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days == 10


def test_client_cert(ca: Path) -> None:
    assert main(["tls", "cert", "create", "-client"]) == 0
    assert sans(ca / "dc1-client-consul-0.pem") == (
        ["client.dc1.consul", "localhost"],
        ["127.0.0.1"],
    )


def test_node_requires_server(ca: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["tls", "cert", "create", "-client", "-node", "s1"]) == 1
    assert capsys.readouterr().err == "error: -node requires -server\n"
    assert not list(ca.glob("dc1-client-*"))


@pytest.mark.parametrize("flags", [[], ["-server", "-client"]])
def test_exactly_one_kind(ca: Path, capsys: pytest.CaptureFixture[str], flags: list[str]) -> None:
    capsys.readouterr()
    assert main(["tls", "cert", "create", *flags]) == 1
    assert "exactly one of -server or -client is required" in capsys.readouterr().err


def test_custom_ca_files(workdir: Path) -> None:
    assert main(["tls", "ca", "create"]) == 0
    (workdir / "wanfed-agent-ca.pem").rename(workdir / "my-ca.pem")
    (workdir / "wanfed-agent-ca-key.pem").rename(workdir / "my-ca-key.pem")
    assert main(["tls", "cert", "create", "-server"]) == 1
    args = ["tls", "cert", "create", "-server", "-ca", "my-ca.pem", "-key", "my-ca-key.pem"]
    assert main(args) == 0
    TLSMaterial.load(
        workdir / "my-ca.pem",
        workdir / "dc1-server-consul-0.pem",
        workdir / "dc1-server-consul-0-key.pem",
    )


def test_missing_ca(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tls", "cert", "create", "-server"]) == 1
    assert capsys.readouterr().err == (
        "error: CA certificate 'wanfed-agent-ca.pem' does not exist; create a CA with "
        "'wanfed tls ca create' or pass -ca and -key\n"
    )


def test_mismatched_ca_key(ca: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (ca / "wanfed-agent-ca.pem").rename(ca / "first-ca.pem")
    (ca / "wanfed-agent-ca-key.pem").rename(ca / "first-ca-key.pem")
    assert main(["tls", "ca", "create"]) == 0
    capsys.readouterr()
    assert main(["tls", "cert", "create", "-server", "-key", "first-ca-key.pem"]) == 1
    assert "the CA key does not belong to the CA certificate" in capsys.readouterr().err


def test_bad_ip(ca: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["tls", "cert", "create", "-server", "-additional-ipaddress", "nope"]) == 1
    assert capsys.readouterr().err == (
        "error: wanfed tls cert create: 'nope' is not a valid IP address\n"
    )


def test_bad_days_value(ca: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["tls", "cert", "create", "-server", "-days", "soon"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: wanfed tls cert create: argument -days: invalid int value")
    assert err.count("\n") == 1


def test_double_dash_flags_accepted(ca: Path) -> None:
    assert main(["tls", "cert", "create", "--server", "--node=s2", "--dc", "dc3"]) == 0
    assert sans(ca / "dc3-server-consul-0.pem")[0][0] == "s2.server.dc3.consul"


def test_flags_are_not_abbreviated(ca: Path) -> None:
    assert main(["tls", "cert", "create", "-serv"]) == 1


def test_keygen(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keygen"]) == 0
    out = capsys.readouterr().out
    assert len(base64.b64decode(out.strip(), validate=True)) == 32


@pytest.mark.parametrize(
    "argv", [["--help"], ["tls", "--help"], ["tls", "cert", "create", "-h"], ["keygen", "--help"]]
)
def test_help_exits_zero(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 0
    assert capsys.readouterr().out.startswith("usage: wanfed")


@pytest.mark.parametrize("argv", [[], ["tls"], ["tls", "cert"], ["nope"], ["-bogus"]])
def test_incomplete_or_unknown_commands_fail(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: wanfed")


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(WANFED), *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def test_console_script_exit_codes(tmp_path: Path) -> None:
    assert WANFED.exists(), "the wanfed console script is installed next to the interpreter"
    created = run("tls", "ca", "create", cwd=tmp_path)
    assert (created.returncode, created.stderr) == (0, "")
    again = run("tls", "ca", "create", cwd=tmp_path)
    assert again.returncode == 1
    assert again.stderr == "error: wanfed-agent-ca.pem already exists; refusing to overwrite it\n"
    node_only = run("tls", "cert", "create", "-client", "-node", "s1", cwd=tmp_path)
    assert (node_only.returncode, node_only.stderr) == (1, "error: -node requires -server\n")
    server = run("tls", "cert", "create", "-server", "-node", "s1", cwd=tmp_path)
    assert server.returncode == 0
    assert (tmp_path / "dc1-server-consul-0.pem").exists()
    key = run("keygen", cwd=tmp_path)
    assert key.returncode == 0
    assert len(base64.b64decode(key.stdout.strip(), validate=True)) == 32
    assert run("--help", cwd=tmp_path).returncode == 0
    assert run(cwd=tmp_path).returncode == 1
