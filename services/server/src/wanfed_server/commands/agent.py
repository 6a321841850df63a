"""Argument parsing for ``wanfed agent``: flags to a validated :class:`AgentConfig`.

Only the parsing half lives here; the server runtime that uses the result
registers the ``agent`` subcommand itself. The flags come from the
``AGENT_FLAGS`` table of ``wanfed_agent.config``, so adding an option means
adding a row there, not code here.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from wanfed_agent.config import AGENT_FLAGS, AgentConfig, FlagKind, flags_to_overrides, load_config

from ._base import CommandParser, add_flag

__all__ = ["add_agent_arguments", "agent_config_from_args", "parse_agent_config"]

_ACTIONS = {
    FlagKind.SWITCH: {"action": "store_true"},
    FlagKind.TEXT: {},
    FlagKind.INT: {},
    FlagKind.REPEATED: {"action": "append"},
}


def add_agent_arguments(parser: argparse.ArgumentParser) -> None:
    """Add every ``wanfed agent`` flag to ``parser``.

    Defaults are suppressed so that only flags actually given reach the
    config loader, where they override files.
    """
    add_flag(parser, "dev", action="store_true", help="single in-memory server for trying things")
    # Both flags feed one ordered list, so "-config-dir d -config-file f"
    # lets f override what d says, as in Consul.
    add_flag(
        parser,
        "config-file",
        action="append",
        dest="config_paths",
        default=[],
        type=Path,
        metavar="FILE",
        help="a .json or .hcl config file (repeatable, merged in order)",
    )
    add_flag(
        parser,
        "config-dir",
        action="append",
        dest="config_paths",
        default=[],
        type=_directory,
        metavar="DIR",
        help="a dir whose .json/.hcl files are merged in lexical order (repeatable)",
    )
    for flag in AGENT_FLAGS:
        kwargs = dict(_ACTIONS[flag.kind])
        if flag.metavar is not None and flag.kind is not FlagKind.SWITCH:
            kwargs["metavar"] = flag.metavar
        add_flag(
            parser,
            flag.flag.lstrip("-"),
            dest=flag.dest,
            default=argparse.SUPPRESS,
            help=flag.help,
            **kwargs,
        )


def _directory(text: str) -> Path:
    path = Path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is not a directory")
    return path


def agent_config_from_args(args: argparse.Namespace) -> AgentConfig:
    """Load the config the parsed flags describe; raises ``ConfigError`` if invalid."""
    return load_config(args.config_paths, (), flags_to_overrides(vars(args)), dev=args.dev)


def parse_agent_config(argv: Sequence[str]) -> AgentConfig:
    """``wanfed agent`` arguments (without the ``agent`` word) to a validated config.

    Raises ``UsageError`` for a malformed command line and ``ConfigError`` for
    an invalid configuration; both carry one message for the operator.
    """
    parser = CommandParser(prog="wanfed agent", description="Run a wanfed agent.")
    add_agent_arguments(parser)
    return agent_config_from_args(parser.parse_args(list(argv)))
