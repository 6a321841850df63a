"""SSL contexts for server-to-server TLS: always mutual, always TLS 1.2+.

Cross-DC traffic goes through gateways that forward raw TLS, so the TLS layer
is the only authentication there is. The client side therefore always checks
the server's certificate against the SNI it sends, whatever an operator's
``verify_*`` settings say; and both builders check the files up front so that
a mistake in a path or a swapped key shows as one clear error naming the file,
not as an OpenSSL error code at the first connection.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Sequence
from pathlib import Path
from typing import Final, TypeAlias

from ._alpn import SERVER_ALPN_PROTOCOLS, Alpn
from ._errors import TLSConfigError

__all__ = ["PathArg", "check_dial_context", "client_context", "server_context"]

PathArg: TypeAlias = str | os.PathLike[str]

_CERT_MARKER: Final = b"-----BEGIN CERTIFICATE-----"
_KEY_MARKERS: Final = (
    b"-----BEGIN PRIVATE KEY-----",
    b"-----BEGIN EC PRIVATE KEY-----",
    b"-----BEGIN RSA PRIVATE KEY-----",
    b"-----BEGIN ENCRYPTED PRIVATE KEY-----",
)
_TOO_OLD: Final = frozenset({ssl.TLSVersion.SSLv3, ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1})


def _read(role: str, path: PathArg) -> bytes:
    file = Path(path)
    try:
        return file.read_bytes()
    except FileNotFoundError:
        raise TLSConfigError(f"{role} {file}: file does not exist") from None
    except IsADirectoryError:
        raise TLSConfigError(f"{role} {file}: is a directory, not a PEM file") from None
    except OSError as exc:
        raise TLSConfigError(f"{role} {file}: cannot be read: {exc.strerror or exc}") from None


def _check_pem(role: str, path: PathArg, markers: Sequence[bytes], what: str) -> None:
    data = _read(role, path)
    if not any(marker in data for marker in markers):
        raise TLSConfigError(f"{role} {Path(path)}: not a PEM file holding {what}")


def _load_ca(context: ssl.SSLContext, ca_file: PathArg) -> None:
    _check_pem("ca_file", ca_file, (_CERT_MARKER,), "a certificate")
    try:
        context.load_verify_locations(cafile=os.fspath(ca_file))
    except ssl.SSLError as exc:
        raise TLSConfigError(f"ca_file {Path(ca_file)}: invalid CA certificate: {exc}") from None


def _load_chain(context: ssl.SSLContext, cert_file: PathArg, key_file: PathArg) -> None:
    _check_pem("cert_file", cert_file, (_CERT_MARKER,), "a certificate")
    _check_pem("key_file", key_file, _KEY_MARKERS, "a private key")
    try:
        context.load_cert_chain(certfile=os.fspath(cert_file), keyfile=os.fspath(key_file))
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in str(exc) or exc.reason == "KEY_VALUES_MISMATCH":
            raise TLSConfigError(
                f"key_file {Path(key_file)} does not match cert_file {Path(cert_file)}"
            ) from None
        raise TLSConfigError(
            f"cert_file {Path(cert_file)} / key_file {Path(key_file)}: cannot be loaded: {exc}"
        ) from None


def _alpn_list(alpn: Sequence[str]) -> list[str]:
    if isinstance(alpn, str):
        raise TypeError("alpn must be a sequence of protocol ids, not a single string")
    protocols = [str(p) for p in alpn]
    if not protocols or any(not p for p in protocols):
        raise ValueError("alpn must list at least one non-empty protocol id")
    return protocols


def _base(purpose: int) -> ssl.SSLContext:
    context = ssl.SSLContext(purpose)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def server_context(
    ca_file: PathArg,
    cert_file: PathArg,
    key_file: PathArg,
    alpn: Sequence[str] = SERVER_ALPN_PROTOCOLS,
    *,
    require_client_cert: bool = True,
) -> ssl.SSLContext:
    """The context of a server's RPC port: presents ``cert_file``, checks clients.

    ``require_client_cert=False`` still verifies a certificate a client offers;
    it exists for a plain TLS upgrade path, never for native TLS with ALPN.
    """
    context = _base(ssl.PROTOCOL_TLS_SERVER)
    _load_ca(context, ca_file)
    _load_chain(context, cert_file, key_file)
    context.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    context.set_alpn_protocols(_alpn_list(alpn))
    return context


def client_context(
    ca_file: PathArg,
    cert_file: PathArg | None,
    key_file: PathArg | None,
    alpn: Sequence[str] = (Alpn.RPC_MULTI,),
) -> ssl.SSLContext:
    """The context for dialing another server: verifies its cert and hostname.

    Pass exactly the protocol the connection will speak in ``alpn``: a server
    selects from the client's list, and a connection must not be left to
    guess. ``cert_file``/``key_file`` may both be ``None`` only for tools that
    talk to a server which does not ask for a client certificate.
    """
    if (cert_file is None) != (key_file is None):
        raise TLSConfigError("cert_file and key_file must be given together")
    context = _base(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    _load_ca(context, ca_file)
    if cert_file is not None and key_file is not None:
        _load_chain(context, cert_file, key_file)
    context.set_alpn_protocols(_alpn_list(alpn))
    return context


def check_dial_context(context: ssl.SSLContext) -> None:
    """Refuse a client context that would not authenticate the server by name.

    Dialing another DC through a gateway must verify the certificate for the
    SNI even when the operator turned hostname checks off elsewhere.
    """
    if context.verify_mode != ssl.CERT_REQUIRED or not context.check_hostname:
        raise TLSConfigError(
            "dialing a server requires a context with verify_mode=CERT_REQUIRED and "
            "check_hostname=True (use client_context)"
        )
    if context.minimum_version in _TOO_OLD:
        raise TLSConfigError("dialing a server requires TLS 1.2 or later")
