"""Alive, suspect and dead: how news about a member changes what we hold.

Each member's incarnation number orders the news about it: a message about an
older incarnation is ignored, and only the member itself raises its
incarnation — which is how it *refutes* a suspicion or a death it hears about
itself while still running. A suspicion becomes a death when its Lifeguard
timer runs out (sooner with independent confirmations). A dead member the
member itself announced (``from == node``) has *left*; any other has *failed*
and is remembered for reconnection. Every accepted change is re-broadcast and
reported as a :class:`MemberEvent` when it matters to the pool's users.
"""

from __future__ import annotations

import ipaddress
import logging

from ._config import GossipConfig
from ._dissemination import Outbox
from ._events import HostPort, MemberEvent, MemberEventKind, MemberState
from ._member_table import KnownMember, MemberTable, valid_addr
from ._messages import Alive, Dead, Suspect
from ._suspicion import Awareness, Suspicion, suspicion_timeout

__all__ = ["StateChanges"]

logger = logging.getLogger("wanfed_agent.gossip")


class StateChanges:
    """Our incarnation, suspicions, failed members and events; reads only timings
    from ``config``."""

    def __init__(
        self, config: GossipConfig, table: MemberTable, outbox: Outbox, awareness: Awareness
    ) -> None:
        self._config = config
        self._name = config.name
        self._table = table
        self._outbox = outbox
        self._awareness = awareness
        self.incarnation = 0
        self.left = False
        self.suspicions: dict[str, Suspicion] = {}
        self.failed: dict[str, tuple[HostPort, float]] = {}
        """Members that failed (not left): name → (address, since), for reconnecting."""
        self.events: list[MemberEvent] = []

    def next_deadline(self, deadline: float) -> float:
        for suspicion in self.suspicions.values():
            deadline = min(deadline, suspicion.deadline)
        return deadline

    def expire_suspicions(self, now: float) -> None:
        for name, suspicion in list(self.suspicions.items()):
            if suspicion.deadline <= now:
                self._suspicion_expired(name, suspicion, now)

    def any_alive(self) -> bool:
        """Whether any other member is alive (someone to tell our news)."""
        return any(
            n.name != self._name and n.state is MemberState.ALIVE
            for n in self._table.nodes.values()
        )

    def alive(self, a: Alive, now: float, *, bootstrap: bool = False) -> None:
        is_local = a.node == self._name
        if self.left and is_local:
            return
        if len(a.vsn) >= 3 and (a.vsn[0] == 0 or a.vsn[1] == 0 or a.vsn[0] > a.vsn[1]):
            logger.warning("ignoring alive with invalid protocol versions node=%s", a.node)
            return
        if not valid_addr(a.addr):
            logger.warning("ignoring alive with a malformed address node=%s", a.node)
            return
        node = self._table.get(a.node)
        updates_node = False
        if node is None:
            node = KnownMember(
                name=a.node,
                addr=a.addr,
                port=a.port,
                meta=a.meta,
                incarnation=0,
                state=MemberState.DEAD,
                state_change=now,
            )
            if len(a.vsn) >= 6:
                node.vsn = a.vsn[:6]
            self._table.add(node)
            updates_node = True
        elif node.addr != a.addr or node.port != a.port:
            if node.state is MemberState.LEFT:
                updates_node = True
            else:
                logger.warning(
                    "conflicting address for member node=%s known=%s:%d claimed=%s:%d; ignoring",
                    a.node,
                    node.host,
                    node.port,
                    str(ipaddress.ip_address(a.addr)),
                    a.port,
                )
                return
        if a.incarnation <= node.incarnation and not is_local and not updates_node:
            return
        if a.incarnation < node.incarnation and is_local:
            return
        self.suspicions.pop(a.node, None)
        old_state, old_meta = node.state, node.meta
        if is_local and not bootstrap:
            if a.incarnation == node.incarnation and a.meta == node.meta and a.vsn == node.vsn:
                return
            self.refute(node, a.incarnation)
            return
        self._outbox.broadcast(a.node, a)
        if len(a.vsn) >= 6:
            node.vsn = a.vsn[:6]
        node.incarnation = a.incarnation
        node.meta = a.meta
        node.addr = a.addr
        node.port = a.port
        if node.state is not MemberState.ALIVE:
            node.state = MemberState.ALIVE
            node.state_change = now
        self.failed.pop(a.node, None)
        if old_state in (MemberState.DEAD, MemberState.LEFT):
            self.events.append(MemberEvent(kind=MemberEventKind.JOIN, member=node.member()))
            logger.info("member joined node=%s addr=%s:%d", node.name, node.host, node.port)
        elif old_meta != node.meta:
            self.events.append(MemberEvent(kind=MemberEventKind.UPDATE, member=node.member()))

    def suspect(self, s: Suspect, now: float) -> None:
        node = self._table.get(s.node)
        if node is None or s.incarnation < node.incarnation:
            return
        suspicion = self.suspicions.get(s.node)
        if suspicion is not None:
            if suspicion.confirm(s.from_):
                self._outbox.broadcast(s.node, s)
            return
        if node.state is not MemberState.ALIVE:
            return
        if node.name == self._name:
            self.refute(node, s.incarnation)
            return
        self._outbox.broadcast(s.node, s)
        node.incarnation = s.incarnation
        node.state = MemberState.SUSPECT
        node.state_change = now
        config = self._config
        n = len(self._table)
        k = config.suspicion_mult - 2
        if n - 2 < k:
            k = 0
        minimum = suspicion_timeout(config.suspicion_mult, n, config.probe_interval)
        maximum = config.suspicion_max_timeout_mult * minimum
        self.suspicions[s.node] = Suspicion(
            accuser=s.from_, k=k, minimum=minimum, maximum=maximum, now=now
        )
        logger.info(
            "member suspected node=%s by=%s; dead in %.1fs unless refuted",
            s.node,
            s.from_,
            maximum if k >= 1 else minimum,
        )

    def _suspicion_expired(self, name: str, suspicion: Suspicion, now: float) -> None:
        del self.suspicions[name]
        node = self._table.get(name)
        if (
            node is None
            or node.state is not MemberState.SUSPECT
            or node.state_change != suspicion.start
        ):
            return
        logger.info(
            "suspicion timed out node=%s confirmations=%d; declaring it dead", name, suspicion.n
        )
        self.dead(Dead(incarnation=node.incarnation, node=name, from_=self._name), now)

    def dead(self, d: Dead, now: float) -> None:
        node = self._table.get(d.node)
        if node is None or d.incarnation < node.incarnation:
            return
        self.suspicions.pop(d.node, None)
        if node.state in (MemberState.DEAD, MemberState.LEFT):
            return
        if node.name == self._name:
            if not self.left:
                self.refute(node, d.incarnation)
                return
            self._outbox.broadcast(d.node, d, track=True)
        else:
            self._outbox.broadcast(d.node, d)
        node.incarnation = d.incarnation
        node.state = MemberState.LEFT if d.node == d.from_ else MemberState.DEAD
        node.state_change = now
        kind = MemberEventKind.LEAVE if node.state is MemberState.LEFT else MemberEventKind.FAILED
        if node.state is MemberState.DEAD:
            self.failed[node.name] = ((node.host, node.port), now)
        self.events.append(MemberEvent(kind=kind, member=node.member()))
        logger.info("member %s node=%s by=%s", node.state.value, d.node, d.from_)

    def refute(self, me: KnownMember, accused: int) -> None:
        """Outbid a rumour about ourselves with a higher incarnation."""
        self.incarnation += 1
        if accused >= self.incarnation:
            self.incarnation = accused + 1
        me.incarnation = self.incarnation
        self._awareness.apply(1)
        logger.info("refuting a rumour about us incarnation=%d", me.incarnation)
        self._outbox.broadcast(
            me.name,
            Alive(
                incarnation=me.incarnation,
                node=me.name,
                addr=me.addr,
                port=me.port,
                meta=me.meta,
                vsn=me.vsn,
            ),
        )
