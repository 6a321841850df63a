"""Where a request is answered: here, by the leader, or by another datacenter.

The rules, applied in order to every request (from the RPC port, the HTTP
API or the server itself):

0. ``authorize`` decides whether this :class:`Caller` may make the request
   (servers-only methods, reserved catalog entries); a refusal is
   ``Permission denied: ...``. A request forwarded onwards arrives at the
   next server from this server's certificate, so each hop checks what it
   can know itself.
   The request's ACL token travels in its ``Token`` field to whichever server
   answers, which checks it (``acl_check`` / ``acl_filter``, see ``_acl``)
   just before the handler runs. This server's own calls without a token
   present its configured one (``acl.tokens.replication`` for federation
   states, ``acl.tokens.agent`` otherwise).
1. ``prepare`` may rewrite it (``FederationState.Apply`` targets the primary).
2. A request whose target datacenter is not ours goes to a server of that
   datacenter, chosen by the :class:`Router`. Unknown datacenter →
   ``No path to datacenter``; known, but no server answers →
   ``Remote DC has no server currently reachable``. What is tried again is
   the RPC client's one retry policy (``wanfed_agent.rpc``): a server that
   cannot be dialled is reported to the router and the next one is tried
   (nothing was sent, so this is safe even for writes); a read cut because
   the path to the datacenter changed is asked again along the new path, a
   write is not. Every forwarded call has a deadline: a blocking read's is
   its wait plus jitter plus a margin (``call_timeout``).
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
from typing import Any, Final, TypeVar, cast

import msgspec

from wanfed_agent.rpc import DialError, RpcPool, call_servers, call_timeout
from wanfed_agent.tls import ServerCertificatePolicy
from wanfed_fsm import ConsensusError, FsmError, NotLeaderError
from wanfed_proto import (
    DEFAULT_DOMAIN,
    EnvelopeError,
    RemoteError,
    RpcCall,
    RpcHandler,
)

from ._acl import TokenResolver
from ._caller import Caller
from ._endpoint import Endpoint, EndpointKind
from ._endpoints_errors import InvalidRequestError, typed_remote_error
from ._messages import ServerInfo
from ._router import NO_SERVER_REACHABLE, NoPathToDatacenterError, Router

__all__ = ["NO_CLUSTER_LEADER", "Dispatcher"]

T = TypeVar("T")

logger = logging.getLogger("wanfed_server.runtime.forward")

NO_CLUSTER_LEADER: Final = "No cluster leader"
_LEADER_POLL: Final = 0.02


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
        domain: str = DEFAULT_DOMAIN,
        acl: TokenResolver | None = None,
        agent_token: str = "",
        replication_token: str = "",
    ) -> None:
        """``acl`` resolves tokens (``None``: ACLs off); the tokens are what this
        server's own requests present."""
        self._acl = acl
        self._agent_token = agent_token
        self._replication_token = replication_token
        self._datacenter = datacenter
        self._policy = ServerCertificatePolicy(domain)
        self._endpoints = {endpoint.method: endpoint for endpoint in endpoints}
        self._is_leader = is_leader
        self._leader = leader
        self._router = router
        self._pool = pool
        self._hold_timeout = hold_timeout

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

    async def call(
        self, method: str, args: msgspec.Struct, reply_type: type[T], caller: Caller | None
    ) -> T:
        """``method`` with ``args`` in any Struct of the right shape, the reply as
        ``reply_type``: how the server's own code (and the HTTP API) calls an endpoint."""
        endpoint = self.endpoint(method)
        request: Any = args
        if endpoint.request_type is not msgspec.Raw and not isinstance(args, endpoint.request_type):
            try:
                request = msgspec.convert(msgspec.to_builtins(args), endpoint.request_type)
            except msgspec.ValidationError as exc:
                raise RemoteError(f"rpc {method}: invalid request: {exc}") from None
        reply = await self.dispatch(endpoint, request, caller)
        if reply_type is endpoint.reply_type:
            return cast(T, reply)
        return msgspec.convert(msgspec.to_builtins(reply), reply_type)

    async def dispatch(
        self, endpoint: Endpoint[Any, Any], request: Any, caller: Caller | None = None
    ) -> Any:
        """Run ``request``; ``caller`` defaults to this server's own code."""
        caller = caller or Caller.this_server()
        endpoint.authorize(caller, request)
        if caller.is_self:
            request = self._with_own_token(endpoint, request)
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
            return await self._run_here(endpoint, request)
        except NotLeaderError:
            # lost leadership between the check and the write: the new leader answers
            return await self._forward_leader(endpoint, request)
        except (FsmError, ValueError, msgspec.ValidationError) as exc:
            raise RemoteError(str(exc)) from None

    def _with_own_token(self, endpoint: Endpoint[Any, Any], request: Any) -> Any:
        token = (
            self._replication_token or self._agent_token
            if endpoint.method.startswith("FederationState.")
            else self._agent_token
        )
        if token and isinstance(request, msgspec.Struct) and getattr(request, "token", None) == "":
            return msgspec.structs.replace(request, token=token)
        return request

    async def _run_here(self, endpoint: Endpoint[Any, Any], request: Any) -> Any:
        """The handler, behind the request token's ACL decision (ACLs on)."""
        if self._acl is None or not self._acl.enabled:
            return await endpoint.handler(request)
        subject = self._acl.resolve(str(getattr(request, "token", "") or ""))
        endpoint.acl_check(subject, request)
        reply = await endpoint.handler(request)
        if endpoint.acl_filter is not None and not subject.is_management:
            reply = endpoint.acl_filter(subject, reply)
        return reply

    async def _forward_leader(self, endpoint: Endpoint[Any, Any], request: Any) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._hold_timeout
        last_error = NO_CLUSTER_LEADER
        while True:
            if self._is_leader():
                try:
                    return await self._run_here(endpoint, request)
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
        if not servers:
            raise RemoteError(NO_SERVER_REACHABLE)
        try:
            return await call_servers(
                self._pool,
                datacenter,
                servers,
                endpoint.method,
                request,
                endpoint.reply_type,
                read=endpoint.kind is not EndpointKind.WRITE,
                timeout=call_timeout(request),
                on_failed=self._router.notify_failed,
            )
        except DialError as exc:
            logger.warning(
                "cross-dc rpc failed: no server could be dialled",
                extra={"method": endpoint.method, "datacenter": datacenter, "error": str(exc)},
            )
            raise RemoteError(NO_SERVER_REACHABLE) from None
        except RemoteError as exc:
            typed = typed_remote_error(exc)
            if typed is exc:
                raise
            raise typed from None

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
                timeout=call_timeout(request),
            )
        except RemoteError as exc:
            typed = typed_remote_error(exc)
            if typed is exc:
                raise
            raise typed from None
