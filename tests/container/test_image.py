"""The server image as operators use it: dev agent, TLS files, a 3-server DC, a gateway.

Every container gets ``--network host`` (loopback addresses only) or
``--network none``; never podman's default bridge.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import time
from pathlib import Path

import pytest
from tools.container import Podman, RunSpec
from tools.container.testing import (
    IMAGE_UID,
    Containers,
    free_port,
    http_json,
    leader_of,
    owned_dir,
    until,
)

pytestmark = pytest.mark.container

HEALTHCHECK = ("/opt/wanfed/bin/python", "/opt/wanfed/libexec/healthcheck.py")


def _ports(host: str) -> dict[str, int]:
    return {key: free_port(host) for key in ("http", "server", "serf_wan", "raft")}


def _register(http: str, node: str) -> bool | None:
    """Register a catalog node through ``http``; None (retry) unless acknowledged."""
    body = {"Node": node, "Address": "198.18.0.10"}
    return True if http_json(f"http://{http}/v1/catalog/register", "PUT", body) is True else None


def _node_names(http: str) -> set[str]:
    nodes = http_json(f"http://{http}/v1/catalog/nodes")
    assert isinstance(nodes, list)
    return {str(node["Node"]) for node in nodes}


def test_dev_agent_answers_status_leader_is_healthy_and_stops_on_sigterm(
    containers: Containers, podman: Podman, loopback_block: str
) -> None:
    host = f"{loopback_block}.1"
    ports = _ports(host)
    http = f"{host}:{ports['http']}"
    name = containers.start(
        "dev",
        *("agent", "-dev", "-bind", host, "-client", host),
        *("-http-port", str(ports["http"]), "-server-port", str(ports["server"])),
        *("-serf-wan-port", str(ports["serf_wan"])),
        env={"WANFED_HTTP_ADDR": http},
    )
    assert until("the dev agent's leader", lambda: leader_of(http)) == f"{host}:{ports['server']}"

    health = podman.call("healthcheck", "run", name, check=False)
    assert health.returncode == 0, health.stdout + health.stderr
    wrong = podman.call(
        "exec", "--env", f"WANFED_HTTP_ADDR={host}:1", name, *HEALTHCHECK, check=False
    )
    assert wrong.returncode == 1
    assert b"unhealthy: no answer" in wrong.stdout

    # PID 1 is wanfed itself (exec-form ENTRYPOINT), so SIGTERM reaches it; not root.
    cmdline = podman.text("exec", name, "cat", "/proc/1/cmdline").split("\0")
    assert cmdline[1:4] == ["/opt/wanfed/bin/wanfed", "agent", "-dev"], cmdline
    assert podman.text("exec", name, "id", "-u") == str(IMAGE_UID)

    started = time.monotonic()
    podman.call("stop", "--time", "30", name)
    assert time.monotonic() - started < 25, "SIGTERM did not stop the agent; it was killed"
    assert podman.text("inspect", "--format", "{{.State.ExitCode}}", name) == "0"
    assert "shutdown requested" in containers.logs(name)


def test_tls_ca_and_certificates_are_written_to_a_mounted_directory(
    containers: Containers, tmp_path: Path
) -> None:
    out = owned_dir(tmp_path / "tls")
    mount = ((out, "/wanfed/tls"),)
    containers.run("tls", "ca", "create", "-days", "30", volumes=mount, workdir="/wanfed/tls")
    containers.run(
        *("tls", "cert", "create", "-server", "-dc", "dc1", "-node", "s1"),
        volumes=mount,
        workdir="/wanfed/tls",
    )
    assert sorted(path.name for path in out.iterdir()) == [
        "dc1-server-consul-0-key.pem",
        "dc1-server-consul-0.pem",
        "wanfed-agent-ca-key.pem",
        "wanfed-agent-ca.pem",
    ]
    assert (out / "wanfed-agent-ca.pem").read_text().startswith("-----BEGIN CERTIFICATE-----")
    for key in ("wanfed-agent-ca-key.pem", "dc1-server-consul-0-key.pem"):
        assert (out / key).stat().st_mode & 0o777 == 0o600
        assert (out / key).stat().st_uid == IMAGE_UID


def test_three_server_dc_keeps_a_leader_and_takes_writes_after_its_leader_is_killed(
    containers: Containers, podman: Podman, loopback_block: str, tmp_path: Path
) -> None:
    nodes = ("s1", "s2", "s3")
    address = {node: f"{loopback_block}.{i + 1}" for i, node in enumerate(nodes)}
    ports = {node: _ports(address[node]) for node in nodes}
    http = {node: f"{address[node]}:{ports[node]['http']}" for node in nodes}

    tls = owned_dir(tmp_path / "tls")
    mount = ((tls, "/wanfed/tls"),)
    containers.run("tls", "ca", "create", volumes=mount, workdir="/wanfed/tls")
    for node in nodes:
        containers.run(
            *("tls", "cert", "create", "-server", "-dc", "dc1", "-node", node),
            *("-additional-ipaddress", address[node]),
            volumes=mount,
            workdir="/wanfed/tls",
        )
    key = containers.run("keygen").strip()  # the gossip key, made as the README shows
    names: dict[str, str] = {}
    for i, node in enumerate(nodes):
        config_dir = tmp_path / node / "config"
        config_dir.mkdir(parents=True)
        config = {
            "node_name": node,
            "datacenter": "dc1",
            "server": True,
            "bootstrap_expect": 3,
            "data_dir": "/wanfed/data",
            "bind_addr": address[node],
            "client_addr": address[node],
            "ports": ports[node],
            "retry_join": [f"{address[o]}:{ports[o]['server']}" for o in nodes if o != node],
            "encrypt": key,
            "tls": {
                "defaults": {
                    "ca_file": "/wanfed/tls/wanfed-agent-ca.pem",
                    "cert_file": f"/wanfed/tls/dc1-server-consul-{i}.pem",
                    "key_file": f"/wanfed/tls/dc1-server-consul-{i}-key.pem",
                    "verify_incoming": True,
                    "verify_outgoing": True,
                },
                "internal_rpc": {"verify_server_hostname": True},
            },
        }
        (config_dir / "agent.json").write_text(json.dumps(config))
        data = owned_dir(tmp_path / node / "data")
        # No command: the image's default CMD reads /wanfed/config.
        names[node] = containers.start(
            node,
            volumes=(
                (config_dir, "/wanfed/config:ro"),
                (data, "/wanfed/data"),
                (tls, "/wanfed/tls:ro"),
            ),
            env={"WANFED_HTTP_ADDR": http[node]},
        )

    def agreed_leader() -> str | None:
        leaders = {leader_of(http[node]) for node in nodes}
        return leaders.pop() if len(leaders) == 1 and None not in leaders else None

    leader = until("one leader that all three servers agree on", agreed_leader, timeout=90)
    assert until("a write", lambda: _register(http["s1"], "before-kill"))

    killed = next(node for node in nodes if leader.startswith(address[node] + ":"))
    podman.call("kill", "--signal", "KILL", names[killed])
    survivors = [node for node in nodes if node != killed]

    def new_leader() -> str | None:
        found = leader_of(http[survivors[0]])
        return found if found and found != leader else None

    until("a new leader among the survivors", new_leader, timeout=60)
    assert until("a write after the kill", lambda: _register(http[survivors[0]], "after-kill"))
    assert until(
        "both writes on the other survivor",
        lambda: True if {"before-kill", "after-kill"} <= _node_names(http[survivors[1]]) else None,
    )
    health = podman.call("healthcheck", "run", names[survivors[1]], check=False)
    assert health.returncode == 0, health.stdout + health.stderr


def test_a_server_without_a_gossip_key_refuses_to_start_and_says_how_to_make_one(
    podman: Podman, containers: Containers, tmp_path: Path
) -> None:
    data = owned_dir(tmp_path / "data")
    # TLS is named (and checked before the key) so that the key is what is missing;
    # the refusal comes from validation, before any file is read.
    tls_hcl = (
        "tls {\n  defaults {\n"
        '    ca_file = "/wanfed/tls/wanfed-agent-ca.pem"\n'
        '    cert_file = "/wanfed/tls/dc1-server-consul-0.pem"\n'
        '    key_file = "/wanfed/tls/dc1-server-consul-0-key.pem"\n'
        "  }\n}\n"
    )
    spec = RunSpec(
        containers.image,
        (
            *("agent", "-server", "-bootstrap", "-node", "solo", "-data-dir", "/wanfed/data"),
            *("-hcl", tls_hcl),
        ),
        network="none",
        volumes=((data, "/wanfed/data"),),
    )
    done = podman.run(spec)
    assert done.returncode == 1, done.stdout + done.stderr
    assert b"wanfed keygen" in done.stderr
    assert not any(data.iterdir())  # refused before anything was written


def test_data_survives_rm_f_and_a_new_container_on_the_same_volume(
    containers: Containers, podman: Podman, loopback_block: str, tmp_path: Path
) -> None:
    host = f"{loopback_block}.1"
    ports = _ports(host)
    http = f"{host}:{ports['http']}"
    data = owned_dir(tmp_path / "data")
    tls = owned_dir(tmp_path / "tls")  # a server outside -dev needs TLS material
    containers.run("tls", "ca", "create", volumes=((tls, "/wanfed/tls"),), workdir="/wanfed/tls")
    containers.run(
        *("tls", "cert", "create", "-server", "-dc", "dc1", "-node", "solo"),
        volumes=((tls, "/wanfed/tls"),),
        workdir="/wanfed/tls",
    )
    tls_hcl = (
        "tls {\n  defaults {\n"
        '    ca_file = "/wanfed/tls/wanfed-agent-ca.pem"\n'
        '    cert_file = "/wanfed/tls/dc1-server-consul-0.pem"\n'
        '    key_file = "/wanfed/tls/dc1-server-consul-0-key.pem"\n'
        "  }\n}\n"
    )
    key = base64.b64encode(os.urandom(32)).decode()
    command = (
        *("agent", "-server", "-bootstrap", "-node", "solo", "-data-dir", "/wanfed/data"),
        *("-bind", host, "-client", host, "-encrypt", key),
        *("-http-port", str(ports["http"]), "-server-port", str(ports["server"])),
        *("-serf-wan-port", str(ports["serf_wan"]), "-hcl", tls_hcl),
    )
    volumes = ((data, "/wanfed/data"), (tls, "/wanfed/tls:ro"))
    first = containers.start("first", *command, volumes=volumes)
    until("the first container's leader", lambda: leader_of(http))
    assert until("a write", lambda: _register(http, "written-before-rm"))

    # rm --force kills the server mid-flight; --volumes only drops the image's
    # anonymous /wanfed/config volume, never the bind-mounted data directory.
    podman.remove_containers(first)
    containers.start("second", *command, volumes=volumes)
    until("the second container's leader", lambda: leader_of(http))
    assert "written-before-rm" in _node_names(http)


def test_gateway_entrypoint_registers_and_deregisters_on_sigterm(
    containers: Containers, podman: Podman, loopback_block: str
) -> None:
    host = f"{loopback_block}.1"
    ports = _ports(host)
    http = f"{host}:{ports['http']}"
    containers.start(
        "agent",
        *("agent", "-dev", "-bind", host, "-client", host),
        *("-http-port", str(ports["http"]), "-server-port", str(ports["server"])),
        *("-serf-wan-port", str(ports["serf_wan"])),
    )
    until("the dev agent's leader", lambda: leader_of(http))
    gateway_port = free_port(host)
    gateway = containers.start(
        "gateway",
        *("gateway", "-register", "-address", f"{host}:{gateway_port}", "-node", "gw1"),
        env={"WANFED_HTTP_ADDR": http},
    )

    def registered() -> list[object] | None:
        found = http_json(f"http://{http}/v1/catalog/service/mesh-gateway")
        return found if isinstance(found, list) and found else None

    entry = until("the gateway in the catalog", registered)[0]
    assert isinstance(entry, dict)
    assert entry["Node"] == "gw1"
    assert entry["ServicePort"] == gateway_port
    with socket.create_connection((host, gateway_port), timeout=3):
        pass  # the gateway listens where it registered
    health = podman.call("healthcheck", "run", gateway, check=False)
    assert health.returncode == 0, health.stdout + health.stderr

    podman.call("stop", "--time", "30", gateway)
    assert podman.text("inspect", "--format", "{{.State.ExitCode}}", gateway) == "0"
    assert http_json(f"http://{http}/v1/catalog/service/mesh-gateway") == []


def test_image_metadata_labels_user_volumes_entrypoint_and_health_check(
    podman: Podman, image: str
) -> None:
    config = json.loads(podman.text("image", "inspect", "--format", "{{json .Config}}", image))
    labels = config["Labels"]
    assert labels["org.opencontainers.image.version"] == "0.1.0"
    assert labels["org.opencontainers.image.licenses"] == "MIT"
    assert "org.opencontainers.image.source" in labels
    assert config["User"] == f"{IMAGE_UID}:{IMAGE_UID}"
    assert set(config["Volumes"]) == {"/wanfed/data", "/wanfed/config"}
    assert config["Entrypoint"] == ["/opt/wanfed/bin/wanfed"]
    assert config["Cmd"] == ["agent", "-config-dir", "/wanfed/config"]
    assert config["StopSignal"] in ("SIGTERM", "15")
    health = json.loads(podman.text("image", "inspect", "--format", "{{json .HealthCheck}}", image))
    assert health["Test"] == ["CMD", *HEALTHCHECK]
    print(f"image {image}: {podman.image_size(image) / 1e6:.0f} MB")
