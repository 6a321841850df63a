"""The server's place in the WAN gossip pool, and the router built from it.

Every server of every datacenter is a member ``<node>.<dc>`` of one WAN pool
whose tags say its datacenter (``dc``), role and RPC port. The pool answers
the question cross-datacenter RPC asks — which servers serve datacenter X —
so :class:`WanPool` is also the :class:`~._router.Router` the dispatcher uses:
alive members of X, a failed one moved to the back.

Who joins whom: servers of one datacenter join each other (flooding: every
server adds the servers it learns about from its own datacenter), and with
WAN federation via mesh gateways a secondary joins the primary through the
placeholder ``*.<primary>/192.0.2.2`` — a name the gateway transport turns
into a TLS connection to any primary server through a gateway; the address is
never dialled. The primary never joins out. When a join is tried is the
:class:`JoinSchedule`'s decision: at once, again ``retry_interval_wan`` after
a failure, and soon after a *nudge* from whoever knows that a join became
possible (for ``*.<primary>``: the gateway locator has a gateway to dial).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Final

from wanfed_agent.gossip import (
    GossipAgent,
    GossipConfig,
    GossipTransport,
    MemberState,
)
from wanfed_agent.gossip import Member as GossipMember
from wanfed_proto import InvalidNameError, split_node_name
from wanfed_server.interfaces import Member, MemberStatus

from ._router import RemoteServer

__all__ = [
    "WAN_JOIN_PLACEHOLDER_ADDRESS",
    "JoinLoop",
    "JoinSchedule",
    "WanPool",
    "datacenters_kept",
    "server_tags",
]

logger = logging.getLogger("wanfed_server.wan")

WAN_JOIN_PLACEHOLDER_ADDRESS: Final = "192.0.2.2"
"""TEST-NET-1: the address half of ``*.<primary>/192.0.2.2``; never dialled."""

_STATUS: Final = {
    MemberState.ALIVE: MemberStatus.ALIVE,
    MemberState.SUSPECT: MemberStatus.ALIVE,
    MemberState.DEAD: MemberStatus.FAILED,
    MemberState.LEFT: MemberStatus.LEFT,
}


def server_tags(
    *, datacenter: str, rpc_port: int, expect: int, wan_join_port: int
) -> dict[str, str]:
    """The tags a server carries in the pool, as Consul's servers carry them."""
    return {
        "role": "consul",
        "dc": datacenter,
        "port": str(rpc_port),
        "expect": str(expect),
        "build": "wanfed",
        "vsn": "2",
        "ft_fs": "1",
        "wan_join_port": str(wan_join_port),
    }


def datacenters_kept(
    members: Iterable[GossipMember], failed_names: Iterable[str], local: str
) -> list[str]:
    """The datacenters whose federation states pruning keeps, the local one included.

    A datacenter is forgotten only when none of its servers is left in the
    pool: every one *left* (a graceful leave) or was *reaped* (failed, and
    given up on after ``reconnect_timeout``). A server that merely *failed* —
    dead to gossip, e.g. behind a partition — still counts, whether it is
    still in the member list or only among the members being reconnected to:
    deleting its datacenter's record would leave that datacenter with no
    path back when the partition heals.
    """
    kept = {
        tags["dc"].lower()
        for member in members
        if (tags := member.tags).get("role") == "consul"
        and "dc" in tags
        and member.state is not MemberState.LEFT
    }
    for name in failed_names:
        with contextlib.suppress(InvalidNameError):
            kept.add(split_node_name(name)[1].lower())
    return sorted(kept | {local.lower()})


NUDGE_SPACING: Final = 1.0
"""Seconds a nudged WAN join waits after the previous try: the events that nudge
it (locator refreshes, path changes) may come in bursts; one try per burst."""


