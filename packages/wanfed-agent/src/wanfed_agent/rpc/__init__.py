"""The one RPC client every server-to-server call goes through.

Theory of operation. A call names a server (or "any server") of a
datacenter. :class:`RouteTable` turns that into a :class:`Route`: directly to
the server's address in this datacenter, else the path the gateway locator
(a :class:`PathSource`) reports, with an *epoch* that moves whenever that
path changes. :class:`RpcPool` keeps one multiplexed connection per route,
dialled by a :class:`ServerDialer` (:class:`TlsDialer`: TLS with SNI naming
the server, through a gateway picked among the path's candidates, each
attempt with its own short timeout). A call on a new epoch finds no
connection and dials along the new path; the old epoch's connections retire
(calls in flight get a short grace). Every call has a deadline, carried in
the envelope (:func:`call_timeout`; a blocking query's is its wait, jitter
and a margin), and pooled connections are kept alive by pings, a silent one
declared dead after :class:`KeepaliveSettings` ``dead_after``, failing its
calls at once. :func:`call_servers` applies the one retry policy
(:mod:`._retry`): dial failures move on to the next server, a read cut by a
path change is sent again along the new path, a write never is, and a
connection failing on the path in use fails the call.

Decisions (:class:`Keepalive`, :class:`CallAttempts`) are cores that take
``now``; the pool only carries them out.
"""

from ._client import ServerAddress, Target, call_servers
from ._deadline import BLOCKING_MARGIN, DEFAULT_CALL_TIMEOUT, blocking_call_timeout, call_timeout
from ._dial import (
    DC_NOT_AVAILABLE,
    DIAL_ATTEMPT_TIMEOUT,
    GATEWAY_ATTEMPTS,
    NO_OUTGOING_TLS,
    DialError,
    NoGatewayKnownError,
    PlainDialer,
    ServerDialer,
    TlsDialer,
    dial_through_gateway,
)
from ._keepalive import DEFAULT_KEEPALIVE, Keepalive, KeepaliveAction, KeepaliveSettings
from ._pool import RETIRE_GRACE, RpcPool
from ._retry import DEFAULT_RETRY, CallAttempts, Failure, RetryPolicy
from ._route import DIRECT, GatewayPicker, PathSource, Route, RouteTable

__all__ = [
    "BLOCKING_MARGIN",
    "DC_NOT_AVAILABLE",
    "DEFAULT_CALL_TIMEOUT",
    "DEFAULT_KEEPALIVE",
    "DEFAULT_RETRY",
    "DIAL_ATTEMPT_TIMEOUT",
    "DIRECT",
    "GATEWAY_ATTEMPTS",
    "NO_OUTGOING_TLS",
    "RETIRE_GRACE",
    "CallAttempts",
    "DialError",
    "Failure",
    "GatewayPicker",
    "Keepalive",
    "KeepaliveAction",
    "KeepaliveSettings",
    "NoGatewayKnownError",
    "PathSource",
    "PlainDialer",
    "RetryPolicy",
    "Route",
    "RouteTable",
    "RpcPool",
    "ServerAddress",
    "ServerDialer",
    "Target",
    "TlsDialer",
    "blocking_call_timeout",
    "call_servers",
    "call_timeout",
    "dial_through_gateway",
]
