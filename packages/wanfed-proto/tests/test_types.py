"""The first-byte sniff: every type byte, every byte above, and out-of-range values."""

from __future__ import annotations

import pytest

from wanfed_proto import MAX_RPC_TYPE, NATIVE_TLS, RpcType, UnknownRpcTypeError, classify

EXPECTED_TYPES = {
    0: RpcType.CONSUL,
    1: RpcType.RAFT,
    2: RpcType.MULTIPLEX,
    3: RpcType.TLS,
    4: RpcType.MULTIPLEX_V2,
    5: RpcType.SNAPSHOT,
    6: RpcType.GOSSIP,
    7: RpcType.TLS_INSECURE,
    8: RpcType.GRPC,
    9: RpcType.RAFT_FORWARDING,
}


def test_type_bytes_are_numbered_like_the_reference() -> None:
    assert {int(t): t for t in RpcType} == EXPECTED_TYPES
    assert MAX_RPC_TYPE == 9


@pytest.mark.parametrize(("byte", "expected"), sorted(EXPECTED_TYPES.items()))
def test_assigned_type_bytes_classify_as_their_type(byte: int, expected: RpcType) -> None:
    assert classify(byte) is expected


@pytest.mark.parametrize("byte", range(MAX_RPC_TYPE + 1, 256))
def test_every_byte_above_the_highest_type_is_native_tls(byte: int) -> None:
    assert classify(byte) is NATIVE_TLS


def test_tls_handshake_content_type_is_native_tls() -> None:
    # 0x16 is what every ClientHello record starts with.
    assert classify(0x16) is NATIVE_TLS


@pytest.mark.parametrize("value", [-1, 256, 1 << 16, -(1 << 40)])
def test_values_outside_a_byte_are_rejected(value: int) -> None:
    with pytest.raises(UnknownRpcTypeError, match=f"first byte {value} is not a byte value"):
        classify(value)
