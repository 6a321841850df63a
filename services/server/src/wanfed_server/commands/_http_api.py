"""How CLI commands reach a running agent: its HTTP API, like Consul's CLI.

``-http-addr`` wins, then ``WANFED_HTTP_ADDR``, then ``127.0.0.1:8500``; an
address may carry an ``http://`` scheme or not. Failures become one
:class:`CommandError` line naming the address, so "is the agent running?"
is answered by the message itself.
"""

from __future__ import annotations

import argparse
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from typing import Final

from ._base import CommandError, add_flag

__all__ = ["DEFAULT_HTTP_ADDR", "HTTP_ADDR_ENV", "add_http_flags", "get_json", "http_base_url"]

DEFAULT_HTTP_ADDR: Final = "127.0.0.1:8500"
HTTP_ADDR_ENV: Final = "WANFED_HTTP_ADDR"
_TIMEOUT: Final = 10.0


def add_http_flags(parser: argparse.ArgumentParser) -> None:
    add_flag(
        parser,
        "http-addr",
        dest="http_addr",
        default=None,
        metavar="ADDR",
        help=f"agent HTTP API address (env {HTTP_ADDR_ENV}; default {DEFAULT_HTTP_ADDR})",
    )


def http_base_url(flag: str | None, environ: dict[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    address = flag or env.get(HTTP_ADDR_ENV) or DEFAULT_HTTP_ADDR
    if "://" not in address:
        address = "http://" + address
    parsed = urllib.parse.urlsplit(address)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise CommandError(
            f"invalid HTTP address {address!r}: expected host:port or http://host:port"
        )
    return address.rstrip("/")


def get_json(base_url: str, path: str, params: dict[str, str] | None = None) -> object:
    """GET ``path`` and decode the JSON answer; any failure is a one-line :class:`CommandError`."""
    url = base_url + path
    if params:
        url += "?" + urllib.parse.urlencode(params)
    try:
        with urllib.request.urlopen(url, timeout=_TIMEOUT) as response:
            body = response.read()
    except urllib.error.HTTPError as error:
        detail = error.read().decode(errors="replace").strip()
        raise CommandError(f"Error querying agent at {base_url}: {error.code} {detail}") from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise CommandError(f"Error connecting to agent at {base_url}: {reason}") from None
    try:
        return json.loads(body)
    except ValueError:
        raise CommandError(f"agent at {base_url} answered {path} with invalid JSON") from None
