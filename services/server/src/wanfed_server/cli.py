"""The ``wanfed`` command line: a dispatcher over the modules in ``commands``.

Each command module exposes ``register(subparsers)`` and sets a ``handler``
default on its parser; ``main`` parses, calls the handler and maps failures
to exit code 1 with one message on stderr (``--help`` exits 0).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from wanfed_agent.config import ConfigError
from wanfed_agent.tls import TLSMaterialError

from .commands import acl, agent, federation, gateway, info, keygen, members, tls
from .commands._base import CommandError, CommandParser, Handler, show_usage

__all__ = ["build_parser", "main"]

COMMANDS = (agent, gateway, tls, keygen, members, info, federation, acl)
"""Registered subcommand modules."""


def build_parser() -> CommandParser:
    parser = CommandParser(prog="wanfed", description="WAN federation via mesh gateways")
    parser.set_defaults(handler=show_usage(parser))
    subparsers = parser.add_subparsers(metavar="COMMAND")
    for module in COMMANDS:
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``wanfed`` console script; returns the exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(args_list)
        handler: Handler = args.handler
        return handler(args)
    except SystemExit as exit_:  # --help and --version end parsing this way
        return exit_.code if isinstance(exit_.code, int) else 0 if exit_.code is None else 1
    except (CommandError, ConfigError, TLSMaterialError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
