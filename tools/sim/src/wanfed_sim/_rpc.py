"""Simulated request/response between servers, over the path the locator picked.

A call dials one address. A local gateway's LAN address means the two-hop
path: the local gateway looks the target datacenter up in its real route
table and forwards to one of that datacenter's gateways, which forwards to
one of its servers. A primary gateway's WAN address is the direct path: that
gateway forwards to a server. An address that names no host any more (a
replaced gateway, a stale discovery answer) swallows the call.

Each hop asks the :class:`~wanfed_sim._network.Network`. The connection is
end-to-end TLS through the gateways, so a black hole anywhere on the way
fails the *dial*, at :data:`DIAL_TIMEOUT` (or the call's deadline if that
comes first); a reset fails it when the reset reaches the caller. Once the
request arrived, the pooled connection is kept alive: every
:data:`KEEPALIVE` seconds the path is crossed both ways, and a silent break
fails the call one keepalive later (yamux-style), a reset at once. The reply
crosses the same hosts backwards, judged when it is sent.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from wanfed_proto import server_sni

from ._datacenter import Datacenter, Gateway
from ._network import Host, Network
from ._scheduler import Scheduler

__all__ = ["Call", "Handler", "Respond", "RpcLayer"]

TIMEOUT = "i/o timeout"
DIAL_TIMEOUT = 10.0
KEEPALIVE = 30.0
RESET = "connection reset by peer"

Respond = Callable[[object, str | None], None]
"""How a handler answers: a value, or an error text."""


Handler = Callable[[Host, Respond], None]
"""The serving side of a call: answers through ``respond``, now or later."""


@dataclass(eq=False)
class Call:
    """One call in flight; ``done`` is called exactly once unless abandoned."""

    done: Callable[[object, str | None], None]
    finished: bool = False
    hops: list[Host] = field(default_factory=list)

    def abandon(self) -> None:
        self.finished = True

    def finish(self, value: object, error: str | None) -> None:
        if not self.finished:
            self.finished = True
            self.done(value, error)


class RpcLayer:
    """Routes calls through gateways and carries them over the network."""

    def __init__(
        self,
        scheduler: Scheduler,
        network: Network,
        rng: random.Random,
        datacenters: dict[str, Datacenter],
    ) -> None:
        self._scheduler = scheduler
        self._network = network
        self._rng = rng
        self._datacenters = datacenters
        self.lan: dict[str, Gateway] = {}
        self.wan: dict[str, Gateway] = {}
        self.calls = 0

    def call(
        self,
        origin: Host,
        target_datacenter: str,
        address: str,
        deadline: float,
        handler: Handler,
        done: Callable[[object, str | None], None],
    ) -> Call:
        """Dial ``address`` to reach a server of ``target_datacenter``."""
        self.calls += 1
        call = Call(done)
        self._scheduler.at(deadline, lambda: call.finish(None, TIMEOUT))
        route = self._route(origin, target_datacenter, address)
        if route is None:
            return call  # nothing answers: the caller times out
        if isinstance(route, str):
            self._scheduler.after(0.002, lambda: call.finish(None, route))
            return call
        call.hops = route
        outcome, delay = self._cross(route)
        if outcome == "blackhole":
            self._scheduler.after(DIAL_TIMEOUT, lambda: call.finish(None, "dial: " + TIMEOUT))
            return call
        if outcome == "reset":
            self._scheduler.after(delay, lambda: call.finish(None, RESET))
            return call
        server = route[-1]

        def arrive() -> None:
            if call.finished or not server.up or server.gone:
                return

            def respond(value: object, error: str | None) -> None:
                if call.finished:
                    return
                back, delay = self._cross(route[::-1])
                if back == "blackhole":
                    return
                if back == "reset":
                    self._scheduler.after(delay, lambda: call.finish(None, RESET))
                else:
                    self._scheduler.after(delay, lambda: call.finish(value, error))

            self._scheduler.after(KEEPALIVE, lambda: self._keepalive(call, route))
            handler(server, respond)

        self._scheduler.after(delay, arrive)
        return call

    def _keepalive(self, call: Call, route: list[Host]) -> None:
        if call.finished:
            return
        there, delay = self._cross(route)
        if there == "ok":
            back, more = self._cross(route[::-1])
            there, delay = back, delay + more
        if there == "ok":
            self._scheduler.after(KEEPALIVE, lambda: self._keepalive(call, route))
        elif there == "reset":
            self._scheduler.after(delay, lambda: call.finish(None, RESET))
        else:
            self._scheduler.after(KEEPALIVE, lambda: call.finish(None, "keepalive: " + TIMEOUT))

    def _cross(self, hosts: list[Host]) -> tuple[str, float]:
        total = 0.0
        for source, target in itertools.pairwise(hosts):
            outcome, delay = self._network.hop(source, target)
            total += delay
            if outcome != "ok":
                return outcome, total
        return "ok", total

    def _route(self, origin: Host, target: str, address: str) -> list[Host] | str | None:
        """The hosts a call crosses; an error text when a gateway refuses it; None: lost."""
        first = self.lan.get(address)
        if first is not None and first.host.datacenter != origin.datacenter:
            return None  # a LAN address of another datacenter routes nowhere
        if first is None:
            first = self.wan.get(address)
        if first is None:
            return None
        hosts = [origin, first.host]
        gateway = first
        if gateway.host.datacenter != target:
            upstream = self._pick(gateway.host.datacenter, target)
            if upstream is None:
                return f"gateway {gateway.name} has no route to {target}"
            remote = self.wan.get(upstream)
            if remote is None or remote.host.datacenter != target:
                return [*hosts, Host(upstream, target, "gateway", gone=True)]
            hosts.append(remote.host)
            gateway = remote
        server_address = self._pick(target, target)
        if server_address is None:
            return f"gateway {gateway.name} knows no live server of {target}"
        hosts.append(self._datacenters[target].addresses[server_address])
        return hosts

    def _pick(self, at: str, target: str) -> str | None:
        table = self._datacenters[at].route_table()
        route = table.lookup(server_sni(target, table.domain))
        if route is None:
            return None
        upstream = route.upstreams[self._rng.randrange(len(route.upstreams))]
        return str(upstream)
