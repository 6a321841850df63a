"""``wanfed gateway``: run a mesh gateway next to a datacenter's servers.

Flags follow ``consul connect envoy -mesh-gateway``: ``-register`` writes the
gateway into the catalog, ``-expose-servers`` (which needs ``-register``)
opts it into carrying server traffic between datacenters. Addresses without
a port get 8443, wanfed's gateway port. Every flag is checked before
anything starts, so a mistake costs one line on stderr and exit code 1.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import logging
import os
from typing import TYPE_CHECKING, Final

from wanfed_agent.config import parse_duration, parse_host_port

from ._base import CommandError, Subparsers, add_flag
from ._http_api import DEFAULT_HTTP_ADDR, HTTP_ADDR_ENV, HTTP_TOKEN_ENVS, http_base_url, http_token
from ._process import configure_logging, run_main, stop_on_signals

if TYPE_CHECKING:
    import asyncio

    from wanfed_server.gateway import GatewaySettings

__all__ = ["DEFAULT_GATEWAY_PORT", "register", "run_gateway", "settings_from_args"]

DEFAULT_GATEWAY_PORT: Final = 8443

log = logging.getLogger("wanfed.gateway.command")


def register(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "gateway",
        help="run a mesh gateway that routes TLS between datacenters by SNI",
        description="Run a mesh gateway: SNI routing of raw TLS, never decrypted.",
    )
    add_flag(parser, "register", action="store_true", help="register the gateway in the catalog")
    add_flag(
        parser,
        "token",
        default=None,
        metavar="SECRET",
        help=f"ACL token for the servers' API (env {' or '.join(HTTP_TOKEN_ENVS)})",
    )
    add_flag(
        parser,
        "expose-servers",
        dest="expose_servers",
        action="store_true",
        help="carry server traffic between datacenters (requires -register)",
    )
    add_flag(parser, "service", default="mesh-gateway", help="service name (default mesh-gateway)")
    add_flag(parser, "address", metavar="HOST[:PORT]", help="LAN address other hosts dial")
    add_flag(
        parser,
        "wan-address",
        dest="wan_address",
        metavar="HOST[:PORT]",
        help="address other datacenters dial (default: -address)",
    )
    add_flag(
        parser,
        "bind",
        metavar="HOST[:PORT]",
        help=f"listen address (default: -address, else 0.0.0.0:{DEFAULT_GATEWAY_PORT})",
    )
    add_flag(
        parser,
        "http-addr",
        dest="http_addr",
        action="append",
        default=[],
        metavar="ADDR",
        help=(
            "a local server's HTTP API; repeat or comma-separate for fallbacks "
            f"(env {HTTP_ADDR_ENV}; default {DEFAULT_HTTP_ADDR})"
        ),
    )
    add_flag(parser, "node", default="", help="catalog node name (default <hostname>-mesh-gateway)")
    add_flag(parser, "domain", default="consul", help="the DNS domain of server names")
    add_flag(
        parser, "status-addr", dest="status_addr", metavar="HOST:PORT", help="counters over HTTP"
    )
    add_flag(
        parser,
        "handshake-timeout",
        dest="handshake_timeout",
        default="5s",
        metavar="DURATION",
        help="how long a client may take to send its TLS ClientHello",
    )
    add_flag(
        parser,
        "max-connections",
        dest="max_connections",
        type=int,
        default=None,  # the data plane's own default, read only when the gateway starts
        metavar="N",
        help="connections served at once; more are refused",
    )
    add_flag(
        parser,
        "max-connections-per-client",
        dest="max_connections_per_client",
        type=int,
        default=None,
        metavar="N",
        help="connections one client address may hold at once; more are refused",
    )
    add_flag(parser, "log-level", dest="log_level", default="info", help="log level")
    parser.set_defaults(handler=_run)


def _address(flag: str, text: str) -> tuple[str, int]:
    try:
        return parse_host_port(text, DEFAULT_GATEWAY_PORT)
    except ValueError as exc:
        raise CommandError(f"invalid -{flag} {text!r}: {exc}") from None


def _is_wildcard(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def settings_from_args(args: argparse.Namespace) -> GatewaySettings:
    """The validated settings of a ``wanfed gateway`` command line."""
    # The data plane is imported by the command that runs it, not by every
    # command that builds the parser.
    from wanfed_server.gateway import GatewayConfig, GatewaySettings, HiddenToken

    if args.expose_servers and not args.register:
        raise CommandError("'-expose-servers' requires '-register'")
    if args.address is None and args.register:
        raise CommandError("-register needs -address: the LAN address the check and peers dial")
    lan = _address("address", args.address) if args.address is not None else None
    if lan is not None and _is_wildcard(lan[0]):
        raise CommandError(f"invalid -address {args.address!r}: a wildcard cannot be dialed")
    wan = _address("wan-address", args.wan_address) if args.wan_address is not None else lan
    if wan is not None and _is_wildcard(wan[0]):
        raise CommandError(
            f"invalid -wan-address {args.wan_address!r}: a wildcard cannot be dialed"
        )
    if args.bind is not None:
        bind = _address("bind", args.bind)
    else:
        bind = lan or ("0.0.0.0", DEFAULT_GATEWAY_PORT)
    status: tuple[str, int] | None = None
    if args.status_addr is not None:
        try:
            status = parse_host_port(args.status_addr, None)
        except ValueError as exc:
            raise CommandError(f"invalid -status-addr {args.status_addr!r}: {exc}") from None
    try:
        hello_timeout = parse_duration(args.handshake_timeout)
    except ValueError as exc:
        raise CommandError(
            f"invalid -handshake-timeout {args.handshake_timeout!r}: {exc}"
        ) from None
    given = args.http_addr or [os.environ.get(HTTP_ADDR_ENV) or DEFAULT_HTTP_ADDR]
    entries = [part.strip() for flag in given for part in flag.split(",") if part.strip()]
    if not entries:
        raise CommandError("-http-addr names no server")
    urls = tuple(http_base_url(entry) for entry in entries)
    try:
        defaults = GatewayConfig()
        limit = args.max_connections
        per_client = args.max_connections_per_client
        config = GatewayConfig(
            hello_timeout=hello_timeout,
            max_connections=defaults.max_connections if limit is None else limit,
            max_connections_per_client=(
                defaults.max_connections_per_client if per_client is None else per_client
            ),
        )
        lan_host, lan_port = lan or bind
        wan_host, wan_port = wan or bind
        return GatewaySettings(
            http_urls=urls,
            bind_host=bind[0],
            bind_port=bind[1],
            lan_host=lan_host,
            lan_port=lan_port,
            wan_host=wan_host,
            wan_port=wan_port,
            service=args.service,
            node=args.node,
            domain=args.domain,
            register=args.register,
            expose_servers=args.expose_servers,
            status_host=status[0] if status else None,
            status_port=status[1] if status else 0,
            token=HiddenToken(http_token(args.token)),
            gateway=config,
        )
    except ValueError as exc:
        raise CommandError(f"wanfed gateway: {exc}") from None


def _run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    configure_logging(args.log_level)
    return run_main(run_gateway(settings))


async def run_gateway(settings: GatewaySettings, stop: asyncio.Event | None = None) -> int:
    """Run the gateway until SIGINT/SIGTERM (or ``stop``), then deregister and close."""
    import asyncio  # here: the commands that never run a loop do not load it

    stop = stop or asyncio.Event()
    with stop_on_signals(stop):
        return await _serve(settings, stop)


async def _serve(settings: GatewaySettings, stop: asyncio.Event) -> int:
    import asyncio

    from wanfed_server.gateway import GatewayProcess

    from ._fd_limit import raise_open_files_limit

    # Each proxied connection holds two descriptors: the client's and the upstream's.
    raise_open_files_limit(2 * settings.gateway.max_connections)
    process = GatewayProcess(settings)
    try:
        # start() waits for a reachable server; a signal meanwhile must still stop us
        starting = asyncio.ensure_future(process.start())
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not starting.done():
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
            log.info("shutdown requested before the gateway could start")
            return 0
        try:
            starting.result()
        except OSError as exc:
            raise CommandError(f"wanfed gateway: cannot start: {exc}") from None
        host, port = process.address
        log.info(
            "gateway running listen=%s:%d dc=%s; stop with SIGINT or SIGTERM",
            host,
            port,
            process.datacenter,
        )
        await stop.wait()
        log.info("shutdown requested; deregistering and closing the gateway")
    finally:
        await process.stop()
    return 0
