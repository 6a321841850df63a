"""The ``wanfed gateway`` process: data plane, self-registration and watches.

Theory of operation. :class:`GatewayProcess` asks a local server's HTTP API
which datacenter it serves (``/v1/agent/self``), starts the
:class:`MeshGateway` listener (and the status endpoint, if asked), then runs
one task per blocking-query watch, all against the same :class:`ServerPool`:

* ``/v1/internal/server-directory`` (the servers' own directory, blocking on
  its content hash)                → ``RouteFeed.set_server_directory``
* ``/v1/internal/federation-states/mesh-gateways`` → ``set_fed_state_gateways``
* the datacenter list (polled, as Consul caches it for 30 s) starts and stops
  one service-dump watch per remote DC → ``set_gateway_group``
* health of the gateway's own service → register again when our entry is gone
  or differs from what we would register (only with ``-register``);
* the TTL refresh: the registration is sent again every third of the check's
  TTL, so the gateway's check stays passing exactly while this process lives
  (only with ``-register``).

Local servers come from the server directory, never from the catalog's
``consul`` service: catalog rows are data anyone who reaches the HTTP API can
write, and routing on them would make the gateway a relay to any address.

Whenever the feed yields a new table it is swapped into the data plane. A
failing watch backs off (:class:`Backoff`); when the server cannot be reached
at all, or keeps answering a local query with server errors (no leader), the
pool moves to the next ``-http-addr`` and every watch follows.
:meth:`GatewayProcess.stop` deregisters the gateway's node before the
listener closes, so other DCs stop routing to it while it can still answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, TypeVar

import msgspec

from wanfed_fsm import CheckServiceNode
from wanfed_proto import InvalidNameError, normalize_domain

from ._api import REQUEST_MARGIN, ApiClient, ApiError, ServerUnreachableError
from ._feed import RouteFeed
from ._proxy import GatewayConfig, MeshGateway
from ._registrar import Registrar
from ._registration import CHECK_TTL, GatewayRegistration, is_registered
from ._routes import DirectoryServer, RouteInputError, RouteTable
from ._status import StatusServer
from ._watch import Backoff, BlockingIndex, ContentHash, ServerPool

__all__ = [
    "ApiError",
    "GatewayProcess",
    "GatewaySettings",
    "ServerUnreachableError",
    "default_node_name",
]

log = logging.getLogger("wanfed.gateway.process")

T = TypeVar("T")

SERVER_ERRORS_BEFORE_SWITCH: Final = 3
"""Server errors (5xx) in a row after which a watch moves to the next server."""


def default_node_name() -> str:
    """``<hostname>-mesh-gateway``: the gateway is its own node, next to the host's agent."""
    return f"{socket.gethostname().split('.')[0]}-mesh-gateway"


class GatewaySettings(msgspec.Struct, frozen=True, kw_only=True):
    """Everything ``wanfed gateway`` is told. A port of 0 in ``lan_port``/``wan_port``
    means "the port the listener got" (tests bind port 0)."""

    http_urls: tuple[str, ...]
    bind_host: str
    bind_port: int
    lan_host: str
    lan_port: int
    wan_host: str
    wan_port: int
    service: str = "mesh-gateway"
    node: str = ""
    domain: str = "consul"
    register: bool = True
    expose_servers: bool = True
    status_host: str | None = None
    status_port: int = 0
    token: str = ""
    """ACL token for the servers' API (a :class:`HiddenToken`, so ``repr`` hides it)."""
    gateway: GatewayConfig = msgspec.field(default_factory=GatewayConfig)
    wait: float = 300.0
    """``?wait=`` of every blocking query, seconds."""
    datacenters_interval: float = 30.0
    backoff_initial: float = 1.0
    backoff_cap: float = 30.0
    deregister_timeout: float = 5.0
    check_ttl: str = CHECK_TTL
    """TTL of the gateway's own check; refreshed every third of it."""

    def __post_init__(self) -> None:
        if not self.http_urls:
            raise ValueError("at least one server HTTP address is required")
        if self.expose_servers and not self.register:
            raise ValueError("'-expose-servers' requires '-register'")
        if self.wait <= 0 or self.datacenters_interval <= 0:
            raise ValueError("wait and datacenters_interval must be positive")
        try:
            normalize_domain(self.domain)
        except InvalidNameError as exc:
            raise ValueError(str(exc)) from None


