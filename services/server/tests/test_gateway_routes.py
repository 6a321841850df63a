"""The route table: golden renderings of whole scenarios plus lookup rules.

Golden files live in ``golden/``; run with ``WANFED_UPDATE_GOLDEN=1`` to
rewrite them after an intended change, then review the diff.
"""

from __future__ import annotations

import os
from pathlib import Path

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from wanfed_fsm import CheckServiceNode, HealthCheck, Node, Service, ServiceAddress
from wanfed_proto import InvalidNameError, parse_server_sni
from wanfed_server.gateway import (
    DirectoryServer,
    Route,
    RouteInputError,
    RouteInputs,
    RouteTable,
    Upstream,
    build_route_table,
    render_route_table,
)

GOLDEN = Path(__file__).parent / "golden"


def server(
    node: str, address: str, *, dc: str = "dc1", port: int = 8300, alive: bool = True
) -> DirectoryServer:
    """A local server as the servers' own directory lists it."""
    return DirectoryServer(node=node, datacenter=dc, address=address, port=port, alive=alive)


def gateway(
    node: str,
    dc: str,
    *,
    wan: tuple[str, int] | None = None,
    address: str = "",
    port: int = 8443,
    node_address: str = "198.18.0.1",
    node_wan: str = "",
    opted_in: bool = True,
    status: str = "passing",
    index: int = 10,
) -> CheckServiceNode:
    tagged = {"wan": ServiceAddress(address=wan[0], port=wan[1])} if wan else {}
    return CheckServiceNode(
        node=Node(
            node=node,
            address=node_address,
            datacenter=dc,
            tagged_addresses={"wan": node_wan} if node_wan else {},
        ),
        service=Service(
            kind="mesh-gateway",
            service="mesh-gateway",
            address=address,
            port=port,
            tagged_addresses=tagged,
            meta={"consul-wan-federation": "1"} if opted_in else {},
            modify_index=index,
        ),
        checks=[
            HealthCheck(
                node=node,
                check_id="mesh-gateway-listening",
                service_id="mesh-gateway",
                status=status,  # type: ignore[arg-type]
            )
        ],
    )


def check_golden(name: str, table: RouteTable) -> None:
    text = render_route_table(table)
    path = GOLDEN / f"gateway_routes_{name}.json"
    if os.environ.get("WANFED_UPDATE_GOLDEN") == "1":
        path.write_text(text)
    assert path.exists(), f"golden file {path.name} is missing; run with WANFED_UPDATE_GOLDEN=1"
    assert text == path.read_text()


DC1_SERVERS = [server("s1", "127.0.0.11"), server("s2", "127.0.0.12"), server("s3", "127.0.0.13")]


def three_dc_inputs() -> RouteInputs:
    return RouteInputs(
        local_dc="dc1",
        server_directory=DC1_SERVERS,
        fed_state_gateways={
            "dc1": [gateway("gw1", "dc1", wan=("198.18.1.20", 8443))],
            "dc2": [gateway("gw2a", "dc2", wan=("198.18.2.20", 8443))],
            "dc3": [
                gateway("gw3a", "dc3", wan=("198.18.3.20", 8443)),
                gateway("gw3b", "dc3", wan=("198.18.3.21", 8443)),
            ],
        },
        gateway_groups={
            "dc2": [gateway("gw2a", "dc2", wan=("198.18.2.20", 8443))],
        },
    )


# --- golden scenarios ----------------------------------------------------------


def test_one_dc() -> None:
    table = build_route_table(RouteInputs(local_dc="dc1", server_directory=DC1_SERVERS))
    check_golden("one_dc", table)


def test_three_dcs() -> None:
    check_golden("three_dcs", build_route_table(three_dc_inputs()))


def test_gateway_added() -> None:
    inputs = three_dc_inputs()
    added = [
        *inputs.fed_state_gateways["dc2"],
        gateway("gw2b", "dc2", wan=("198.18.2.21", 8443), index=20),
    ]
    table = build_route_table(
        msgspec.structs.replace(
            inputs, fed_state_gateways={**inputs.fed_state_gateways, "dc2": added}
        )
    )
    check_golden("gateway_added", table)
    route = table.lookup("server.dc2.consul")
    assert route is not None
    assert [str(u) for u in route.upstreams] == ["198.18.2.20:8443", "198.18.2.21:8443"]


