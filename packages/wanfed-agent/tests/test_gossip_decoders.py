"""Property tests: every gossip decoder against arbitrary and mutated bytes.

Only the package's own decode error may escape, every call returns, and the
size caps hold whatever a peer claims.
"""

from __future__ import annotations

import base64
import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wanfed_agent.gossip import (
    Ack,
    Alive,
    Dead,
    GossipDecodeError,
    IncompleteMessage,
    IndirectPing,
    Keyring,
    Membership,
    Nack,
    NodeStateKind,
    Ping,
    PushNodeState,
    PushPull,
    StreamMessageReader,
    Suspect,
    _msgpack,
    decode_packet,
    decode_tags,
    encode_compound,
    encode_message,
    encode_push_pull,
    encode_tags,
    fast_profile,
    read_stream_message,
    with_crc,
)
from wanfed_agent.gossip._lzw import lzw_decompress

FAST = settings(max_examples=300)
KEY = bytes(range(32))
RING = Keyring([KEY])
LO = bytes((127, 0, 0, 1))
VSN = bytes((1, 5, 2, 0, 0, 0))

VALID_PACKETS = [
    encode_message(Ping(seq_no=1, node="a", source_addr=LO, source_port=1, source_node="b")),
    encode_message(IndirectPing(seq_no=2, target=LO, port=2, node="a", nack=True, source_node="b")),
    encode_message(Ack(seq_no=3, payload=b"p")),
    encode_message(Nack(seq_no=4)),
    encode_message(Suspect(incarnation=5, node="a", from_="b")),
    encode_message(Alive(incarnation=6, node="a", addr=LO, port=3, meta=b"m", vsn=VSN)),
    encode_message(Dead(incarnation=7, node="a", from_="a")),
]
VALID_PACKETS.append(encode_compound(VALID_PACKETS[:4]))
VALID_PACKETS.append(with_crc(VALID_PACKETS[-1]))

STATE = PushNodeState(name="a", addr=LO, port=1, incarnation=1, state=NodeStateKind.ALIVE, vsn=VSN)
VALID_STREAMS = [
    encode_push_pull(PushPull(join=True, states=(STATE, STATE), user_state=b"u")),
    encode_message(Ping(seq_no=9, node="a")),
]


def _mutate(data: bytes, edits: list[tuple[int, int, int]]) -> bytes:
    out = bytearray(data)
    for kind, index, value in edits:
        if not out:
            out.append(value)
            continue
        position = index % len(out)
        if kind == 0:
            out[position] = value
        elif kind == 1:
            out.insert(position, value)
        else:
            del out[position]
    return bytes(out)


EDITS = st.lists(
    st.tuples(st.integers(0, 2), st.integers(0, 10_000), st.integers(0, 255)),
    min_size=1,
    max_size=6,
)


@FAST
@given(st.binary(max_size=2048))
def test_packet_decoder_raises_only_decode_errors(data: bytes) -> None:
    with contextlib.suppress(GossipDecodeError):
        decode_packet(data)


@FAST
@given(st.sampled_from(VALID_PACKETS), EDITS)
def test_mutated_packets_raise_only_decode_errors(
    packet: bytes, edits: list[tuple[int, int, int]]
) -> None:
    with contextlib.suppress(GossipDecodeError):
        decode_packet(_mutate(packet, edits))


@FAST
@given(st.binary(max_size=512))
def test_encrypted_packet_decoder_raises_only_decode_errors(data: bytes) -> None:
    with pytest.raises(GossipDecodeError):
        decode_packet(data, RING)
    sealed = RING.encrypt(data)
    with contextlib.suppress(GossipDecodeError):
        decode_packet(sealed, RING)


@FAST
@given(st.binary(max_size=2048))
def test_stream_reader_raises_only_decode_errors(data: bytes) -> None:
    try:
        _msg, used = read_stream_message(data)
    except GossipDecodeError:
        return
    assert 0 < used <= len(data)


@FAST
@given(st.sampled_from(VALID_STREAMS), EDITS)
def test_mutated_streams_raise_only_decode_errors(
    stream: bytes, edits: list[tuple[int, int, int]]
) -> None:
    with contextlib.suppress(GossipDecodeError):
        read_stream_message(_mutate(stream, edits))


