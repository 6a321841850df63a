"""The gossip wire format, byte for byte against hashicorp/memberlist's Go codec.

The reference encodings below were printed by the interop peer
(``tools/interop/memberlist``, flag ``-golden``), which encodes structs with
memberlist's wire field names using memberlist's own msgpack codec; the interop
test re-checks them against a freshly built peer.
"""

from __future__ import annotations

import base64
import binascii
import struct

import pytest

from wanfed_agent.gossip import (
    Ack,
    Alive,
    Dead,
    GossipConfigError,
    GossipDecodeError,
    IncompleteMessage,
    IndirectPing,
    Keyring,
    MessageType,
    Nack,
    NodeStateKind,
    Ping,
    PushNodeState,
    PushPull,
    StreamMessageReader,
    Suspect,
    UserMessage,
    decode_packet,
    decode_tags,
    encode_compound,
    encode_message,
    encode_push_pull,
    encode_stream_message,
    encode_tags,
    fast_profile,
    parse_join_target,
    read_stream_message,
    wan_profile,
    with_crc,
)
from wanfed_agent.gossip._lzw import lzw_decompress

LO = bytes((127, 0, 0, 1))
VSN = bytes((1, 5, 2, 0, 0, 0))
LZW_PLAIN = b"wanfed gossip, wanfed gossip! " * 40

GO_GOLDEN = {
    "ping": "82a44e6f6465a7676f312e646331a55365714e6f07",
    "ping_full": (
        "85a44e6f6465a7676f312e646331a55365714e6fce00011170aa536f7572636541646472a47f0000"
        "01aa536f757263654e6f6465a77079312e646332aa536f75726365506f7274cd206e"
    ),
    "indirect_ping": (
        "88a44e61636bc3a44e6f6465a7676f322e646331a4506f7274cd206ea55365714e6fcd012caa536f"
        "7572636541646472a47f000001aa536f757263654e6f6465a77079312e646331aa536f7572636550"
        "6f7274cd206ea6546172676574a47f000002"
    ),
    "ack": "82a75061796c6f6164c0a55365714e6fceffffffff",
    "suspect": "83a446726f6da77079312e646331ab496e6361726e6174696f6e03a44e6f6465a7676f312e646331",
    "alive": (
        "86a441646472a47f000001ab496e6361726e6174696f6ecc80a44d657461b1ff82a26463a3646331"
        "a4726f6c65a2676fa44e6f6465da00286e6e6e6e6e6e6e6e6e6e6e6e6e6e6e6e6e6e6e6e6e6e6e6e"
        "6e6e6e6e6e6e6e6e6e6e6e6e6e6e6e6ea4506f7274cdffffa356736ea6010502000000"
    ),
    "push_node_state": (
        "87a441646472a47f000001ab496e6361726e6174696f6e01a44d657461c0a44e616d65a7676f312e"
        "646331a4506f7274cd1f0aa5537461746503a356736ea6010502000000"
    ),
    "push_pull_header": "83a44a6f696ec3a54e6f64657302ac5573657253746174654c656e00",
    "lzw_compressed": (
        "00ef847163a60c191067decc9993060e0b1002091a44a890219c101007163c987061c387113752f4"
        "7831a3448e153f9a14d9d122c690135baa848992e44b8d31533a5c99d326cf9a1641e204daf0e6c9"
        "91417f222daa54e64e9a4b4b42752af4a853a32c7556cdea73aad6a63ab1f64ceab5ebd0a85bc732"
        "2d4bf6ec55b024d31295eaf62bdbb575e3c275b977665ebe779ffec56bd5ee60ba85f506163b576e"
        "54c668fb22e6da3631e0c38edf06ce1c563267b396fd869eac56f068c85425a3367cdab36ad78b61"
        "1f5ead78b6ecd69b5fe78ebddb76efd60101"
    ),
}

GOLDEN_MESSAGES: dict[str, Ping | IndirectPing | Ack | Suspect | Alive] = {
    "ping": Ping(seq_no=7, node="go1.dc1"),
    "ping_full": Ping(
        seq_no=70000, node="go1.dc1", source_addr=LO, source_port=8302, source_node="py1.dc2"
    ),
    "indirect_ping": IndirectPing(
        seq_no=300,
        target=bytes((127, 0, 0, 2)),
        port=8302,
        node="go2.dc1",
        nack=True,
        source_addr=LO,
        source_port=8302,
        source_node="py1.dc1",
    ),
    "ack": Ack(seq_no=4294967295),
    "suspect": Suspect(incarnation=3, node="go1.dc1", from_="py1.dc1"),
    "alive": Alive(
        incarnation=128,
        node="n" * 40,
        addr=LO,
        port=65535,
        meta=encode_tags({"dc": "dc1", "role": "go"}),
        vsn=VSN,
    ),
}

