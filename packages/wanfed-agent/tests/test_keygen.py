"""``generate_gossip_key``: what it prints must be accepted by the config loader."""

from __future__ import annotations

import base64

import pytest

from wanfed_agent.config import load_config
from wanfed_agent.keygen import generate_gossip_key


def test_key_is_base64_of_32_bytes() -> None:
    key = generate_gossip_key()
    assert len(base64.b64decode(key, validate=True)) == 32


def test_keys_differ() -> None:
    assert len({generate_gossip_key() for _ in range(20)}) == 20


@pytest.mark.parametrize("size", [16, 24, 32])
def test_config_accepts_generated_keys(size: int) -> None:
    key = generate_gossip_key(size)
    config = load_config((), (), {"encrypt": key})
    assert config.encrypt_key is not None
    assert len(config.encrypt_key) == size


def test_bad_size() -> None:
    with pytest.raises(ValueError, match="16, 24 or 32 bytes, not 8"):
        generate_gossip_key(8)
