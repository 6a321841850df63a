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
never dialled. The primary never joins out.
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
from wanfed_server.interfaces import Member, MemberStatus

from ._router import RemoteServer

__all__ = ["WAN_JOIN_PLACEHOLDER_ADDRESS", "WanPool", "datacenters_kept", "server_tags"]

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
    kept.update(name.rsplit(".", 1)[1].lower() for name in failed_names if "." in name)
    return sorted(kept | {local.lower()})


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
        wait_for: asyncio.Event | None = None,
    ) -> None:
        """Retry a join every ``interval`` until ``until()`` holds (then keep checking)."""

        async def loop() -> None:
            if wait_for is not None:
                await wait_for.wait()
            while True:
                if not until():
                    wanted = list(targets())
                    joined = await self.join(wanted)
                    if joined:
                        logger.info("WAN join succeeded via=%s contacted=%d", what, joined)
                    else:
                        logger.info(
                            "WAN join via %s not done yet; retrying in %g s", what, interval
                        )
                await asyncio.sleep(interval)

        self._tasks.append(asyncio.create_task(loop(), name=f"wan-join-{what}"))

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
                node=m.name.rsplit(".", 1)[0],
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
