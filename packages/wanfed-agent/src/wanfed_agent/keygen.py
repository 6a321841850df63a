"""Gossip encryption keys for the ``encrypt`` option (``wanfed keygen``)."""

from __future__ import annotations

import base64
import secrets

__all__ = ["GOSSIP_KEY_SIZE", "generate_gossip_key"]

GOSSIP_KEY_SIZE = 32
"""Bytes in a new key: AES-256, what Consul's ``keygen`` produces."""


def generate_gossip_key(size: int = GOSSIP_KEY_SIZE) -> str:
    """A new random key, base64-encoded as ``encrypt`` expects it.

    ``size`` may be 16 or 24 for peers that only take AES-128/192 keys.
    """
    if size not in (16, 24, 32):
        raise ValueError(f"gossip keys are 16, 24 or 32 bytes, not {size}")
    return base64.b64encode(secrets.token_bytes(size)).decode("ascii")
