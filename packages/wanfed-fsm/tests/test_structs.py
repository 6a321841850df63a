"""The domain structs speak Consul's JSON and refuse invalid records."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import pytest

from wanfed_fsm import (
    MESH_GATEWAY_KIND,
    WAN_FEDERATION_META_KEY,
    CheckServiceNode,
    FederationState,
    FederationStateRequest,
    HealthCheck,
    HealthCheckDefinition,
    Node,
    Service,
    ServiceAddress,
    format_host_port,
    gateway_lan_address,
    gateway_wan_address,
    is_wan_federation_gateway,
)


def _gateway(
    *,
    service_address: str = "10.0.0.5",
    wan: ServiceAddress | None = None,
    node_wan: str | None = None,
    status: str = "passing",
) -> CheckServiceNode:
    tagged = {"wan": wan} if wan is not None else {}
    node_tagged = {"wan": node_wan} if node_wan is not None else {}
    return CheckServiceNode(
        node=Node(node="gw1", address="192.0.2.1", datacenter="dc2", tagged_addresses=node_tagged),
        service=Service(
            kind=MESH_GATEWAY_KIND,
            service="mesh-gateway",
            address=service_address,
            port=8443,
            tagged_addresses=tagged,
            meta={WAN_FEDERATION_META_KEY: "1"},
        ),
        checks=[
            HealthCheck(
                node="gw1",
                check_id="gw-listening",
                status=status,  # type: ignore[arg-type]
                service_id="mesh-gateway",
                definition=HealthCheckDefinition(tcp="10.0.0.5:8443", interval="10s"),
            )
        ],
    )


def test_json_field_names_follow_consul() -> None:
    state = FederationState(
        datacenter="dc2",
        mesh_gateways=[_gateway(wan=ServiceAddress(address="198.18.0.5", port=443))],
        updated_at=datetime(2020, 5, 1, tzinfo=UTC),
        primary_modify_index=42,
        create_index=40,
        modify_index=42,
    )
    raw = msgspec.json.decode(msgspec.json.encode(state))
    assert set(raw) == {
        "Datacenter",
        "MeshGateways",
        "UpdatedAt",
        "PrimaryModifyIndex",
        "CreateIndex",
        "ModifyIndex",
    }
    gateway = raw["MeshGateways"][0]
    assert set(gateway) == {"Node", "Service", "Checks"}
    assert set(gateway["Node"]) >= {"ID", "Node", "Address", "Datacenter", "TaggedAddresses"}
    assert gateway["Service"]["Kind"] == "mesh-gateway"
    assert gateway["Service"]["TaggedAddresses"]["wan"] == {"Address": "198.18.0.5", "Port": 443}
    check = gateway["Checks"][0]
    assert {"CheckID", "ServiceID", "ServiceName", "Status"} <= set(check)
    assert check["Definition"]["TCP"] == "10.0.0.5:8443"
    assert "DeregisterCriticalServiceAfter" in check["Definition"]
    assert raw["UpdatedAt"] == "2020-05-01T00:00:00Z"
    assert msgspec.json.decode(msgspec.json.encode(state), type=FederationState) == state
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(state), type=FederationState) == state


def test_is_same_ignores_time_and_indexes_but_not_order_or_health() -> None:
    a, b = _gateway(service_address="10.0.0.5"), _gateway(service_address="10.0.0.6")
    one = FederationState(datacenter="dc2", mesh_gateways=[a, b], modify_index=3)
    later = FederationState(
        datacenter="dc2",
        mesh_gateways=[
            a,
            msgspec.structs.replace(b, node=msgspec.structs.replace(b.node, modify_index=9)),
        ],
        updated_at=datetime.now(UTC),
        create_index=7,
        modify_index=8,
    )
    assert one.is_same(later)
    assert not one.is_same(FederationState(datacenter="dc2", mesh_gateways=[b, a]))
    assert not one.is_same(FederationState(datacenter="dc3", mesh_gateways=[a, b]))
    assert not one.is_same(FederationState(datacenter="dc2", mesh_gateways=[a]))
    critical = _gateway(service_address="10.0.0.6", status="critical")
    assert not one.is_same(FederationState(datacenter="dc2", mesh_gateways=[a, critical]))


def test_wan_address_prefers_service_wan_then_service_then_node() -> None:
    wan = ServiceAddress(address="198.18.0.5", port=443)
    assert gateway_wan_address(_gateway(wan=wan)) == ("198.18.0.5", 443)
    assert gateway_wan_address(_gateway()) == ("10.0.0.5", 8443)
    assert gateway_wan_address(_gateway(service_address="", node_wan="198.18.1.1")) == (
        "198.18.1.1",
        8443,
    )
    assert gateway_wan_address(_gateway(service_address="")) == ("192.0.2.1", 8443)


def test_lan_address_is_service_then_node() -> None:
    wan = ServiceAddress(address="198.18.0.5", port=443)
    assert gateway_lan_address(_gateway(wan=wan)) == ("10.0.0.5", 8443)
    assert gateway_lan_address(_gateway(service_address="")) == ("192.0.2.1", 8443)


def test_format_host_port_brackets_ipv6() -> None:
    assert format_host_port("::1", 8443) == "[::1]:8443"
    assert format_host_port("127.0.0.1", 1) == "127.0.0.1:1"
    assert format_host_port("gw.example", 443) == "gw.example:443"


def test_wan_federation_opt_in_needs_kind_and_meta() -> None:
    assert is_wan_federation_gateway(_gateway().service)
    assert not is_wan_federation_gateway(Service(kind=MESH_GATEWAY_KIND, service="mesh-gateway"))
    assert not is_wan_federation_gateway(
        Service(service="web", meta={WAN_FEDERATION_META_KEY: "1"})
    )


@pytest.mark.parametrize(
    ("type_", "payload", "message"),
    [
        (HealthCheck, {"Node": "n", "CheckID": "c", "Status": "maintenance"}, "Status"),
        (HealthCheck, {"Node": "n", "CheckID": "", "Status": "passing"}, "CheckID"),
        (Service, {"Service": "web", "Port": 70000}, "outside 0..65535"),
        (Service, {"Service": "web", "Kind": "ingress-gateway"}, "Kind"),
        (Node, {"Node": ""}, "node name must not be empty"),
        (FederationStateRequest, {"Op": "merge", "State": {"Datacenter": "dc1"}}, "Op"),
    ],
)
def test_bad_input_is_rejected_with_a_clear_message(
    type_: type[msgspec.Struct], payload: dict[str, object], message: str
) -> None:
    with pytest.raises(msgspec.ValidationError, match=message):
        msgspec.json.decode(msgspec.json.encode(payload), type=type_)


def test_constructors_validate_too() -> None:
    with pytest.raises(ValueError, match="not passing, warning or critical"):
        HealthCheck(node="n", check_id="c", status="bogus")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="port"):
        ServiceAddress(address="x", port=-1)
