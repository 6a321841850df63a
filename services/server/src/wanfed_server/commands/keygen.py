"""``wanfed keygen``: print a new gossip encryption key for ``encrypt``."""

from __future__ import annotations

import argparse

from wanfed_agent.keygen import generate_gossip_key

from ._base import Subparsers

__all__ = ["register"]


def register(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "keygen",
        help="print a new gossip encryption key",
        description="Print a new random 32-byte key, base64-encoded, for the 'encrypt' option.",
    )
    parser.set_defaults(handler=_run)


def _run(_: argparse.Namespace) -> int:
    print(generate_gossip_key())
    return 0
