"""A working local federation on loopback: ``nox -s dev``.

Two datacenters — dc1 (primary) and dc2 — each with its servers and one mesh
gateway, every process a real ``wanfed agent`` or ``wanfed gateway`` on its own
127.x address, certificates made with ``wanfed tls`` and the gossip key with
``wanfed keygen``. dc2 knows nothing of dc1 but ``primary_gateways``: it
federates through the gateways alone.

ACLs are on with ``default_policy = "deny"``: dc1 creates a management token
from ``acl.tokens.initial_management`` (a fresh secret each run, printed at the
end), dc2 replicates policies and tokens from dc1. For brevity every server
and gateway presents that management token (``acl.tokens.agent``,
``acl.tokens.replication``, the gateways' ``WANFED_HTTP_TOKEN``); a real
deployment gives each its own token with only the rights it needs.

    python tools/dev/devfed.py                 # start, wait until federated, run until Ctrl-C
    python tools/dev/devfed.py --servers 3     # three servers per datacenter
    python tools/dev/devfed.py --check         # start, verify, run the sample commands, stop

Addresses: server ``sI`` of datacenter N listens on ``127.0.N.I`` (HTTP 8500,
RPC 8300, WAN gossip 8302); the gateway of datacenter N on ``127.0.N.100:8443``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from wanfed_topology import (
    GATEWAY_PORT,
    HTTP_PORT,
    gateway_argv,
    make_certificates,
    make_gossip_key,
    server_config,
    wanfed_executable,
    write_config,
)

DATACENTERS = ("dc1", "dc2")
MANAGEMENT_TOKEN = str(uuid.uuid4())
"""The secret of this run's management token (``acl.tokens.initial_management``)."""


def acl_config(datacenter: str) -> dict[str, object]:
    """ACLs on, default deny; the primary makes the management token, dc2 replicates."""
    tokens = {"agent": MANAGEMENT_TOKEN}
    if datacenter == "dc1":
        tokens["initial_management"] = MANAGEMENT_TOKEN
    else:
        tokens["replication"] = MANAGEMENT_TOKEN
    return {"enabled": True, "default_policy": "deny", "tokens": tokens}


def token_env() -> dict[str, str]:
    return {**os.environ, "WANFED_HTTP_TOKEN": MANAGEMENT_TOKEN}


def server_ip(dc_index: int, server: int) -> str:
    return f"127.0.{dc_index}.{server}"


def gateway_ip(dc_index: int) -> str:
    return f"127.0.{dc_index}.100"


