"""Length-prefixed frames: a 4-byte big-endian length, then the payload.

The decoder is incremental and never trusts the peer: a length above the
maximum is rejected as soon as its 4 bytes arrive, before any payload is
buffered, and a truncated frame is simply "need more bytes".
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

from ._errors import FrameTooLargeError

__all__ = ["DEFAULT_MAX_FRAME", "HEADER_SIZE", "FrameDecoder", "encode_frame"]

HEADER_SIZE: Final = 4
DEFAULT_MAX_FRAME: Final = 4 * 1024 * 1024
"""4 MiB: the gossip packet cap, also the default for every framed protocol."""


def encode_frame(payload: bytes, max_size: int = DEFAULT_MAX_FRAME) -> bytes:
    """Prefix ``payload`` with its length; refuse what the peer would refuse."""
    size = len(payload)
    if size > max_size:
        raise FrameTooLargeError(size, max_size)
    return size.to_bytes(HEADER_SIZE, "big") + payload


class FrameDecoder:
    """Turns a byte stream into frames.

    ``feed`` may be called with any split of the stream; complete frames come
    out of :meth:`frames` (or iteration) in order. After a
    :class:`FrameTooLargeError` the stream is unusable and the caller must close
    the connection.
    """

    __slots__ = ("_buffer", "_failed", "_max_size", "_pos")

    def __init__(self, max_size: int = DEFAULT_MAX_FRAME) -> None:
        if max_size < 0:
            raise ValueError("max_size must not be negative")
        self._max_size = max_size
        self._buffer = bytearray()
        self._pos = 0
        self._failed = False

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as part of a frame."""
        return len(self._buffer) - self._pos

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append received bytes; checks the next length prefix at once."""
        if self._failed:
            raise FrameTooLargeError(-1, self._max_size)
        self._buffer += data
        self._check_header()

    def _check_header(self) -> None:
        if self.buffered >= HEADER_SIZE:
            start = self._pos
            size = int.from_bytes(self._buffer[start : start + HEADER_SIZE], "big")
            if size > self._max_size:
                self._failed = True
                raise FrameTooLargeError(size, self._max_size)

    def next_frame(self) -> bytes | None:
        """The next complete frame, or ``None`` when more bytes are needed."""
        if self.buffered < HEADER_SIZE:
            return None
        start = self._pos
        size = int.from_bytes(self._buffer[start : start + HEADER_SIZE], "big")
        end = start + HEADER_SIZE + size
        if len(self._buffer) < end:
            return None
        frame = bytes(self._buffer[start + HEADER_SIZE : end])
        self._pos = end
        if self._pos > 65536 and self._pos * 2 > len(self._buffer):
            del self._buffer[: self._pos]
            self._pos = 0
        self._check_header()
        return frame

    def frames(self) -> Iterator[bytes]:
        """Every complete frame buffered so far."""
        while (frame := self.next_frame()) is not None:
            yield frame

    __iter__ = frames
