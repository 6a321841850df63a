"""The server runtime: consensus, the RPC port and its endpoints, forwarding,
cluster formation and the leader routines, composed by :class:`Server`.

``Server(config)`` implements both seams of ``wanfed_server.interfaces``:
``await server.rpc(method, request, reply_type)`` runs an endpoint exactly as
if it had arrived on the RPC port, and the ``ServerView`` properties describe
the running server.
"""

from ._acl import ACL_NOT_FOUND, AclNotFoundError, AclSubject, TokenResolver
from ._acl_messages import (
    ACLBootstrapRequest,
    ACLPolicyDeleteRequest,
    ACLPolicyGetRequest,
    ACLPolicyList,
    ACLPolicyResponse,
    ACLPolicySetRequest,
    ACLTokenDeleteRequest,
    ACLTokenGetRequest,
    ACLTokenList,
    ACLTokenResponse,
    ACLTokenSetRequest,
)
from ._acl_replication_status import AclReplicationStatus
from ._caller import Caller, PermissionDeniedError
from ._checks import CheckRunner, CheckSchedule, Expire, StatusChange
from ._cluster import (
    CLUSTER_FILE,
    HELLO_TIMEOUT,
    ClusterFile,
    FormingConsensus,
    ServerDirectory,
    hello_round,
)
from ._endpoint import Endpoint, EndpointKind
from ._endpoints_acl import ACL_DISABLED, AclDisabledError
from ._endpoints_errors import INVALID_REQUEST_PREFIX, InvalidRequestError
from ._endpoints_federation import MISSING_FEDERATION_STATE_DATACENTER
from ._forward import NO_CLUSTER_LEADER, Dispatcher
from ._leader import SERF_CHECK_ID, SERVER_SERVICE, LeaderRoutines, server_registration
from ._messages import ClusterInfo, IndexedHealthChecks, NodeSpecificRequest, ServerInfo
from ._reaper import (
    DEREGISTER_CRITICAL_MINIMUM,
    CriticalServiceReaper,
    Reap,
    deregister_critical_after,
)
from ._router import (
    NO_PATH_TO_DATACENTER,
    NO_SERVER_REACHABLE,
    NoPathToDatacenterError,
    RemoteServer,
    Router,
    StaticRouter,
)
from ._server import Server, ServerOptions

__all__ = [
    "ACL_DISABLED",
    "ACL_NOT_FOUND",
    "CLUSTER_FILE",
    "DEREGISTER_CRITICAL_MINIMUM",
    "HELLO_TIMEOUT",
    "INVALID_REQUEST_PREFIX",
    "MISSING_FEDERATION_STATE_DATACENTER",
    "NO_CLUSTER_LEADER",
    "NO_PATH_TO_DATACENTER",
    "NO_SERVER_REACHABLE",
    "SERF_CHECK_ID",
    "SERVER_SERVICE",
    "ACLBootstrapRequest",
    "ACLPolicyDeleteRequest",
    "ACLPolicyGetRequest",
    "ACLPolicyList",
    "ACLPolicyResponse",
    "ACLPolicySetRequest",
    "ACLTokenDeleteRequest",
    "ACLTokenGetRequest",
    "ACLTokenList",
    "ACLTokenResponse",
    "ACLTokenSetRequest",
    "AclDisabledError",
    "AclNotFoundError",
    "AclReplicationStatus",
    "AclSubject",
    "Caller",
    "CheckRunner",
    "CheckSchedule",
    "ClusterFile",
    "ClusterInfo",
    "CriticalServiceReaper",
    "Dispatcher",
    "Endpoint",
    "EndpointKind",
    "Expire",
    "FormingConsensus",
    "IndexedHealthChecks",
    "InvalidRequestError",
    "LeaderRoutines",
    "NoPathToDatacenterError",
    "NodeSpecificRequest",
    "PermissionDeniedError",
    "Reap",
    "RemoteServer",
    "Router",
    "Server",
    "ServerDirectory",
    "ServerInfo",
    "ServerOptions",
    "StaticRouter",
    "StatusChange",
    "TokenResolver",
    "deregister_critical_after",
    "hello_round",
    "server_registration",
]
