"""``FederationState.*``: the per-datacenter gateway records, kept in the primary.

``Apply`` always targets the primary datacenter, whatever the caller put in
``Datacenter``: federation states are written only there and replicated out.
Only servers write them (each leader's anti-entropy): a server of the
datacenter whose state is written, or a server of this datacenter forwarding
such a write to its leader.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec

from wanfed_agent.tls import ServerCertificatePolicy
from wanfed_fsm import (
    ZERO_TIME,
    DatacenterIndexedCheckServiceNodes,
    DCSpecificRequest,
    FederationStateQuery,
    FederationStateRequest,
    FederationStateResponse,
    FederationStateWrite,
    IndexedFederationStates,
)

from ._acl_rules import acl_open, acl_operator_read, acl_operator_write, filter_mesh_gateways
from ._caller import Caller
from ._endpoint import Endpoint, EndpointContext, EndpointKind, meta_fields, run_query
from ._endpoints_errors import INVALID_REQUEST_PREFIX, InvalidRequestError

__all__ = ["MISSING_FEDERATION_STATE_DATACENTER", "federation_state_endpoints"]

MISSING_FEDERATION_STATE_DATACENTER = f"{INVALID_REQUEST_PREFIX}missing federation state datacenter"


def federation_state_endpoints(
    context: EndpointContext, policy: ServerCertificatePolicy
) -> list[Endpoint[Any, Any]]:
    def servers_only(caller: Caller, request: FederationStateRequest) -> None:
        written = request.state.datacenter
        caller.require_server(
            policy,
            what="FederationState.Apply",
            datacenters=(written, context.datacenter) if written else (context.datacenter,),
        )

    def to_primary(request: FederationStateRequest) -> FederationStateRequest:
        return msgspec.structs.replace(request, datacenter=context.primary_datacenter)

    async def apply(request: FederationStateRequest) -> bool:
        state = request.state
        if not state.datacenter:
            raise InvalidRequestError(MISSING_FEDERATION_STATE_DATACENTER)
        if request.op == "upsert" and state.updated_at == ZERO_TIME:
            state = msgspec.structs.replace(state, updated_at=datetime.now(UTC))
            request = msgspec.structs.replace(request, state=state)
        await context.consensus.apply(FederationStateWrite(request=request))
        return True

    async def get(request: FederationStateQuery) -> FederationStateResponse:
        meta, state = await run_query(
            context, request, lambda txn: txn.federation_state(request.datacenter)
        )
        return FederationStateResponse(**meta_fields(meta), state=state)

    async def list_states(request: DCSpecificRequest) -> IndexedFederationStates:
        meta, states = await run_query(context, request, lambda txn: txn.federation_states())
        return IndexedFederationStates(**meta_fields(meta), states=states)

    async def list_mesh_gateways(request: DCSpecificRequest) -> DatacenterIndexedCheckServiceNodes:
        meta, gateways = await run_query(
            context, request, lambda txn: txn.mesh_gateways_by_datacenter()
        )
        return DatacenterIndexedCheckServiceNodes(**meta_fields(meta), datacenter_nodes=gateways)

    def target(request: Any) -> str:
        return str(request.datacenter)

    def query_target(request: FederationStateQuery) -> str:
        return request.target_datacenter

    read = EndpointKind.READ
    return [
        Endpoint(
            "FederationState.Apply",
            FederationStateRequest,
            bool,
            EndpointKind.WRITE,
            apply,
            target,
            to_primary,
            authorize=servers_only,
            acl_check=acl_operator_write,
        ),
        Endpoint(
            "FederationState.Get",
            FederationStateQuery,
            FederationStateResponse,
            read,
            get,
            query_target,
            acl_check=acl_operator_read,
        ),
        Endpoint(
            "FederationState.List",
            DCSpecificRequest,
            IndexedFederationStates,
            read,
            list_states,
            target,
            acl_check=acl_operator_read,
        ),
        Endpoint(
            "FederationState.ListMeshGateways",
            DCSpecificRequest,
            DatacenterIndexedCheckServiceNodes,
            read,
            list_mesh_gateways,
            target,
            acl_check=acl_open,
            acl_filter=filter_mesh_gateways,
        ),
    ]
