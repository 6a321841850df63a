"""A sans-I/O TLS ClientHello parser for routing on SNI without decrypting.

Theory of operation. A mesh gateway reads the first bytes of a connection,
learns the server name (and the offered ALPN ids) from the ClientHello, picks
a destination, and replays every byte it read to that destination. Nothing is
decrypted; the ClientHello is plaintext.

The parser works in two layers, both incremental so a hello may arrive split at
any byte boundary:

1. Records. Every record must be a handshake record (content type 22). A
   record's payload is appended to the handshake buffer as soon as any of it
   arrives, so a hello may also be fragmented over several records.
2. Handshake. The first message must be a ClientHello. Once its 4-byte header
   is known, the parser knows exactly how many bytes the hello will take and
   rejects it at once if that exceeds the cap. When the last byte arrives the
   body is parsed in one pass.

The cap (``max_size``) bounds every byte the parser holds: record headers plus
the handshake message. Between calls to :meth:`ClientHelloParser.feed` the
parser never holds more than ``max_size`` bytes, whatever the peer claims.
"""

from __future__ import annotations

import enum
import re
import struct
from typing import Final, TypeAlias

import msgspec

from ._errors import HelloError, HelloTooLargeError, MalformedHelloError, NotTLSError

__all__ = [
    "DEFAULT_MAX_HELLO",
    "NEED_MORE",
    "ClientHello",
    "ClientHelloParser",
    "HelloProgress",
    "HelloResult",
    "parse_client_hello",
]

DEFAULT_MAX_HELLO: Final = 16384
"""Ordinary hellos are a few hundred bytes; post-quantum key shares add ~1.2 KiB."""

_RECORD_HEADER: Final = 5
_HANDSHAKE_HEADER: Final = 4
_MAX_RECORD_PAYLOAD: Final = 1 << 14
"""RFC 8446 5.1: a plaintext record never carries more than 2^14 bytes."""

_CONTENT_HANDSHAKE: Final = 22
_HANDSHAKE_CLIENT_HELLO: Final = 1

_EXT_SERVER_NAME: Final = 0
_EXT_ALPN: Final = 16
_EXT_SUPPORTED_VERSIONS: Final = 43
_SNI_HOST_NAME: Final = 0

_U16: Final = struct.Struct(">H")
_CONTROL_BYTES: Final = re.compile(rb"[\x00-\x20\x7f]")
_RECORD: Final = struct.Struct(">BBBH")
_EXT_HEADER: Final = struct.Struct(">HH")


class HelloProgress(enum.Enum):
    """The parser's answer while the ClientHello is still incomplete."""

    NEED_MORE = "need-more"


NEED_MORE: Final = HelloProgress.NEED_MORE


class ClientHello(msgspec.Struct, frozen=True, kw_only=True):
    """What a router needs from a ClientHello, plus the bytes to replay.

    ``raw`` is every byte fed to the parser, including any that followed the
    hello, so writing ``raw`` to the destination reproduces the stream exactly.
    ``hello_length`` is how many of those bytes were the hello's records.
    """

    server_name: str | None
    """The ``host_name`` from the SNI extension, lower case, IDNA A-labels."""
    alpn_protocols: tuple[str, ...]
    """Offered ALPN ids in the client's order (bytes decoded as Latin-1, so lossless)."""
    supported_versions: tuple[int, ...]
    """The supported_versions extension (0x0304 is TLS 1.3); empty when absent."""
    legacy_version: int
    """The version field of the hello body (0x0303 for TLS 1.2 and 1.3 clients)."""
    record_version: int
    """The version field of the first record header (0x0301 or 0x0303 in practice)."""
    raw: bytes
    hello_length: int

    @property
    def offers_tls13(self) -> bool:
        """True when the client offers TLS 1.3."""
        return 0x0304 in self.supported_versions


HelloResult: TypeAlias = ClientHello | HelloProgress