STATE = PushNodeState(
    name="go1.dc1", addr=LO, port=7946, incarnation=1, state=NodeStateKind.LEFT, vsn=VSN
)


@pytest.mark.parametrize("name", sorted(GOLDEN_MESSAGES))
def test_messages_encode_exactly_like_go(name: str) -> None:
    msg = GOLDEN_MESSAGES[name]
    assert encode_message(msg) == bytes((msg.TYPE,)) + bytes.fromhex(GO_GOLDEN[name])


@pytest.mark.parametrize("name", sorted(GOLDEN_MESSAGES))
def test_go_encodings_decode_to_the_same_message(name: str) -> None:
    msg = GOLDEN_MESSAGES[name]
    packet = bytes((msg.TYPE,)) + bytes.fromhex(GO_GOLDEN[name])
    assert decode_packet(packet) == [msg]


def test_push_pull_encodes_header_then_states_like_go() -> None:
    encoded = encode_push_pull(PushPull(join=True, states=(STATE, STATE)))
    expected = (
        bytes((MessageType.PUSH_PULL,))
        + bytes.fromhex(GO_GOLDEN["push_pull_header"])
        + 2 * bytes.fromhex(GO_GOLDEN["push_node_state"])
    )
    assert encoded == expected
    msg, used = read_stream_message(expected)
    assert used == len(expected)
    assert msg == PushPull(join=True, states=(STATE, STATE))


def test_go_lzw_output_decompresses() -> None:
    compressed = bytes.fromhex(GO_GOLDEN["lzw_compressed"])
    assert lzw_decompress(compressed, max_output=1 << 20) == LZW_PLAIN


def test_lzw_output_cap_is_enforced() -> None:
    compressed = bytes.fromhex(GO_GOLDEN["lzw_compressed"])
    with pytest.raises(GossipDecodeError, match="exceeds"):
        lzw_decompress(compressed, max_output=100)


def test_compound_carries_every_part_and_drops_a_truncated_tail() -> None:
    parts = [encode_message(GOLDEN_MESSAGES["ping"]), encode_message(Nack(seq_no=9))]
    packet = encode_compound(parts)
    assert decode_packet(packet) == [GOLDEN_MESSAGES["ping"], Nack(seq_no=9)]
    # memberlist keeps the parts that arrived whole.
    assert decode_packet(packet[:-1]) == [GOLDEN_MESSAGES["ping"]]


def test_crc_header_is_checked() -> None:
    body = encode_message(Dead(incarnation=2, node="a", from_="a"))
    packet = with_crc(body)
    assert packet[0] == MessageType.HAS_CRC
    assert struct.unpack(">I", packet[1:5])[0] == binascii.crc32(body)
    assert decode_packet(packet) == [Dead(incarnation=2, node="a", from_="a")]
    corrupted = packet[:-1] + bytes((packet[-1] ^ 1,))
    with pytest.raises(GossipDecodeError, match="checksum"):
        decode_packet(corrupted)


def test_compressed_packet_is_unwrapped() -> None:
    # An LZW stream of only literal codes is valid: build one by hand for a ping.
    body = encode_message(Ping(seq_no=1, node="x"))
    bits = 0
    nbits = 0
    out = bytearray()
    width = 9
    codes = list(body)
    # Literal codes grow the table by one each; widths step up at 512.
    for index, code in enumerate([*codes, 257]):
        bits |= code << nbits
        nbits += width
        while nbits >= 8:
            out.append(bits & 0xFF)
            bits >>= 8
            nbits -= 8
        if 258 + index >= (1 << width) - 1 and width < 12:
            width += 1
    if nbits:
        out.append(bits & 0xFF)
    from wanfed_agent.gossip import _msgpack

    wrapper = bytes((MessageType.COMPRESS,)) + _msgpack.encode({"Algo": 0, "Buf": bytes(out)})
    assert decode_packet(wrapper) == [Ping(seq_no=1, node="x")]


