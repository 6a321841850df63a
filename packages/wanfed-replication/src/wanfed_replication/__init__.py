"""wanfed_replication: federation states between the primary and the secondaries.

The generic :class:`IndexReplicator` and its pure :func:`diff_by_key`;
:class:`FederationStateReplication` (secondary leaders pull from the primary
and report every fetch to a :class:`ReplicationFeedback`); :class:`AntiEntropy`
(every leader pushes its own gateways to the primary); :class:`Pruner` (the
primary's leader forgets departed datacenters). Each talks to the server
through the small Protocols declared here.
"""

from ._federation import (
    AE_SYNC_INTERVAL,
    PRUNE_INTERVAL,
    AntiEntropy,
    DatacenterRegistry,
    FederationStateApplier,
    FederationStateReplication,
    LocalGatewayView,
    PrimaryFederationStates,
    Pruner,
    ReplicationFeedback,
    federation_state_to_sync,
    stale_datacenters,
)
from ._replicator import (
    DEFAULT_APPLY_LIMIT,
    MAX_RETRY_WAIT,
    Diff,
    IndexReplicator,
    ReplicationDelegate,
    ReplicationNotReady,
    ReplicationPolicy,
    ReplicationRoundError,
    RoundRestarted,
    diff_by_key,
)

__all__ = [
    "AE_SYNC_INTERVAL",
    "DEFAULT_APPLY_LIMIT",
    "MAX_RETRY_WAIT",
    "PRUNE_INTERVAL",
    "AntiEntropy",
    "DatacenterRegistry",
    "Diff",
    "FederationStateApplier",
    "FederationStateReplication",
    "IndexReplicator",
    "LocalGatewayView",
    "PrimaryFederationStates",
    "Pruner",
    "ReplicationDelegate",
    "ReplicationFeedback",
    "ReplicationNotReady",
    "ReplicationPolicy",
    "ReplicationRoundError",
    "RoundRestarted",
    "diff_by_key",
    "federation_state_to_sync",
    "stale_datacenters",
]
