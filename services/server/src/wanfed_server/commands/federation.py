"""``wanfed federation routes|states``: what the federation looks like from one server.

``routes`` prints the gateway locator's status — the path to each datacenter,
its candidate gateways and where each came from, and why this path was
chosen. ``states`` prints every replicated federation state with its age.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import msgspec

from ._base import CommandError, Subparsers
from ._http_api import add_http_flags, get_json, http_base_url, http_token

if TYPE_CHECKING:
    # The domain packages load with the subcommand that decodes their structs,
    # not with every command that builds the parser.
    from wanfed_fsm import FederationState
    from wanfed_gateway_locator import LocatorStatus

__all__ = ["format_routes", "format_states", "register"]


def register(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "federation",
        help="inspect WAN federation via mesh gateways",
        description="Inspect WAN federation via mesh gateways through an agent's HTTP API.",
    )
    commands = parser.add_subparsers(metavar="SUBCOMMAND")
    routes = commands.add_parser("routes", help="how this server reaches each datacenter, and why")
    add_http_flags(routes)
    routes.set_defaults(handler=_routes)
    states = commands.add_parser("states", help="the replicated federation states and their age")
    add_http_flags(states)
    states.set_defaults(handler=_states)

    def usage(args: argparse.Namespace) -> int:
        parser.print_help()
        return 1

    parser.set_defaults(handler=usage)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.1f}h ago"


def format_routes(status: LocatorStatus) -> str:
    rep = status.replication
    lines = [
        f"Datacenter: {status.datacenter} (primary: {status.primary_datacenter})",
        "Primary-bound traffic: "
        + (
            "local gateways first"
            if status.dial_primary_through_local_gateways
            else "the primary's gateways directly"
        ),
        f"Replication: last success {_age(rep.last_success_age)}, "
        f"last failure {_age(rep.last_failure_age)}, "
        f"{rep.consecutive_failures} consecutive failure(s)"
        + (f" (last error: {rep.last_error})" if rep.last_error else ""),
    ]
    probe = status.local_probe
    if probe is not None:
        lines.append(
            "Local path: probing local gateways, "
            + (
                "no probe yet"
                if probe.attempts == 0
                else f"last probe {_age(probe.last_attempt_age)}, "
                f"{probe.consecutive_failures} failed (last error: {probe.last_error})"
            )
        )
    lines.append("")
    for route in status.routes:
        lines.append(f"{route.datacenter}: {route.path}")
        lines.append(f"  why: {route.reason}")
        for candidate in route.candidates:
            lines.append(f"  - {candidate.address} ({candidate.source})")
    return "\n".join(lines) + "\n"


def format_states(states: Sequence[FederationState], now: datetime) -> str:
    from wanfed_fsm import gateway_wan_address

    lines = []
    for state in sorted(states, key=lambda s: s.datacenter):
        age = (now - state.updated_at).total_seconds() if state.updated_at.year > 1 else None
        lines.append(
            f"{state.datacenter}: {len(state.mesh_gateways)} gateway(s), "
            f"updated {_age(age)}, primary index {state.primary_modify_index}"
        )
        for gateway in state.mesh_gateways:
            host, port = gateway_wan_address(gateway)
            checks = ",".join(c.status for c in gateway.checks) or "no checks"
            lines.append(f"  - {gateway.node.node} wan {host}:{port} [{checks}]")
    return "\n".join(lines) + ("\n" if lines else "no federation states\n")


def _routes(args: argparse.Namespace) -> int:
    base = http_base_url(args.http_addr)
    raw = get_json(base, "/v1/internal/federation-routes", token=http_token(args.token))
    from wanfed_gateway_locator import LocatorStatus

    try:
        status = msgspec.convert(raw, LocatorStatus)
    except msgspec.ValidationError as error:
        raise CommandError(f"agent at {base} sent an unexpected route status: {error}") from None
    print(format_routes(status), end="")
    return 0


def _states(args: argparse.Namespace) -> int:
    base = http_base_url(args.http_addr)
    raw = get_json(base, "/v1/internal/federation-states", token=http_token(args.token))
    from wanfed_fsm import FederationState

    try:
        states = msgspec.convert(raw, list[FederationState])
    except msgspec.ValidationError as error:
        raise CommandError(f"agent at {base} sent unexpected federation states: {error}") from None
    print(format_states(states, datetime.now(UTC)), end="")
    return 0
