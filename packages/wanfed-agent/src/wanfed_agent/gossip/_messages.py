"""memberlist's wire messages: types, field names and framing.

A packet (UDP, or one length-prefixed frame through a gateway) is one type byte
followed by a msgpack map whose keys are the Go struct field names, or a
*compound* (type 7: a part count, one big-endian u16 length per part, then the
parts), possibly wrapped in a CRC32 header (type 12) or LZW compression (type
9), and, with a keyring, sealed whole with AES-GCM.

A stream (TCP, or a TLS stream through a gateway) carries one request and one
reply. Unencrypted, a message is a type byte followed by msgpack values read
back to back with no length prefix — a push/pull is a header map, then that many
node-state maps, then the raw user state — so the reader must understand
msgpack to know where a message ends. Encrypted, it is type 10, a u32 length and
the sealed message.

Every decoder here takes bytes from unauthenticated peers (the seal is checked
first, but a refused packet has still been read), so each is bounded: a packet
is at most :data:`MAX_PACKET_BYTES` and nests wrappers at most
:data:`_MAX_NESTING` deep; a stream message at most
:data:`MAX_STREAM_MESSAGE_BYTES`, with node counts and lengths checked against
that before any loop or allocation; node metadata at most
:data:`META_MAX_SIZE`; and a packet or stream message is decompressed at most
once, with the output capped by size and by ratio (:mod:`._lzw`), so a small
forged message cannot make us expand a bomb inside a bomb.

Everything here is pure: bytes in, frozen structs out, or the reverse.
"""

from __future__ import annotations

import binascii
import enum
import functools
import struct
from collections.abc import Sequence
from typing import Any, ClassVar

import msgspec

from . import _msgpack
from ._errors import GossipDecodeError, IncompleteMessage
from ._keyring import ENCRYPT_MSG, Keyring
from ._lzw import lzw_decompress

__all__ = [
    "MAX_PACKET_BYTES",
    "MAX_PUSH_STATE_BYTES",
    "MAX_STREAM_MESSAGE_BYTES",
    "META_MAX_SIZE",
    "Ack",
    "Alive",
    "Dead",
    "ErrorResponse",
    "IndirectPing",
    "Message",
    "MessageType",
    "Nack",
    "NodeStateKind",
    "Ping",
    "PushNodeState",
    "PushPull",
    "StreamMessageReader",
    "Suspect",
    "UserMessage",
    "decode_packet",
    "encode_compound",
    "encode_message",
    "encode_push_pull",
    "encode_stream_message",
    "read_stream_message",
    "seal_packet",
    "with_crc",
]

META_MAX_SIZE = 512
MAX_PUSH_STATE_BYTES = 20 * 1024 * 1024
MAX_PACKET_BYTES = 4 * 1024 * 1024
# A stream message is at most the sealed push/pull cap plus its 5-byte header.
MAX_STREAM_MESSAGE_BYTES = MAX_PUSH_STATE_BYTES + 5
_MAX_NESTING = 4


class MessageType(enum.IntEnum):
    PING = 0
    INDIRECT_PING = 1
    ACK = 2
    SUSPECT = 3
    ALIVE = 4
    DEAD = 5
    PUSH_PULL = 6
    COMPOUND = 7
    USER = 8
    COMPRESS = 9
    ENCRYPT = 10
    NACK = 11
    HAS_CRC = 12
    ERROR = 13


class NodeStateKind(enum.IntEnum):
    ALIVE = 0
    SUSPECT = 1
    DEAD = 2
    LEFT = 3


# Field kinds for the schema tables below: how a value is checked on decode
# and written on encode.
_UINT_LIMITS = {"u8": 0xFF, "u16": 0xFFFF, "u32": 0xFFFFFFFF, "int": (1 << 63) - 1}


_Schema = tuple[tuple[str, str, str, bool], ...]
"""``(attribute, Go field name, kind, omitempty)`` per field, in declaration order."""

_SOURCE_FIELDS: _Schema = (
    ("source_addr", "SourceAddr", "bytes", True),
    ("source_port", "SourcePort", "u16", True),
    ("source_node", "SourceNode", "str", True),
)
"""Who sent a ping: the answer goes to this advertised address, not to wherever the
packet seemed to come from."""


