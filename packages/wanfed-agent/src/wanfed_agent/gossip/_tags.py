"""Node metadata as tags, encoded the way Serf puts tags into memberlist's meta.

Serf prefixes a msgpack map of strings with the byte 0xFF; an operator reading
the gossip pool with either tool sees the same ``dc``, ``role``, ``port``,
``build`` tags. Meta that does not start with the marker is not tags (a plain
memberlist peer may put anything there) and reads as no tags.
"""

from __future__ import annotations

from collections.abc import Mapping

from . import _msgpack
from ._errors import GossipConfigError, GossipDecodeError
from ._messages import META_MAX_SIZE

__all__ = ["decode_tags", "encode_tags"]

_TAG_MAGIC = 0xFF


def encode_tags(tags: Mapping[str, str]) -> bytes:
    meta = bytes((_TAG_MAGIC,)) + _msgpack.encode({k: tags[k] for k in sorted(tags)})
    if len(meta) > META_MAX_SIZE:
        raise GossipConfigError(f"encoded tags are {len(meta)} bytes, limit {META_MAX_SIZE}")
    return meta


def decode_tags(meta: bytes) -> dict[str, str]:
    if not meta or meta[0] != _TAG_MAGIC:
        return {}
    raw, end = _msgpack.decode_one(meta, 1)
    if end != len(meta) or not isinstance(raw, dict):
        raise GossipDecodeError("node metadata is not a tag map")
    tags: dict[str, str] = {}
    for key, value in raw.items():
        if not isinstance(key, bytes) or not isinstance(value, bytes):
            raise GossipDecodeError("node metadata tags must be strings")
        try:
            tags[key.decode()] = value.decode()
        except UnicodeDecodeError:
            raise GossipDecodeError("node metadata tag is not UTF-8") from None
    return tags