def test_gateway_removed() -> None:
    inputs = three_dc_inputs()
    remaining = {**inputs.fed_state_gateways, "dc3": inputs.fed_state_gateways["dc3"][1:]}
    table = build_route_table(msgspec.structs.replace(inputs, fed_state_gateways=remaining))
    check_golden("gateway_removed", table)
    gone = {**inputs.fed_state_gateways}
    del gone["dc3"]
    without_dc3 = build_route_table(msgspec.structs.replace(inputs, fed_state_gateways=gone))
    assert without_dc3.lookup("server.dc3.consul") is None


def test_gateway_turns_critical() -> None:
    inputs = three_dc_inputs()
    dc3 = [
        gateway("gw3a", "dc3", wan=("198.18.3.20", 8443), status="critical", index=30),
        gateway("gw3b", "dc3", wan=("198.18.3.21", 8443), status="warning"),
    ]
    table = build_route_table(
        msgspec.structs.replace(
            inputs, fed_state_gateways={**inputs.fed_state_gateways, "dc3": dc3}
        )
    )
    check_golden("gateway_critical", table)
    route = table.lookup("s7.server.dc3.consul")
    assert route is not None
    assert [str(u) for u in route.upstreams] == ["198.18.3.21:8443"]


def test_newer_vs_older_information() -> None:
    # dc2's gateway moved: federation states (replicated, fresh) know the new
    # address at a higher index; the cross-DC service dump still has the old.
    # dc3: the dump is the newer one. dc4: equal indexes, the dump wins.
    inputs = RouteInputs(
        local_dc="dc1",
        server_directory=DC1_SERVERS[:1],
        fed_state_gateways={
            "dc2": [gateway("gw2", "dc2", wan=("198.18.2.99", 8443), index=50)],
            "dc3": [gateway("gw3", "dc3", wan=("198.18.3.20", 8443), index=5)],
            "dc4": [gateway("gw4", "dc4", wan=("198.18.4.20", 8443), index=7)],
        },
        gateway_groups={
            "dc2": [gateway("gw2", "dc2", wan=("198.18.2.20", 8443), index=40)],
            "dc3": [gateway("gw3", "dc3", wan=("198.18.3.77", 8443), index=6)],
            "dc4": [gateway("gw4", "dc4", wan=("198.18.4.77", 8443), index=7)],
        },
    )
    table = build_route_table(inputs)
    check_golden("newer_vs_older", table)
    expected = {"dc2": "198.18.2.99:8443", "dc3": "198.18.3.77:8443", "dc4": "198.18.4.77:8443"}
    for dc, address in expected.items():
        route = table.lookup(f"server.{dc}.consul")
        assert route is not None
        assert [str(u) for u in route.upstreams] == [address]


def test_directory_liveness() -> None:
    # s2 stopped answering hellos: out of "any", still reachable by name; the
    # catalog's view of the servers is no input, whatever it says.
    inputs = RouteInputs(
        local_dc="dc1",
        server_directory=[
            server("s1", "127.0.0.11"),
            server("s2", "127.0.0.12", alive=False),
            server("s3", "127.0.0.13", port=8301),
        ],
    )
    check_golden("directory_liveness", build_route_table(inputs))


def test_hostname_addresses() -> None:
    inputs = RouteInputs(
        local_dc="dc1",
        domain="consul.",
        server_directory=[server("s1", "s1.dc1.internal.example")],
        fed_state_gateways={
            "dc2": [gateway("gw2", "dc2", wan=("gw.dc2.example.com", 443))],
            "dc3": [
                gateway("gw3", "dc3", node_address="198.18.3.20", node_wan="gw3.example.net"),
                gateway("gw3v6", "dc3", address="2001:db8::3", port=8443),
            ],
        },
    )
    table = build_route_table(inputs)
    check_golden("hostnames", table)
    route = table.lookup("server.dc2.consul")
    assert route is not None
    assert route.upstreams[0].is_hostname
    assert route.upstreams[0].host == "gw.dc2.example.com"


# --- rules -----------------------------------------------------------------------


def test_wan_address_precedence() -> None:
    cases = [
        (gateway("g", "dc2", wan=("198.18.2.1", 1001), address="198.18.2.2", port=1002), "1001"),
        (gateway("g", "dc2", address="198.18.2.2", port=1002, node_wan="198.18.2.3"), "1002"),
        (gateway("g", "dc2", port=1003, node_wan="198.18.2.3"), "198.18.2.3:1003"),
        (gateway("g", "dc2", port=1004, node_address="198.18.2.4"), "198.18.2.4:1004"),
    ]
    for gw, expected in cases:
        table = build_route_table(RouteInputs(local_dc="dc1", gateway_groups={"dc2": [gw]}))
        route = table.lookup("server.dc2.consul")
        assert route is not None
        assert str(route.upstreams[0]).endswith(expected)