class _Wire(msgspec.Struct, frozen=True):
    """Base of every message: subclasses declare their type byte and schema.

    ``_FIELDS`` is ``(attribute, Go field name, kind, omitempty)``; kinds are
    ``u8``/``u16``/``u32``/``int`` (range-checked integers), ``bool``, ``str``
    (UTF-8 text), ``bytes`` (raw, any content) and ``meta`` (raw, at most
    :data:`META_MAX_SIZE` bytes).
    """

    TYPE: ClassVar[MessageType]
    _FIELDS: ClassVar[_Schema]


class Ping(_Wire, frozen=True, kw_only=True):
    TYPE: ClassVar[MessageType] = MessageType.PING
    _FIELDS: ClassVar[_Schema] = (
        ("seq_no", "SeqNo", "u32", False),
        ("node", "Node", "str", False),
        *_SOURCE_FIELDS,
    )
    seq_no: int
    node: str = ""
    source_addr: bytes = b""
    source_port: int = 0
    source_node: str = ""


class IndirectPing(_Wire, frozen=True, kw_only=True):
    TYPE: ClassVar[MessageType] = MessageType.INDIRECT_PING
    _FIELDS: ClassVar[_Schema] = (
        ("seq_no", "SeqNo", "u32", False),
        ("target", "Target", "bytes", False),
        ("port", "Port", "u16", False),
        ("node", "Node", "str", False),
        ("nack", "Nack", "bool", False),
        *_SOURCE_FIELDS,
    )
    seq_no: int
    target: bytes
    port: int
    node: str = ""
    nack: bool = False
    source_addr: bytes = b""
    source_port: int = 0
    source_node: str = ""


class Ack(_Wire, frozen=True, kw_only=True):
    TYPE: ClassVar[MessageType] = MessageType.ACK
    _FIELDS: ClassVar[_Schema] = (
        ("seq_no", "SeqNo", "u32", False),
        ("payload", "Payload", "bytes", False),
    )
    seq_no: int
    payload: bytes = b""


class Nack(_Wire, frozen=True, kw_only=True):
    TYPE: ClassVar[MessageType] = MessageType.NACK
    _FIELDS: ClassVar[_Schema] = (("seq_no", "SeqNo", "u32", False),)
    seq_no: int


class ErrorResponse(_Wire, frozen=True, kw_only=True):
    TYPE: ClassVar[MessageType] = MessageType.ERROR
    _FIELDS: ClassVar[_Schema] = (("error", "Error", "str", False),)
    error: str


class _Accusation(_Wire, frozen=True, kw_only=True):
    """The body suspect and dead share: who, at which incarnation, and who says so."""

    _FIELDS: ClassVar[_Schema] = (
        ("incarnation", "Incarnation", "u32", False),
        ("node", "Node", "str", False),
        ("from_", "From", "str", False),
    )
    incarnation: int
    node: str
    from_: str


class Suspect(_Accusation, frozen=True, kw_only=True):
    TYPE: ClassVar[MessageType] = MessageType.SUSPECT


class Dead(_Accusation, frozen=True, kw_only=True):
    """``from_ == node`` means the member left; anything else, that it failed."""

    TYPE: ClassVar[MessageType] = MessageType.DEAD


class Alive(_Wire, frozen=True, kw_only=True):
    TYPE: ClassVar[MessageType] = MessageType.ALIVE
    _FIELDS: ClassVar[_Schema] = (
        ("incarnation", "Incarnation", "u32", False),
        ("node", "Node", "str", False),
        ("addr", "Addr", "bytes", False),
        ("port", "Port", "u16", False),
        ("meta", "Meta", "meta", False),
        ("vsn", "Vsn", "bytes", False),
    )
    incarnation: int
    node: str
    addr: bytes
    port: int
    meta: bytes = b""
    vsn: bytes = b""


class PushNodeState(_Wire, frozen=True, kw_only=True):
    TYPE: ClassVar[MessageType] = MessageType.PUSH_PULL
    _FIELDS: ClassVar[_Schema] = (
        ("name", "Name", "str", False),
        ("addr", "Addr", "bytes", False),
        ("port", "Port", "u16", False),
        ("meta", "Meta", "meta", False),
        ("incarnation", "Incarnation", "u32", False),
        ("state", "State", "u8", False),
        ("vsn", "Vsn", "bytes", False),
    )
    name: str
    addr: bytes
    port: int
    meta: bytes = b""
    incarnation: int = 0
    state: int = NodeStateKind.ALIVE
    vsn: bytes = b""