@FAST
@given(st.binary(max_size=1024))
def test_encrypted_stream_reader_raises_only_decode_errors(data: bytes) -> None:
    for candidate in (b"\x0a" + data, RING.seal_stream(data)):
        with contextlib.suppress(GossipDecodeError):
            read_stream_message(candidate, RING)


@FAST
@given(st.binary(max_size=1024))
def test_msgpack_reader_raises_only_decode_errors(data: bytes) -> None:
    try:
        _value, end = _msgpack.decode_one(data)
    except GossipDecodeError:
        return
    assert end <= len(data)


@FAST
@given(st.binary(max_size=1024), st.integers(1, 4096))
def test_lzw_respects_its_output_cap(data: bytes, cap: int) -> None:
    try:
        out = lzw_decompress(data, max_output=cap)
    except GossipDecodeError:
        return
    assert len(out) <= cap


@FAST
@given(st.binary(max_size=600))
def test_tag_decoder_raises_only_decode_errors(data: bytes) -> None:
    with contextlib.suppress(GossipDecodeError):
        decode_tags(b"\xff" + data)


@FAST
@given(st.dictionaries(st.text(max_size=10), st.text(max_size=20), max_size=8))
def test_tags_round_trip(tags: dict[str, str]) -> None:
    assert decode_tags(encode_tags(tags)) == tags


@settings(max_examples=200)
@given(st.lists(st.one_of(st.binary(max_size=300), st.sampled_from(VALID_PACKETS)), max_size=8))
def test_core_survives_any_packets_and_streams(inputs: list[bytes]) -> None:
    core = Membership(fast_profile("me", "127.0.0.1", 8302), now=0.0, seed=1)
    for index, data in enumerate(inputs):
        core.handle_packet(data, ("127.0.0.9", 9), float(index))
        reply = core.handle_stream(data, ("127.0.0.9", 9), float(index))
        assert reply is None or isinstance(reply, bytes)
        core.handle_timer(float(index) + 0.5)
    core.drain_actions()
    assert core.state_of("me") is not None


def test_oversized_packet_is_refused_before_decoding() -> None:
    with pytest.raises(GossipDecodeError, match="exceeds threshold"):
        decode_packet(b"\x00" * (4 * 1024 * 1024 + 1))


def test_deep_nesting_is_refused() -> None:
    with pytest.raises(GossipDecodeError, match="nesting"):
        _msgpack.decode_one(b"\x91" * 100 + b"\x00")


def test_huge_claims_are_only_prefixes_not_allocations() -> None:
    for claim in (b"\xdd\xff\xff\xff\xff", b"\xdf\xff\xff\xff\xff", b"\xdb\xff\xff\xff\xff"):
        with pytest.raises(IncompleteMessage):
            _msgpack.decode_one(claim)


def test_user_state_claim_beyond_cap_is_refused() -> None:
    header = b"\x06\x83\xa4Join\xc2\xa5Nodes\x00\xacUserStateLen\xce\x7f\xff\xff\xff"
    with pytest.raises(GossipDecodeError, match="larger than limit"):
        read_stream_message(header)


def test_encrypted_stream_length_claim_beyond_cap_is_refused() -> None:
    with pytest.raises(GossipDecodeError, match="larger than limit"):
        read_stream_message(b"\x0a\x7f\xff\xff\xff", RING)


def test_keyring_from_base64_matches_raw_key() -> None:
    ring = Keyring.from_base64(base64.b64encode(KEY).decode())
    assert decode_packet(ring.encrypt(VALID_PACKETS[3]), RING) == [Nack(seq_no=4)]


@FAST
@given(
    st.one_of(st.binary(max_size=2048), st.sampled_from(VALID_STREAMS)),
    st.lists(st.integers(1, 64), min_size=1, max_size=40),
)
def test_stream_collector_raises_only_decode_errors(data: bytes, cuts: list[int]) -> None:
    collector = StreamMessageReader()
    pos = 0
    message = None
    with contextlib.suppress(GossipDecodeError):
        for size in cuts:
            message = collector.feed(data[pos : pos + size])
            pos += size
            if message is not None:
                break
    if message is not None:
        # What the collector calls whole must parse, to exactly its length.
        assert data.startswith(message)
        assert read_stream_message(message)[1] == len(message)
