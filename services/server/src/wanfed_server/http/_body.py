"""Request bodies as Consul decodes them: JSON objects with case-insensitive keys.

Consul matches field names without regard to case or underscores
(``SkipNodeUpdate``, ``skip_node_update`` and ``skipnodeupdate`` are one
field), and clients rely on it. :func:`canonical_keys` rewrites the keys of
a decoded body to the spelling our Structs use, leaving user-chosen keys
(``Meta`` entries, tagged-address names) alone; msgspec then validates the
types, and any failure becomes a 400 with msgspec's message.

A body is untrusted: its size is capped by the application
(``client_max_size``) and its nesting here. Without the nesting cap a few
kilobytes of ``[[[[...`` would exhaust the interpreter's recursion limit in
the decoder or in :func:`canonical_keys` and surface as a 500; no Consul body
nests more than a handful of levels, so anything deeper than
:data:`MAX_JSON_DEPTH` is refused as the caller's error before any code walks
it recursively.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

import msgspec
from aiohttp import web

from ._errors import HttpError

__all__ = ["MAX_JSON_DEPTH", "canonical_keys", "decode_json", "json_depth", "read_json"]

MAX_JSON_DEPTH: Final = 32
"""Deepest nesting of arrays and objects a request body may have (Consul's
deepest, a check inside ``Checks`` inside a registration, is 4)."""

_USER_MAPS = frozenset({"meta", "nodemeta", "servicemeta"})
_NAMED_STRUCT_MAPS = frozenset({"taggedaddresses"})


def _norm(key: str) -> str:
    return key.replace("_", "").replace("-", "").lower()


def canonical_keys(value: object, names: Iterable[str]) -> object:
    """Rename keys, at every depth, to the matching entry of ``names``."""
    table = {_norm(name): name for name in names}
    return _rename(value, table)


def _rename(value: object, table: dict[str, str]) -> object:
    if isinstance(value, list):
        return [_rename(item, table) for item in value]
    if not isinstance(value, dict):
        return value
    out: dict[str, object] = {}
    for key, item in value.items():
        norm = _norm(str(key))
        name = table.get(norm, str(key))
        if norm in _USER_MAPS:
            out[name] = item
        elif norm in _NAMED_STRUCT_MAPS and isinstance(item, dict):
            out[name] = {tag: _rename(address, table) for tag, address in item.items()}
        else:
            out[name] = _rename(item, table)
    return out


def json_depth(value: object) -> int:
    """How deeply arrays and objects nest in ``value`` (a scalar is 0), counted
    level by level without recursion, so that any depth can be measured."""
    depth = 0
    level = [value]
    while containers := [item for item in level if isinstance(item, dict | list)]:
        depth += 1
        level = []
        for container in containers:
            level.extend(container.values() if isinstance(container, dict) else container)
    return depth


def decode_json(raw: bytes) -> object:
    """``raw`` as JSON, or an :class:`HttpError` 400 saying what is wrong with it."""
    if not raw.strip():
        raise HttpError(400, "Request decode failed: empty body, expected a JSON object")
    try:
        value = msgspec.json.decode(raw)
    except msgspec.DecodeError as error:
        raise HttpError(400, f"Request decode failed: {error}") from None
    except RecursionError:
        # msgspec gives up at the interpreter's recursion limit (~1000 levels).
        depth = None
    else:
        depth = json_depth(value)
    if depth is None or depth > MAX_JSON_DEPTH:
        message = f"Request decode failed: JSON nested deeper than {MAX_JSON_DEPTH} levels"
        raise HttpError(400, message)
    return value


async def read_json(request: web.Request) -> object:
    """The decoded body; an empty, non-JSON or too deeply nested body is the
    caller's error."""
    return decode_json(await request.read())
