"""The agent half of a server: services and checks registered on this node.

Services registered through ``/v1/agent/service/register`` belong to the
server's own node; the agent runs their TTL and TCP checks and keeps the
catalog in step with what it holds (anti-entropy), re-registering whatever
the catalog loses.
"""

from ._agent import LocalAgent, tcp_probe
from ._definitions import (
    CheckDefinition,
    DefinitionError,
    ServiceDefinition,
    parse_service_definition,
)
from ._persist import ServiceFile
from ._state import (
    CatalogView,
    CheckNotTtlError,
    LocalState,
    SyncPlan,
    UnknownCheckError,
    UnknownServiceError,
)

__all__ = [
    "CatalogView",
    "CheckDefinition",
    "CheckNotTtlError",
    "DefinitionError",
    "LocalAgent",
    "LocalState",
    "ServiceDefinition",
    "ServiceFile",
    "SyncPlan",
    "UnknownCheckError",
    "UnknownServiceError",
    "parse_service_definition",
    "tcp_probe",
]
