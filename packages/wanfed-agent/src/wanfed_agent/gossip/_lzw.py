"""LZW in the variant memberlist compresses with.

memberlist's Go peers compress packets and streams by default (LSB bit order,
8-bit literals, codes growing from 9 to 12 bits, clear code 256, end code 257).
No maintained Python package decodes this exact variant and the algorithm is a
few dozen lines, so it lives here. We never send compressed data (the peer
decides by the leading message type byte); :func:`lzw_compress` exists so that
tests and fuzzing can build valid compressed input.

Decompression is a classic bomb: one 12-bit code can stand for a table entry
of up to ~4 KiB, so a few kilobytes from an unauthenticated peer could ask for
megabytes of output and seconds of CPU. Two limits bound it, both checked
after every code so a bomb is refused long before its whole output exists:
``max_output`` (the absolute size of what the caller can accept) and
``max_ratio`` (output per input byte). Real memberlist traffic — msgpack maps
of names, addresses and tags — compresses a few times over; a ratio beyond
:data:`MAX_RATIO` is not gossip, and is refused as soon as the output passes it.
"""

from __future__ import annotations

from typing import Final

from ._errors import GossipDecodeError

__all__ = ["MAX_RATIO", "lzw_compress", "lzw_decompress"]

MAX_RATIO: Final = 64
"""Output bytes allowed per compressed input byte. memberlist's push/pull of a
thousand servers with Consul's tags compresses about 6:1 and small messages do
not compress at all; only contrived input (long runs of one byte) goes beyond."""

_CLEAR: Final = 256
_EOF: Final = 257
_MIN_WIDTH: Final = 9
_MAX_WIDTH: Final = 12


def lzw_decompress(data: bytes, *, max_output: int, max_ratio: int = MAX_RATIO) -> bytes:
    """Decompress ``data``; refuse output beyond ``max_output`` bytes or ``max_ratio``×input.

    Raises :class:`GossipDecodeError` for an invalid code or an exceeded limit.
    """
    limit = min(max_output, len(data) * max_ratio)
    table: list[bytes] = [bytes((i,)) for i in range(256)] + [b"", b""]
    out = bytearray()
    width = _MIN_WIDTH
    hi = _EOF
    overflow = 1 << width
    last: bytes | None = None
    bits = 0
    nbits = 0
    pos = 0
    end = len(data)
    while True:
        while nbits < width:
            if pos >= end:
                # Go's writer always ends with the end code; a stream that just
                # stops is accepted as long as what we have decodes.
                return bytes(out)
            bits |= data[pos] << nbits
            pos += 1
            nbits += 8
        code = bits & ((1 << width) - 1)
        bits >>= width
        nbits -= width
        if code == _CLEAR:
            width = _MIN_WIDTH
            hi = _EOF
            overflow = 1 << width
            last = None
            del table[258:]
            continue
        if code == _EOF:
            return bytes(out)
        if code < _CLEAR or code < len(table):
            entry = table[code]
        elif code == len(table) and last is not None:
            entry = last + last[:1]
        else:
            raise GossipDecodeError(f"invalid LZW code {code}")
        if len(out) + len(entry) > limit:
            raise _too_large(len(data), limit, max_output, max_ratio)
        out += entry
        if last is not None:
            table.append(last + entry[:1])
        last = entry
        hi += 1
        if hi >= overflow:
            if width == _MAX_WIDTH:
                last = None
                hi -= 1
            else:
                width += 1
                overflow = 1 << width


def _too_large(size: int, limit: int, max_output: int, max_ratio: int) -> GossipDecodeError:
    if limit == max_output:
        return GossipDecodeError(f"decompressed payload exceeds {max_output} bytes")
    return GossipDecodeError(
        f"decompressed payload exceeds {max_ratio} times its compressed size of {size} "
        f"bytes (limit {limit} bytes): refused as a decompression bomb"
    )


def lzw_compress(data: bytes) -> bytes:
    """Compress ``data`` the way memberlist's Go peers do (clear code first, end code last)."""
    return _Encoder().compress(data)


class _Encoder:
    """Emits codes LSB-first, widening them in step with the decoder's table."""

    __slots__ = ("_bits", "_codes", "_hi", "_nbits", "_out", "_width")

    def __init__(self) -> None:
        self._out = bytearray()
        self._bits = 0
        self._nbits = 0
        self._width = _MIN_WIDTH
        self._hi = _EOF  # the last code assigned (or reserved)
        self._codes: dict[tuple[int, int], int] = {}

    def compress(self, data: bytes) -> bytes:
        self._put(_CLEAR)
        if data:
            prefix = data[0]
            for byte in data[1:]:
                known = self._codes.get((prefix, byte))
                if known is not None:
                    prefix = known
                    continue
                if self._emit(prefix):
                    self._codes[(prefix, byte)] = self._hi
                prefix = byte
            self._emit(prefix)
        self._put(_EOF)
        if self._nbits:
            self._out.append(self._bits & 0xFF)
        return bytes(self._out)

    def _put(self, code: int) -> None:
        self._bits |= code << self._nbits
        self._nbits += self._width
        while self._nbits >= 8:
            self._out.append(self._bits & 0xFF)
            self._bits >>= 8
            self._nbits -= 8

    def _emit(self, code: int) -> bool:
        """Write ``code`` and claim the next table slot; False if the table was reset."""
        self._put(code)
        self._hi += 1
        if self._hi == 1 << self._width:
            self._width += 1
        if self._hi == (1 << _MAX_WIDTH) - 1:
            # Out of codes: a clear code, and both sides start a fresh table.
            self._put(_CLEAR)
            self._width, self._hi = _MIN_WIDTH, _EOF
            self._codes.clear()
            return False
        return True
