"""What a wanfed federation needs on disk and on the command line.

Shared by the namespace harness and the loopback launcher (``nox -s dev``), so
both start servers and gateways exactly the way an operator would: certificates
from ``wanfed tls``, a gossip key from ``wanfed keygen``, one JSON config file per
server, ``wanfed gateway`` flags.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from ._plan import Host, Topology
from ._processes import Process, Supervisor

__all__ = [
    "GATEWAY_PORT",
    "HTTP_PORT",
    "gateway_argv",
    "make_certificates",
    "make_gossip_key",
    "server_config",
    "start_federation",
    "start_gateway",
    "wanfed_executable",
    "write_config",
    "write_gateway_list",
    "write_primary_gateways",
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


def make_gossip_key() -> str:
    """A gossip ``encrypt`` key made with ``wanfed keygen``; every server of the federation
    shares it (servers outside ``-dev`` refuse to start without one)."""
    done = subprocess.run(
        [wanfed_executable(), "keygen"], check=True, capture_output=True, text=True
    )
    return done.stdout.strip()


def server_config(
    *,
    tls_dir: Path,
    gossip_key: str,
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
    """One server's config: WAN federation via mesh gateways on, mTLS everywhere, gossip
    encrypted with ``gossip_key``."""
    config: dict[str, object] = {
        "datacenter": datacenter,
        "primary_datacenter": primary,
        "node_name": node,
        "server": True,
        "bootstrap_expect": bootstrap_expect,
        "data_dir": str(data_dir),
        "encrypt": gossip_key,
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


def write_primary_gateways(path: Path, topology: Topology) -> Path:
    """The primary's gateway WAN addresses, one a line: what ``provider=file`` reads."""
    primary = topology.gateways(topology.primary_datacenter)
    return write_gateway_list(path, [f"{g.wan_ip}:{GATEWAY_PORT}" for g in primary])


def write_gateway_list(path: Path, addresses: Sequence[str]) -> Path:
    """``addresses`` one a line, as ``provider=file`` reads them; none at all is a
    discovery source that answers, but with nothing (an empty DNS record set).

    Written to a temporary name and renamed, so a reader never sees half a list.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".new")
    body = "".join(f"{address}\n" for address in addresses)
    partial.write_text("# primary datacenter's mesh gateways (WAN)\n" + body)
    partial.replace(path)
    return path


def start_gateway(topology: Topology, supervisor: Supervisor, host: Host) -> Process:
    """One ``wanfed gateway`` in ``host``'s namespace, pointed at its datacenter's servers."""
    if host.wan_ip is None:
        raise ValueError(f"{host.datacenter}/{host.name} is not a gateway")
    servers = topology.servers(host.datacenter)
    return supervisor.start(
        f"{host.datacenter}-{host.name}",
        host,
        gateway_argv(
            node=f"{host.datacenter}-{host.name}",
            lan=f"{host.lan_ip}:{GATEWAY_PORT}",
            wan=f"{host.wan_ip}:{GATEWAY_PORT}",
            http_addrs=[f"{s.lan_ip}:{HTTP_PORT}" for s in servers],
            bind=f"0.0.0.0:{GATEWAY_PORT}",
        ),
    )


def start_federation(
    topology: Topology,
    supervisor: Supervisor,
    workdir: Path,
    *,
    primary_gateways_file: Path | None = None,
    extra_config: Mapping[str, object] | None = None,
) -> None:
    """Certificates, configs, then every server and gateway of ``topology`` in its namespace.

    Secondaries find the primary through ``primary_gateways``: literal
    addresses, or with ``primary_gateways_file`` a ``provider=file`` entry
    naming that file (written here; rewrite it with
    :func:`write_primary_gateways` when the primary's gateways change).
    ``extra_config`` is merged into every server's config.
    """
    primary = topology.primary_datacenter
    tls_dir = workdir / "tls"
    make_certificates(
        tls_dir,
        {dc.name: [h.name for h in topology.servers(dc.name)] for dc in topology.datacenters},
    )
    if primary_gateways_file is not None:
        write_primary_gateways(primary_gateways_file, topology)
        primary_gateways = [f"provider=file path={primary_gateways_file}"]
    else:
        primary_gateways = [f"{g.wan_ip}:{GATEWAY_PORT}" for g in topology.gateways(primary)]
    gossip_key = make_gossip_key()
    for dc in topology.datacenters:
        servers = topology.servers(dc.name)
        for index, host in enumerate(servers):
            config = server_config(
                tls_dir=tls_dir,
                gossip_key=gossip_key,
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
            config.update(extra_config or {})
            path = write_config(workdir / "config" / f"{dc.name}-{host.name}.json", config)
            supervisor.start(
                f"{dc.name}-{host.name}",
                host,
                [wanfed_executable(), "agent", "-config-file", str(path)],
            )
        for host in topology.gateways(dc.name):
            start_gateway(topology, supervisor, host)
