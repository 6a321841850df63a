"""A small msgpack codec shaped like the one memberlist's peers use.

Why not msgspec here: memberlist's Go codec writes ``[]byte`` fields (node
addresses, metadata, protocol versions) as msgpack *str* values holding raw,
usually non-UTF-8 bytes (the pre-2013 "raw" type). msgspec refuses to decode a
str into ``bytes`` and fails on invalid UTF-8, so Go's packets cannot be read
with it. This module therefore decodes every str/bin value to ``bytes`` and
lets the message layer decide which fields are text.

The encoder writes exactly what the Go codec writes: unsigned integers in their
smallest form, strings and byte strings both as str (fixstr, str16 or str32 —
never str8, which the Go encoder does not emit), maps with the keys in the
order given (callers pass them sorted, as Go sorts struct field names).

Decoding is bounded: nesting depth is capped and a container may not announce
more elements than there are bytes left, so hostile input can neither recurse
deeply nor make us allocate more than its own size.
"""

from __future__ import annotations

import struct
from typing import Any

from ._errors import GossipDecodeError, IncompleteMessage

__all__ = ["MAX_DEPTH", "decode_one", "encode"]

MAX_DEPTH = 16

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


def encode(value: Any) -> bytes:
    """Encode ``value`` (None, bool, int, float, str, bytes, list, dict)."""
    out = bytearray()
    _encode_into(out, value)
    return bytes(out)


def _encode_into(out: bytearray, value: Any) -> None:
    if value is None:
        out.append(0xC0)
    elif value is True:
        out.append(0xC3)
    elif value is False:
        out.append(0xC2)
    elif isinstance(value, int):
        _encode_int(out, value)
    elif isinstance(value, float):
        out.append(0xCB)
        out += struct.pack(">d", value)
    elif isinstance(value, str):
        _encode_raw(out, value.encode())
    elif isinstance(value, bytes | bytearray | memoryview):
        _encode_raw(out, bytes(value))
    elif isinstance(value, list | tuple):
        _encode_len(out, len(value), 0x90, 16, 0xDC, 0xDD)
        for item in value:
            _encode_into(out, item)
    elif isinstance(value, dict):
        _encode_len(out, len(value), 0x80, 16, 0xDE, 0xDF)
        for key, item in value.items():
            _encode_into(out, key)
            _encode_into(out, item)
    else:
        raise TypeError(f"cannot encode {type(value).__name__} as msgpack")


def _encode_int(out: bytearray, value: int) -> None:
    if value >= 0:
        if value <= 0x7F:
            out.append(value)
        elif value <= 0xFF:
            out += bytes((0xCC, value))
        elif value <= 0xFFFF:
            out.append(0xCD)
            out += _U16.pack(value)
        elif value <= 0xFFFFFFFF:
            out.append(0xCE)
            out += _U32.pack(value)
        elif value <= 0xFFFFFFFFFFFFFFFF:
            out.append(0xCF)
            out += _U64.pack(value)
        else:
            raise OverflowError("integer does not fit in 64 bits")
    elif value >= -32:
        out.append(value & 0xFF)
    elif value >= -(1 << 7):
        out += struct.pack(">Bb", 0xD0, value)
    elif value >= -(1 << 15):
        out += struct.pack(">Bh", 0xD1, value)
    elif value >= -(1 << 31):
        out += struct.pack(">Bi", 0xD2, value)
    elif value >= -(1 << 63):
        out += struct.pack(">Bq", 0xD3, value)
    else:
        raise OverflowError("integer does not fit in 64 bits")


def _encode_raw(out: bytearray, data: bytes) -> None:
    _encode_len(out, len(data), 0xA0, 32, 0xDA, 0xDB)
    out += data


def _encode_len(out: bytearray, n: int, fix: int, fix_limit: int, b16: int, b32: int) -> None:
    if n < fix_limit:
        out.append(fix | n)
    elif n <= 0xFFFF:
        out.append(b16)
        out += _U16.pack(n)
    elif n <= 0xFFFFFFFF:
        out.append(b32)
        out += _U32.pack(n)
    else:
        raise OverflowError("container too long for msgpack")


def decode_one(buf: bytes | bytearray | memoryview, pos: int = 0) -> tuple[Any, int]:
    """Decode one value starting at ``pos``; return it and the offset after it.

    Raises :class:`IncompleteMessage` when ``buf`` ends inside the value (a
    stream reader waits for more bytes) and :class:`GossipDecodeError` for
    bytes that can never become valid. Decoded strings are copies, so a
    growing ``bytearray`` may be decoded from and then extended.
    """
    with memoryview(buf) as view:
        return _Reader(view).value(pos, 0)


