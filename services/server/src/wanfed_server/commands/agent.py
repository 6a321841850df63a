"""``wanfed agent``: flags to a validated :class:`AgentConfig`, then run the server.

The flags come from the ``AGENT_FLAGS`` table of ``wanfed_agent.config``, so
adding an option means adding a row there, not code here. An invalid
configuration is refused before anything starts (exit 1, one message).

The running agent is the :class:`~wanfed_server.runtime.Server` plus its
*companions*: each entry of ``COMPANIONS`` is called with the started server
and returns something with ``async close()`` (the HTTP API is one). They are
started in order after the server and closed in reverse order before it, on
SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeAlias

import msgspec

from wanfed_agent.config import AGENT_FLAGS, AgentConfig, FlagKind, flags_to_overrides, load_config

from ._base import CommandError, CommandParser, Subparsers, add_flag
from ._process import configure_logging, run_main, stop_on_signals

if TYPE_CHECKING:
    import asyncio

    from wanfed_server.runtime import Server, ServerOptions

__all__ = [
    "COMPANIONS",
    "Companion",
    "add_agent_arguments",
    "agent_config_from_args",
    "parse_agent_config",
    "register",
    "run_agent",
]

logger = logging.getLogger("wanfed_server.agent")


class Closeable(Protocol):
    async def close(self) -> None: ...


Companion: TypeAlias = "Callable[[Server], Awaitable[Closeable]]"
"""Starts something beside the server (e.g. the HTTP API) and returns its handle."""


async def start_http_api(server: Server) -> Closeable:
    """The HTTP API companion; aiohttp is imported only by an agent that starts."""
    from wanfed_server.http import start_http_api as start

    return await start(server)


COMPANIONS: list[Companion] = [start_http_api]
"""Started after the server, closed before it. The HTTP API appends itself here."""

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
    add_flag(
        parser,
        "hcl",
        action="append",
        default=[],
        metavar="TEXT",
        help="a config fragment in HCL, applied after config files (repeatable)",
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
    return load_config(
        args.config_paths, (), flags_to_overrides(vars(args)), dev=args.dev, hcl=args.hcl
    )


def parse_agent_config(argv: Sequence[str]) -> AgentConfig:
    """``wanfed agent`` arguments (without the ``agent`` word) to a validated config.

    Raises ``UsageError`` for a malformed command line and ``ConfigError`` for
    an invalid configuration; both carry one message for the operator.
    """
    parser = CommandParser(prog="wanfed agent", description="Run a wanfed agent.")
    add_agent_arguments(parser)
    return agent_config_from_args(parser.parse_args(list(argv)))


def register(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "agent", help="run a wanfed server agent", description="Run a wanfed agent."
    )
    add_agent_arguments(parser)
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    config = agent_config_from_args(args)
    if not config.server:
        raise CommandError("wanfed agent: only server agents are supported; pass -server or -dev")
    configure_logging(config.log_level)
    return run_main(run_agent(config))


async def run_agent(config: AgentConfig, stop: asyncio.Event | None = None) -> int:
    """Run the server and its companions until SIGINT/SIGTERM (or ``stop`` is set)."""
    import asyncio  # here: the commands that never run a loop do not load it

    stop = stop or asyncio.Event()
    with stop_on_signals(stop):
        return await _serve(config, stop)


def server_options(config: AgentConfig) -> ServerOptions:
    """The timings an operator may set in the agent config; the rest keep their defaults."""
    from wanfed_server.runtime import ServerOptions

    defaults = ServerOptions()
    federation = msgspec.structs.replace(
        defaults.federation, prune_interval=config.federation_state_prune_interval
    )
    return msgspec.structs.replace(defaults, federation=federation)


async def _serve(config: AgentConfig, stop: asyncio.Event) -> int:
    # The runtime (Raft, gossip, the RPC port) is imported here, not at the
    # top: every other command builds this module's parser and must not pay for it.
    import asyncio

    from wanfed_fsm import FsmError
    from wanfed_proto import ProtoError
    from wanfed_server.runtime import Server

    from ._fd_limit import raise_open_files_limit

    raise_open_files_limit(config.limits.rpc_max_conns + config.limits.http_max_conns)
    server = Server(config, options=server_options(config))
    started: list[Closeable] = []
    try:
        try:
            await server.start()
            for companion in COMPANIONS:
                started.append(await companion(server))
        except (ProtoError, FsmError, ValueError, OSError) as exc:
            raise CommandError(f"wanfed agent: cannot start: {exc}") from None
        logger.info(
            "agent running node=%s dc=%s rpc=%s; stop with SIGINT or SIGTERM",
            config.node_name,
            config.datacenter,
            server.rpc_address,
        )
        stopped = asyncio.ensure_future(stop.wait())
        failed = asyncio.ensure_future(server.wait_failed())
        await asyncio.wait([stopped, failed], return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        failed.cancel()
        if not stop.is_set() and failed.done() and not failed.cancelled():
            raise CommandError(f"wanfed agent: stopped: {failed.result()}")
        logger.info("shutdown requested; stopping the agent")
    finally:
        for handle in reversed(started):
            with contextlib.suppress(Exception):
                await handle.close()
        await server.stop()
    return 0