def test_only_opted_in_gateways_route() -> None:
    table = build_route_table(
        RouteInputs(
            local_dc="dc1",
            gateway_groups={"dc2": [gateway("g", "dc2", wan=("198.18.2.1", 443), opted_in=False)]},
        )
    )
    assert table.lookup("server.dc2.consul") is None
    assert table.lookup("s1.server.dc2.consul") is None


def test_local_any_skips_servers_not_alive_but_named_server_still_routes() -> None:
    servers = [server("s1", "127.0.0.11"), server("s2", "127.0.0.12", alive=False)]
    table = build_route_table(RouteInputs(local_dc="dc1", server_directory=servers))
    any_route = table.lookup("server.dc1.consul")
    assert any_route == Route("local-any", (Upstream("127.0.0.11", 8300),))
    assert table.lookup("s2.server.dc1.consul") == Route(
        "local-server:s2", (Upstream("127.0.0.12", 8300),)
    )
    all_critical = build_route_table(RouteInputs(local_dc="dc1", server_directory=servers[1:]))
    assert all_critical.lookup("server.dc1.consul") is None


def test_lookup_refuses_everything_else() -> None:
    table = build_route_table(three_dc_inputs())
    refused = [
        "s9.server.dc1.consul",  # not a known local server
        "example.com",
        "server.dc1.consul.evil.com",
        "s1.server.dc2.consul.evil.com",
        ".server.dc2.consul",
        "a.b.server.dc2.consul",
        "*.server.dc2.consul",
        "a b.server.dc2.consul",
        "server.dc9.consul",
        "s1.server.dc2.other",
        "dc2.consul",
        "",
        "web.service.dc2.internal.abcd.consul",
    ]
    for name in refused:
        assert table.lookup(name) is None, name


def test_non_ascii_look_alikes_do_not_route() -> None:
    table = build_route_table(
        RouteInputs(local_dc="dck", server_directory=[server("s1", "127.0.0.11", dc="dck")])
    )
    assert table.lookup("server.dck.consul") is not None
    assert "server.dc\u212a.consul".lower() == "server.dck.consul"  # KELVIN SIGN folds to k
    assert table.lookup("server.dc\u212a.consul") is None


def test_lookup_ignores_case() -> None:
    table = build_route_table(three_dc_inputs())
    assert table.lookup("S1.Server.DC1.Consul") == table.lookup("s1.server.dc1.consul")
    route = table.lookup("ANY.server.DC3.consul")
    assert route is not None
    assert route.label == "remote:dc3"


def test_local_dc_in_fed_states_does_not_route_to_own_gateway() -> None:
    table = build_route_table(three_dc_inputs())
    route = table.lookup("server.dc1.consul")
    assert route is not None
    assert route.label == "local-any"
    assert {str(u) for u in route.upstreams} == {
        "127.0.0.11:8300",
        "127.0.0.12:8300",
        "127.0.0.13:8300",
    }


def test_labels() -> None:
    table = build_route_table(three_dc_inputs())
    assert table.labels() == [
        "local-any",
        "local-server:s1",
        "local-server:s2",
        "local-server:s3",
        "remote:dc2",
        "remote:dc3",
    ]


def test_build_is_pure() -> None:
    inputs = three_dc_inputs()
    assert build_route_table(inputs) == build_route_table(inputs)


# --- bad input --------------------------------------------------------------------


def test_rejects_server_of_another_dc() -> None:
    with pytest.raises(RouteInputError, match="datacenter 'dc2', not 'dc1'"):
        build_route_table(
            RouteInputs(local_dc="dc1", server_directory=[server("x", "127.0.0.5", dc="dc2")])
        )


@pytest.mark.parametrize(
    ("dc", "domain", "message"),
    [
        ("", "consul", "datacenter name is empty"),
        ("dc.1", "consul", "datacenter name 'dc.1' is invalid"),
        ("dc1", "", "domain '' is empty"),
        ("dc1", "a..b", "empty label"),
    ],
)
def test_rejects_invalid_names(dc: str, domain: str, message: str) -> None:
    with pytest.raises(RouteInputError, match=message):
        build_route_table(RouteInputs(local_dc=dc, domain=domain))


