"""How CLI commands reach a running agent: its HTTP API, like Consul's CLI.

``-http-addr`` wins, then ``WANFED_HTTP_ADDR``, then ``127.0.0.1:8500``; an
address may carry an ``http://`` scheme or not. The ACL token likewise:
``-token``, then ``WANFED_HTTP_TOKEN``, then ``CONSUL_HTTP_TOKEN``; it travels
in ``X-Consul-Token`` and is never printed. Failures become one
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

__all__ = [
    "DEFAULT_HTTP_ADDR",
    "HTTP_ADDR_ENV",
    "HTTP_TOKEN_ENVS",
    "add_http_flags",
    "get_json",
    "http_base_url",
    "http_token",
    "request_json",
]

DEFAULT_HTTP_ADDR: Final = "127.0.0.1:8500"
HTTP_ADDR_ENV: Final = "WANFED_HTTP_ADDR"
HTTP_TOKEN_ENVS: Final = ("WANFED_HTTP_TOKEN", "CONSUL_HTTP_TOKEN")
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
    add_flag(
        parser,
        "token",
        dest="token",
        default=None,
        metavar="SECRET",
        help=f"ACL token for the request (env {' or '.join(HTTP_TOKEN_ENVS)})",
    )


def http_token(flag: str | None, environ: dict[str, str] | None = None) -> str:
    """The ACL token to present: the flag, else the first environment variable set."""
    env = os.environ if environ is None else environ
    if flag:
        return flag
    return next((env[name] for name in HTTP_TOKEN_ENVS if env.get(name)), "")


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


def get_json(
    base_url: str, path: str, params: dict[str, str] | None = None, *, token: str = ""
) -> object:
    """GET ``path`` and decode the JSON answer; any failure is a one-line :class:`CommandError`."""
    return request_json(base_url, "GET", path, params=params, token=token)


def request_json(
    base_url: str,
    method: str,
    path: str,
    body: object = None,
    *,
    params: dict[str, str] | None = None,
    token: str = "",
) -> object:
    """One request with an optional JSON body; the JSON answer, or a :class:`CommandError`."""
    url = base_url + path
    if params:
        url += "?" + urllib.parse.urlencode(params)
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if token:
        request.add_header("X-Consul-Token", token)
    try:
        with urllib.request.urlopen(request, timeout=_TIMEOUT) as response:
            payload = response.read()
    except urllib.error.HTTPError as error:
        detail = error.read().decode(errors="replace").strip()
        raise CommandError(f"Error querying agent at {base_url}: {error.code} {detail}") from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise CommandError(f"Error connecting to agent at {base_url}: {reason}") from None
    try:
        return json.loads(payload)
    except ValueError:
        raise CommandError(f"agent at {base_url} answered {path} with invalid JSON") from None