class JoinSchedule:
    """When a WAN join is tried next: the decision, with no clock and no I/O.

    A join is due at once when the loop starts, ``interval`` after each try
    (failed, or done and only re-checked), and again soon after a *nudge* —
    an event saying that a join that could not work before may work now: the
    gateway locator read the store, a fallback address became known, the
    path to the primary changed. The interval stays the pace after a real
    failure; a nudge never makes tries closer than :data:`NUDGE_SPACING`.
    Without nudges a join that was impossible at start-up (no gateway known
    yet) would wait a whole ``retry_interval_wan`` (30 s) for its next try.
    """

    def __init__(self, interval: float, *, spacing: float = NUDGE_SPACING) -> None:
        if not interval > 0:
            raise ValueError(f"join interval must be greater than zero seconds, got {interval!r}")
        self.interval = interval
        self._spacing = min(spacing, interval)
        self._due = float("-inf")
        self._last_try: float | None = None
        self._in_flight = False
        self._nudged_in_flight = False

    def due_in(self, now: float) -> float:
        """Seconds until the next try (0: now)."""
        return max(0.0, self._due - now)

    def began(self) -> None:
        """A join is on its way; a nudge now concerns the path it may not have used."""
        self._in_flight = True
        self._nudged_in_flight = False

    def tried(self, now: float) -> None:
        """A join ended (or was found unnecessary or impossible) at ``now``."""
        self._last_try = now
        nudged, self._in_flight, self._nudged_in_flight = self._nudged_in_flight, False, False
        self._due = now + (self._spacing if nudged else self.interval)

    def nudged(self, now: float) -> None:
        """Something that may let a join succeed happened at ``now``."""
        if self._in_flight:
            self._nudged_in_flight = True
            return
        earliest = now if self._last_try is None else self._last_try + self._spacing
        self._due = min(self._due, max(now, earliest))


class JoinLoop:
    """Carries out a :class:`JoinSchedule`: sleeps, joins, and wakes up when nudged."""

    def __init__(
        self,
        pool: WanPool,
        targets: Callable[[], Sequence[str]],
        *,
        schedule: JoinSchedule,
        until: Callable[[], bool],
        possible: Callable[[], bool],
        what: str,
    ) -> None:
        self._pool = pool
        self._targets = targets
        self._schedule = schedule
        self._until = until
        self._possible = possible
        self._what = what
        self._nudged = asyncio.Event()
        self.tries = 0
        """Joins sent so far (tests wait on it)."""

    def nudge(self, reason: str) -> None:
        """Ask for a try soon: ``reason`` may have made the join possible."""
        logger.debug("WAN join via %s nudged: %s", self._what, reason)
        self._schedule.nudged(asyncio.get_running_loop().time())
        self._nudged.set()

    async def _sleep(self, seconds: float) -> None:
        """Up to ``seconds``; a nudge ends the sleep early (the schedule says when next)."""
        self._nudged.clear()
        if seconds <= 0:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._nudged.wait()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        schedule, interval = self._schedule, self._schedule.interval
        while True:
            await self._sleep(schedule.due_in(loop.time()))
            if schedule.due_in(loop.time()) > 0:
                continue  # nudged: the schedule decides whether that is already now
            if self._until():
                schedule.tried(loop.time())
                continue
            if not self._possible():
                schedule.tried(loop.time())
                logger.info(
                    "WAN join via %s waits: no gateway to dial yet; it runs as soon as one is "
                    "known, else in %g s",
                    self._what,
                    interval,
                )
                continue
            self.tries += 1
            schedule.began()
            try:
                joined = await self._pool.join(list(self._targets()))
            finally:
                schedule.tried(loop.time())
            if joined:
                logger.info("WAN join succeeded via=%s contacted=%d", self._what, joined)
            else:
                logger.info(
                    "WAN join via %s not done yet; retrying in %g s, or sooner when nudged",
                    self._what,
                    interval,
                )


LEAVE_WITHIN: Final = 10.0
"""Seconds a graceful stop waits for its leave to spread through the WAN pool.
It returns as soon as the leave has been gossiped enough; only a slow or
broken path uses the whole window. Cut short, the other datacenters see this
server *failed*, not *left*, and a datacenter that failed is never pruned."""