def test_names_that_cannot_be_an_sni_are_left_out() -> None:
    table = build_route_table(
        RouteInputs(
            local_dc="dc1",
            server_directory=[server("bad.node", "127.0.0.9"), server("s1", "127.0.0.11")],
            gateway_groups={"bad.dc": [gateway("g", "bad.dc", wan=("198.18.9.1", 443))]},
        )
    )
    assert table.labels() == ["local-any", "local-server:s1"]


def test_upstream_and_route_validate() -> None:
    with pytest.raises(ValueError, match=r"outside 1\.\.65535"):
        Upstream("127.0.0.1", 0)
    with pytest.raises(ValueError, match="must not be empty"):
        Upstream("", 80)
    with pytest.raises(ValueError, match="has no upstream"):
        Route("x", ())
    assert str(Upstream("2001:db8::1", 443)) == "[2001:db8::1]:443"
    route = Route("x", (Upstream("127.0.0.1", 1),))
    with pytest.raises(ValueError, match="lower-case ASCII"):
        RouteTable(local_dc="dc1", domain="consul", exact={"S1.server.dc1.consul": route})
    with pytest.raises(ValueError, match="lower-case ASCII"):
        RouteTable(local_dc="dc1", domain="consul", remote_suffixes={"": route})


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"node": ""}, "empty node name"),
        ({"address": ""}, "has no address"),
        ({"port": 0}, r"port 0 is outside 1\.\.65535"),
        ({"port": 70000}, r"port 70000 is outside 1\.\.65535"),
    ],
)
def test_directory_entries_validate(fields: dict[str, object], message: str) -> None:
    entry = {"Node": "s1", "Datacenter": "dc1", "Address": "127.0.0.11", "Port": 8300}
    entry.update({key.capitalize(): value for key, value in fields.items()})
    body = msgspec.json.encode([{**entry, "Alive": True}])
    with pytest.raises(msgspec.ValidationError, match=message):
        msgspec.json.decode(body, type=list[DirectoryServer])


# --- catalog data never decides where local names go ------------------------------


def test_a_catalog_row_of_service_consul_is_no_input_at_all() -> None:
    """Anyone who reaches the HTTP API can write a ``consul`` row naming any address;
    the route table has no field such a row could be handed in through."""
    foreign = CheckServiceNode(
        node=Node(node="s1", address="198.18.66.6", datacenter="dc1"),
        service=Service(service="consul", port=8300),
    )
    with pytest.raises(TypeError):
        RouteInputs(local_dc="dc1", local_servers=[foreign])  # type: ignore[call-arg]
    # Handed in where remote gateways go, a "consul" row is no gateway either.
    table = build_route_table(
        RouteInputs(
            local_dc="dc1",
            server_directory=DC1_SERVERS,
            fed_state_gateways={"dc1": [foreign]},
            gateway_groups={"dc1": [foreign]},
        )
    )
    upstreams = {str(u) for route in table.exact.values() for u in route.upstreams}
    assert "198.18.66.6:8300" not in upstreams
    assert upstreams == {"127.0.0.11:8300", "127.0.0.12:8300", "127.0.0.13:8300"}


def test_a_foreign_address_under_a_known_node_name_routes_only_where_the_directory_says() -> None:
    table = build_route_table(RouteInputs(local_dc="dc1", server_directory=DC1_SERVERS))
    route = table.lookup("s1.server.dc1.consul")
    assert route == Route("local-server:s1", (Upstream("127.0.0.11", 8300),))


_THREE_DCS = build_route_table(three_dc_inputs())
_LABELS = st.sampled_from(["server", "dc1", "dc2", "dc3", "consul", "s1", "s9", "*", "", "x y"])
_NAMES = st.one_of(
    st.lists(_LABELS, min_size=1, max_size=6).map(".".join),
    st.text(max_size=40),
)


@given(_NAMES)
def test_never_an_open_relay(name: str) -> None:
    """Whatever the name, a route exists only for a well-formed server name we know."""
    route = _THREE_DCS.lookup(name)
    if route is None:
        return
    try:
        parsed = parse_server_sni(name, "consul")
    except InvalidNameError as exc:
        raise AssertionError(f"{name!r} routed to {route.label} but is no server name") from exc
    if parsed.datacenter == "dc1":
        assert parsed.node in (None, "s1", "s2", "s3")
    else:
        assert route.label == f"remote:{parsed.datacenter}"