class _PushPullHeader(_Wire, frozen=True, kw_only=True):
    TYPE: ClassVar[MessageType] = MessageType.PUSH_PULL
    _FIELDS: ClassVar[_Schema] = (
        ("nodes", "Nodes", "int", False),
        ("user_state_len", "UserStateLen", "int", False),
        ("join", "Join", "bool", False),
    )
    nodes: int
    user_state_len: int = 0
    join: bool = False


class _UserMsgHeader(_Wire, frozen=True, kw_only=True):
    TYPE: ClassVar[MessageType] = MessageType.USER
    _FIELDS: ClassVar[_Schema] = (("user_msg_len", "UserMsgLen", "int", False),)
    user_msg_len: int


class _Compress(_Wire, frozen=True, kw_only=True):
    TYPE: ClassVar[MessageType] = MessageType.COMPRESS
    _FIELDS: ClassVar[_Schema] = (
        ("algo", "Algo", "u8", False),
        ("buf", "Buf", "bytes", False),
    )
    algo: int
    buf: bytes


class PushPull(msgspec.Struct, frozen=True, kw_only=True):
    """A whole push/pull exchange message: our view of every node."""

    join: bool
    states: tuple[PushNodeState, ...]
    user_state: bytes = b""


class UserMessage(msgspec.Struct, frozen=True, kw_only=True):
    """An application payload memberlist only carries (type 8)."""

    payload: bytes


Message = Ping | IndirectPing | Ack | Nack | Suspect | Alive | Dead | ErrorResponse | UserMessage

_PACKET_TYPES: dict[int, type[_Wire]] = {
    cls.TYPE: cls for cls in (Ping, IndirectPing, Ack, Nack, Suspect, Alive, Dead, ErrorResponse)
}


# -- encoding -----------------------------------------------------------------


def _to_map(msg: _Wire) -> dict[str, Any]:
    # Go's codec writes struct fields as a map sorted by field name and leaves
    # out "omitempty" fields that hold their zero value.
    fields: dict[str, Any] = {}
    for attr, wire, kind, omit in sorted(msg._FIELDS, key=lambda f: f[1]):
        value = getattr(msg, attr)
        if omit and not value:
            continue
        if kind in ("bytes", "meta") and not value:
            value = None  # a nil Go slice
        fields[wire] = value
    return fields


def encode_message(msg: Message) -> bytes:
    """One message as it travels alone: type byte then msgpack body."""
    if isinstance(msg, UserMessage):
        return bytes((MessageType.USER,)) + msg.payload
    return bytes((msg.TYPE,)) + _msgpack.encode(_to_map(msg))


def encode_compound(parts: Sequence[bytes]) -> bytes:
    """Several encoded messages in one packet (at most 255, each < 64 KiB)."""
    if not 0 < len(parts) <= 255:
        raise ValueError("a compound message holds 1 to 255 parts")
    out = bytearray((MessageType.COMPOUND, len(parts)))
    for part in parts:
        if len(part) > 0xFFFF:
            raise ValueError("a compound part must be shorter than 64 KiB")
        out += struct.pack(">H", len(part))
    for part in parts:
        out += part
    return bytes(out)


def with_crc(packet: bytes) -> bytes:
    """Prefix a CRC32 header; sent to peers that speak protocol version ≥ 5."""
    return struct.pack(">BI", MessageType.HAS_CRC, binascii.crc32(packet)) + packet


def seal_packet(packet: bytes, keyring: Keyring | None) -> bytes:
    return packet if keyring is None else keyring.encrypt(packet)


def encode_push_pull(msg: PushPull, keyring: Keyring | None = None) -> bytes:
    """A push/pull stream message, sealed when a keyring is configured."""
    header = _PushPullHeader(
        nodes=len(msg.states), user_state_len=len(msg.user_state), join=msg.join
    )
    out = bytearray((MessageType.PUSH_PULL,))
    out += _msgpack.encode(_to_map(header))
    for state in msg.states:
        out += _encode_state(state)
    out += msg.user_state
    return _seal_stream(bytes(out), keyring)


@functools.lru_cache(maxsize=8192)
def _encode_state(state: PushNodeState) -> bytes:
    # A push/pull repeats every node's state, which rarely changes between
    # exchanges; states are immutable, so their encodings can be reused.
    return _msgpack.encode(_to_map(state))


