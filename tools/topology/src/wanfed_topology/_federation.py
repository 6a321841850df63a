"""What a wanfed federation needs on disk and on the command line.

Shared by the namespace harness and the loopback launcher (``nox -s dev``), so
both start servers and gateways exactly the way an operator would: certificates
from ``wanfed tls``, one JSON config file per server, ``wanfed gateway`` flags.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from ._plan import Topology
from ._processes import Supervisor

__all__ = [
    "GATEWAY_PORT",
    "HTTP_PORT",
    "gateway_argv",
    "make_certificates",
    "server_config",
    "start_federation",
    "wanfed_executable",
    "write_config",
]

HTTP_PORT = 8500
GATEWAY_PORT = 8443


def wanfed_executable() -> str:
    """The ``wanfed`` script of the environment running this code."""
    candidate = Path(sys.executable).with_name("wanfed")
    return str(candidate) if candidate.exists() else "wanfed"


def make_certificates(tls_dir: Path, servers: Mapping[str, Sequence[str]]) -> None:
    """A CA and one server certificate per (datacenter, node), made with ``wanfed tls``.

    Files follow the tool's naming: ``<dc>-server-consul-<n>.pem`` where ``n``
    counts the certificates of that datacenter in the order given.
    """
    tls_dir.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run([wanfed_executable(), *args], cwd=tls_dir, check=True, capture_output=True)

    run("tls", "ca", "create")
    for dc, nodes in servers.items():
        for node in nodes:
            run("tls", "cert", "create", "-server", "-dc", dc, "-node", node)


def server_config(
    *,
    tls_dir: Path,
    data_dir: Path,
    datacenter: str,
    primary: str,
    node: str,
    cert_index: int,
    bind: str,
    retry_join: Sequence[str],
    bootstrap_expect: int,
    primary_gateways: Sequence[str] = (),
    retry_interval: str = "2s",
) -> dict[str, object]:
    """One server's config: WAN federation via mesh gateways on, mTLS everywhere."""
    config: dict[str, object] = {
        "datacenter": datacenter,
        "primary_datacenter": primary,
        "node_name": node,
        "server": True,
        "bootstrap_expect": bootstrap_expect,
        "data_dir": str(data_dir),
        "bind_addr": bind,
        "client_addr": bind,
        "retry_join": list(retry_join),
        "connect": {"enabled": True, "enable_mesh_gateway_wan_federation": True},
        "retry_interval_wan": retry_interval,
        "tls": {
            "defaults": {
                "ca_file": str(tls_dir / "wanfed-agent-ca.pem"),
                "cert_file": str(tls_dir / f"{datacenter}-server-consul-{cert_index}.pem"),
                "key_file": str(tls_dir / f"{datacenter}-server-consul-{cert_index}-key.pem"),
                "verify_incoming": True,
                "verify_outgoing": True,
            },
            "internal_rpc": {"verify_server_hostname": True},
        },
    }
    if primary_gateways:
        config["primary_gateways"] = list(primary_gateways)
        config["primary_gateways_interval"] = retry_interval
    return config


def write_config(path: Path, config: Mapping[str, object]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config, indent=2))
    return path


def gateway_argv(
    *, node: str, lan: str, wan: str, http_addrs: Sequence[str], bind: str | None = None
) -> list[str]:
    """``wanfed gateway`` exposing this datacenter's servers to the others."""
    argv = [
        wanfed_executable(), "gateway", "-register", "-expose-servers",
        "-address", lan, "-wan-address", wan,
        "-http-addr", ",".join(http_addrs), "-node", node,
    ]  # fmt: skip
    if bind is not None:
        argv += ["-bind", bind]
    return argv


def start_federation(topology: Topology, supervisor: Supervisor, workdir: Path) -> None:
    """Certificates, configs, then every server and gateway of ``topology`` in its namespace."""
    primary = topology.primary_datacenter
    tls_dir = workdir / "tls"
    make_certificates(
        tls_dir,
        {dc.name: [h.name for h in topology.servers(dc.name)] for dc in topology.datacenters},
    )
    primary_gateways = [f"{g.wan_ip}:{GATEWAY_PORT}" for g in topology.gateways(primary)]
    for dc in topology.datacenters:
        servers = topology.servers(dc.name)
        for index, host in enumerate(servers):
            config = server_config(
                tls_dir=tls_dir,
                data_dir=workdir / "data" / dc.name / host.name,
                datacenter=dc.name,
                primary=primary,
                node=host.name,
                cert_index=index,
                bind=host.lan_ip,
                retry_join=[s.lan_ip for s in servers if s is not host],
                bootstrap_expect=len(servers),
                primary_gateways=primary_gateways if dc.name != primary else (),
            )
            path = write_config(workdir / "config" / f"{dc.name}-{host.name}.json", config)
            supervisor.start(
                f"{dc.name}-{host.name}",
                host,
                [wanfed_executable(), "agent", "-config-file", str(path)],
            )
        for host in topology.gateways(dc.name):
            assert host.wan_ip is not None
            supervisor.start(
                f"{dc.name}-{host.name}",
                host,
                gateway_argv(
                    node=f"{dc.name}-{host.name}",
                    lan=f"{host.lan_ip}:{GATEWAY_PORT}",
                    wan=f"{host.wan_ip}:{GATEWAY_PORT}",
                    http_addrs=[f"{s.lan_ip}:{HTTP_PORT}" for s in servers],
                    bind=f"0.0.0.0:{GATEWAY_PORT}",
                ),
            )
