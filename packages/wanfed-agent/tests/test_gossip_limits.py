"""The limits of the gossip decoders: decompression bombs, one decompression per
message, metadata and length caps, and how refusals are counted and logged."""

from __future__ import annotations

import base64
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wanfed_agent.gossip import (
    Alive,
    GossipDecodeError,
    Keyring,
    Membership,
    MessageType,
    NodeStateKind,
    PushNodeState,
    PushPull,
    StreamMessageReader,
    _msgpack,
    decode_packet,
    encode_compound,
    encode_message,
    encode_push_pull,
    encode_tags,
    fast_profile,
    read_stream_message,
)
from wanfed_agent.gossip._lzw import MAX_RATIO, lzw_compress, lzw_decompress
from wanfed_agent.gossip._messages import MAX_PACKET_BYTES, META_MAX_SIZE
from wanfed_agent.gossip._refusals import LOG_INTERVAL, RefusalCounts

FAST = settings(max_examples=200, deadline=2000)
HUGE = 1 << 40
LO = bytes((127, 0, 0, 1))
VSN = bytes((1, 5, 2, 0, 0, 0))
KEY = base64.b64encode(bytes(range(32))).decode()


def compressed(payload: bytes) -> bytes:
    """A COMPRESS message (type byte + msgpack wrapper) around ``payload``."""
    body = _msgpack.encode({"Algo": 0, "Buf": lzw_compress(payload)})
    return bytes((MessageType.COMPRESS,)) + body


def runs(pieces: list[tuple[int, int]]) -> bytes:
    return b"".join(bytes((value,)) * length for value, length in pieces)


# Data that compresses anywhere from not at all to about a thousand times over.
COMPRESSIBLE = st.one_of(
    st.binary(max_size=4096),
    st.lists(st.tuples(st.integers(0, 255), st.integers(1, 20_000)), max_size=8).map(runs),
    st.lists(st.sampled_from([b"a", b"b", b"wanfed", b"\x00"]), max_size=4000).map(b"".join),
)


# -- LZW ---------------------------------------------------------------------------


@FAST
@given(COMPRESSIBLE)
def test_lzw_round_trips_whatever_it_compresses(data: bytes) -> None:
    assert lzw_decompress(lzw_compress(data), max_output=HUGE, max_ratio=HUGE) == data


def test_lzw_round_trips_across_table_resets() -> None:
    # Incompressible bytes use a new code per byte: 20,000 of them reset the table
    # (clear code at 4095 codes) several times.
    data = random.Random(7).randbytes(20_000)
    assert lzw_decompress(lzw_compress(data), max_output=HUGE, max_ratio=HUGE) == data


@FAST
@given(COMPRESSIBLE, st.integers(1, 300))
def test_lzw_ratio_cap_is_exact(data: bytes, ratio: int) -> None:
    packed = lzw_compress(data)
    if len(data) <= ratio * len(packed):
        assert lzw_decompress(packed, max_output=HUGE, max_ratio=ratio) == data
    else:
        with pytest.raises(GossipDecodeError, match="decompression bomb"):
            lzw_decompress(packed, max_output=HUGE, max_ratio=ratio)


@FAST
@given(st.binary(max_size=2048), st.integers(1, 300), st.integers(0, 100_000))
def test_lzw_output_never_exceeds_either_cap(data: bytes, ratio: int, cap: int) -> None:
    try:
        out = lzw_decompress(data, max_output=cap, max_ratio=ratio)
    except GossipDecodeError:
        return
    assert len(out) <= min(cap, ratio * len(data))


def test_a_small_bomb_is_refused_by_ratio_below_the_size_cap() -> None:
    bomb = lzw_compress(bytes(1024 * 1024))  # 1 MiB of zeros in about 1.8 KB
    assert len(bomb) * MAX_RATIO < 1024 * 1024 < MAX_PACKET_BYTES
    with pytest.raises(GossipDecodeError, match="decompression bomb") as caught:
        lzw_decompress(bomb, max_output=MAX_PACKET_BYTES)
    assert f"{MAX_RATIO} times its compressed size of {len(bomb)} bytes" in str(caught.value)