def encode_stream_message(msg: Message, keyring: Keyring | None = None) -> bytes:
    """A single ping, ack, error or user message sent over a stream."""
    if isinstance(msg, UserMessage):
        header = _to_map(_UserMsgHeader(user_msg_len=len(msg.payload)))
        body = bytes((MessageType.USER,)) + _msgpack.encode(header) + msg.payload
    else:
        body = encode_message(msg)
    return _seal_stream(body, keyring)


def _seal_stream(body: bytes, keyring: Keyring | None) -> bytes:
    return body if keyring is None else keyring.seal_stream(body)


# -- decoding -----------------------------------------------------------------


def _from_map(cls: type[_Wire], raw: Any) -> Any:
    if not isinstance(raw, dict):
        raise GossipDecodeError(f"{cls.__name__} body is not a msgpack map")
    by_name: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(key, bytes):
            by_name[key.decode("utf-8", "replace")] = value
    kwargs: dict[str, Any] = {}
    for attr, wire, kind, _omit in cls._FIELDS:
        if wire not in by_name or by_name[wire] is None:
            continue
        kwargs[attr] = _check(cls, wire, kind, by_name[wire])
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise GossipDecodeError(f"{cls.__name__} is missing a field: {exc}") from None


def _check(cls: type[_Wire], wire: str, kind: str, value: Any) -> Any:
    where = f"{cls.__name__}.{wire}"
    if kind in _UINT_LIMITS:
        if isinstance(value, bool) or not isinstance(value, int):
            raise GossipDecodeError(f"{where} is not an integer")
        if not 0 <= value <= _UINT_LIMITS[kind]:
            raise GossipDecodeError(f"{where} is out of range: {value}")
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise GossipDecodeError(f"{where} is not a boolean")
        return value
    if not isinstance(value, bytes):
        raise GossipDecodeError(f"{where} is not a string")
    if kind == "str":
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise GossipDecodeError(f"{where} is not valid UTF-8") from None
    if kind == "meta" and len(value) > META_MAX_SIZE:
        # memberlist's senders never exceed it; a member's metadata is kept for as
        # long as the member, so a larger one would be memory an attacker chooses.
        raise GossipDecodeError(f"{where} is {len(value)} bytes, limit {META_MAX_SIZE}")
    return value


def _decode_body(
    cls: type[_Wire], buf: bytes | bytearray | memoryview, pos: int
) -> tuple[Any, int]:
    raw, end = _msgpack.decode_one(buf, pos)
    return _from_map(cls, raw), end


def decode_packet(
    data: bytes, keyring: Keyring | None = None, *, require_encryption: bool = True
) -> list[Message]:
    """Every message in one received packet, unwrapping seal, CRC, compression, compound.

    With a keyring and ``require_encryption`` an unsealed packet is refused; that
    is memberlist's "verify incoming" behaviour.
    """
    if len(data) > MAX_PACKET_BYTES:
        raise GossipDecodeError(
            f"gossip packet size {len(data)} exceeds threshold of {MAX_PACKET_BYTES}"
        )
    if keyring is not None:
        try:
            data = keyring.decrypt(data)
        except GossipDecodeError:
            if require_encryption:
                raise
    decoding = _PacketDecoding()
    _decode_command(data, decoding, 0)
    return decoding.messages


class _PacketDecoding:
    """One packet's decode so far: the messages found, and whether it was decompressed."""

    __slots__ = ("decompressed", "messages")

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.decompressed = False