def test_user_messages_pass_through() -> None:
    assert decode_packet(encode_message(UserMessage(payload=b"\x00hi"))) == [
        UserMessage(payload=b"\x00hi")
    ]
    stream = encode_stream_message(UserMessage(payload=b"abc"))
    assert read_stream_message(stream) == (UserMessage(payload=b"abc"), len(stream))


def test_unknown_type_and_bad_fields_are_decode_errors() -> None:
    with pytest.raises(GossipDecodeError, match="unsupported gossip message type 99"):
        decode_packet(b"\x63")
    with pytest.raises(GossipDecodeError, match="empty"):
        decode_packet(b"")
    # SeqNo as a string.
    with pytest.raises(GossipDecodeError, match=r"Ack\.SeqNo is not an integer"):
        decode_packet(b"\x02\x81\xa5SeqNo\xa1x")
    # Port beyond 16 bits.
    with pytest.raises(GossipDecodeError, match="out of range"):
        decode_packet(
            encode_message(Ping(seq_no=1, node="a")).replace(b"\xa5SeqNo\x01", b"\xa5SeqNo\xff")
        )
    # A node name that is not UTF-8.
    with pytest.raises(GossipDecodeError, match="UTF-8"):
        decode_packet(b"\x03\x83\xa4From\xa1\xff\xabIncarnation\x01\xa4Node\xa1a")
    # A required field missing.
    with pytest.raises(GossipDecodeError, match="missing"):
        decode_packet(b"\x03\x81\xabIncarnation\x01")
    # Truncated body.
    with pytest.raises(GossipDecodeError, match="truncated"):
        decode_packet(encode_message(GOLDEN_MESSAGES["alive"])[:-3])


def test_stream_reader_waits_for_the_whole_message() -> None:
    full = encode_push_pull(PushPull(join=False, states=(STATE,) * 3, user_state=b"xyz"))
    for cut in range(len(full)):
        with pytest.raises(IncompleteMessage):
            read_stream_message(full[:cut])
    msg, used = read_stream_message(full + b"trailing")
    assert used == len(full)
    assert isinstance(msg, PushPull)
    assert msg.user_state == b"xyz"


def test_stream_reader_refuses_absurd_counts_before_allocating() -> None:
    header = b"\x06\x83\xa4Join\xc2\xa5Nodes\xce\xff\xff\xff\xff\xacUserStateLen\x00"
    with pytest.raises(GossipDecodeError, match="too many nodes"):
        read_stream_message(header)
    # A map claiming 2**32-1 entries with nothing behind it is only a prefix.
    with pytest.raises(IncompleteMessage):
        read_stream_message(b"\x06\xdf\xff\xff\xff\xff")


KEY = base64.b64encode(bytes(range(32))).decode()


def test_encrypted_packets_round_trip_and_need_the_key() -> None:
    ring = Keyring.from_base64(KEY)
    body = encode_message(Ack(seq_no=5))
    sealed = ring.encrypt(body)
    assert sealed[0] == 1
    assert len(sealed) == len(body) + 29
    assert decode_packet(sealed, ring) == [Ack(seq_no=5)]
    other = Keyring([bytes(32)])
    with pytest.raises(GossipDecodeError, match="no installed keys"):
        decode_packet(sealed, other)
    with pytest.raises(GossipDecodeError):
        decode_packet(body, ring)  # plain text refused when encryption is on
    assert decode_packet(body, ring, require_encryption=False) == [Ack(seq_no=5)]


def test_rotating_keys_decrypts_with_any_installed_key() -> None:
    old, new = bytes(range(32)), bytes(range(1, 33))
    sealed = Keyring([old]).encrypt(b"\x02\x81\xa5SeqNo\x05")
    assert decode_packet(sealed, Keyring([new, old])) == [Ack(seq_no=5)]


def test_encrypted_stream_authenticates_its_header() -> None:
    ring = Keyring.from_base64(KEY)
    sealed = encode_push_pull(PushPull(join=True, states=(STATE,)), ring)
    assert sealed[0] == MessageType.ENCRYPT
    assert struct.unpack(">I", sealed[1:5])[0] == len(sealed) - 5
    msg, used = read_stream_message(sealed, ring)
    assert used == len(sealed)
    assert msg == PushPull(join=True, states=(STATE,))
    with pytest.raises(IncompleteMessage):
        read_stream_message(sealed[:-1], ring)
    with pytest.raises(GossipDecodeError, match="not configured"):
        read_stream_message(sealed)
    with pytest.raises(GossipDecodeError, match="not encrypted"):
        read_stream_message(encode_push_pull(PushPull(join=True, states=())), ring)


