"""An in-memory network with a virtual clock for gossip tests and benchmarks.

It lives in the simulator, not in ``wanfed_agent``: the product never needs it.

Members are real :class:`Membership` cores; the network only moves their
packets and streams, with a fixed latency, optional random packet loss,
partitions and "silenced" members (a ``kill -9``: nothing in, nothing out).
Time advances from event to event, so ten simulated minutes take a fraction of
a second and every run with the same seed is identical.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections import Counter
from collections.abc import Callable, Iterable

from wanfed_agent.gossip import (
    GossipConfig,
    HostPort,
    MemberEvent,
    Membership,
    MemberState,
    SendPacket,
    StreamExchange,
    fast_profile,
)

__all__ = ["SimulatedNetwork"]


class SimulatedNetwork:
    """A deterministic pool of gossip members wired together in memory."""

    def __init__(self, *, seed: int = 0, latency: float = 0.002, loss: float = 0.0) -> None:
        self.now = 0.0
        self.latency = latency
        self.loss = loss
        self._rng = random.Random(seed)
        self._queue: list[tuple[float, int, Callable[[], None]]] = []
        self._tick = itertools.count()
        self.members: dict[str, Membership] = {}
        self._by_addr: dict[HostPort, str] = {}
        self._scheduled: dict[str, float] = {}
        self._silenced: set[str] = set()
        self._groups: dict[str, int] = {}
        self.packets_sent: Counter[str] = Counter()
        self.bytes_sent: Counter[str] = Counter()
        self.streams_opened: Counter[str] = Counter()
        self.events: dict[str, list[tuple[float, MemberEvent]]] = {}

    # -- building the pool ----------------------------------------------------

    def add(
        self, config: GossipConfig, *, tcp_ping_allowed: Callable[[str], bool] | None = None
    ) -> Membership:
        addr = (config.advertise_host, config.advertise_port)
        if addr in self._by_addr:
            raise ValueError(f"address {addr} already used in the simulation")
        member = Membership(
            config,
            now=self.now,
            seed=self._rng.getrandbits(32),
            tcp_ping_allowed=tcp_ping_allowed,
        )
        self.members[config.name] = member
        self._by_addr[addr] = config.name
        self.events[config.name] = []
        self._after(member)
        return member

    def add_fast_pool(
        self, count: int, *, prefix: str = "node", **overrides: object
    ) -> list[Membership]:
        """``count`` members with the fast profile, addresses 127.0.x.y:8302."""
        start = len(self.members)
        return [
            self.add(
                fast_profile(
                    f"{prefix}{start + i}",
                    f"127.0.{(start + i) // 250}.{(start + i) % 250 + 1}",
                    8302,
                    **overrides,
                )
            )
            for i in range(count)
        ]

    def join(self, name: str, target: str) -> None:
        """``name`` joins through ``target`` (a push/pull with the join flag)."""
        member = self.members[name]
        peer = self.members[target].config
        member.join(target, (peer.advertise_host, peer.advertise_port), self.now)
        self._after(member)

    def join_all(self, names: Iterable[str] | None = None, *, via: str | None = None) -> None:
        names = list(names if names is not None else self.members)
        seed = via or names[0]
        for name in names:
            if name != seed:
                self.join(name, seed)

    # -- faults ---------------------------------------------------------------

    def silence(self, name: str) -> None:
        """The member stops dead: no timers, nothing sent, nothing received."""
        self._silenced.add(name)

    def partition(self, *groups: Iterable[str]) -> None:
        """Only members in the same group can talk; unlisted members form group 0."""
        self._groups = {name: index + 1 for index, group in enumerate(groups) for name in group}

    def heal(self) -> None:
        self._groups = {}

    def update_meta(self, name: str, meta: bytes) -> None:
        self.members[name].update_meta(meta, self.now)
        self._after(self.members[name])

    def leave(self, name: str) -> None:
        self.members[name].leave(self.now)
        self._after(self.members[name])

    # -- running --------------------------------------------------------------

    def run_for(self, seconds: float) -> None:
        self.run_until(self.now + seconds)

    def run_until(
        self, end: float, stop: Callable[[], bool] | None = None, *, check_every: float = 0.01
    ) -> bool:
        """Process events up to ``end``; with ``stop``, return True once it holds.

        ``stop`` is evaluated at most every ``check_every`` simulated seconds,
        so the time it reports is late by up to that much.
        """
        next_check = self.now
        while self._queue and self._queue[0][0] <= end:
            when, _, action = heapq.heappop(self._queue)
            self.now = max(self.now, when)
            action()
            if stop is not None and self.now >= next_check:
                next_check = self.now + check_every
                if stop():
                    return True
        self.now = max(self.now, end)
        return stop() if stop is not None else False

    # -- views ----------------------------------------------------------------

    def view(self, observer: str, subject: str) -> MemberState | None:
        return self.members[observer].state_of(subject)

    def converged(self, names: Iterable[str] | None = None) -> bool:
        """Every listed live member sees every other listed member alive."""
        names = [
            n for n in (names if names is not None else self.members) if n not in self._silenced
        ]
        return all(self.view(a, b) is MemberState.ALIVE for a in names for b in names)

    def first_event(self, observer: str, subject: str, kind: str) -> float | None:
        for when, event in self.events[observer]:
            if event.member.name == subject and event.kind == kind:
                return when
        return None

    # -- plumbing -------------------------------------------------------------

    def _push(self, when: float, action: Callable[[], None]) -> None:
        heapq.heappush(self._queue, (when, next(self._tick), action))

    def _reachable(self, a: str, b: str) -> bool:
        if a in self._silenced or b in self._silenced:
            return False
        return self._groups.get(a, 0) == self._groups.get(b, 0)

    def _after(self, member: Membership) -> None:
        """Carry out what the member asked for and re-arm its one timer."""
        name = member.name
        for event in member.drain_events():
            self.events[name].append((self.now, event))
        for action in member.drain_actions():
            if isinstance(action, SendPacket):
                self._send_packet(name, action)
            else:
                self._exchange(name, action)
        deadline = member.next_deadline()
        if self._scheduled.get(name) != deadline:
            self._scheduled[name] = deadline
            self._push(deadline, lambda: self._fire(name, deadline))

    def _fire(self, name: str, deadline: float) -> None:
        if self._scheduled.get(name) != deadline or name in self._silenced:
            return
        member = self.members[name]
        member.handle_timer(self.now)
        self._after(member)

    def _send_packet(self, sender: str, action: SendPacket) -> None:
        self.packets_sent[sender] += 1
        self.bytes_sent[sender] += len(action.data)
        target = self._by_addr.get(action.addr)
        if target is None or not self._reachable(sender, target):
            return
        if self.loss and self._rng.random() < self.loss:
            return
        source = self._addr_of(sender)

        def deliver() -> None:
            if target in self._silenced:
                return
            member = self.members[target]
            member.handle_packet(action.data, source, self.now)
            self._after(member)

        self._push(self.now + self.latency, deliver)

    def _exchange(self, sender: str, action: StreamExchange) -> None:
        self.streams_opened[sender] += 1
        target = self._by_addr.get(action.addr)
        origin = self.members[sender]
        if target is None or not self._reachable(sender, target):
            # A partition makes the connect hang until the deadline; a dead
            # process behind a live host refuses at once. Both end in failure.
            when = (
                action.deadline
                if target is not None and target not in self._silenced
                else self.now + self.latency
            )

            def fail() -> None:
                origin.handle_stream_failure(action.stream_id, self.now)
                self._after(origin)

            self._push(when, fail)
            return
        source = self._addr_of(sender)

        def serve() -> None:
            if target in self._silenced:
                return
            member = self.members[target]
            reply = member.handle_stream(action.data, source, self.now)
            self._after(member)

            def answer() -> None:
                if reply is None:
                    origin.handle_stream_failure(action.stream_id, self.now)
                else:
                    origin.handle_stream_reply(action.stream_id, reply, self.now)
                self._after(origin)

            self._push(self.now + self.latency, answer)

        self._push(self.now + self.latency, serve)

    def _addr_of(self, name: str) -> HostPort:
        config = self.members[name].config
        return (config.advertise_host, config.advertise_port)