class ClientHelloParser:
    """Feed it the first bytes of a connection until it returns a :class:`ClientHello`.

    :meth:`feed` returns :data:`NEED_MORE` until the hello is complete, or
    raises :class:`~wanfed_proto.NotTLSError`,
    :class:`~wanfed_proto.MalformedHelloError` or
    :class:`~wanfed_proto.HelloTooLargeError` as soon as the bytes seen so far
    prove it. After an error every further ``feed`` raises the same error; the
    caller should close the connection.
    """

    __slots__ = (
        "_error",
        "_handshake",
        "_handshake_total",
        "_max_size",
        "_pos",
        "_promised",
        "_raw",
        "_record_left",
        "_record_version",
        "_records",
        "_result",
    )

    def __init__(self, max_size: int = DEFAULT_MAX_HELLO) -> None:
        if max_size < _RECORD_HEADER + _HANDSHAKE_HEADER:
            raise ValueError(f"max_size must be at least {_RECORD_HEADER + _HANDSHAKE_HEADER}")
        self._max_size = max_size
        self._raw = bytearray()
        self._pos = 0
        self._records = 0
        self._record_left = 0
        self._record_version = 0
        self._promised = 0
        self._handshake = bytearray()
        self._handshake_total: int | None = None
        self._error: HelloError | None = None
        self._result: ClientHello | None = None

    @property
    def max_size(self) -> int:
        """The most bytes this parser will hold for one hello."""
        return self._max_size

    @property
    def buffered(self) -> int:
        """Bytes held so far (zero after an error: they are dropped at once)."""
        return len(self._raw)

    def feed(self, data: bytes | bytearray | memoryview) -> HelloResult:
        """Add received bytes; the hello once it is complete, else :data:`NEED_MORE`."""
        if self._error is not None:
            raise self._error
        if self._result is not None:
            raise RuntimeError("the ClientHello is already complete; stop feeding the parser")
        self._raw += data
        try:
            return self._advance()
        except HelloError as exc:
            self._error = exc
            self._raw = bytearray()
            self._handshake = bytearray()
            raise

    def _advance(self) -> HelloResult:
        raw = self._raw
        end = len(raw)
        pos = self._pos
        while pos < end:
            if self._record_left == 0:
                if not self._check_record_header(raw, pos, end):
                    break
                pos += _RECORD_HEADER
            take = min(self._record_left, end - pos)
            if take == 0:
                break
            self._handshake += raw[pos : pos + take]
            pos += take
            self._record_left -= take
            if self._check_handshake():
                self._pos = pos
                return self._finish(pos)
        self._pos = pos
        return NEED_MORE

    def _check_record_header(self, raw: bytearray, pos: int, end: int) -> bool:
        """Validate the record header at ``pos`` (as much as has arrived); True when complete."""
        first = self._records == 0
        content_type = raw[pos]
        if content_type != _CONTENT_HANDSHAKE:
            if first:
                raise NotTLSError(
                    f"first byte {content_type:#04x} is not a TLS handshake record (0x16)"
                )
            raise MalformedHelloError(
                f"record of content type {content_type} interleaved with the ClientHello"
            )
        available = end - pos
        if available >= 2 and raw[pos + 1] != 3:
            message = f"record version major byte {raw[pos + 1]} is not 3"
            raise NotTLSError(message) if first else MalformedHelloError(message)
        if available >= 3 and raw[pos + 2] > 4:
            message = f"record version 3.{raw[pos + 2]} is not SSL 3.0 to TLS 1.3"
            raise NotTLSError(message) if first else MalformedHelloError(message)
        if available < _RECORD_HEADER:
            return False
        _, major, minor, length = _RECORD.unpack_from(raw, pos)
        if length == 0:
            raise MalformedHelloError("empty handshake record")
        if length > _MAX_RECORD_PAYLOAD:
            raise MalformedHelloError(f"record length {length} exceeds 2^14")
        if first:
            self._record_version = (major << 8) | minor
        self._records += 1
        self._promised += length
        self._record_left = length
        self._check_cap()
        return True

    def _check_handshake(self) -> bool:
        """Validate what is known of the handshake message; True once it is complete."""
        handshake = self._handshake
        total = self._handshake_total
        if total is None:
            if handshake[0] != _HANDSHAKE_CLIENT_HELLO:
                raise MalformedHelloError(
                    f"first handshake message has type {handshake[0]}, not ClientHello (1)"
                )
            if len(handshake) < _HANDSHAKE_HEADER:
                return False
            total = _HANDSHAKE_HEADER + int.from_bytes(handshake[1:4], "big")
            self._handshake_total = total
            self._check_cap()
        if self._promised > total:
            raise MalformedHelloError(
                f"handshake records carry {self._promised - total} bytes after the ClientHello"
            )
        return len(handshake) == total

    def _check_cap(self) -> None:
        """Reject as soon as the bytes already promised cannot fit in the cap."""
        payload = self._promised
        total = self._handshake_total
        if total is not None and total > payload:
            # The rest needs at least one more record, hence one more header.
            payload = total + _RECORD_HEADER
        needed = self._records * _RECORD_HEADER + payload
        if needed > self._max_size:
            size = total if total is not None else payload
            raise HelloTooLargeError(
                f"ClientHello needs at least {needed} bytes ({size} of handshake); "
                f"the limit is {self._max_size}"
            )

    def _finish(self, hello_end: int) -> ClientHello:
        fields = _parse_body(memoryview(self._handshake)[_HANDSHAKE_HEADER:])
        server_name, alpn, versions, legacy_version = fields
        self._result = ClientHello(
            server_name=server_name,
            alpn_protocols=alpn,
            supported_versions=versions,
            legacy_version=legacy_version,
            record_version=self._record_version,
            raw=bytes(self._raw),
            hello_length=hello_end,
        )
        self._handshake = bytearray()
        return self._result


