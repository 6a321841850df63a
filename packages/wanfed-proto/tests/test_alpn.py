"""The ALPN registry: which types can cross a gateway, and under which id."""

from __future__ import annotations

import pytest

from wanfed_proto import (
    SERVER_ALPN_PROTOCOLS,
    Alpn,
    NoAlpnForTypeError,
    ProtoError,
    RpcType,
    alpn_for_type,
    type_for_alpn,
)

ROUTABLE = {
    RpcType.CONSUL: "wanfed/rpc-single",
    RpcType.RAFT: "wanfed/raft",
    RpcType.MULTIPLEX_V2: "wanfed/rpc-multi",
    RpcType.SNAPSHOT: "wanfed/rpc-snapshot",
}


@pytest.mark.parametrize(("rpc_type", "alpn"), sorted(ROUTABLE.items()))
def test_routable_types_map_to_their_alpn_id(rpc_type: RpcType, alpn: str) -> None:
    assert alpn_for_type(rpc_type) == alpn
    assert alpn_for_type(int(rpc_type)) == alpn
    assert type_for_alpn(alpn) is rpc_type


@pytest.mark.parametrize("rpc_type", [2, 3, 6, 7, 8, 9])
def test_types_without_alpn_cannot_cross_a_gateway(rpc_type: int) -> None:
    with pytest.raises(NoAlpnForTypeError) as caught:
        alpn_for_type(rpc_type)
    assert str(caught.value) == f"rpc type {rpc_type} cannot be routed through a mesh gateway"
    assert caught.value.rpc_type == rpc_type
    assert isinstance(caught.value, ProtoError)


@pytest.mark.parametrize("rpc_type", [-1, 10, 22, 255, 1000])
def test_unassigned_type_values_are_refused_the_same_way(rpc_type: int) -> None:
    with pytest.raises(
        NoAlpnForTypeError,
        match=f"^rpc type {rpc_type} cannot be routed through a mesh gateway$",
    ):
        alpn_for_type(rpc_type)


def test_the_multiplexed_rpc_rides_rpc_multi() -> None:
    # Cross-DC RPC dials with the multiplexed type; its ALPN id is what the
    # dialer offers and the server dispatches on.
    assert alpn_for_type(RpcType.MULTIPLEX_V2) is Alpn.RPC_MULTI


@pytest.mark.parametrize("alpn", [Alpn.WAN_GOSSIP_PACKET, Alpn.WAN_GOSSIP_STREAM])
def test_gossip_ids_have_no_type_byte(alpn: Alpn) -> None:
    assert type_for_alpn(alpn) is None


@pytest.mark.parametrize("alpn", ["", "h2", "consul/rpc-multi", "wanfed/RPC-MULTI", "wanfed/"])
def test_unknown_ids_have_no_type(alpn: str) -> None:
    assert type_for_alpn(alpn) is None


def test_server_advertises_every_id_in_reference_order() -> None:
    assert SERVER_ALPN_PROTOCOLS == (
        "wanfed/rpc-single",
        "wanfed/raft",
        "wanfed/rpc-multi",
        "wanfed/rpc-snapshot",
        "wanfed/wan-gossip/packet",
        "wanfed/wan-gossip/stream",
    )


def test_ids_are_unique_prefixed_and_fit_in_alpn() -> None:
    values = [alpn.value for alpn in Alpn]
    assert len(set(values)) == len(values)
    for value in values:
        assert value.startswith("wanfed/")
        # An ALPN protocol name is a 1-byte length-prefixed byte string.
        assert 0 < len(value.encode("ascii")) < 256
