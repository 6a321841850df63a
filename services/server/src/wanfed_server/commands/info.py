"""``wanfed info``: an agent's runtime statistics, section by section like Consul's."""

from __future__ import annotations

import argparse
from collections.abc import Mapping

from ._base import CommandError, Subparsers
from ._http_api import add_http_flags, get_json, http_base_url, http_token

__all__ = ["format_info", "register"]


def register(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "info",
        help="show an agent's runtime information",
        description="Show the running agent's statistics, through its HTTP API.",
    )
    add_http_flags(parser)
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    base = http_base_url(args.http_addr)
    raw = get_json(base, "/v1/agent/self", token=http_token(args.token))
    if not isinstance(raw, dict):
        raise CommandError(f"agent at {base} answered /v1/agent/self with {type(raw).__name__}")
    print(format_info(raw), end="")
    return 0


def format_info(self_doc: Mapping[str, object]) -> str:
    """``section:`` then tab-indented ``key = value`` lines, all sorted, as Consul prints them.

    ``Stats`` is what Consul prints; an agent that reports none gets its
    ``Config`` shown as the ``agent`` section instead of nothing.
    """
    stats = self_doc.get("Stats")
    if not isinstance(stats, Mapping) or not stats:
        config = self_doc.get("Config")
        stats = {"agent": config} if isinstance(config, Mapping) else {}
    lines: list[str] = []
    for section in sorted(stats):
        values = stats[section]
        lines.append(f"{section}:")
        if isinstance(values, Mapping):
            lines.extend(f"\t{key} = {_text(values[key])}" for key in sorted(values))
    return "".join(line + "\n" for line in lines)


def _text(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)
