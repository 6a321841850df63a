"""Domain records of the catalog and of federation states.

These Structs cross every layer above this package (RPC payloads, the HTTP
API, the gateway locator, the mesh gateway's route table), so their JSON names
follow Consul's HTTP API exactly (``Datacenter``, ``MeshGateways``,
``TaggedAddresses``...) and the same bytes decode on either side. They are
frozen: the state store hands the very objects it stores to readers, so no
reader can change what another reader sees.

Constructors are keyword-only and validate what the type system cannot (ports,
check statuses, non-empty primary keys); a decode of bad input raises
``msgspec.ValidationError`` with the same message.
"""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime
from typing import Final, Literal, TypeVar

import msgspec

__all__ = [
    "HEALTH_STATUSES",
    "MESH_GATEWAY_KIND",
    "WAN_FEDERATION_META_KEY",
    "ZERO_TIME",
    "CheckServiceNode",
    "DCSpecificRequest",
    "DatacenterIndexedCheckServiceNodes",
    "DeregisterRequest",
    "FederationState",
    "FederationStateOp",
    "FederationStateQuery",
    "FederationStateRequest",
    "FederationStateResponse",
    "HealthCheck",
    "HealthCheckDefinition",
    "HealthStatus",
    "IndexedCheckServiceNodes",
    "IndexedFederationStates",
    "IndexedNodes",
    "IndexedServiceNodes",
    "IndexedServices",
    "Node",
    "QueryMeta",
    "QueryOptions",
    "RegisterRequest",
    "Service",
    "ServiceAddress",
    "ServiceKind",
    "ServiceNode",
    "ServiceSpecificRequest",
    "format_host_port",
    "gateway_lan_address",
    "gateway_wan_address",
    "is_wan_federation_gateway",
]

MESH_GATEWAY_KIND: Final = "mesh-gateway"
"""Service kind of a mesh gateway registration."""

WAN_FEDERATION_META_KEY: Final = "consul-wan-federation"
"""Service meta key; value ``"1"`` opts a mesh gateway into carrying server traffic."""

ServiceKind = Literal["", "mesh-gateway"]
"""``""`` is a typical service, as Consul spells it."""

HealthStatus = Literal["passing", "warning", "critical"]
HEALTH_STATUSES: Final[frozenset[str]] = frozenset({"passing", "warning", "critical"})

FederationStateOp = Literal["upsert", "delete"]

ZERO_TIME: Final = datetime(1, 1, 1, tzinfo=UTC)
"""Go's zero ``time.Time``; "not set yet" for ``UpdatedAt``."""


def _check_port(port: int, what: str) -> None:
    if not 0 <= port <= 0xFFFF:
        raise ValueError(f"{what} port {port} is outside 0..65535")


class ServiceAddress(msgspec.Struct, frozen=True, kw_only=True, rename="pascal"):
    """One tagged address of a service (``lan`` or ``wan``)."""

    address: str = ""
    port: int = 0

    def __post_init__(self) -> None:
        _check_port(self.port, "tagged address")


class Node(msgspec.Struct, frozen=True, kw_only=True, rename="pascal"):
    """A catalog node. ``TaggedAddresses`` holds ``lan``/``wan`` host strings."""

    id: str = msgspec.field(default="", name="ID")
    node: str
    address: str = ""
    datacenter: str = ""
    tagged_addresses: dict[str, str] = msgspec.field(default_factory=dict)
    meta: dict[str, str] = msgspec.field(default_factory=dict)
    create_index: int = 0
    modify_index: int = 0

    def __post_init__(self) -> None:
        if not self.node:
            raise ValueError("node name must not be empty")


class Service(msgspec.Struct, frozen=True, kw_only=True, rename="pascal"):
    """A service instance registered on one node (Consul's ``NodeService``)."""

    kind: ServiceKind = ""
    id: str = msgspec.field(default="", name="ID")
    service: str
    tags: list[str] = msgspec.field(default_factory=list)
    address: str = ""
    port: int = 0
    tagged_addresses: dict[str, ServiceAddress] = msgspec.field(default_factory=dict)
    meta: dict[str, str] = msgspec.field(default_factory=dict)
    create_index: int = 0
    modify_index: int = 0

    def __post_init__(self) -> None:
        if not self.service:
            raise ValueError("service name must not be empty")
        if self.kind not in ("", MESH_GATEWAY_KIND):
            raise ValueError(f"unknown service kind {self.kind!r}")
        _check_port(self.port, "service")

    @property
    def service_id(self) -> str:
        """The key of this instance on its node: ``ID``, or the name when no ID is given."""
        return self.id or self.service


