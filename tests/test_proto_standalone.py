"""wanfed-proto stands alone: msgspec is its only dependency and its README runs.

The README example is extracted and run as written in a fresh interpreter in
which every other wanfed package and every optional dependency (uvloop,
cryptography) is made unimportable, so a hidden import fails the test.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import ipaddress
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PACKAGE = Path(__file__).resolve().parents[1] / "packages" / "wanfed-proto"
BLOCKED = (
    "uvloop",
    "cryptography",
    "wanfed_fsm",
    "wanfed_gateway_locator",
    "wanfed_replication",
    "wanfed_agent",
    "wanfed_server",
    "aiohttp",
    "pysyncobj",
)
RUN_BLOCKED = (
    "import runpy, sys\n"
    "for name in {blocked!r}:\n"
    "    sys.modules[name] = None  # import of it now raises ImportError\n"
    "sys.argv = [{script!r}, *{args!r}]\n"
    "runpy.run_path({script!r}, run_name='__main__')\n"
)


def _requirement_names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\s<>=!~;\[(]", req, maxsplit=1)[0].lower() for req in requirements}


def test_only_dependency_is_msgspec() -> None:
    declared = tomllib.loads((PACKAGE / "pyproject.toml").read_text())["project"]
    assert _requirement_names(declared["dependencies"]) == {"msgspec"}
    assert not declared.get("optional-dependencies")
    built = importlib.metadata.distribution("wanfed-proto")
    assert _requirement_names(built.requires or []) == {"msgspec"}


def test_package_imports_without_any_other_dependency() -> None:
    code = (
        "import sys\n"
        f"for name in {BLOCKED!r}:\n"
        "    sys.modules[name] = None\n"
        "import wanfed_proto\n"
        "print(len(wanfed_proto.__all__))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) > 0


def _readme_example() -> str:
    readme = (PACKAGE / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.DOTALL)
    assert len(blocks) == 1, "the README should hold exactly one python example"
    return str(blocks[0])


def test_readme_example_is_about_twenty_lines() -> None:
    code_lines = [line for line in _readme_example().splitlines() if line.strip()]
    assert len(code_lines) <= 25


def _write_pki(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and one server.dc1.consul certificate usable as server and client."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "example CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [
        x509.DNSName("s1.server.dc1.consul"),
        x509.DNSName("server.dc1.consul"),
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "server.dc1.consul")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = (directory / "ca.pem", directory / "cert.pem", directory / "key.pem")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


def test_readme_example_runs_as_written(tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(_readme_example())
    args = [str(p) for p in _write_pki(tmp_path)]
    code = RUN_BLOCKED.format(blocked=BLOCKED, script=str(script), args=args)
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "6\n"
