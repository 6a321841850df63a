"""What every ``wanfed`` subcommand shares: the parser class, flag spelling and errors.

Flags are spelled with one dash like Consul's (``-server``, ``-dc``); the
two-dash form is accepted too (rewritten before parsing) because Go's flag
package, which operators' muscle memory comes from, accepts both. Parse
errors raise :class:`UsageError` instead of exiting with argparse's code 2,
so ``main`` can keep to the project's exit codes: 0 ok, 1 any error, always
one message on stderr.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, Protocol

__all__ = [
    "CommandError",
    "CommandParser",
    "Handler",
    "Subparsers",
    "UsageError",
    "add_flag",
    "show_usage",
]

Handler = Callable[[argparse.Namespace], int]


class CommandError(Exception):
    """A command could not do its job; the message is shown as is, exit code 1."""


class UsageError(CommandError):
    """The command line itself is wrong (unknown flag, missing value, ...)."""


class CommandParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` that raises instead of exiting on bad arguments.

    A command whose flags need a costly import (``tls`` reads its defaults
    from the X.509 code) adds them through :meth:`defer`: they are built
    when that command is parsed or its help shown, so the other commands do
    not pay for the import.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        self._deferred: Callable[[CommandParser], None] | None = None

    def defer(self, build: Callable[[CommandParser], None]) -> None:
        """Run ``build(self)`` just before this parser is first used."""
        self._deferred = build

    def _build_deferred(self) -> None:
        build, self._deferred = self._deferred, None
        if build is not None:
            build(self)

    def format_help(self) -> str:
        self._build_deferred()
        return super().format_help()

    def format_usage(self) -> str:
        self._build_deferred()
        return super().format_usage()

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")

    def _get_option_tuples(self, option_string: str) -> list[Any]:
        # argparse's allow_abbrev=False only covers "--" flags; without this,
        # "-serv" would silently mean "-server". Exact names only.
        return []

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        """Accept ``--flag`` for every ``-flag``; sub-parsers come through here too."""
        self._build_deferred()
        return super().parse_known_args(self._single_dash(args), namespace)

    def _single_dash(self, args: Sequence[str] | None) -> list[str] | None:
        if args is None:
            return None
        rewritten: list[str] = []
        for index, arg in enumerate(args):
            if arg == "--":
                return rewritten + list(args[index:])
            name = arg.partition("=")[0]
            if arg.startswith("--") and name[1:] in self._option_string_actions:
                arg = arg[1:]
            rewritten.append(arg)
        return rewritten


class Subparsers(Protocol):
    """The part of argparse's subparsers action that command modules use."""

    def add_parser(self, name: str, **kwargs: Any) -> CommandParser: ...


def add_flag(parser: argparse.ArgumentParser, name: str, **kwargs: Any) -> argparse.Action:
    """Add the single-dash flag ``-name``."""
    return parser.add_argument(f"-{name}", **kwargs)


def show_usage(parser: argparse.ArgumentParser) -> Handler:
    """Handler for a command group run without a subcommand: help on stderr, exit 1."""

    def handler(_: argparse.Namespace) -> int:
        raise UsageError(f"{parser.prog}: a subcommand is required\n\n{parser.format_help()}")

    return handler
