"""Shared fixtures for the wanfed-agent tests: config files and TLS material on disk.

Fixtures return package types (``PemPair``, ``TLSMaterial``) or plain callables
so test modules can annotate them without importing this file.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from wanfed_agent.tls import PemPair, TLSMaterial, create_ca, create_server_cert


@pytest.fixture(scope="session")
def ca_pair() -> PemPair:
    """One CA per test session: key generation is the slow part of these tests."""
    return create_ca()


@pytest.fixture
def tls_files(tmp_path: Path, ca_pair: PemPair) -> TLSMaterial:
    """The CA and a server certificate for ``s1`` in ``dc1``, written to files."""
    server = create_server_cert(ca_pair, "dc1", "consul", "s1")
    folder = tmp_path / "tls"
    folder.mkdir()
    (folder / "ca.pem").write_bytes(ca_pair.cert_pem)
    (folder / "server.pem").write_bytes(server.cert_pem)
    (folder / "server-key.pem").write_bytes(server.key_pem)
    return TLSMaterial.load(folder / "ca.pem", folder / "server.pem", folder / "server-key.pem")


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[[str, str | dict[str, Any]], Path]:
    """Write a config file under ``tmp_path/conf``: dicts as JSON, strings verbatim."""
    folder = tmp_path / "conf"

    def write(name: str, content: str | dict[str, Any]) -> Path:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(content) if isinstance(content, dict) else content
        path.write_text(text, encoding="utf-8")
        return path

    return write
