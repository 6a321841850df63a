"""``wanfed acl bootstrap|token|policy``: manage ACL tokens and policies through an agent.

Every subcommand is one or two calls to the agent's ``/v1/acl/*`` API with
the token of ``-token`` / ``WANFED_HTTP_TOKEN`` / ``CONSUL_HTTP_TOKEN``, and
prints what Consul's CLI prints (``-format json`` prints the API's JSON).
``-rules`` takes the rules text, ``@FILE`` for a file, or ``-`` for stdin.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ._base import CommandError, Subparsers, add_flag, show_usage
from ._http_api import add_http_flags, http_base_url, http_token, request_json

__all__ = ["format_policy", "format_token", "register"]

_Handler = Callable[[argparse.Namespace], int]


def register(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "acl",
        help="manage ACL tokens and policies",
        description="Bootstrap ACLs and manage tokens and policies through an agent's HTTP API.",
    )
    parser.set_defaults(handler=show_usage(parser))
    groups = parser.add_subparsers(metavar="SUBCOMMAND")
    bootstrap = groups.add_parser("bootstrap", help="create the first management token (once)")
    _common(bootstrap, _bootstrap)

    token = groups.add_parser("token", help="create, read, list and delete tokens")
    token.set_defaults(handler=show_usage(token))
    tokens = token.add_subparsers(metavar="SUBCOMMAND")
    create = tokens.add_parser("create", help="create a token")
    add_flag(create, "description", default="", help="what the token is for")
    add_flag(create, "policy-id", dest="policy_ids", action="append", default=[], metavar="ID")
    add_flag(create, "policy-name", dest="policy_names", action="append", default=[], metavar="N")
    add_flag(create, "local", action="store_true", help="valid in this datacenter only")
    _common(create, _token_create)
    read = tokens.add_parser("read", help="show a token")
    add_flag(read, "id", dest="accessor_id", default="", metavar="ACCESSOR")
    add_flag(read, "self", dest="self_", action="store_true", help="the token presented")
    _common(read, _token_read)
    listing = tokens.add_parser("list", help="list every token")
    _common(listing, _token_list)
    delete = tokens.add_parser("delete", help="delete a token")
    add_flag(delete, "id", dest="accessor_id", required=True, metavar="ACCESSOR")
    _common(delete, _token_delete)

    policy = groups.add_parser("policy", help="create, read, list and delete policies")
    policy.set_defaults(handler=show_usage(policy))
    policies = policy.add_subparsers(metavar="SUBCOMMAND")
    create = policies.add_parser("create", help="create a policy")
    add_flag(create, "name", required=True)
    add_flag(create, "description", default="")
    add_flag(create, "rules", default="", help="rules text, @FILE, or - for stdin")
    add_flag(create, "valid-datacenter", dest="datacenters", action="append", default=[])
    _common(create, _policy_create)
    for verb, handler, text in (
        ("read", _policy_read, "show a policy"),
        ("delete", _policy_delete, "delete a policy"),
    ):
        sub = policies.add_parser(verb, help=text)
        add_flag(sub, "id", dest="policy_id", default="", metavar="ID")
        add_flag(sub, "name", default="", metavar="NAME")
        _common(sub, handler)
    listing = policies.add_parser("list", help="list every policy")
    _common(listing, _policy_list)


def _common(parser: argparse.ArgumentParser, handler: _Handler) -> None:
    add_http_flags(parser)
    add_flag(parser, "format", choices=("pretty", "json"), default="pretty")
    parser.set_defaults(handler=handler)


def _call(args: argparse.Namespace, method: str, path: str, body: object = None) -> Any:
    base = http_base_url(args.http_addr)
    return request_json(base, method, path, body, token=http_token(args.token))


def _show(args: argparse.Namespace, value: Any, pretty: Callable[[Any], str]) -> int:
    if args.format == "json":
        print(json.dumps(value, indent=4))
    else:
        print(pretty(value), end="")
    return 0


def format_token(token: dict[str, Any]) -> str:
    """Consul's ``acl token read`` layout."""
    lines = [
        f"AccessorID:       {token.get('AccessorID', '')}",
        f"SecretID:         {token.get('SecretID', '')}",
        f"Description:      {token.get('Description', '')}",
        f"Local:            {str(token.get('Local', False)).lower()}",
        f"Create Time:      {token.get('CreateTime', '')}",
        "Policies:",
    ]
    lines += [f"   {p.get('ID', '')} - {p.get('Name', '')}" for p in token.get("Policies") or []]
    return "".join(line + "\n" for line in lines)


