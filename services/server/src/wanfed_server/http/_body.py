"""Request bodies as Consul decodes them: JSON objects with case-insensitive keys.

Consul matches field names without regard to case or underscores
(``SkipNodeUpdate``, ``skip_node_update`` and ``skipnodeupdate`` are one
field), and clients rely on it. :func:`canonical_keys` rewrites the keys of
a decoded body to the spelling our Structs use, leaving user-chosen keys
(``Meta`` entries, tagged-address names) alone; msgspec then validates the
types, and any failure becomes a 400 with msgspec's message.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec
from aiohttp import web

from ._errors import HttpError

__all__ = ["canonical_keys", "read_json"]

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


async def read_json(request: web.Request) -> object:
    """The decoded body; an empty or non-JSON body is the caller's error."""
    raw = await request.read()
    if not raw.strip():
        raise HttpError(400, "Request decode failed: empty body, expected a JSON object")
    try:
        return msgspec.json.decode(raw)
    except msgspec.DecodeError as error:
        raise HttpError(400, f"Request decode failed: {error}") from None