class HealthCheckDefinition(msgspec.Struct, frozen=True, kw_only=True):
    """How a check is run. Durations are Go duration strings (``"10s"``), as Consul's JSON."""

    tcp: str = msgspec.field(default="", name="TCP")
    ttl: str = msgspec.field(default="", name="TTL")
    interval: str = msgspec.field(default="", name="Interval")
    timeout: str = msgspec.field(default="", name="Timeout")
    deregister_critical_service_after: str = msgspec.field(
        default="", name="DeregisterCriticalServiceAfter"
    )


class HealthCheck(msgspec.Struct, frozen=True, kw_only=True, rename="pascal"):
    """A node-level (empty ``ServiceID``) or service-level health check."""

    node: str
    check_id: str = msgspec.field(name="CheckID")
    name: str = ""
    status: HealthStatus = "critical"
    notes: str = ""
    output: str = ""
    service_id: str = msgspec.field(default="", name="ServiceID")
    service_name: str = ""
    definition: HealthCheckDefinition = msgspec.field(default_factory=HealthCheckDefinition)
    create_index: int = 0
    modify_index: int = 0

    def __post_init__(self) -> None:
        if not self.node:
            raise ValueError("health check needs a node")
        if not self.check_id:
            raise ValueError("health check needs a CheckID")
        if self.status not in HEALTH_STATUSES:
            raise ValueError(f"health status {self.status!r} is not passing, warning or critical")

    def is_same(self, other: HealthCheck) -> bool:
        """Equal in everything an operator sees; raft indexes are bookkeeping, not content."""
        return _without_indexes(self) == _without_indexes(other)


_Indexed = TypeVar("_Indexed", Node, Service, HealthCheck)


def _without_indexes(record: _Indexed) -> _Indexed:
    if record.create_index == 0 and record.modify_index == 0:
        return record
    return msgspec.structs.replace(record, create_index=0, modify_index=0)


class CheckServiceNode(msgspec.Struct, frozen=True, kw_only=True, rename="pascal"):
    """A service instance with its node and every check that applies to it."""

    node: Node
    service: Service
    checks: list[HealthCheck] = msgspec.field(default_factory=list)

    def is_same(self, other: CheckServiceNode) -> bool:
        """Node, Service and checks position by position, ignoring raft indexes."""
        return (
            _without_indexes(self.node) == _without_indexes(other.node)
            and _without_indexes(self.service) == _without_indexes(other.service)
            and len(self.checks) == len(other.checks)
            and all(a.is_same(b) for a, b in zip(self.checks, other.checks, strict=True))
        )

    def passing(self) -> bool:
        """True when no check is warning or critical (the ``?passing`` filter)."""
        return all(check.status == "passing" for check in self.checks)

    def has_critical_check(self) -> bool:
        return any(check.status == "critical" for check in self.checks)


class ServiceNode(msgspec.Struct, frozen=True, kw_only=True, rename="pascal"):
    """A catalog service instance with its node (no checks)."""

    node: Node
    service: Service


class FederationState(msgspec.Struct, frozen=True, kw_only=True, rename="pascal"):
    """One datacenter's mesh gateways and their health, as the primary knows them."""

    datacenter: str
    mesh_gateways: list[CheckServiceNode] = msgspec.field(default_factory=list)
    updated_at: datetime = ZERO_TIME
    primary_modify_index: int = 0
    create_index: int = 0
    modify_index: int = 0

    def is_same(self, other: FederationState) -> bool:
        """Anti-entropy equality: order-sensitive gateways; time and indexes ignored.

        Anti-entropy compares the record it would write with the one stored,
        and writes only when they differ, so anything that changes on every
        write (``UpdatedAt``, raft indexes) must not count.
        """
        return (
            self.datacenter == other.datacenter
            and len(self.mesh_gateways) == len(other.mesh_gateways)
            and all(
                a.is_same(b) for a, b in zip(self.mesh_gateways, other.mesh_gateways, strict=True)
            )
        )


# --- gateway addresses -------------------------------------------------------


def format_host_port(host: str, port: int) -> str:
    """``host:port``, with IPv6 literals bracketed so the port stays unambiguous."""
    try:
        if isinstance(ipaddress.ip_address(host), ipaddress.IPv6Address):
            return f"[{host}]:{port}"
    except ValueError:
        pass
    return f"{host}:{port}"


def gateway_wan_address(gateway: CheckServiceNode) -> tuple[str, int]:
    """Where a gateway is reached from another datacenter.

    The service's ``wan`` tagged address wins; else the service address; when
    that is empty the node's ``wan`` tagged address, else the node address.
    """
    service = gateway.service
    wan = service.tagged_addresses.get("wan")
    if wan is not None and wan.address:
        return wan.address, wan.port
    if service.address:
        return service.address, service.port
    node = gateway.node
    return node.tagged_addresses.get("wan") or node.address, service.port


def gateway_lan_address(gateway: CheckServiceNode) -> tuple[str, int]:
    """Where a gateway is reached from its own datacenter: service address, else node address."""
    service = gateway.service
    return service.address or gateway.node.address, service.port