def _decode_command(data: bytes, decoding: _PacketDecoding, depth: int) -> None:
    if depth > _MAX_NESTING:
        raise GossipDecodeError("gossip packet nests wrappers too deeply")
    if not data:
        raise GossipDecodeError("empty gossip message")
    kind = data[0]
    body = data[1:]
    out = decoding.messages
    if kind == MessageType.HAS_CRC:
        if len(body) < 4:
            raise GossipDecodeError("truncated CRC header")
        (expected,) = struct.unpack_from(">I", body)
        if binascii.crc32(body[4:]) != expected:
            raise GossipDecodeError("invalid checksum for gossip packet")
        _decode_command(body[4:], decoding, depth + 1)
    elif kind == MessageType.COMPOUND:
        for part in _split_compound(body):
            _decode_command(part, decoding, depth + 1)
    elif kind == MessageType.COMPRESS:
        # memberlist compresses a whole packet once; several compressed parts (or a
        # compressed part inside one) would multiply the work a small packet buys.
        if decoding.decompressed:
            raise GossipDecodeError("gossip packet holds more than one compressed message")
        decoding.decompressed = True
        _decode_command(_decompress(body, 0, MAX_PACKET_BYTES)[0], decoding, depth + 1)
    elif kind == MessageType.USER:
        out.append(UserMessage(payload=body))
    elif kind in _PACKET_TYPES:
        if len(data) <= _CACHEABLE_PART:
            out.append(_decode_part(data))
        else:
            out.append(_decode_part.__wrapped__(data))
    else:
        raise GossipDecodeError(f"unsupported gossip message type {kind}")


# Only parts the size of a UDP packet are cached: a peer sending unique 64 KiB
# parts must not be able to pin hundreds of megabytes in the cache.
_CACHEABLE_PART = 1500


@functools.lru_cache(maxsize=4096)
def _decode_part(data: bytes) -> Any:
    # Piggybacked broadcasts arrive many times over, byte for byte the same, and
    # decoded messages are immutable: decoding each distinct part once is safe.
    cls = _PACKET_TYPES[data[0]]
    try:
        msg, _end = _decode_body(cls, data, 1)
    except IncompleteMessage as exc:
        # A packet is complete by definition: truncation here is corruption.
        raise GossipDecodeError(f"truncated {cls.__name__}: {exc}") from None
    return msg


def _split_compound(body: bytes) -> list[bytes]:
    if not body:
        raise GossipDecodeError("missing compound length byte")
    count = body[0]
    if len(body) < 1 + 2 * count:
        raise GossipDecodeError("truncated compound length table")
    lengths = struct.unpack_from(f">{count}H", body, 1)
    pos = 1 + 2 * count
    parts: list[bytes] = []
    for length in lengths:
        if pos + length > len(body):
            break  # memberlist drops truncated trailing parts and keeps the rest
        parts.append(body[pos : pos + length])
        pos += length
    return parts


def _decompress(
    buf: bytes | bytearray | memoryview, pos: int, max_output: int
) -> tuple[bytes, int]:
    wrapper, end = _decode_body(_Compress, buf, pos)
    if wrapper.algo != 0:
        raise GossipDecodeError(f"unsupported compression algorithm {wrapper.algo}")
    return lzw_decompress(wrapper.buf, max_output=max_output), end


StreamMessage = PushPull | Ping | Ack | ErrorResponse | UserMessage


def read_stream_message(
    buf: bytes | bytearray, keyring: Keyring | None = None, *, require_encryption: bool = True
) -> tuple[StreamMessage, int]:
    """Parse the one message at the start of a stream buffer.

    Returns the message and how many bytes it used. Raises
    :class:`IncompleteMessage` while ``buf`` is only a prefix, so an adapter can
    read until this succeeds without knowing the framing.
    """
    if not buf:
        raise IncompleteMessage("empty stream")
    if buf[0] == ENCRYPT_MSG:
        if keyring is None:
            raise GossipDecodeError("remote state is encrypted and encryption is not configured")
        if len(buf) < 5:
            raise IncompleteMessage("truncated encrypted stream header")
        (length,) = struct.unpack_from(">I", buf, 1)
        if length > MAX_PUSH_STATE_BYTES:
            raise GossipDecodeError(f"remote node state is larger than limit ({length})")
        if len(buf) < 5 + length:
            raise IncompleteMessage("encrypted stream message is truncated")
        plain = keyring.decrypt(bytes(buf[5 : 5 + length]), bytes(buf[:5]))
        msg, _ = _read_plain(plain, complete=True, may_decompress=True)
        return msg, 5 + length
    if keyring is not None and require_encryption:
        raise GossipDecodeError("encryption is configured but remote state is not encrypted")
    return _read_plain(buf, complete=False, may_decompress=True)