class _Reader:
    __slots__ = ("buf", "end")

    def __init__(self, buf: memoryview) -> None:
        self.buf = buf
        self.end = len(buf)

    def need(self, pos: int, n: int) -> None:
        if pos + n > self.end:
            raise IncompleteMessage("msgpack value is truncated")

    def raw(self, pos: int, n: int) -> tuple[bytes, int]:
        self.need(pos, n)
        return bytes(self.buf[pos : pos + n]), pos + n

    def u8(self, pos: int) -> int:
        self.need(pos, 1)
        return self.buf[pos]

    def unpack(self, fmt: struct.Struct, pos: int) -> tuple[Any, int]:
        self.need(pos, fmt.size)
        return fmt.unpack_from(self.buf, pos)[0], pos + fmt.size

    def check_count(self, pos: int, count: int, per_item: int) -> None:
        # Every element takes at least one byte: a count beyond what is left is
        # either truncation or a lie; both must not allocate.
        if count * per_item > self.end - pos:
            raise IncompleteMessage("msgpack container is truncated")

    def value(self, pos: int, depth: int) -> tuple[Any, int]:
        if depth > MAX_DEPTH:
            raise GossipDecodeError(f"msgpack nesting deeper than {MAX_DEPTH}")
        b = self.u8(pos)
        pos += 1
        if b <= 0x7F:
            return b, pos
        if b >= 0xE0:
            return b - 0x100, pos
        if 0xA0 <= b <= 0xBF:
            return self.raw(pos, b & 0x1F)
        if 0x90 <= b <= 0x9F:
            return self.array(pos, b & 0x0F, depth)
        if 0x80 <= b <= 0x8F:
            return self.map(pos, b & 0x0F, depth)
        handler = _SIMPLE.get(b)
        if handler is not None:
            result: tuple[Any, int] = handler(self, pos, depth)
            return result
        raise GossipDecodeError(f"invalid msgpack type byte 0x{b:02x}")

    def array(self, pos: int, count: int, depth: int) -> tuple[list[Any], int]:
        self.check_count(pos, count, 1)
        items: list[Any] = []
        for _ in range(count):
            item, pos = self.value(pos, depth + 1)
            items.append(item)
        return items, pos

    def map(self, pos: int, count: int, depth: int) -> tuple[dict[Any, Any], int]:
        self.check_count(pos, count, 2)
        items: dict[Any, Any] = {}
        for _ in range(count):
            key, pos = self.value(pos, depth + 1)
            if isinstance(key, list | dict):
                raise GossipDecodeError("msgpack map key is not a scalar")
            item, pos = self.value(pos, depth + 1)
            items[key] = item
        return items, pos

    def sized(self, fmt: struct.Struct, pos: int) -> tuple[int, int]:
        n, pos = self.unpack(fmt, pos)
        return int(n), pos


_U8 = struct.Struct(">B")
_I8 = struct.Struct(">b")
_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_I64 = struct.Struct(">q")
_F32 = struct.Struct(">f")
_F64 = struct.Struct(">d")


def _raw_with(fmt: struct.Struct) -> Any:
    def read(r: _Reader, pos: int, depth: int) -> tuple[Any, int]:
        n, pos = r.sized(fmt, pos)
        return r.raw(pos, n)

    return read


def _number(fmt: struct.Struct) -> Any:
    def read(r: _Reader, pos: int, depth: int) -> tuple[Any, int]:
        return r.unpack(fmt, pos)

    return read


def _array_with(fmt: struct.Struct) -> Any:
    def read(r: _Reader, pos: int, depth: int) -> tuple[Any, int]:
        n, pos = r.sized(fmt, pos)
        return r.array(pos, n, depth)

    return read


def _map_with(fmt: struct.Struct) -> Any:
    def read(r: _Reader, pos: int, depth: int) -> tuple[Any, int]:
        n, pos = r.sized(fmt, pos)
        return r.map(pos, n, depth)

    return read


def _fixext(size: int) -> Any:
    # Extension values carry a type byte we have no use for; skip it and
    # return the payload so the field check rejects it by type.
    def read(r: _Reader, pos: int, depth: int) -> tuple[Any, int]:
        return r.raw(pos + 1, size)

    return read


def _ext_with(fmt: struct.Struct) -> Any:
    def read(r: _Reader, pos: int, depth: int) -> tuple[Any, int]:
        n, pos = r.sized(fmt, pos)
        r.u8(pos)
        return r.raw(pos + 1, n)

    return read


_SIMPLE: dict[int, Any] = {
    0xC0: lambda r, pos, depth: (None, pos),
    0xC2: lambda r, pos, depth: (False, pos),
    0xC3: lambda r, pos, depth: (True, pos),
    0xC4: _raw_with(_U8),
    0xC5: _raw_with(_U16),
    0xC6: _raw_with(_U32),
    0xC7: _ext_with(_U8),
    0xC8: _ext_with(_U16),
    0xC9: _ext_with(_U32),
    0xCA: _number(_F32),
    0xCB: _number(_F64),
    0xCC: _number(_U8),
    0xCD: _number(_U16),
    0xCE: _number(_U32),
    0xCF: _number(_U64),
    0xD0: _number(_I8),
    0xD1: _number(_I16),
    0xD2: _number(_I32),
    0xD3: _number(_I64),
    0xD4: _fixext(1),
    0xD5: _fixext(2),
    0xD6: _fixext(4),
    0xD7: _fixext(8),
    0xD8: _fixext(16),
    0xD9: _raw_with(_U8),
    0xDA: _raw_with(_U16),
    0xDB: _raw_with(_U32),
    0xDC: _array_with(_U16),
    0xDD: _array_with(_U32),
    0xDE: _map_with(_U16),
    0xDF: _map_with(_U32),
}
