"""Subcommands of ``wanfed``; each module exposes ``register(subparsers)``."""

from ._base import CommandError, CommandParser, UsageError, add_flag, show_usage

__all__ = ["CommandError", "CommandParser", "UsageError", "add_flag", "show_usage"]