class WanPool:
    """A gossip agent in the WAN pool, plus the router and member list built on it."""

    def __init__(
        self,
        *,
        config: GossipConfig,
        transport: GossipTransport,
        datacenter: str,
        primary_datacenter: str,
        tcp_ping_allowed: Callable[[str], bool] | None = None,
    ) -> None:
        self._datacenter = datacenter
        self._primary = primary_datacenter
        self.agent = GossipAgent(config, transport, tcp_ping_allowed=tcp_ping_allowed)
        self._failed: dict[str, int] = {}
        self._failures = 0
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        await self.agent.start()

    async def stop(self, *, leave: bool = True, within: float = LEAVE_WITHIN) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if leave:
            with contextlib.suppress(Exception):
                left = await self.agent.leave(within)
                logger.info("left the WAN pool propagated=%s", left)
        await self.agent.close()

    @property
    def name(self) -> str:
        return self.agent.core.name

    # --- joining ---------------------------------------------------------------

    async def join(self, targets: Sequence[str]) -> int:
        """Join ``name/host:port`` targets; how many answered."""
        if not targets:
            return 0
        try:
            return await self.agent.join(*targets)
        except Exception as exc:
            logger.warning("WAN join of %s failed: %s", ", ".join(targets), exc)
            return 0

    def keep_joining(
        self,
        targets: Callable[[], Sequence[str]],
        *,
        interval: float,
        until: Callable[[], bool],
        what: str,
        possible: Callable[[], bool] = lambda: True,
    ) -> JoinLoop:
        """Join ``targets`` until ``until()`` holds, then keep checking it every ``interval``.

        A join is tried only while ``possible()`` says it could work; the
        returned loop's :meth:`JoinLoop.nudge` asks for a try now (the caller
        calls it when something that makes the join possible appeared). A
        failed join is retried ``interval`` later, or at the next nudge.
        """
        join_loop = JoinLoop(
            self,
            targets,
            schedule=JoinSchedule(interval),
            until=until,
            possible=possible,
            what=what,
        )
        self._tasks.append(asyncio.create_task(join_loop.run(), name=f"wan-join-{what}"))
        return join_loop

    def has_seen_datacenter(self, datacenter: str) -> bool:
        """A server of ``datacenter`` is in the pool, alive or not (only ``left`` forgets).

        The readiness test of federation-state replication: once the primary
        was seen, its servers failing is a broken path to report, not a
        reason to wait.
        """
        return any(
            m.tags.get("dc") == datacenter and m.state != MemberState.LEFT
            for m in self.agent.members()
            if m.name != self.name
        )

    def knows_datacenter(self, datacenter: str) -> bool:
        return any(
            m.tags.get("dc") == datacenter and m.state == MemberState.ALIVE
            for m in self.agent.members()
            if m.name != self.name
        )

    # --- Router ------------------------------------------------------------------

    def _servers(self) -> list[tuple[GossipMember, dict[str, str]]]:
        """Server members with their tags, read once: every forwarded call walks this."""
        return [(m, tags) for m in self.agent.members() if (tags := m.tags).get("role") == "consul"]

    def datacenters(self) -> list[str]:
        known = {
            tags["dc"].lower()
            for m, tags in self._servers()
            if "dc" in tags and m.state in (MemberState.ALIVE, MemberState.SUSPECT)
        }
        return sorted(known | {self._datacenter.lower()})

    def known_datacenters(self) -> list[str]:
        """For pruning: see :func:`datacenters_kept`."""
        return datacenters_kept(
            self.agent.members(), self.agent.failed_member_names(), self._datacenter
        )

    def servers(self, datacenter: str) -> Sequence[RemoteServer] | None:
        wanted = datacenter.lower()
        members = [(m, tags) for m, tags in self._servers() if tags.get("dc", "").lower() == wanted]
        if not members:
            return None
        servers = [
            RemoteServer(
                node=_node_of(m.name),
                datacenter=tags["dc"],
                address=f"{m.host}:{tags.get('port', '8300')}",
            )
            for m, tags in members
            if m.state in (MemberState.ALIVE, MemberState.SUSPECT)
        ]
        # Servers that failed recently go last; otherwise keep a stable order.
        servers.sort(key=lambda s: (self._failed.get(f"{s.node}.{s.datacenter}", 0), s.node))
        return servers

    def notify_failed(self, server: RemoteServer) -> None:
        self._failures += 1
        self._failed[f"{server.node}.{server.datacenter}"] = self._failures

    # --- members for the API ---------------------------------------------------------

    def members(self) -> list[Member]:
        return [
            Member(
                name=m.name,
                addr=m.host,
                port=m.port,
                tags=m.tags,
                status=_STATUS[m.state],
                protocol_min=m.protocol[0],
                protocol_max=m.protocol[1],
                protocol_cur=m.protocol[2],
                delegate_min=m.delegate[0],
                delegate_max=m.delegate[1],
                delegate_cur=m.delegate[2],
            )
            for m in sorted(self.agent.members(), key=lambda m: m.name)
        ]


def _node_of(member_name: str) -> str:
    """The node part of a WAN member name (the whole name if it does not split)."""
    try:
        return split_node_name(member_name)[0]
    except InvalidNameError:
        return member_name