def test_a_bomb_is_refused_before_its_output_exists() -> None:
    bomb = lzw_compress(bytes(16 * 1024 * 1024))
    # The first half alone expands far beyond 64x the whole; the second half is
    # replaced by codes that no table holds.
    half = len(bomb) // 2
    poisoned = bomb[:half] + b"\xff" * (len(bomb) - half)
    # A decoder that produced everything first would stop at an invalid code ...
    with pytest.raises(GossipDecodeError, match="invalid LZW code"):
        lzw_decompress(poisoned, max_output=HUGE, max_ratio=HUGE)
    # ... ours stops at the ratio, before it reads the second half.
    with pytest.raises(GossipDecodeError, match="decompression bomb"):
        lzw_decompress(poisoned, max_output=HUGE)


def test_the_size_cap_still_holds_when_the_ratio_would_allow_more() -> None:
    data = random.Random(3).randbytes(5000)
    with pytest.raises(GossipDecodeError, match="exceeds 1000 bytes"):
        lzw_decompress(lzw_compress(data), max_output=1000)


def test_real_gossip_compresses_well_within_the_ratio() -> None:
    tags = encode_tags({"role": "consul", "dc": "dc1", "port": "8300", "vsn": "2"})
    states = tuple(
        PushNodeState(name=f"s{i}.dc{i % 9}", addr=bytes((198, 18, i // 256, i % 256)), port=8302,
                      meta=tags, incarnation=i, vsn=VSN)
        for i in range(1000)
    )  # fmt: skip
    message = encode_push_pull(PushPull(join=False, states=states))
    assert len(message) < 16 * len(lzw_compress(message))  # about 6:1 in practice
    msg, _ = read_stream_message(compressed(message))
    assert isinstance(msg, PushPull)
    assert msg.states == states


# -- packets -------------------------------------------------------------------------


def test_a_compressed_bomb_packet_is_refused() -> None:
    packet = compressed(bytes((MessageType.USER,)) + bytes(1024 * 1024))
    assert len(packet) < 4096
    with pytest.raises(GossipDecodeError, match="decompression bomb"):
        decode_packet(packet)


def test_a_compressed_packet_within_the_ratio_decodes() -> None:
    alive = encode_message(Alive(incarnation=1, node="a.dc1", addr=LO, port=8302, vsn=VSN))
    assert decode_packet(compressed(encode_compound([alive, alive])))[0].node == "a.dc1"  # type: ignore[union-attr]


def test_a_packet_may_be_decompressed_only_once() -> None:
    alive = encode_message(Alive(incarnation=1, node="a.dc1", addr=LO, port=8302, vsn=VSN))
    two_parts = encode_compound([compressed(alive), compressed(alive)])
    with pytest.raises(GossipDecodeError, match="more than one compressed"):
        decode_packet(two_parts)
    nested = compressed(compressed(alive))
    with pytest.raises(GossipDecodeError, match="more than one compressed"):
        decode_packet(nested)


@pytest.mark.parametrize("cls", ["alive", "push_pull"])
def test_remote_metadata_over_the_limit_is_refused(cls: str) -> None:
    meta = b"m" * (META_MAX_SIZE + 1)
    if cls == "alive":
        alive = Alive(incarnation=1, node="a.dc1", addr=LO, port=8302, meta=meta, vsn=VSN)
        with pytest.raises(GossipDecodeError, match=f"Alive.Meta is {len(meta)} bytes"):
            decode_packet(encode_message(alive))
    else:
        state = PushNodeState(name="a", addr=LO, port=1, meta=meta, state=NodeStateKind.ALIVE)
        with pytest.raises(GossipDecodeError, match=r"PushNodeState\.Meta is"):
            read_stream_message(encode_push_pull(PushPull(join=True, states=(state,))))


def test_metadata_at_the_limit_is_accepted() -> None:
    meta = b"m" * META_MAX_SIZE
    alive = Alive(incarnation=1, node="a.dc1", addr=LO, port=8302, meta=meta, vsn=VSN)
    assert decode_packet(encode_message(alive)) == [alive]


# -- streams -------------------------------------------------------------------------


def test_a_stream_message_may_be_decompressed_only_once() -> None:
    ping = bytes((MessageType.PING,)) + _msgpack.encode({"SeqNo": 1, "Node": "a"})
    assert read_stream_message(compressed(ping))[0].seq_no == 1  # type: ignore[union-attr]
    with pytest.raises(GossipDecodeError, match="inside a compressed one"):
        read_stream_message(compressed(compressed(ping)))


def test_many_compression_layers_are_a_decode_error_not_a_crash() -> None:
    # Each LZW layer over compressed bytes grows the message (about 2x every
    # five layers), so 30 layers stay small while nesting far past one.
    message = bytes((MessageType.PING,)) + _msgpack.encode({"SeqNo": 1, "Node": "a"})
    for _ in range(30):
        message = compressed(message)
    with pytest.raises(GossipDecodeError):
        read_stream_message(message)
    with pytest.raises(GossipDecodeError):
        StreamMessageReader().feed(message)


def test_a_compressed_stream_bomb_is_refused() -> None:
    user_state = bytes(8 * 1024 * 1024)
    message = encode_push_pull(PushPull(join=True, states=(), user_state=user_state))
    with pytest.raises(GossipDecodeError, match="decompression bomb"):
        read_stream_message(compressed(message))


def test_a_user_message_length_beyond_the_cap_is_refused_at_once() -> None:
    header = bytes((MessageType.USER,)) + _msgpack.encode({"UserMsgLen": 1 << 40})
    with pytest.raises(GossipDecodeError, match="larger than limit"):
        read_stream_message(header)
    with pytest.raises(GossipDecodeError, match="larger than limit"):
        StreamMessageReader().feed(header)


# -- refusals: counted, logged rate-limited ---------------------------------------------

FAKE_DC_ALIVE = encode_message(
    Alive(
        incarnation=1,
        node="ghost.fakedc",
        addr=bytes((127, 0, 0, 66)),
        port=8302,
        meta=encode_tags({"role": "consul", "dc": "fakedc", "port": "8300"}),
        vsn=VSN,
    )
)


def encrypted_core() -> Membership:
    return Membership(fast_profile("me.dc1", "127.0.0.1", 8302, encrypt=KEY), now=0.0, seed=1)


def test_forged_packets_are_counted_not_applied_and_logged_once_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("WARNING", logger="wanfed_agent.gossip")
    core = encrypted_core()
    wrong_key = Keyring([bytes(32)])
    for index in range(50):
        core.handle_packet(FAKE_DC_ALIVE, ("127.0.0.66", 9), 1.0 + index * 0.01)
        core.handle_packet(wrong_key.encrypt(FAKE_DC_ALIVE), ("127.0.0.66", 9), 1.0)
    assert core.refusals == RefusalCounts(packets=100, streams=0)
    assert core.member("ghost.fakedc") is None
    lines = [r.getMessage() for r in caplog.records if "refusing gossip packet" in r.getMessage()]
    assert len(lines) == 1
    assert "from=127.0.0.66:9" in lines[0]
    assert "dropped; the member keeps running" in lines[0]

    core.handle_packet(FAKE_DC_ALIVE, ("127.0.0.66", 9), 1.0 + LOG_INTERVAL)
    lines = [r.getMessage() for r in caplog.records if "refusing gossip packet" in r.getMessage()]
    assert len(lines) == 2
    assert "refused_since_last_line=99" in lines[1]


def test_the_same_forged_member_sealed_with_our_key_is_applied() -> None:
    # The control for the test above: it is the key, nothing else, that keeps it out.
    core = encrypted_core()
    core.handle_packet(Keyring.from_base64(KEY).encrypt(FAKE_DC_ALIVE), ("127.0.0.66", 9), 1.0)
    assert core.refusals == RefusalCounts()
    assert core.member("ghost.fakedc") is not None


def test_an_unsealed_push_pull_stream_is_counted_and_answered_with_an_error() -> None:
    core = encrypted_core()
    meta = encode_tags({"role": "consul", "dc": "fakedc"})
    state = PushNodeState(
        name="ghost.fakedc", addr=LO, port=8302, state=NodeStateKind.ALIVE, meta=meta, vsn=VSN
    )
    request = encode_push_pull(PushPull(join=True, states=(state,)))
    reply = core.handle_stream(request, ("127.0.0.66", 9), 1.0)
    assert reply is not None
    assert reply[0] == MessageType.ENCRYPT  # a sealed error
    assert core.refusals == RefusalCounts(packets=0, streams=1)
    assert core.member("ghost.fakedc") is None
