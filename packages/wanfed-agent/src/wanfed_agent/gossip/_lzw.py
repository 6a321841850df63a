"""LZW decompression in the variant memberlist compresses with.

memberlist's Go peers compress packets and streams by default (LSB bit order,
8-bit literals, codes growing from 9 to 12 bits, clear code 256, end code 257).
No maintained Python package decodes this exact variant and the algorithm is a
few dozen lines, so it lives here. We only decompress: sending uncompressed is
always allowed, and the peer decides by the leading message type byte.
"""

from __future__ import annotations

from ._errors import GossipDecodeError

__all__ = ["lzw_decompress"]

_CLEAR = 256
_EOF = 257
_MAX_WIDTH = 12


def lzw_decompress(data: bytes, *, max_output: int) -> bytes:
    """Decompress ``data``; refuse output larger than ``max_output`` bytes."""
    table: list[bytes] = [bytes((i,)) for i in range(256)] + [b"", b""]
    out = bytearray()
    width = 9
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
            width = 9
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
        out += entry
        if len(out) > max_output:
            raise GossipDecodeError(f"decompressed payload exceeds {max_output} bytes")
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