class Federation:
    """Owns every process of the local federation and stops them all."""

    def __init__(self, workdir: Path, servers: int) -> None:
        self.workdir = workdir
        self.servers = servers
        self.processes: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.logs = workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)

    # --- set-up ------------------------------------------------------------------

    def spawn(self, name: str, argv: Sequence[str]) -> None:
        log = (self.logs / f"{name}.log").open("ab")
        process = subprocess.Popen(
            list(argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=token_env(),
        )
        log.close()
        self.processes.append((name, process))

    def start(self) -> None:
        nodes = [f"s{i}" for i in range(1, self.servers + 1)]
        tls_dir = self.workdir / "tls"
        make_certificates(tls_dir, dict.fromkeys(DATACENTERS, nodes))
        gossip_key = make_gossip_key()
        for dc_index, dc in enumerate(DATACENTERS, start=1):
            ips = [server_ip(dc_index, i) for i in range(1, self.servers + 1)]
            for index, (node, ip) in enumerate(zip(nodes, ips, strict=True)):
                config = server_config(
                    tls_dir=tls_dir,
                    gossip_key=gossip_key,
                    data_dir=self.workdir / "data" / dc / node,
                    datacenter=dc,
                    primary="dc1",
                    node=node,
                    cert_index=index,
                    bind=ip,
                    retry_join=[other for other in ips if other != ip],
                    bootstrap_expect=self.servers,
                    primary_gateways=[f"{gateway_ip(1)}:{GATEWAY_PORT}"] if dc != "dc1" else (),
                )
                config["acl"] = acl_config(dc)
                path = write_config(self.workdir / "config" / f"{dc}-{node}.json", config)
                self.spawn(
                    f"{dc}-{node}", [wanfed_executable(), "agent", "-config-file", str(path)]
                )
            address = f"{gateway_ip(dc_index)}:{GATEWAY_PORT}"
            self.spawn(
                f"{dc}-gw1",
                gateway_argv(
                    node=f"{dc}-gw1",
                    lan=address,
                    wan=address,
                    http_addrs=[f"{ip}:{HTTP_PORT}" for ip in ips],
                ),
            )

    # --- watching ---------------------------------------------------------------------

    def check_alive(self) -> None:
        for name, process in self.processes:
            if process.poll() is not None:
                tail = (self.logs / f"{name}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{name} exited with {process.returncode}:\n{tail}")

    def wait_federated(self, timeout: float) -> float:
        """Seconds until dc2 sees every server alive and answers a query for dc1."""
        started = time.monotonic()
        dc2 = f"http://{server_ip(2, 1)}:{HTTP_PORT}"
        wanted = {f"s{i}.{dc}" for dc in DATACENTERS for i in range(1, self.servers + 1)}
        step = "servers starting"
        while time.monotonic() - started < timeout:
            self.check_alive()
            try:
                members = get_json(f"{dc2}/v1/agent/members?wan=1")
                alive = {m["Name"] for m in members if m.get("Status") == 1}
                if alive != wanted:
                    step = f"WAN pool: {len(alive & wanted)} of {len(wanted)} servers alive"
                else:
                    step = "waiting for federation states in both datacenters"
                    states = get_json(f"{dc2}/v1/internal/federation-states")
                    if {s["Datacenter"] for s in states} >= set(DATACENTERS):
                        step = "waiting for dc2 to replicate dc1's ACL tokens"
                        replication = get_json(f"{dc2}/v1/acl/replication")
                        if replication["ReplicatedTokenIndex"] > 0:
                            get_json(f"{dc2}/v1/catalog/services?dc=dc1")
                            return time.monotonic() - started
            except (OSError, ValueError, KeyError, TypeError):
                pass
            print(f"  ... {step} ({time.monotonic() - started:.0f} s)", flush=True)
            time.sleep(1.0)
        raise TimeoutError(f"not federated within {timeout:.0f} s (last step: {step})")

    def stop(self) -> None:
        for _name, process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for name, process in self.processes:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                print(f"  {name} did not stop in time; killing it")
                process.kill()
                process.wait()


def get_json(url: str) -> Any:
    request = urllib.request.Request(url, headers={"X-Consul-Token": MANAGEMENT_TOKEN})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def sample_commands() -> list[list[str]]:
    http = f"{server_ip(2, 1)}:{HTTP_PORT}"
    return [
        [wanfed_executable(), "members", "-wan", "-http-addr", http],
        [
            "curl",
            "-s",
            "-H",
            "X-Consul-Token: $WANFED_HTTP_TOKEN",
            f"http://{http}/v1/catalog/services?dc=dc1",
        ],
        ["curl", "-s", f"http://{http}/v1/acl/replication"],
        [wanfed_executable(), "federation", "routes", "-http-addr", http],
    ]


def _shown(word: str) -> str:
    """One word of a sample command as an operator would type it into a shell."""
    if word == wanfed_executable():
        return Path(word).name
    return f'"{word}"' if " " in word else word


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--servers", type=int, default=1, choices=(1, 3, 5))
    parser.add_argument("--check", action="store_true", help="verify, run the samples, stop")
    parser.add_argument("--timeout", type=float, default=90.0)
    parser.add_argument("--keep", action="store_true", help="keep the working folder")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="wanfed-dev-"))
    federation = Federation(workdir, args.servers)

    def on_signal(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    try:
        print(f"starting a local federation in {workdir}")
        federation.start()
        took = federation.wait_federated(args.timeout)
        print(f"\nfederated in {took:.1f} s\n")
        for dc_index, dc in enumerate(DATACENTERS, start=1):
            role = "primary" if dc == "dc1" else "secondary, knows only primary_gateways"
            print(f"{dc} ({role})")
            for i in range(1, args.servers + 1):
                ip = server_ip(dc_index, i)
                print(f"  server s{i}  http {ip}:{HTTP_PORT}  rpc {ip}:8300  wan {ip}:8302")
            print(f"  gateway     {gateway_ip(dc_index)}:{GATEWAY_PORT}")
        print(
            f"\nACLs are on (default deny). The management token of this run:\n"
            f"  export WANFED_HTTP_TOKEN={MANAGEMENT_TOKEN}\n"
            "then every command below (and `wanfed acl ...`) presents it; "
            "curl needs -H 'X-Consul-Token: ...'"
        )
        print(f"logs: {federation.logs}\n\ntry:")
        for command in sample_commands():
            print("  " + " ".join(_shown(c) for c in command))
        if args.check:
            for command in sample_commands():
                print(f"\n$ {' '.join(command)}", flush=True)
                if command[0] == "curl":  # the same request, without needing curl installed
                    print(json.dumps(get_json(command[-1])), flush=True)
                else:
                    subprocess.run(command, check=True, timeout=30, env=token_env())
            return 0
        print("\nCtrl-C stops everything.")
        while True:
            federation.check_alive()
            time.sleep(1.0)
    except KeyboardInterrupt:
        print("\nstopping the federation")
        return 0
    except (RuntimeError, TimeoutError, subprocess.CalledProcessError) as exc:
        print(f"\nlocal federation failed: {exc}", file=sys.stderr)
        for log in sorted(federation.logs.glob("*.log")):
            print(f"--- {log.name} (last lines) ---", file=sys.stderr)
            print(log.read_text(errors="replace")[-2000:], file=sys.stderr)
        return 1
    finally:
        with contextlib.suppress(KeyboardInterrupt):
            federation.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
