"""Packet streams: gossip packets carried as frames over one TCP/TLS connection.

A gateway can only forward streams, so a datagram protocol crossing it sends
each packet as one length-prefixed frame. The reading side waits at most the
idle limit for the next length prefix (then the connection is dropped, freeing
the pooled connection on both ends), but never times out in the middle of a
packet whose length it has already accepted.
"""

from __future__ import annotations

import asyncio
from typing import Final

from ._errors import FrameTooLargeError, TransportError
from ._frames import DEFAULT_MAX_FRAME, HEADER_SIZE, encode_frame

__all__ = ["PACKET_IDLE_TIMEOUT", "read_packet", "write_packet"]

PACKET_IDLE_TIMEOUT: Final = 120.0
"""Seconds a packet connection may sit without a new packet (2 minutes)."""


async def read_packet(
    reader: asyncio.StreamReader,
    idle_timeout: float = PACKET_IDLE_TIMEOUT,
    max_size: int = DEFAULT_MAX_FRAME,
) -> bytes | None:
    """The next packet, or ``None`` when the peer closed between packets.

    Raises :class:`TimeoutError` when no length prefix starts arriving within
    ``idle_timeout``, :class:`FrameTooLargeError` for a length above
    ``max_size`` (before reading the payload), and :class:`TransportError`
    when the stream ends inside a frame.
    """
    try:
        async with asyncio.timeout(idle_timeout):
            header = await reader.readexactly(HEADER_SIZE)
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise TransportError("connection closed inside a packet length prefix") from None
    size = int.from_bytes(header, "big")
    if size > max_size:
        raise FrameTooLargeError(size, max_size)
    try:
        return await reader.readexactly(size)
    except asyncio.IncompleteReadError as exc:
        raise TransportError(
            f"connection closed after {len(exc.partial)} of {size} packet bytes"
        ) from None


async def write_packet(
    writer: asyncio.StreamWriter, payload: bytes, max_size: int = DEFAULT_MAX_FRAME
) -> None:
    """Send one packet as a frame; refuses what the peer would refuse."""
    frame = encode_frame(payload, max_size)
    writer.write(frame)
    await writer.drain()