def test_version_zero_padding_is_accepted() -> None:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    key = bytes(range(32))
    plain = encode_message(Ack(seq_no=1))
    pad = 16 - len(plain) % 16
    nonce = bytes(12)
    sealed = b"\x00" + nonce + AESGCM(key).encrypt(nonce, plain + bytes((pad,)) * pad, None)
    assert decode_packet(sealed, Keyring([key])) == [Ack(seq_no=1)]


def test_bad_keys_are_config_errors() -> None:
    with pytest.raises(GossipConfigError, match="base64"):
        Keyring.from_base64("not base64!")
    with pytest.raises(GossipConfigError, match="16, 24 or 32 bytes"):
        Keyring.from_base64(base64.b64encode(b"short").decode())
    with pytest.raises(GossipConfigError):
        fast_profile("a", "127.0.0.1", 1, encrypt="????")


def test_tags_round_trip_and_reject_garbage() -> None:
    tags = {"dc": "dc1", "role": "consul", "port": "8300", "build": "0.1.0"}
    assert decode_tags(encode_tags(tags)) == tags
    assert decode_tags(b"") == {}
    assert decode_tags(b"plain memberlist meta") == {}
    with pytest.raises(GossipDecodeError):
        decode_tags(b"\xff\x81\xa1a\x01")
    with pytest.raises(GossipConfigError, match="limit 512"):
        encode_tags({"k": "v" * 600})


def test_join_targets_need_a_name_and_an_ip() -> None:
    assert parse_join_target("a.dc1/127.0.0.1:8302", 1) == ("a.dc1", ("127.0.0.1", 8302))
    assert parse_join_target("*.dc2/192.0.2.2", 8302) == ("*.dc2", ("192.0.2.2", 8302))
    assert parse_join_target("b.dc1/[::1]:9000", 1) == ("b.dc1", ("::1", 9000))
    for bad in ("127.0.0.1:8302", "/127.0.0.1", "a/host.example:1", "a/127.0.0.1:0"):
        with pytest.raises(ValueError):
            parse_join_target(bad, 8302)


def test_config_validation_names_the_problem() -> None:
    with pytest.raises(GossipConfigError, match="member name"):
        fast_profile("a/b", "127.0.0.1", 1)
    with pytest.raises(GossipConfigError, match="IP address"):
        fast_profile("a", "localhost", 1)
    with pytest.raises(GossipConfigError, match="probe_timeout"):
        fast_profile("a", "127.0.0.1", 1, probe_timeout=5.0)
    with pytest.raises(GossipConfigError, match="limit 512"):
        fast_profile("a", "127.0.0.1", 1, meta=b"x" * 513)


def test_wan_profile_has_memberlists_wan_defaults() -> None:
    config = wan_profile("s1.dc1", "127.0.0.1", 8302)
    assert (config.probe_interval, config.probe_timeout) == (5.0, 3.0)
    assert config.suspicion_mult == 6
    assert (config.gossip_interval, config.gossip_nodes) == (0.5, 4)
    assert config.push_pull_interval == 60.0
    fast = fast_profile("s1.dc1", "127.0.0.1", 8302, gossip_nodes=5)
    assert fast.probe_interval < config.probe_interval
    assert fast.gossip_nodes == 5


@pytest.mark.parametrize("sealed", [False, True])
def test_stream_collector_returns_the_message_once_whole(sealed: bool) -> None:
    ring = Keyring.from_base64(KEY) if sealed else None
    full = encode_push_pull(PushPull(join=False, states=(STATE,) * 5, user_state=b"u"), ring)
    collector = StreamMessageReader(ring)
    results = [collector.feed(full[i : i + 1]) for i in range(len(full))]
    assert results[:-1] == [None] * (len(full) - 1)
    assert results[-1] == full
    msg, _ = read_stream_message(full, ring)
    assert isinstance(msg, PushPull)
    assert len(msg.states) == 5


def test_stream_collector_refuses_garbage_and_plaintext_when_sealed() -> None:
    with pytest.raises(GossipDecodeError, match="unexpected stream message type"):
        StreamMessageReader().feed(b"\x63")
    ring = Keyring.from_base64(KEY)
    with pytest.raises(GossipDecodeError, match="not encrypted"):
        StreamMessageReader(ring).feed(encode_push_pull(PushPull(join=True, states=())))