def parse_client_hello(data: bytes, max_size: int = DEFAULT_MAX_HELLO) -> ClientHello:
    """Parse a complete ClientHello from ``data``; a truncated one is malformed."""
    parser = ClientHelloParser(max_size)
    result = parser.feed(data)
    if isinstance(result, ClientHello):
        return result
    raise MalformedHelloError(f"ClientHello is truncated after {len(data)} bytes")


_Body: TypeAlias = tuple[str | None, tuple[str, ...], tuple[int, ...], int]


def _parse_body(body: memoryview) -> _Body:
    """Parse a complete ClientHello body (RFC 8446 4.1.2, RFC 5246 7.4.1.2)."""
    end = len(body)
    # legacy_version (2) + random (32) + session id length (1)
    if end < 35:
        raise MalformedHelloError("ClientHello body is shorter than its fixed fields")
    legacy_version = _U16.unpack_from(body, 0)[0]
    pos = 34
    session_id_len = body[pos]
    if session_id_len > 32:
        raise MalformedHelloError(f"session id length {session_id_len} exceeds 32")
    pos += 1 + session_id_len
    if pos > end:
        raise MalformedHelloError("session id overruns the ClientHello")
    pos, suites_len = _vector16(body, pos, end, "cipher_suites")
    if suites_len == 0 or suites_len % 2:
        raise MalformedHelloError(f"cipher_suites length {suites_len} is not a positive even")
    pos += suites_len
    if pos >= end:
        raise MalformedHelloError("ClientHello truncated before compression_methods")
    compression_len = body[pos]
    if compression_len == 0:
        raise MalformedHelloError("compression_methods is empty")
    pos += 1 + compression_len
    if pos > end:
        raise MalformedHelloError("compression_methods overruns the ClientHello")
    server_name: str | None = None
    alpn: tuple[str, ...] = ()
    versions: tuple[int, ...] = ()
    if pos == end:
        # Hellos before TLS 1.2 may omit the extensions block altogether.
        return server_name, alpn, versions, legacy_version
    pos, extensions_len = _vector16(body, pos, end, "extensions")
    if pos + extensions_len != end:
        raise MalformedHelloError(
            f"{end - pos - extensions_len} stray bytes after the extensions block"
        )
    # The loop runs once per extension (15-20 in a browser hello): keep it lean.
    ext_types: list[int] = []
    unpack_header = _EXT_HEADER.unpack_from
    while pos < end:
        if end - pos < 4:
            raise MalformedHelloError("extension header truncated")
        ext_type, ext_len = unpack_header(body, pos)
        pos += 4
        stop = pos + ext_len
        if stop > end:
            raise MalformedHelloError(f"extension {ext_type} length {ext_len} overruns the block")
        ext_types.append(ext_type)
        if ext_type == _EXT_SERVER_NAME:
            server_name = _parse_server_name(body[pos:stop])
        elif ext_type == _EXT_ALPN:
            alpn = _parse_alpn(body[pos:stop])
        elif ext_type == _EXT_SUPPORTED_VERSIONS:
            versions = _parse_supported_versions(body[pos:stop])
        pos = stop
    if len(set(ext_types)) != len(ext_types):
        raise MalformedHelloError(f"extension {_first_duplicate(ext_types)} appears twice")
    return server_name, alpn, versions, legacy_version