def is_wan_federation_gateway(service: Service) -> bool:
    """A mesh gateway whose operator opted it into carrying server traffic."""
    return service.kind == MESH_GATEWAY_KIND and service.meta.get(WAN_FEDERATION_META_KEY) == "1"


# --- requests and responses --------------------------------------------------


class QueryOptions(msgspec.Struct, frozen=True, kw_only=True, rename="pascal"):
    """Read options shared by every query. ``MaxQueryTime`` is in seconds."""

    min_query_index: int = 0
    max_query_time: float = 0.0
    allow_stale: bool = False
    require_consistent: bool = False
    token: str = ""

    def __post_init__(self) -> None:
        if self.min_query_index < 0:
            raise ValueError("MinQueryIndex must not be negative")
        if self.allow_stale and self.require_consistent:
            raise ValueError("a query cannot be both stale and consistent")


class QueryMeta(msgspec.Struct, frozen=True, kw_only=True, rename="pascal"):
    """What every query answer carries. ``LastContact`` is in seconds."""

    index: int = 0
    last_contact: float = 0.0
    known_leader: bool = False
    results_filtered_by_acls: bool = msgspec.field(default=False, name="ResultsFilteredByACLs")
    """Entries the request's token may not read were left out (HTTP:
    ``X-Consul-Results-Filtered-By-ACLs``)."""


class DCSpecificRequest(QueryOptions, frozen=True, kw_only=True, rename="pascal"):
    """A query routed to ``Datacenter`` (``FederationState.List``, ``ListMeshGateways``...)."""

    datacenter: str = ""


class ServiceSpecificRequest(QueryOptions, frozen=True, kw_only=True, rename="pascal"):
    """Instances of one service, or of one kind (``ServiceKind``) when no name is given."""

    datacenter: str = ""
    service_name: str = ""
    service_kind: ServiceKind = ""
    passing_only: bool = False


class FederationStateQuery(QueryOptions, frozen=True, kw_only=True, rename="pascal"):
    """``Datacenter`` names the record; ``TargetDatacenter`` says which DC answers."""

    datacenter: str = ""
    target_datacenter: str = ""


class RegisterRequest(msgspec.Struct, frozen=True, kw_only=True, rename="pascal"):
    """Register (or update) a node, optionally with one service and its checks."""

    datacenter: str = ""
    node: Node
    service: Service | None = None
    checks: list[HealthCheck] = msgspec.field(default_factory=list)
    skip_node_update: bool = False
    token: str = ""


class DeregisterRequest(msgspec.Struct, frozen=True, kw_only=True, rename="pascal"):
    """Remove a check, a service (and its checks) or, with neither, the whole node."""

    datacenter: str = ""
    node: str
    service_id: str = msgspec.field(default="", name="ServiceID")
    check_id: str = msgspec.field(default="", name="CheckID")
    token: str = ""

    def __post_init__(self) -> None:
        if not self.node:
            raise ValueError("deregister needs a node")


class FederationStateRequest(msgspec.Struct, frozen=True, kw_only=True, rename="pascal"):
    """A federation-state write. For ``delete`` only ``State.Datacenter`` matters."""

    datacenter: str = ""
    op: FederationStateOp
    state: FederationState
    token: str = ""

    def __post_init__(self) -> None:
        if self.op not in ("upsert", "delete"):
            raise ValueError(f"invalid federation state operation type: {self.op}")


class FederationStateResponse(QueryMeta, frozen=True, kw_only=True, rename="pascal"):
    state: FederationState | None = None


class IndexedFederationStates(QueryMeta, frozen=True, kw_only=True, rename="pascal"):
    states: list[FederationState] = msgspec.field(default_factory=list)


class DatacenterIndexedCheckServiceNodes(QueryMeta, frozen=True, kw_only=True, rename="pascal"):
    """``ListMeshGateways``: datacenter → its gateways; only DCs with at least one."""

    datacenter_nodes: dict[str, list[CheckServiceNode]] = msgspec.field(default_factory=dict)


class IndexedCheckServiceNodes(QueryMeta, frozen=True, kw_only=True, rename="pascal"):
    nodes: list[CheckServiceNode] = msgspec.field(default_factory=list)


class IndexedServiceNodes(QueryMeta, frozen=True, kw_only=True, rename="pascal"):
    service_nodes: list[ServiceNode] = msgspec.field(default_factory=list)


class IndexedNodes(QueryMeta, frozen=True, kw_only=True, rename="pascal"):
    nodes: list[Node] = msgspec.field(default_factory=list)


class IndexedServices(QueryMeta, frozen=True, kw_only=True, rename="pascal"):
    """Service name → the union of its instances' tags."""

    services: dict[str, list[str]] = msgspec.field(default_factory=dict)
