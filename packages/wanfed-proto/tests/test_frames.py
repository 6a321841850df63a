"""Length-prefixed frames: round trips, arbitrary splits, and the size cap."""

from __future__ import annotations

import pytest

from wanfed_proto import (
    DEFAULT_MAX_FRAME,
    HEADER_SIZE,
    FrameDecoder,
    FrameTooLargeError,
    encode_frame,
)

PAYLOADS = [b"", b"x", b"hello world", bytes(range(256)) * 3, b"", b"\x00\x00\x00\x04tail"]


def test_header_is_four_byte_big_endian_length() -> None:
    assert HEADER_SIZE == 4
    assert encode_frame(b"abc") == b"\x00\x00\x00\x03abc"
    assert encode_frame(b"") == b"\x00\x00\x00\x00"
    assert DEFAULT_MAX_FRAME == 4 * 1024 * 1024


def test_round_trip_in_one_feed() -> None:
    decoder = FrameDecoder()
    decoder.feed(b"".join(encode_frame(p) for p in PAYLOADS))
    assert list(decoder.frames()) == PAYLOADS
    assert decoder.buffered == 0
    assert decoder.next_frame() is None


def test_round_trip_with_every_two_way_split() -> None:
    stream = b"".join(encode_frame(p) for p in PAYLOADS)
    for cut in range(len(stream) + 1):
        decoder = FrameDecoder()
        decoder.feed(stream[:cut])
        got = list(decoder)
        decoder.feed(stream[cut:])
        got += list(decoder)
        assert got == PAYLOADS, cut
        assert decoder.buffered == 0


def test_round_trip_byte_by_byte() -> None:
    stream = b"".join(encode_frame(p) for p in PAYLOADS)
    decoder = FrameDecoder()
    got: list[bytes] = []
    for index in range(len(stream)):
        decoder.feed(stream[index : index + 1])
        got += decoder.frames()
    assert got == PAYLOADS


def test_feed_accepts_bytearray_and_memoryview() -> None:
    decoder = FrameDecoder()
    decoder.feed(bytearray(encode_frame(b"one")))
    decoder.feed(memoryview(encode_frame(b"two")))
    assert list(decoder) == [b"one", b"two"]


def test_zero_length_frames_are_frames() -> None:
    decoder = FrameDecoder()
    decoder.feed(b"\x00\x00\x00\x00" * 3)
    assert list(decoder) == [b"", b"", b""]


def test_truncated_frame_is_need_more() -> None:
    decoder = FrameDecoder()
    decoder.feed(encode_frame(b"abcdef")[:-1])
    assert decoder.next_frame() is None
    assert decoder.buffered == HEADER_SIZE + 5
    decoder.feed(b"f")
    assert decoder.next_frame() == b"abcdef"


def test_frame_of_exactly_the_maximum_is_accepted() -> None:
    decoder = FrameDecoder(max_size=10)
    decoder.feed(encode_frame(b"0123456789", max_size=10))
    assert decoder.next_frame() == b"0123456789"


def test_oversize_length_is_rejected_before_any_payload_is_buffered() -> None:
    decoder = FrameDecoder(max_size=1024)
    with pytest.raises(FrameTooLargeError) as caught:
        decoder.feed(b"\xff\xff\xff\xff")
    assert str(caught.value) == f"frame size {0xFFFFFFFF} exceeds threshold of 1024"
    assert caught.value.size == 0xFFFFFFFF
    assert caught.value.limit == 1024
    assert decoder.buffered == 0


def test_oversize_length_split_across_feeds_is_rejected_when_complete() -> None:
    decoder = FrameDecoder(max_size=1024)
    decoder.feed(b"\x00\x00")
    assert decoder.buffered == 2
    with pytest.raises(FrameTooLargeError):
        decoder.feed(b"\x04\x01")
    assert decoder.buffered == 0


def test_default_cap_is_the_gossip_packet_cap() -> None:
    decoder = FrameDecoder()
    with pytest.raises(FrameTooLargeError, match="frame size 4194305 exceeds threshold of 4194304"):
        decoder.feed((DEFAULT_MAX_FRAME + 1).to_bytes(4, "big"))


def test_oversize_frame_after_a_good_one_is_rejected_when_reached() -> None:
    decoder = FrameDecoder(max_size=8)
    decoder.feed(encode_frame(b"ok") + b"\x00\x00\x01\x00" + b"junk")
    assert decoder.next_frame() == b"ok"
    with pytest.raises(FrameTooLargeError, match="frame size 256 exceeds threshold of 8"):
        decoder.next_frame()
    assert decoder.buffered == 0


def test_decoder_stays_failed_with_the_same_error() -> None:
    decoder = FrameDecoder(max_size=8)
    with pytest.raises(FrameTooLargeError) as first:
        decoder.feed(b"\x00\x00\x00\x09" + b"x" * 9)
    assert decoder.buffered == 0
    with pytest.raises(FrameTooLargeError) as again:
        decoder.feed(encode_frame(b"fine"))
    assert again.value is first.value
    with pytest.raises(FrameTooLargeError) as later:
        decoder.next_frame()
    assert later.value is first.value


def test_encode_refuses_what_the_peer_would_refuse() -> None:
    with pytest.raises(FrameTooLargeError, match="frame size 9 exceeds threshold of 8"):
        encode_frame(b"123456789", max_size=8)


def test_negative_maximum_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="must not be negative"):
        FrameDecoder(max_size=-1)


def test_long_streams_do_not_grow_the_buffer_without_bound() -> None:
    # The decoder compacts consumed bytes, so a long-lived connection holds
    # only what has not been returned yet.
    decoder = FrameDecoder()
    payload = b"p" * 1000
    for _ in range(500):
        decoder.feed(encode_frame(payload))
        assert decoder.next_frame() == payload
        assert decoder.buffered == 0
    assert len(decoder._buffer) < 200_000


def test_partly_consumed_buffer_is_compacted() -> None:
    # Frames that straddle reads keep the buffer from ever being fully
    # consumed; compaction must still bound it.
    frame = encode_frame(b"q" * 700)
    stream = frame * 2000
    decoder = FrameDecoder()
    got = 0
    for start in range(0, len(stream), 1000):
        decoder.feed(stream[start : start + 1000])
        got += sum(1 for _ in decoder)
        assert len(decoder._buffer) < 3 * 65536
    assert got == 2000


def test_large_frame_arrives_in_pieces() -> None:
    payload = bytes(range(256)) * 1024
    stream = encode_frame(payload)
    decoder = FrameDecoder()
    for start in range(0, len(stream), 1500):
        assert decoder.next_frame() is None
        decoder.feed(stream[start : start + 1500])
    assert decoder.next_frame() == payload
