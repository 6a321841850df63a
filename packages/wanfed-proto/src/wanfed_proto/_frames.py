"""Length-prefixed frames: a 4-byte big-endian length, then the payload.

The decoder is incremental and never trusts the peer: a length above the
maximum is rejected as soon as its 4 bytes arrive, before any payload is
buffered, and a truncated frame is simply "need more bytes".
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Final

from ._errors import FrameTooLargeError

__all__ = ["DEFAULT_MAX_FRAME", "HEADER_SIZE", "FrameDecoder", "encode_frame"]

HEADER_SIZE: Final = 4
DEFAULT_MAX_FRAME: Final = 4 * 1024 * 1024
"""4 MiB: the gossip packet cap, also the default for every framed protocol."""

_LENGTH: Final = struct.Struct(">I")
_COPY_VIA_VIEW: Final = 16384
_COMPACT_AFTER: Final = 65536


def encode_frame(payload: bytes, max_size: int = DEFAULT_MAX_FRAME) -> bytes:
    """Prefix ``payload`` with its length; refuse what the peer would refuse."""
    size = len(payload)
    if size > max_size:
        raise FrameTooLargeError(size, max_size)
    return size.to_bytes(HEADER_SIZE, "big") + payload


class FrameDecoder:
    """Turns a byte stream into frames.

    ``feed`` may be called with any split of the stream; complete frames come
    out of :meth:`frames` (or iteration) in order. A length above the maximum
    raises :class:`FrameTooLargeError` as soon as its header is next in line
    (from ``feed`` when it arrives, otherwise from the call that reaches it,
    after every earlier frame was returned). The buffered bytes are dropped at
    once, and every later call raises the same error: the caller must close
    the connection.
    """

    __slots__ = ("_buffer", "_error", "_max_size", "_pos")

    def __init__(self, max_size: int = DEFAULT_MAX_FRAME) -> None:
        if max_size < 0:
            raise ValueError("max_size must not be negative")
        self._max_size = max_size
        self._buffer = bytearray()
        self._pos = 0
        self._error: FrameTooLargeError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as part of a frame."""
        return len(self._buffer) - self._pos

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append received bytes; checks the next length prefix at once."""
        if self._error is not None:
            raise self._error
        if self._pos and self._pos == len(self._buffer):
            # Everything was consumed: start over instead of growing.
            self._buffer.clear()
            self._pos = 0
        self._buffer += data
        self._next_size()

    def _next_size(self) -> int | None:
        """The length in the next header, once it has arrived; raises above the cap."""
        buffer = self._buffer
        start = self._pos
        if len(buffer) - start < HEADER_SIZE:
            return None
        size: int = _LENGTH.unpack_from(buffer, start)[0]
        if size > self._max_size:
            self._error = FrameTooLargeError(size, self._max_size)
            self._buffer = bytearray()
            self._pos = 0
            raise self._error
        return size

    def next_frame(self) -> bytes | None:
        """The next complete frame, or ``None`` when more bytes are needed."""
        if self._error is not None:
            raise self._error
        size = self._next_size()
        if size is None:
            return None
        buffer = self._buffer
        begin = self._pos + HEADER_SIZE
        end = begin + size
        if len(buffer) < end:
            return None
        if size < _COPY_VIA_VIEW:
            frame = bytes(buffer[begin:end])
        else:
            # One copy instead of two for large frames.
            with memoryview(buffer) as view:
                frame = view[begin:end].tobytes()
        self._pos = end
        if end > _COMPACT_AFTER and end * 2 > len(buffer):
            del buffer[:end]
            self._pos = 0
        return frame

    def frames(self) -> Iterator[bytes]:
        """Every complete frame buffered so far."""
        while (frame := self.next_frame()) is not None:
            yield frame

    __iter__ = frames