class GatewayProcess:
    """One mesh gateway with everything around its data plane; ``start``/``stop``."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.pool = ServerPool(settings.http_urls)
        self._api = ApiClient(self.pool, settings.token)
        self.gateway = MeshGateway(
            RouteTable(local_dc="unknown", domain=settings.domain), settings.gateway
        )
        self._status: StatusServer | None = None
        self._feed: RouteFeed | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._dumps: dict[str, asyncio.Task[None]] = {}
        self.registration: GatewayRegistration | None = None
        self._registrar: Registrar | None = None
        self.datacenter = ""
        self.registered = asyncio.Event()
        """Set each time the gateway's registration is written to the catalog."""
        self.routes_changed = asyncio.Event()
        """Set whenever a new route table is swapped in (tests clear and wait on it)."""

    @property
    def address(self) -> tuple[str, int]:
        return self.gateway.address

    @property
    def status_address(self) -> tuple[str, int] | None:
        return None if self._status is None else self._status.address

    async def start(self) -> None:
        """Find the datacenter, listen, then start the watches (and the registration)."""
        self.datacenter = await self._local_datacenter()
        self._feed = RouteFeed(self.datacenter, self.settings.domain)
        self.gateway.update_routes(self._feed.table)
        settings = self.settings
        _, bound_port = await self.gateway.start(settings.bind_host, settings.bind_port)
        if settings.status_host is not None:
            self._status = StatusServer(self.gateway)
            await self._status.start(settings.status_host, settings.status_port)
        if settings.register:
            self.registration = GatewayRegistration(
                node=settings.node or default_node_name(),
                datacenter=self.datacenter,
                service=settings.service,
                lan_host=settings.lan_host,
                lan_port=settings.lan_port or bound_port,
                wan_host=settings.wan_host,
                wan_port=settings.wan_port or bound_port,
                expose_servers=settings.expose_servers,
                check_ttl=settings.check_ttl,
            )
            registrar = self._registrar = Registrar(
                self._api,
                self.registration,
                deregister_timeout=settings.deregister_timeout,
                registered=self.registered,
            )
            self._spawn(self._watch_registration(registrar))
            self._spawn(registrar.refresh_forever())
        self._spawn(self._watch_server_directory())
        self._spawn(self._watch_fed_state_gateways())
        self._spawn(self._watch_datacenters())
        log.info(
            "gateway started; watching the server directory and the catalog for routes",
            extra={
                "datacenter": self.datacenter,
                "listen": "{}:{}".format(*self.gateway.address),
                "servers": list(self.pool.urls),
                "register": settings.register,
            },
        )

    async def stop(self, *, deregister: bool = True) -> None:
        """Stop watching, deregister (best effort, each server once), close the listener.

        ``deregister=False`` leaves the catalog entry behind, as a crash does:
        the entry turns critical once its TTL passes without a refresh.
        Safe to call again: a second call finds nothing left to do.
        """
        tasks = [*self._tasks, *self._dumps.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        self._dumps.clear()
        registrar, self._registrar, self.registration = self._registrar, None, None
        if registrar is not None and deregister:
            await registrar.deregister()
        status, self._status = self._status, None
        if status is not None:
            await status.close()
        with contextlib.suppress(RuntimeError):
            await self.gateway.close()
        await self._api.close()

    # --- startup and shutdown ------------------------------------------------

    async def _local_datacenter(self) -> str:
        backoff = self._backoff()
        while True:
            url = self.pool.current
            try:
                body, _, _ = await self._api.request("GET", "/v1/agent/self")
                info = msgspec.json.decode(body, type=dict[str, Any])
                datacenter = info["Config"]["Datacenter"]
                if isinstance(datacenter, str) and datacenter:
                    return datacenter
                raise ValueError("no Config.Datacenter in /v1/agent/self")
            except (ServerUnreachableError, ApiError, msgspec.DecodeError) as exc:
                next_url = self.pool.failed(url)
                error: Exception = exc
            except (KeyError, TypeError, ValueError) as exc:
                next_url = self.pool.failed(url)
                error = exc
            delay = backoff.failed()
            log.warning(
                "cannot learn the datacenter from a server; trying the next one",
                extra={"server": url, "error": str(error), "next": next_url, "retry_in": delay},
            )
            await asyncio.sleep(delay)

    # --- watches ---------------------------------------------------------------

    def _spawn(self, coro: Awaitable[None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _backoff(self) -> Backoff:
        return Backoff(self.settings.backoff_initial, self.settings.backoff_cap)

    async def _watch(
        self,
        name: str,
        path: str,
        params: dict[str, str],
        reply_type: type[T],
        apply: Callable[[T], Awaitable[None] | None],
        *,
        switch_on_server_errors: bool = True,
        cursor: BlockingIndex | ContentHash | None = None,
    ) -> None:
        """Run one blocking query forever, handing each answer to ``apply``.

        ``switch_on_server_errors=False`` is for queries another datacenter
        answers: its errors say nothing about the local server. ``cursor``
        says how the query blocks: on the Raft index (the default) or on the
        content hash.
        """
        index = cursor if cursor is not None else BlockingIndex()
        backoff = self._backoff()
        wait = self.settings.wait
        while True:
            url = self.pool.current
            query = {**params, **index.query(f"{wait:g}s")}
            try:
                body, answer_index, answer_hash = await self._api.request(
                    "GET", path, params=query, limit=wait + wait / 16 + REQUEST_MARGIN
                )
                value = msgspec.json.decode(body, type=reply_type)
                outcome = apply(value)
                if outcome is not None:
                    await outcome
            except ServerUnreachableError as exc:
                next_url = self.pool.failed(url)
                index.reset()
                delay = backoff.failed()
                log.warning(
                    "watch lost its server; retrying against the next one",
                    extra={
                        "watch": name,
                        "server": url,
                        "error": str(exc),
                        "next": next_url,
                        "retry_in": delay,
                    },
                )
                await asyncio.sleep(delay)
                continue
            except (ApiError, msgspec.DecodeError, RouteInputError) as exc:
                delay = backoff.failed()
                next_url = url
                if (
                    switch_on_server_errors
                    and isinstance(exc, ApiError)
                    and exc.status >= 500
                    and backoff.failures >= SERVER_ERRORS_BEFORE_SWITCH
                ):
                    # Alive but useless (no leader, lost quorum): another
                    # server may do better.
                    next_url = self.pool.failed(url)
                    index.reset()
                log.warning(
                    "watch answer unusable; keeping the previous routes and retrying",
                    extra={
                        "watch": name,
                        "server": url,
                        "error": str(exc),
                        "next": next_url,
                        "retry_in": delay,
                    },
                )
                await asyncio.sleep(delay)
                continue
            except Exception:
                # A bug must not silently end a watch and freeze the routes.
                delay = backoff.failed()
                log.exception(
                    "watch failed unexpectedly; keeping the previous routes and retrying",
                    extra={"watch": name, "server": url, "retry_in": delay},
                )
                await asyncio.sleep(delay)
                continue
            if backoff.failures:
                log.info("watch recovered", extra={"watch": name, "server": url})
            backoff.succeeded()
            if not index.observe_answer(answer_index, answer_hash):
                log.info(
                    "watch index went backwards; re-reading everything",
                    extra={"watch": name, "server": url, "index": answer_index},
                )

    def _swap(self, table: RouteTable | None, reason: str) -> None:
        if table is None:
            return
        before = self.gateway.routes.exact
        added = sorted(table.exact.keys() - before.keys())
        removed = sorted(before.keys() - table.exact.keys())
        changed = sorted(
            name for name in table.exact.keys() & before.keys() if table.exact[name] != before[name]
        )
        self.gateway.update_routes(table)
        self.routes_changed.set()
        log.info(
            "routes changed; new connections use the new table, open ones keep their upstream",
            extra={"reason": reason, "added": added, "removed": removed, "changed": changed},
        )

    def _feed_or_fail(self) -> RouteFeed:
        if self._feed is None:
            raise RuntimeError("gateway process is not started")
        return self._feed

    async def _watch_server_directory(self) -> None:
        feed = self._feed_or_fail()

        def apply(servers: list[DirectoryServer]) -> None:
            self._swap(feed.set_server_directory(servers), "server directory")

        await self._watch(
            "server-directory",
            "/v1/internal/server-directory",
            {},
            list[DirectoryServer],
            apply,
            cursor=ContentHash(),
        )

    async def _watch_fed_state_gateways(self) -> None:
        feed = self._feed_or_fail()

        def apply(by_dc: dict[str, list[CheckServiceNode]]) -> None:
            self._swap(feed.set_fed_state_gateways(by_dc), "federation states")

        await self._watch(
            "federation-state-gateways",
            "/v1/internal/federation-states/mesh-gateways",
            {"stale": ""},
            dict[str, list[CheckServiceNode]],
            apply,
        )

    async def _watch_gateway_dump(self, dc: str) -> None:
        feed = self._feed_or_fail()

        def apply(gateways: list[CheckServiceNode]) -> None:
            self._swap(feed.set_gateway_group(dc, gateways), f"service dump of {dc}")

        await self._watch(
            f"gateway-dump:{dc}",
            "/v1/internal/service-dump",
            {"kind": "mesh-gateway", "dc": dc, "stale": ""},
            list[CheckServiceNode],
            apply,
            switch_on_server_errors=False,
        )

    async def _watch_datacenters(self) -> None:
        """Poll the datacenter list; one service-dump watch per remote DC."""
        feed = self._feed_or_fail()
        backoff = self._backoff()
        while True:
            url = self.pool.current
            try:
                body, _, _ = await self._api.request("GET", "/v1/catalog/datacenters")
                names = msgspec.json.decode(body, type=list[str])
            except ServerUnreachableError as exc:
                next_url = self.pool.failed(url)
                delay = backoff.failed()
                log.warning(
                    "datacenter list unavailable; retrying against the next server",
                    extra={"server": url, "error": str(exc), "next": next_url, "retry_in": delay},
                )
                await asyncio.sleep(delay)
                continue
            except (ApiError, msgspec.DecodeError, msgspec.ValidationError) as exc:
                delay = backoff.failed()
                log.warning(
                    "datacenter list unusable; retrying",
                    extra={"server": url, "error": str(exc), "retry_in": delay},
                )
                await asyncio.sleep(delay)
                continue
            backoff.succeeded()
            self._follow_datacenters(feed, names)
            await asyncio.sleep(self.settings.datacenters_interval)

    def _follow_datacenters(self, feed: RouteFeed, names: Sequence[str]) -> None:
        remote = {name for name in names if name.lower() != self.datacenter.lower()}
        for dc in sorted(remote - self._dumps.keys()):
            log.info("datacenter appeared; watching its mesh gateways", extra={"dc": dc})
            self._dumps[dc] = asyncio.ensure_future(self._watch_gateway_dump(dc))
        for dc in sorted(self._dumps.keys() - remote):
            log.info("datacenter left the list; forgetting its mesh gateways", extra={"dc": dc})
            self._dumps.pop(dc).cancel()
            self._swap(feed.drop_gateway_group(dc), f"{dc} left")

    async def _watch_registration(self, registrar: Registrar) -> None:
        registration = registrar.registration

        async def apply(entries: list[CheckServiceNode]) -> None:
            if is_registered(registration, entries):
                return
            log.info(
                "gateway registration missing or outdated in the catalog; registering",
                extra={
                    "node": registration.node,
                    "service": registration.service,
                    "lan": registration.lan_address,
                    "expose_servers": registration.expose_servers,
                },
            )
            await registrar.register()

        await self._watch(
            "registration",
            f"/v1/health/service/{registration.service}",
            {},
            list[CheckServiceNode],
            apply,
        )