def format_policy(policy: dict[str, Any]) -> str:
    """Consul's ``acl policy read`` layout (lists leave the rules out)."""
    lines = [
        f"ID:           {policy.get('ID', '')}",
        f"Name:         {policy.get('Name', '')}",
        f"Description:  {policy.get('Description', '')}",
        f"Datacenters:  {', '.join(policy.get('Datacenters') or [])}",
    ]
    if "Rules" in policy:
        lines += ["Rules:", policy.get("Rules", "")]
    return "".join(line + "\n" for line in lines)


def _listing(items: list[dict[str, Any]], key: str, pretty: Callable[[Any], str]) -> str:
    return "\n".join(f"{item.get(key, '')}:\n{pretty(item)}" for item in items)


def _bootstrap(args: argparse.Namespace) -> int:
    return _show(args, _call(args, "PUT", "/v1/acl/bootstrap"), format_token)


def _token_create(args: argparse.Namespace) -> int:
    links = [{"ID": i} for i in args.policy_ids] + [{"Name": n} for n in args.policy_names]
    body = {"Description": args.description, "Policies": links, "Local": args.local}
    return _show(args, _call(args, "PUT", "/v1/acl/token", body), format_token)


def _token_read(args: argparse.Namespace) -> int:
    if args.self_ == bool(args.accessor_id):
        raise CommandError("give exactly one of -id ACCESSOR and -self")
    accessor = "self" if args.self_ else _quoted(args.accessor_id)
    return _show(args, _call(args, "GET", f"/v1/acl/token/{accessor}"), format_token)


def _token_list(args: argparse.Namespace) -> int:
    tokens = _call(args, "GET", "/v1/acl/tokens")
    return _show(args, tokens, lambda t: _listing(t, "AccessorID", format_token))


def _token_delete(args: argparse.Namespace) -> int:
    _call(args, "DELETE", f"/v1/acl/token/{_quoted(args.accessor_id)}")
    print(f"Token {args.accessor_id!r} deleted successfully")
    return 0


def _rules(value: str) -> str:
    if value == "-":
        return sys.stdin.read()
    if value.startswith("@"):
        try:
            return Path(value[1:]).read_text()
        except OSError as error:
            raise CommandError(f"cannot read rules from {value[1:]}: {error}") from None
    return value


def _policy_create(args: argparse.Namespace) -> int:
    body = {
        "Name": args.name,
        "Description": args.description,
        "Rules": _rules(args.rules),
        "Datacenters": args.datacenters,
    }
    return _show(args, _call(args, "PUT", "/v1/acl/policy", body), format_policy)


def _policy_path(args: argparse.Namespace) -> str:
    if bool(args.policy_id) == bool(args.name):
        raise CommandError("give exactly one of -id ID and -name NAME")
    if args.policy_id:
        return f"/v1/acl/policy/{_quoted(args.policy_id)}"
    return f"/v1/acl/policy/name/{_quoted(args.name)}"


def _policy_read(args: argparse.Namespace) -> int:
    return _show(args, _call(args, "GET", _policy_path(args)), format_policy)


def _policy_delete(args: argparse.Namespace) -> int:
    policy = _call(args, "GET", _policy_path(args))
    _call(args, "DELETE", f"/v1/acl/policy/{_quoted(policy['ID'])}")
    print(f"Policy {policy['Name']!r} deleted successfully")
    return 0


def _policy_list(args: argparse.Namespace) -> int:
    policies = _call(args, "GET", "/v1/acl/policies")
    return _show(args, policies, lambda p: _listing(p, "Name", format_policy))


def _quoted(segment: str) -> str:
    return urllib.parse.quote(segment, safe="")
