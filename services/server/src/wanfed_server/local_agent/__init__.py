"""The agent half of a server: services and checks registered on this node.

Services registered through ``/v1/agent/service/register`` belong to the
server's own node; the agent runs their TTL and TCP checks (TCP at most
once a second each, at most ``max_checks`` checks in all: the only checks a
server ever runs) and keeps the
catalog in step with what it holds (anti-entropy), re-registering whatever
the catalog loses.
"""

from ._agent import LocalAgent, tcp_probe
from ._definitions import (
    MIN_CHECK_INTERVAL,
    CheckDefinition,
    DefinitionError,
    ServiceDefinition,
    parse_service_definition,
)
from ._persist import ServiceFile
from ._state import (
    DEFAULT_MAX_CHECKS,
    CatalogView,
    CheckNotTtlError,
    LocalState,
    SyncPlan,
    TooManyChecksError,
    UnknownCheckError,
    UnknownServiceError,
)

__all__ = [
    "DEFAULT_MAX_CHECKS",
    "MIN_CHECK_INTERVAL",
    "CatalogView",
    "CheckDefinition",
    "CheckNotTtlError",
    "DefinitionError",
    "LocalAgent",
    "LocalState",
    "ServiceDefinition",
    "ServiceFile",
    "SyncPlan",
    "TooManyChecksError",
    "UnknownCheckError",
    "UnknownServiceError",
    "parse_service_definition",
    "tcp_probe",
]
