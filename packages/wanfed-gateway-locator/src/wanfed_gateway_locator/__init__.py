"""wanfed_gateway_locator: which mesh gateway to dial to reach a datacenter.

:class:`GatewayLocator` is the decision core (no I/O, time as a parameter);
:class:`LocatorService` keeps it fed from the local store and stamps the
replication feedback with the current time.
"""

from ._locator import (
    FAILURES_BEFORE_DIRECT,
    LOCAL_PROBE_INTERVAL,
    AddressSource,
    Candidate,
    DatacenterRoute,
    GatewayLocator,
    LocalProbeStatus,
    LocatorStatus,
    Path,
    ReplicationStatus,
    merge_sorted_unique,
)
from ._service import (
    FederationStateSource,
    LocalPathProbe,
    LocalStateNotInitialized,
    LocatorService,
)

__all__ = [
    "FAILURES_BEFORE_DIRECT",
    "LOCAL_PROBE_INTERVAL",
    "AddressSource",
    "Candidate",
    "DatacenterRoute",
    "FederationStateSource",
    "GatewayLocator",
    "LocalPathProbe",
    "LocalProbeStatus",
    "LocalStateNotInitialized",
    "LocatorService",
    "LocatorStatus",
    "Path",
    "ReplicationStatus",
    "merge_sorted_unique",
]
