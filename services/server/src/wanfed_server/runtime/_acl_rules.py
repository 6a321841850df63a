"""What each RPC endpoint asks of a token, and what its answers leave out.

An endpoint's ``acl_check`` runs on the server that answers (where the data
lives), with the request's resolved token, just before the handler; it
raises ``Permission denied: ...`` or returns. A list endpoint's ``acl_filter``
then drops what the token may not read and marks the reply
(``ResultsFilteredByACLs``), as Consul's list endpoints do; only a refusal
the caller could not have avoided by asking for less is a 403.

The rules follow Consul's documentation:

* catalog writes: ``service:write`` on a registered service, ``node:write``
  on the node for a node-only registration or a node check, and on a
  deregistration of a node or a check; a service's deregistration needs
  ``service:write`` on that service;
* catalog and health reads: entries need ``node:read`` on their node and
  ``service:read`` on their service; checks likewise;
* federation states: ``operator:read`` to read, ``operator:write`` to write;
  mesh gateways need ``service:read`` and ``node:read`` like any instance;
* status, datacenters and the server-to-server methods (whose callers
  are authenticated by certificate) are open.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import msgspec

from wanfed_fsm import (
    CheckServiceNode,
    DatacenterIndexedCheckServiceNodes,
    DeregisterRequest,
    FederationStateRequest,
    HealthCheck,
    IndexedCheckServiceNodes,
    IndexedNodes,
    IndexedServiceNodes,
    IndexedServices,
    Node,
    RegisterRequest,
    Service,
    StateStore,
)

from ._acl import AclSubject
from ._messages import IndexedHealthChecks

R = TypeVar("R", bound=msgspec.Struct)

__all__ = [
    "acl_open",
    "acl_operator_read",
    "acl_operator_write",
    "catalog_deregister_check",
    "catalog_register_check",
    "filter_check_service_nodes",
    "filter_health_checks",
    "filter_mesh_gateways",
    "filter_nodes",
    "filter_service_nodes",
    "filter_services",
    "requires_management",
]


def acl_open(_subject: AclSubject, _request: Any) -> None:
    """No token needed (status, datacenters, certificate-authenticated server calls)."""


def requires_management(subject: AclSubject, _request: Any) -> None:
    """The fail-closed default of an endpoint that declares nothing."""
    subject.require(subject.is_management, "acl:write")


def acl_operator_read(subject: AclSubject, _request: Any) -> None:
    subject.require(subject.authorizer.operator_read(), "operator:read")


def acl_operator_write(subject: AclSubject, _request: FederationStateRequest) -> None:
    subject.require(subject.authorizer.operator_write(), "operator:write")


def catalog_register_check(subject: AclSubject, request: RegisterRequest) -> None:
    authorizer, node = subject.authorizer, request.node.node
    if request.service is None:
        subject.require(authorizer.node_write(node), "node:write", node)
    else:
        name = request.service.service
        subject.require(authorizer.service_write(name), "service:write", name)
    for check in request.checks:
        if check.service_name:
            subject.require(
                authorizer.service_write(check.service_name), "service:write", check.service_name
            )
        else:
            subject.require(authorizer.node_write(node), "node:write", node)


def catalog_deregister_check(
    store: StateStore,
) -> Callable[[AclSubject, DeregisterRequest], None]:
    """Deregistering a service needs write on that service (found in ``store``)."""

    def check(subject: AclSubject, request: DeregisterRequest) -> None:
        authorizer, node = subject.authorizer, request.node
        if request.service_id and not request.check_id:
            name = _service_name(store, node, request.service_id)
            if name is not None:
                subject.require(authorizer.service_write(name), "service:write", name)
                return
        subject.require(authorizer.node_write(node), "node:write", node)

    return check


def _service_name(store: StateStore, node: str, service_id: str) -> str | None:
    with store.read() as txn:
        _, names = txn.services()
        for name in names:
            _, instances = txn.service_nodes(name)
            for entry in instances:
                if entry.node.node == node and entry.service.service_id == service_id:
                    return name
    return None


def _readable(subject: AclSubject, node: Node, service: Service) -> bool:
    authorizer = subject.authorizer
    return authorizer.node_read(node.node) and authorizer.service_read(service.service)


def _check_readable(subject: AclSubject, check: HealthCheck) -> bool:
    if check.service_name:
        return subject.authorizer.service_read(check.service_name)
    return subject.authorizer.node_read(check.node)


def filter_nodes(subject: AclSubject, reply: IndexedNodes) -> IndexedNodes:
    kept = [node for node in reply.nodes if subject.authorizer.node_read(node.node)]
    return _marked(reply, len(kept) != len(reply.nodes), nodes=kept)


def filter_services(subject: AclSubject, reply: IndexedServices) -> IndexedServices:
    kept = {n: tags for n, tags in reply.services.items() if subject.authorizer.service_read(n)}
    return _marked(reply, len(kept) != len(reply.services), services=kept)


def filter_service_nodes(subject: AclSubject, reply: IndexedServiceNodes) -> IndexedServiceNodes:
    kept = [e for e in reply.service_nodes if _readable(subject, e.node, e.service)]
    return _marked(reply, len(kept) != len(reply.service_nodes), service_nodes=kept)


def _check_service_nodes(
    subject: AclSubject, entries: list[CheckServiceNode]
) -> tuple[list[CheckServiceNode], bool]:
    kept = [e for e in entries if _readable(subject, e.node, e.service)]
    return kept, len(kept) != len(entries)


def filter_check_service_nodes(
    subject: AclSubject, reply: IndexedCheckServiceNodes
) -> IndexedCheckServiceNodes:
    kept, filtered = _check_service_nodes(subject, reply.nodes)
    return _marked(reply, filtered, nodes=kept)


def filter_health_checks(subject: AclSubject, reply: IndexedHealthChecks) -> IndexedHealthChecks:
    kept = [check for check in reply.health_checks if _check_readable(subject, check)]
    return _marked(reply, len(kept) != len(reply.health_checks), health_checks=kept)


def filter_mesh_gateways(
    subject: AclSubject, reply: DatacenterIndexedCheckServiceNodes
) -> DatacenterIndexedCheckServiceNodes:
    kept: dict[str, list[CheckServiceNode]] = {}
    any_filtered = False
    for datacenter, entries in reply.datacenter_nodes.items():
        kept[datacenter], filtered = _check_service_nodes(subject, entries)
        any_filtered = any_filtered or filtered
    return _marked(reply, any_filtered, datacenter_nodes=kept)


def _marked(reply: R, filtered: bool, **changes: Any) -> R:
    if not filtered:
        return reply
    return msgspec.structs.replace(reply, results_filtered_by_acls=True, **changes)