def _first_duplicate(values: list[int]) -> int:
    seen: set[int] = set()
    for value in values:
        if value in seen:
            return value
        seen.add(value)
    raise AssertionError("no duplicate")  # pragma: no cover - callers checked


def _vector16(data: memoryview, pos: int, end: int, what: str) -> tuple[int, int]:
    """Read a 2-byte length at ``pos``; return where the vector starts and its length."""
    if end - pos < 2:
        raise MalformedHelloError(f"{what} length truncated")
    length: int = _U16.unpack_from(data, pos)[0]
    pos += 2
    if pos + length > end:
        raise MalformedHelloError(f"{what} length {length} overruns its enclosing block")
    return pos, length


def _parse_server_name(ext: memoryview) -> str | None:
    """The host_name entry of a server_name extension (RFC 6066 3); other types are skipped."""
    end = len(ext)
    if end == 0:
        # A server echoes an empty server_name; a client must not send one,
        # but there is no name to route on either way.
        raise MalformedHelloError("server_name extension is empty")
    pos, list_len = _vector16(ext, 0, end, "server_name list")
    if pos + list_len != end:
        raise MalformedHelloError("server_name list length does not match the extension")
    if list_len == 0:
        raise MalformedHelloError("server_name list is empty")
    host_name: str | None = None
    while pos < end:
        name_type = ext[pos]
        pos, name_len = _vector16(ext, pos + 1, end, "server name")
        name = ext[pos : pos + name_len]
        pos += name_len
        if name_type != _SNI_HOST_NAME:
            continue
        if host_name is not None:
            raise MalformedHelloError("server_name carries two host names")
        host_name = _decode_host_name(bytes(name))
    return host_name


def _decode_host_name(name: bytes) -> str:
    """Lower-case ASCII (IDNA A-labels) from the wire form of a host name."""
    if not name:
        raise MalformedHelloError("server_name host name is empty")
    if name.isascii():
        if _CONTROL_BYTES.search(name) is not None:
            raise MalformedHelloError("server_name host name contains control characters")
        text = name.decode("ascii").lower()
        if "xn--" in text:
            try:
                text.encode("ascii").decode("idna")
            except UnicodeError:
                raise MalformedHelloError(
                    f"server_name host name {text!r} is not valid IDNA"
                ) from None
        return text
    # RFC 6066 wants A-labels, but some clients send UTF-8: accept it if it
    # converts, so the router sees one spelling per name.
    try:
        return name.decode("utf-8").encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise MalformedHelloError(
            "server_name host name is neither ASCII nor a valid UTF-8 IDNA name"
        ) from None


def _parse_alpn(ext: memoryview) -> tuple[str, ...]:
    """The protocol_name_list of an ALPN extension (RFC 7301 3.1)."""
    end = len(ext)
    pos, list_len = _vector16(ext, 0, end, "ALPN list")
    if pos + list_len != end:
        raise MalformedHelloError("ALPN list length does not match the extension")
    if list_len == 0:
        raise MalformedHelloError("ALPN list is empty")
    protocols: list[str] = []
    while pos < end:
        length = ext[pos]
        pos += 1
        if length == 0:
            raise MalformedHelloError("ALPN list contains an empty protocol name")
        if pos + length > end:
            raise MalformedHelloError("ALPN protocol name overruns the list")
        protocols.append(bytes(ext[pos : pos + length]).decode("latin-1"))
        pos += length
    return tuple(protocols)


def _parse_supported_versions(ext: memoryview) -> tuple[int, ...]:
    """The client's supported_versions list (RFC 8446 4.2.1)."""
    if not ext:
        raise MalformedHelloError("supported_versions extension is empty")
    length = ext[0]
    if length + 1 != len(ext):
        raise MalformedHelloError("supported_versions length does not match the extension")
    if length == 0 or length % 2:
        raise MalformedHelloError(f"supported_versions length {length} is not a positive even")
    return struct.unpack_from(f">{length // 2}H", ext, 1)
