"""``wanfed-topology``: bring a multi-datacenter network up by hand and poke at it.

    wanfed-topology up dc1:3:2 dc2:3:2 dc3:3:2    # DC:servers:gateways, first = primary
    wanfed-topology show
    wanfed-topology exec dc2 s1 -- ping -c1 198.18.1.21
    wanfed-topology down

The topology is remembered in a state file, so ``show``, ``exec`` and ``down``
find it again; ``--prefix`` keeps several topologies apart.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import msgspec

from ._netns import NetnsError, build, nft_ruleset, teardown
from ._plan import DatacenterSpec, Topology

STATE_DIR = Path(os.environ.get("WANFED_TOPOLOGY_STATE", "/run/wanfed-topology"))


def _state_file(prefix: str) -> Path:
    return STATE_DIR / f"{prefix}.json"


def _load(prefix: str) -> Topology:
    path = _state_file(prefix)
    if not path.exists():
        raise NetnsError(f"no topology with prefix {prefix!r} is up (no {path})")
    return msgspec.json.decode(path.read_bytes(), type=Topology)


def _parse_dc(text: str) -> DatacenterSpec:
    parts = text.split(":")
    if len(parts) > 3 or not all(p.isdigit() for p in parts[1:]):
        raise argparse.ArgumentTypeError(f"expected DC[:SERVERS[:GATEWAYS]], got {text!r}")
    numbers = [int(p) for p in parts[1:]]
    try:
        return DatacenterSpec(
            name=parts[0],
            servers=numbers[0] if numbers else 1,
            gateways=numbers[1] if len(numbers) > 1 else 1,
        )
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="wanfed-topology", description=__doc__.split("\n")[0])
    parser.add_argument("--prefix", default="wft", help="namespace name prefix (default wft)")
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="create the namespaces, bridges and firewall")
    up.add_argument("datacenters", nargs="+", type=_parse_dc, metavar="DC[:S[:G]]")
    commands.add_parser("down", help="stop everything inside and delete the namespaces")
    commands.add_parser("show", help="list hosts, addresses and the firewall rules")
    run = commands.add_parser("exec", help="run a command inside a host's namespace")
    run.add_argument("datacenter")
    run.add_argument("host", help="s1, gw1, ...")
    run.add_argument("argv", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            topology = Topology(datacenters=args.datacenters, prefix=args.prefix)
            build(topology)
            STATE_DIR.mkdir(parents=True, exist_ok=True)
            _state_file(args.prefix).write_bytes(msgspec.json.encode(topology))
            _show(topology)
        elif args.command == "down":
            topology = _load(args.prefix)
            teardown(topology)
            _state_file(args.prefix).unlink()
            print(f"topology {args.prefix} removed")
        elif args.command == "show":
            _show(_load(args.prefix))
        else:
            topology = _load(args.prefix)
            host = topology.host(args.datacenter, args.host)
            command = [a for a in args.argv if a != "--"] or [os.environ.get("SHELL", "sh")]
            os.execvp("ip", ["ip", "netns", "exec", host.netns, *command])
    except (NetnsError, KeyError, ValueError) as exc:
        print(f"wanfed-topology: {exc}", file=sys.stderr)
        return 1
    return 0


def _show(topology: Topology) -> None:
    print(f"primary datacenter: {topology.primary_datacenter}")
    for host in topology.hosts():
        wan = f"  wan {host.wan_ip}" if host.wan_ip else ""
        print(f"{host.datacenter:>8} {host.name:<4} netns {host.netns:<12} lan {host.lan_ip}{wan}")
    print("\nrouter firewall:\n" + nft_ruleset(topology))


if __name__ == "__main__":
    sys.exit(main())
