"""``wanfed members``: the gossip members an agent knows, as Consul's table shows them."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import TYPE_CHECKING

import msgspec

from ._base import CommandError, Subparsers, add_flag
from ._http_api import add_http_flags, get_json, http_base_url, http_token

if TYPE_CHECKING:
    from wanfed_server.interfaces import Member

__all__ = ["format_members", "register"]

_STATUS = {0: "none", 1: "alive", 2: "leaving", 3: "left", 4: "failed"}


def register(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "members",
        help="list the members of the LAN or WAN pool",
        description="List the members an agent knows, through its HTTP API.",
    )
    add_http_flags(parser)
    add_flag(parser, "wan", action="store_true", help="list the WAN pool (servers of every DC)")
    add_flag(parser, "detailed", action="store_true", help="show every tag of each member")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    base = http_base_url(args.http_addr)
    raw = get_json(
        base,
        "/v1/agent/members",
        {"wan": "1"} if args.wan else None,
        token=http_token(args.token),
    )
    if not isinstance(raw, list):
        raise CommandError(f"agent at {base} answered /v1/agent/members with {type(raw).__name__}")
    from wanfed_server.interfaces import Member  # with the answer, not with the parser

    try:
        members = msgspec.convert(raw, list[Member])
    except msgspec.ValidationError as error:
        raise CommandError(f"agent at {base} sent an unexpected member list: {error}") from None
    print(format_members(members, detailed=args.detailed), end="")
    return 0


def _columns(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in rows
    ]
    return "".join(line.rstrip() + "\n" for line in lines)


def format_members(members: Sequence[Member], *, detailed: bool = False) -> str:
    """Consul's ``members`` table, sorted by name; ``detailed`` lists the tags instead."""
    ordered = sorted(members, key=lambda m: m.name)
    if detailed:
        rows = [["Node", "Address", "Status", "Tags"]]
        rows += [
            [
                m.name,
                f"{m.addr}:{m.port}",
                _STATUS.get(m.status, "unknown"),
                ",".join(f"{k}={v}" for k, v in sorted(m.tags.items())),
            ]
            for m in ordered
        ]
        return _columns(rows)
    rows = [["Node", "Address", "Status", "Type", "Build", "Protocol", "DC"]]
    rows += [
        [
            m.name,
            f"{m.addr}:{m.port}",
            _STATUS.get(m.status, "unknown"),
            "server" if m.tags.get("role") == "consul" else "client",
            m.tags.get("build", ""),
            str(m.protocol_cur),
            m.tags.get("dc", ""),
        ]
        for m in ordered
    ]
    return _columns(rows)
