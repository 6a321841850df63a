"""Where a request is answered: here, by the leader, or by another datacenter.

The rules, applied in order to every request (from the RPC port, the HTTP
API or the server itself):

0. ``authorize`` decides whether this :class:`Caller` may make the request
   (servers-only methods, reserved catalog entries); a refusal is
   ``Permission denied: ...``. A request forwarded onwards arrives at the
   next server from this server's certificate, so each hop checks what it
   can know itself.
1. ``prepare`` may rewrite it (``FederationState.Apply`` targets the primary).
2. A request whose target datacenter is not ours goes to a server of that
   datacenter, chosen by the :class:`Router`. Unknown datacenter →
   ``No path to datacenter``; known, but no server answers →
   ``Remote DC has no server currently reachable``. A server that cannot be
   dialled is reported to the router and the next one is tried: nothing was
   sent, so this is safe even for writes.
3. Writes, and reads that do not allow stale results, are answered by the
   leader. A follower forwards them over a pooled multiplexed connection. While
   no leader is known (an election), it waits up to ``hold_timeout``; a leader
   that cannot be dialled is retried in the same window.
4. Otherwise the handler runs here. Domain errors (a rejected catalog write,
   a consistent read without confirmed leadership) become
   :class:`RemoteError` with the domain's message, as on the wire.

A request the caller got wrong (one that does not decode, or that an
endpoint refuses) fails with :class:`InvalidRequestError`, also when the
answer comes back from the leader or another datacenter: errors cross the
wire as text, and :func:`typed_remote_error` restores their kind.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

import msgspec

from wanfed_agent.tls import ServerCertificatePolicy
from wanfed_fsm import ConsensusError, FsmError, NotLeaderError
from wanfed_proto import (
    DEFAULT_DOMAIN,
    EnvelopeError,
    RemoteError,
    RpcCall,
    RpcHandler,
    TransportError,
)

from ._caller import Caller
from ._endpoint import Endpoint, EndpointKind
from ._endpoints_errors import InvalidRequestError, typed_remote_error
from ._messages import ServerInfo
from ._pool import DialError, PathChangedError, RpcPool
from ._router import NO_SERVER_REACHABLE, NoPathToDatacenterError, RemoteServer, Router

__all__ = ["NO_CLUSTER_LEADER", "Dispatcher"]

logger = logging.getLogger("wanfed_server.runtime.forward")

NO_CLUSTER_LEADER: Final = "No cluster leader"
_LEADER_POLL: Final = 0.02
_PATH_CHANGE_ATTEMPTS: Final = 3
"""A cross-DC read is sent at most this often when path changes keep cutting it."""


class Dispatcher:
    """The endpoint table plus the routing rules above."""

    def __init__(
        self,
        *,
        datacenter: str,
        endpoints: Iterable[Endpoint[Any, Any]],
        is_leader: Callable[[], bool],
        leader: Callable[[], ServerInfo | None],
        router: Router,
        pool: RpcPool,
        hold_timeout: float = 7.0,
        forward_timeout: float | None = None,
        domain: str = DEFAULT_DOMAIN,
    ) -> None:
        self._datacenter = datacenter
        self._policy = ServerCertificatePolicy(domain)
        self._endpoints = {endpoint.method: endpoint for endpoint in endpoints}
        self._is_leader = is_leader
        self._leader = leader
        self._router = router
        self._pool = pool
        self._hold_timeout = hold_timeout
        self._forward_timeout = forward_timeout

    @property
    def methods(self) -> list[str]:
        return sorted(self._endpoints)

    def endpoint(self, method: str) -> Endpoint[Any, Any]:
        try:
            return self._endpoints[method]
        except KeyError:
            raise RemoteError(f"rpc: can't find method {method}") from None

    @property
    def policy(self) -> ServerCertificatePolicy:
        """How this server reads its peers' certificates (its cluster domain)."""
        return self._policy

    def rpc_handlers(self) -> Mapping[str, RpcHandler]:
        """Handlers for ``serve_rpc``: decode the body as the endpoint's request type."""

        def handler_for(endpoint: Endpoint[Any, Any]) -> RpcHandler:
            async def handle(call: RpcCall) -> object:
                caller = Caller.rpc_peer(call.peer, self._policy)
                try:
                    request = call.decode(endpoint.request_type)
                except EnvelopeError as exc:
                    raise InvalidRequestError(str(exc)) from None
                return await self.dispatch(endpoint, request, caller)

            return handle

        return {method: handler_for(endpoint) for method, endpoint in self._endpoints.items()}

    async def dispatch(
        self, endpoint: Endpoint[Any, Any], request: Any, caller: Caller | None = None
    ) -> Any:
        """Run ``request``; ``caller`` defaults to this server's own code."""
        endpoint.authorize(caller or Caller.this_server(), request)
        request = endpoint.prepare(request)
        target = endpoint.target_datacenter(request)
        if target and target.lower() != self._datacenter.lower():
            return await self._forward_datacenter(endpoint, target, request)
        needs_leader = endpoint.kind is EndpointKind.WRITE or (
            endpoint.kind is EndpointKind.READ and not endpoint.allows_stale(request)
        )
        if needs_leader and not self._is_leader():
            return await self._forward_leader(endpoint, request)
        try:
            return await endpoint.handler(request)
        except NotLeaderError:
            # lost leadership between the check and the write: the new leader answers
            return await self._forward_leader(endpoint, request)
        except (FsmError, ValueError, msgspec.ValidationError) as exc:
            raise RemoteError(str(exc)) from None

    async def _forward_leader(self, endpoint: Endpoint[Any, Any], request: Any) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._hold_timeout
        last_error = NO_CLUSTER_LEADER
        while True:
            if self._is_leader():
                try:
                    return await endpoint.handler(request)
                except NotLeaderError:
                    pass
                except (ConsensusError, FsmError, ValueError, msgspec.ValidationError) as exc:
                    raise RemoteError(str(exc)) from None
            else:
                leader = self._leader()
                if leader is not None:
                    try:
                        return await self._call(
                            leader.node, leader.datacenter, leader.rpc_address, endpoint, request
                        )
                    except DialError as exc:
                        last_error = f"{NO_CLUSTER_LEADER}: leader {leader.node} unreachable"
                        logger.info(
                            "forward to leader failed method=%s leader=%s error=%s; retrying",
                            endpoint.method,
                            leader.node,
                            exc,
                        )
            if loop.time() >= deadline:
                raise RemoteError(last_error)
            await asyncio.sleep(_LEADER_POLL)

    async def _forward_datacenter(
        self, endpoint: Endpoint[Any, Any], datacenter: str, request: Any
    ) -> Any:
        servers = self._router.servers(datacenter)
        if servers is None:
            raise NoPathToDatacenterError
        for server in servers:
            try:
                return await self._call_across_path_changes(server, endpoint, request)
            except DialError as exc:
                logger.warning(
                    "cross-dc rpc dial failed method=%s dc=%s server=%s error=%s; "
                    "trying the next server",
                    endpoint.method,
                    datacenter,
                    server.node,
                    exc,
                )
                self._router.notify_failed(server)
            except PathChangedError:
                raise  # the server did nothing wrong
            except TransportError:
                self._router.notify_failed(server)
                raise
        raise RemoteError(NO_SERVER_REACHABLE)

    async def _call_across_path_changes(
        self, server: RemoteServer, endpoint: Endpoint[Any, Any], request: Any
    ) -> Any:
        """A read (often a blocking query) cut because the path to its datacenter
        changed is asked again, along the new path; its caller never sees the
        switch. A write is not: it may have been applied."""
        attempt = 1
        while True:
            try:
                return await self._call(
                    server.node, server.datacenter, server.address, endpoint, request
                )
            except PathChangedError as exc:
                if endpoint.kind is EndpointKind.WRITE or attempt == _PATH_CHANGE_ATTEMPTS:
                    raise
                attempt += 1
                logger.info(
                    "cross-dc read cut by a path change; asking again method=%s dc=%s "
                    "server=%s: %s",
                    endpoint.method,
                    server.datacenter,
                    server.node,
                    exc,
                )

    async def _call(
        self, node: str, datacenter: str, address: str, endpoint: Endpoint[Any, Any], request: Any
    ) -> Any:
        """One call to another server; its refusal keeps the kind it had there."""
        try:
            return await self._pool.call(
                node,
                datacenter,
                address,
                endpoint.method,
                request,
                endpoint.reply_type,
                timeout=self._forward_timeout,
            )
        except RemoteError as exc:
            typed = typed_remote_error(exc)
            if typed is exc:
                raise
            raise typed from None