def _read_plain(
    buf: bytes | bytearray, *, complete: bool, may_decompress: bool
) -> tuple[StreamMessage, int]:
    try:
        kind = buf[0] if buf else None
        if kind is None:
            raise IncompleteMessage("empty stream message")
        if kind == MessageType.COMPRESS:
            # Once only: layers of compression inside compression would each
            # multiply the output, and recurse as deep as the sender likes.
            if not may_decompress:
                raise GossipDecodeError("compressed stream message inside a compressed one")
            inner, end = _decompress(buf, 1, MAX_PUSH_STATE_BYTES)
            msg, _ = _read_plain(inner, complete=True, may_decompress=False)
            return msg, end
        if kind == MessageType.PUSH_PULL:
            return _read_push_pull(buf)
        if kind == MessageType.USER:
            header, pos = _decode_body(_UserMsgHeader, buf, 1)
            if header.user_msg_len > MAX_PUSH_STATE_BYTES:
                raise GossipDecodeError(
                    f"remote user message is larger than limit ({header.user_msg_len})"
                )
            end = pos + header.user_msg_len
            if end > len(buf):
                raise IncompleteMessage("user message is truncated")
            return UserMessage(payload=bytes(buf[pos:end])), end
        if kind in (MessageType.PING, MessageType.ACK, MessageType.ERROR):
            return _decode_body(_PACKET_TYPES[kind], buf, 1)
        raise GossipDecodeError(f"unexpected stream message type {kind}")
    except IncompleteMessage as exc:
        if complete:
            raise GossipDecodeError(f"truncated stream message: {exc}") from None
        raise


def _check_push_pull_header(header: _PushPullHeader) -> None:
    if header.user_state_len > MAX_PUSH_STATE_BYTES:
        raise GossipDecodeError(f"remote user state is larger than limit ({header.user_state_len})")
    # Each node state is a map of at least a few bytes; a count larger than the
    # byte cap is a lie we refuse before looping.
    if header.nodes > MAX_PUSH_STATE_BYTES // 8:
        raise GossipDecodeError(f"push/pull announces too many nodes ({header.nodes})")


def _read_push_pull(buf: bytes | bytearray) -> tuple[PushPull, int]:
    header, pos = _decode_body(_PushPullHeader, buf, 1)
    _check_push_pull_header(header)
    states: list[PushNodeState] = []
    for _ in range(header.nodes):
        state, pos = _decode_body(PushNodeState, buf, pos)
        states.append(state)
    end = pos + header.user_state_len
    if end > len(buf):
        raise IncompleteMessage("push/pull user state is truncated")
    return PushPull(join=header.join, states=tuple(states), user_state=bytes(buf[pos:end])), end


class StreamMessageReader:
    """Collects one stream message from chunks as they arrive.

    Re-parsing the whole buffer after every chunk would be quadratic for a big
    push/pull; this keeps what it has already decoded (the header and each
    whole node state) and only reads new bytes, and for sealed messages waits
    on the length prefix. Other messages are small or fail fast.
    """

    __slots__ = ("_buf", "_header", "_keyring", "_pos", "_require", "_states")

    def __init__(self, keyring: Keyring | None = None, *, require_encryption: bool = True) -> None:
        self._keyring = keyring
        self._require = require_encryption
        self._buf = bytearray()
        self._header: _PushPullHeader | None = None
        self._states: list[PushNodeState] = []
        self._pos = 0

    def feed(self, data: bytes) -> bytes | None:
        """Add bytes; return the whole first message once it is complete."""
        self._buf += data
        if len(self._buf) > MAX_STREAM_MESSAGE_BYTES:
            raise GossipDecodeError(
                f"gossip stream message exceeds {MAX_STREAM_MESSAGE_BYTES} bytes"
            )
        buf = self._buf
        if not buf:
            return None
        if buf[0] == MessageType.PUSH_PULL and (self._keyring is None or not self._require):
            end = self._resume_push_pull()
        else:
            try:
                _msg, end = read_stream_message(
                    buf, self._keyring, require_encryption=self._require
                )
            except IncompleteMessage:
                return None
        return None if end is None else bytes(buf[:end])

    def _resume_push_pull(self) -> int | None:
        buf = self._buf
        try:
            if self._header is None:
                header, pos = _decode_body(_PushPullHeader, buf, 1)
                _check_push_pull_header(header)
                self._header, self._pos = header, pos
            while len(self._states) < self._header.nodes:
                state, self._pos = _decode_body(PushNodeState, buf, self._pos)
                self._states.append(state)
        except IncompleteMessage:
            return None
        end = self._pos + self._header.user_state_len
        return end if end <= len(buf) else None
