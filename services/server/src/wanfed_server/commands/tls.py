"""``wanfed tls ca create`` and ``wanfed tls cert create``: certificates for agents.

Files are written to the current directory with Consul's naming, with
``wanfed`` in place of ``consul`` for the CA: ``wanfed-agent-ca.pem`` and
``wanfed-agent-ca-key.pem``; ``<dc>-server-<domain>-<n>.pem`` and
``-key.pem`` (``n`` is the first number not yet taken), likewise ``client``.
Existing files are never overwritten; private keys are created mode 0600.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

from wanfed_agent.tls import TLSMaterialError

from ._base import CommandError, CommandParser, Subparsers, UsageError, add_flag, show_usage

if TYPE_CHECKING:
    from wanfed_agent.tls import PemPair

__all__ = ["CA_CERT_FILE", "CA_KEY_FILE", "register"]

CA_CERT_FILE = "wanfed-agent-ca.pem"
CA_KEY_FILE = "wanfed-agent-ca-key.pem"


def register(subparsers: Subparsers) -> None:
    tls = subparsers.add_parser(
        "tls", help="create a CA and agent certificates", description="TLS helpers."
    )
    tls.set_defaults(handler=show_usage(tls))
    tls.defer(_add_subcommands)


def _add_subcommands(tls: CommandParser) -> None:
    """``ca create`` and ``cert create``; their defaults come with the X.509 code."""
    from wanfed_agent.tls import DEFAULT_CA_DAYS, DEFAULT_CERT_DAYS

    groups = tls.add_subparsers(metavar="SUBCOMMAND")

    ca = groups.add_parser("ca", help="certificate authority", description="CA helpers.")
    ca.set_defaults(handler=show_usage(ca))
    ca_create = ca.add_subparsers(metavar="SUBCOMMAND").add_parser(
        "create",
        help="create a new CA",
        description=f"Create a CA; writes {CA_CERT_FILE} and {CA_KEY_FILE}.",
    )
    add_flag(
        ca_create,
        "days",
        type=int,
        default=DEFAULT_CA_DAYS,
        metavar="N",
        help=f"validity in days (default {DEFAULT_CA_DAYS})",
    )
    add_flag(
        ca_create,
        "common-name",
        default=None,
        metavar="CN",
        help="CN of the CA (default: generated)",
    )
    ca_create.set_defaults(handler=_create_ca)

    cert = groups.add_parser("cert", help="agent certificates", description="Cert helpers.")
    cert.set_defaults(handler=show_usage(cert))
    create = cert.add_subparsers(metavar="SUBCOMMAND").add_parser(
        "create",
        help="create a server or client certificate",
        description="Create a certificate signed by the CA, for a server or a client.",
    )
    add_flag(create, "server", action="store_true", help="a server certificate")
    add_flag(create, "client", action="store_true", help="a client certificate")
    add_flag(create, "dc", default="dc1", help="datacenter (default dc1)")
    add_flag(create, "domain", default="consul", help="domain (default consul)")
    add_flag(
        create,
        "node",
        default=None,
        help="server node name; adds the SAN <node>.server.<dc>.<domain>",
    )
    add_flag(
        create,
        "additional-dnsname",
        action="append",
        default=[],
        metavar="NAME",
        help="extra DNS SAN (repeatable)",
    )
    add_flag(
        create,
        "additional-ipaddress",
        action="append",
        default=[],
        metavar="IP",
        help="extra IP SAN (repeatable)",
    )
    add_flag(create, "ca", default=CA_CERT_FILE, help=f"CA certificate (default {CA_CERT_FILE})")
    add_flag(create, "key", default=CA_KEY_FILE, help=f"CA key (default {CA_KEY_FILE})")
    add_flag(
        create,
        "days",
        type=int,
        default=DEFAULT_CERT_DAYS,
        metavar="N",
        help=f"validity in days (default {DEFAULT_CERT_DAYS})",
    )
    create.set_defaults(handler=_create_cert)


def _create_ca(args: argparse.Namespace) -> int:
    from wanfed_agent.tls import create_ca

    cert_path, key_path = Path(CA_CERT_FILE), Path(CA_KEY_FILE)
    _refuse_existing(cert_path, key_path)
    try:
        pair = create_ca(days=args.days, common_name=args.common_name)
    except ValueError as error:
        raise UsageError(f"wanfed tls ca create: {error}") from None
    _save(pair, cert_path, key_path)
    return 0


def _create_cert(args: argparse.Namespace) -> int:
    from wanfed_agent.tls import PemPair, create_client_cert, create_server_cert

    if args.server == args.client:
        raise UsageError("wanfed tls cert create: exactly one of -server or -client is required")
    if args.node is not None and not args.server:
        raise UsageError("-node requires -server")
    ca = PemPair(
        cert_pem=_read(Path(args.ca), "CA certificate"), key_pem=_read(Path(args.key), "CA key")
    )
    kind = "server" if args.server else "client"
    try:
        if args.server:
            pair = create_server_cert(
                ca,
                args.dc,
                args.domain,
                args.node,
                args.additional_dnsname,
                args.additional_ipaddress,
                args.days,
            )
        else:
            pair = create_client_cert(
                ca,
                args.dc,
                args.domain,
                args.additional_dnsname,
                args.additional_ipaddress,
                args.days,
            )
    except TLSMaterialError as error:
        raise CommandError(f"{args.ca} / {args.key}: {error}") from None
    except ValueError as error:
        raise UsageError(f"wanfed tls cert create: {error}") from None
    cert_path, key_path = _next_free(f"{args.dc}-{kind}-{args.domain.removesuffix('.')}")
    _save(pair, cert_path, key_path)
    return 0


def _next_free(prefix: str) -> tuple[Path, Path]:
    number = 0
    while True:
        cert, key = Path(f"{prefix}-{number}.pem"), Path(f"{prefix}-{number}-key.pem")
        if not cert.exists() and not key.exists():
            return cert, key
        number += 1


def _refuse_existing(*paths: Path) -> None:
    for path in paths:
        if path.exists():
            raise CommandError(f"{path} already exists; refusing to overwrite it")


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise CommandError(
            f"{what} {str(path)!r} does not exist; create a CA with 'wanfed tls ca create' or "
            "pass -ca and -key"
        ) from None
    except OSError as error:
        raise CommandError(f"{what} {str(path)!r} cannot be read: {error.strerror}") from None


def _save(pair: PemPair, cert_path: Path, key_path: Path) -> None:
    _write_new(cert_path, pair.cert_pem, 0o644)
    print(f"==> Saved {cert_path}")
    _write_new(key_path, pair.key_pem, 0o600)
    print(f"==> Saved {key_path}")


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` exclusively: a file that appeared meanwhile is still not overwritten."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise CommandError(f"{path} already exists; refusing to overwrite it") from None
    except OSError as error:
        raise CommandError(f"cannot create {path}: {error.strerror}") from None
    with os.fdopen(fd, "wb") as file:
        file.write(data)
