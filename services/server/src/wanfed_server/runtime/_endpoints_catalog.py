"""``Catalog.*``, ``Health.*`` and ``Internal.ServiceDump``: the catalog over RPC.

Writes become FSM commands; reads are blocking queries over one store
transaction, so an index a client blocks on covers exactly what it read.
A request that is wrong in itself is refused here with
:class:`InvalidRequestError` (HTTP 400) before it reaches the log: the FSM
would refuse it too, but only as an opaque rejected write. A write that
claims the ``consul`` service or a server's node is refused unless the servers
themselves make it (``_reserved``).
"""

from __future__ import annotations

from typing import Any

import msgspec

from wanfed_fsm import (
    DCSpecificRequest,
    Deregister,
    DeregisterRequest,
    IndexedCheckServiceNodes,
    IndexedNodes,
    IndexedServiceNodes,
    IndexedServices,
    ReadTxn,
    Register,
    RegisterRequest,
    ServiceSpecificRequest,
    StateStore,
)

from ._acl_rules import (
    acl_open,
    catalog_deregister_check,
    catalog_register_check,
    filter_check_service_nodes,
    filter_health_checks,
    filter_nodes,
    filter_service_nodes,
    filter_services,
)
from ._endpoint import Endpoint, EndpointContext, EndpointKind, meta_fields, run_query
from ._endpoints_errors import InvalidRequestError
from ._messages import IndexedHealthChecks, NodeSpecificRequest
from ._reaper import deregister_critical_after
from ._reserved import ReservedCatalogEntries, ServerNodes

__all__ = ["catalog_endpoints", "validate_registration"]


def _dc(request: Any) -> str:
    return str(request.datacenter)


def validate_registration(request: RegisterRequest, store: StateStore) -> None:
    """Refuse a registration that is wrong in itself, naming what is wrong.

    Checks the leader could never act on (``DeregisterCriticalServiceAfter``
    that is not a duration), checks of another node, and ``SkipNodeUpdate``
    for a node the catalog does not know.
    """
    node = request.node.node
    for check in request.checks:
        if check.node.lower() != node.lower():
            raise InvalidRequestError(
                f"check {check.check_id!r} names node {check.node!r}, "
                f"but the registration is for node {node!r}"
            )
        try:
            deregister_critical_after(check)
        except ValueError as exc:
            raise InvalidRequestError(str(exc)) from None
    if request.skip_node_update:
        with store.read() as txn:
            _, known = txn.node(node)
        if known is None:
            raise InvalidRequestError(f"cannot skip the node update: node {node!r} is unknown")


def catalog_endpoints(context: EndpointContext, servers: ServerNodes) -> list[Endpoint[Any, Any]]:
    reserved = ReservedCatalogEntries(context.datacenter, servers)

    async def register(request: RegisterRequest) -> bool:
        validate_registration(request, context.store)
        if not request.node.datacenter:
            node = msgspec.structs.replace(request.node, datacenter=context.datacenter)
            request = msgspec.structs.replace(request, node=node)
        await context.consensus.apply(Register(request=request))
        return True

    async def deregister(request: DeregisterRequest) -> bool:
        await context.consensus.apply(Deregister(request=request))
        return True

    async def list_datacenters(_: DCSpecificRequest) -> list[str]:
        return sorted({context.datacenter.lower(), *context.router.datacenters()})

    async def list_nodes(request: DCSpecificRequest) -> IndexedNodes:
        meta, nodes = await run_query(context, request, lambda txn: txn.nodes())
        return IndexedNodes(**meta_fields(meta), nodes=nodes)

    async def list_services(request: DCSpecificRequest) -> IndexedServices:
        meta, services = await run_query(context, request, lambda txn: txn.services())
        return IndexedServices(**meta_fields(meta), services=services)

    async def service_nodes(request: ServiceSpecificRequest) -> IndexedServiceNodes:
        if not request.service_name:
            raise InvalidRequestError("Must provide service name")
        meta, found = await run_query(
            context, request, lambda txn: txn.service_nodes(request.service_name)
        )
        return IndexedServiceNodes(**meta_fields(meta), service_nodes=found)

    async def health_service_nodes(request: ServiceSpecificRequest) -> IndexedCheckServiceNodes:
        def query(txn: ReadTxn) -> tuple[int, Any]:
            if request.service_name:
                return txn.check_service_nodes(
                    request.service_name, passing_only=request.passing_only
                )
            return txn.check_service_nodes_by_kind(
                request.service_kind, passing_only=request.passing_only
            )

        if not request.service_name and not request.service_kind:
            raise InvalidRequestError("Must provide service name or service kind")
        meta, found = await run_query(context, request, query)
        return IndexedCheckServiceNodes(**meta_fields(meta), nodes=found)

    async def node_checks(request: NodeSpecificRequest) -> IndexedHealthChecks:
        if not request.node:
            raise InvalidRequestError("Must provide node")
        meta, checks = await run_query(context, request, lambda txn: txn.node_checks(request.node))
        return IndexedHealthChecks(**meta_fields(meta), health_checks=checks)

    async def service_dump(request: ServiceSpecificRequest) -> IndexedCheckServiceNodes:
        meta, found = await run_query(
            context, request, lambda txn: txn.service_dump(request.service_kind)
        )
        return IndexedCheckServiceNodes(**meta_fields(meta), nodes=found)

    read, write, local = EndpointKind.READ, EndpointKind.WRITE, EndpointKind.LOCAL
    return [
        Endpoint(
            "Catalog.Register",
            RegisterRequest,
            bool,
            write,
            register,
            _dc,
            authorize=reserved.register,
            acl_check=catalog_register_check,
        ),
        Endpoint(
            "Catalog.Deregister",
            DeregisterRequest,
            bool,
            write,
            deregister,
            _dc,
            authorize=reserved.deregister,
            acl_check=catalog_deregister_check(context.store),
        ),
        Endpoint(
            "Catalog.ListDatacenters",
            DCSpecificRequest,
            list[str],
            local,
            list_datacenters,
            acl_check=acl_open,
        ),
        Endpoint(
            "Catalog.ListNodes",
            DCSpecificRequest,
            IndexedNodes,
            read,
            list_nodes,
            _dc,
            acl_check=acl_open,
            acl_filter=filter_nodes,
        ),
        Endpoint(
            "Catalog.ListServices",
            DCSpecificRequest,
            IndexedServices,
            read,
            list_services,
            _dc,
            acl_check=acl_open,
            acl_filter=filter_services,
        ),
        Endpoint(
            "Catalog.ServiceNodes",
            ServiceSpecificRequest,
            IndexedServiceNodes,
            read,
            service_nodes,
            _dc,
            acl_check=acl_open,
            acl_filter=filter_service_nodes,
        ),
        Endpoint(
            "Health.ServiceNodes",
            ServiceSpecificRequest,
            IndexedCheckServiceNodes,
            read,
            health_service_nodes,
            _dc,
            acl_check=acl_open,
            acl_filter=filter_check_service_nodes,
        ),
        Endpoint(
            "Health.NodeChecks",
            NodeSpecificRequest,
            IndexedHealthChecks,
            read,
            node_checks,
            _dc,
            acl_check=acl_open,
            acl_filter=filter_health_checks,
        ),
        Endpoint(
            "Internal.ServiceDump",
            ServiceSpecificRequest,
            IndexedCheckServiceNodes,
            read,
            service_dump,
            _dc,
            acl_check=acl_open,
            acl_filter=filter_check_service_nodes,
        ),
    ]
