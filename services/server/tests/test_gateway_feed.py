"""RouteFeed: watchers hand in answers; a new table comes out only when routing changes."""

from __future__ import annotations

import pytest

from wanfed_fsm import CheckServiceNode, HealthCheck, Node, Service, ServiceAddress
from wanfed_server.gateway import DirectoryServer, RouteFeed, RouteInputError


def server(node: str, address: str, dc: str = "dc1") -> DirectoryServer:
    return DirectoryServer(node=node, datacenter=dc, address=address, port=8300, alive=True)


def gateway(dc: str, address: str, index: int, status: str = "passing") -> CheckServiceNode:
    return CheckServiceNode(
        node=Node(node=f"gw-{dc}", address=address, datacenter=dc),
        service=Service(
            kind="mesh-gateway",
            service="mesh-gateway",
            port=8443,
            tagged_addresses={"wan": ServiceAddress(address=address, port=8443)},
            meta={"consul-wan-federation": "1"},
            modify_index=index,
        ),
        checks=[
            HealthCheck(
                node=f"gw-{dc}",
                check_id="listening",
                status=status,  # type: ignore[arg-type]
            )
        ],
    )


def upstreams(feed: RouteFeed, sni: str) -> list[str] | None:
    route = feed.table.lookup(sni)
    return None if route is None else [str(u) for u in route.upstreams]


def test_starts_empty_and_refuses_everything() -> None:
    feed = RouteFeed("dc1")
    assert feed.table.exact == {}
    assert feed.table.lookup("server.dc1.consul") is None


def test_each_watch_updates_the_table() -> None:
    feed = RouteFeed("dc1", "consul.")
    table = feed.set_server_directory([server("s1", "127.0.0.11")])
    assert table is not None
    assert table is feed.table
    assert upstreams(feed, "s1.server.dc1.consul") == ["127.0.0.11:8300"]

    assert feed.set_fed_state_gateways({"dc2": [gateway("dc2", "198.18.2.20", 5)]}) is not None
    assert upstreams(feed, "server.dc2.consul") == ["198.18.2.20:8443"]

    # The dump of dc2 is older than the federation state: nothing changes.
    assert feed.set_gateway_group("dc2", [gateway("dc2", "198.18.2.77", 4)]) is None
    # A newer dump wins.
    assert feed.set_gateway_group("dc2", [gateway("dc2", "198.18.2.88", 9)]) is not None
    assert upstreams(feed, "x.server.dc2.consul") == ["198.18.2.88:8443"]
    # The DC leaves the datacenter list: back to the federation state.
    assert feed.drop_gateway_group("dc2") is not None
    assert upstreams(feed, "server.dc2.consul") == ["198.18.2.20:8443"]
    assert feed.drop_gateway_group("dc2") is None


def test_same_answer_twice_yields_no_new_table() -> None:
    feed = RouteFeed("dc1")
    assert feed.set_server_directory([server("s1", "127.0.0.11")]) is not None
    assert feed.set_server_directory([server("s1", "127.0.0.11")]) is None


def test_gateway_going_critical_removes_the_route() -> None:
    feed = RouteFeed("dc1")
    feed.set_fed_state_gateways({"dc2": [gateway("dc2", "198.18.2.20", 5)]})
    table = feed.set_fed_state_gateways(
        {"dc2": [gateway("dc2", "198.18.2.20", 6, status="critical")]}
    )
    assert table is not None
    assert table.lookup("server.dc2.consul") is None


def test_rejected_update_keeps_previous_state() -> None:
    feed = RouteFeed("dc1")
    feed.set_server_directory([server("s1", "127.0.0.11")])
    before = feed.table
    stray = server("s9", "127.0.0.99", dc="dc2")
    with pytest.raises(RouteInputError, match="'s9' is in datacenter 'dc2'"):
        feed.set_server_directory([stray])
    assert feed.table is before
    assert list(feed.inputs.server_directory) == [server("s1", "127.0.0.11")]


def test_invalid_local_dc_is_refused_up_front() -> None:
    with pytest.raises(RouteInputError):
        RouteFeed("not a dc")
