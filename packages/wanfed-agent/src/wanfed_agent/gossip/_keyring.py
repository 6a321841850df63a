"""Symmetric encryption of gossip traffic, laid out as memberlist's keyring does.

Every encrypted payload is ``version byte | 12-byte nonce | AES-GCM ciphertext
and 16-byte tag``. Version 1 (what protocol versions ≥ 2 send) encrypts the
message as is; version 0 pads it PKCS#7-style first and is still accepted on
receive. Packets are sealed without associated data; a stream message is
prefixed by the encrypt type byte and a 4-byte big-endian length, and those five
bytes are the associated data, so a peer cannot splice another length in.

The first key encrypts; every key is tried on receive, which is what lets an
operator rotate keys without a flag day.
"""

from __future__ import annotations

import base64
import binascii
import os
import struct
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ._errors import GossipConfigError, GossipDecodeError

__all__ = ["ENCRYPT_MSG", "Keyring"]

ENCRYPT_MSG = 10
_NONCE = 12
_TAG = 16
_VALID_KEY_SIZES = (16, 24, 32)


class Keyring:
    """The keys a member can decrypt with; the first one encrypts."""

    __slots__ = ("_ciphers", "_keys")

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise GossipConfigError("a keyring needs at least one key")
        for key in keys:
            if len(key) not in _VALID_KEY_SIZES:
                raise GossipConfigError(
                    f"gossip encryption key must be 16, 24 or 32 bytes, not {len(key)}"
                )
        self._keys = tuple(bytes(k) for k in keys)
        self._ciphers = tuple(AESGCM(k) for k in self._keys)

    @classmethod
    def from_base64(cls, *encoded: str) -> Keyring:
        """Build from the operator-facing ``encrypt`` setting (base64 keys)."""
        keys = []
        for text in encoded:
            try:
                keys.append(base64.b64decode(text, validate=True))
            except (binascii.Error, ValueError) as exc:
                raise GossipConfigError(
                    f"gossip encryption key is not valid base64: {exc}"
                ) from exc
        return cls(keys)

    @property
    def primary_key(self) -> bytes:
        return self._keys[0]

    def encrypt(self, plaintext: bytes, associated: bytes | None = None) -> bytes:
        nonce = os.urandom(_NONCE)
        return b"\x01" + nonce + self._ciphers[0].encrypt(nonce, plaintext, associated)

    def decrypt(self, payload: bytes, associated: bytes | None = None) -> bytes:
        if not payload:
            raise GossipDecodeError("cannot decrypt an empty payload")
        version = payload[0]
        if version > 1:
            raise GossipDecodeError(f"unsupported encryption version {version}")
        minimum = 1 + _NONCE + _TAG + (16 if version == 0 else 0)
        if len(payload) < minimum:
            raise GossipDecodeError(f"payload is too small to decrypt: {len(payload)}")
        nonce = payload[1 : 1 + _NONCE]
        sealed = payload[1 + _NONCE :]
        for cipher in self._ciphers:
            try:
                plain = cipher.decrypt(nonce, sealed, associated)
            except InvalidTag:
                continue
            return _unpad(plain) if version == 0 else plain
        raise GossipDecodeError("no installed keys could decrypt the message")

    def seal_stream(self, plaintext: bytes) -> bytes:
        """Frame a stream message: type byte, sealed length, sealed payload."""
        length = 1 + _NONCE + len(plaintext) + _TAG
        header = struct.pack(">BI", ENCRYPT_MSG, length)
        return header + self.encrypt(plaintext, header)


def _unpad(plain: bytes) -> bytes:
    if not plain:
        raise GossipDecodeError("empty PKCS#7 payload")
    pad = plain[-1]
    if pad == 0 or pad > 16 or pad > len(plain):
        raise GossipDecodeError("invalid PKCS#7 padding")
    return plain[:-pad]
