"""Push/pull: whole member tables exchanged over a stream, and reconnecting.

Gossip spreads changes; push/pull repairs whatever gossip missed. Periodically
(less often in large pools, where a table costs more) we exchange our table
with one random live member, and a join is the same exchange with the join
flag. Remote state is believed only as far as we can check it: remote alive
and left are applied, remote suspect and dead become our own suspicions, so
our probes have a chance to disagree. State from a pool with which we would
share no protocol version is refused whole (memberlist's ``verifyProtocol``).
Members we declared dead (not those that left) are retried with a join
push/pull every ``reconnect_interval`` until ``reconnect_timeout`` (what Serf
adds on top of memberlist): that is how the two sides of a healed partition
find each other again.
"""

from __future__ import annotations

import logging
import math
import random

from ._config import GossipConfig
from ._dissemination import Outbox, PendingStream
from ._events import HostPort, MemberState, StreamExchange
from ._keyring import Keyring
from ._member_table import MemberTable, versions
from ._messages import (
    Alive,
    Dead,
    NodeStateKind,
    PushNodeState,
    PushPull,
    Suspect,
    encode_push_pull,
)
from ._state_changes import StateChanges

__all__ = ["StateSync", "incompatible_versions"]

logger = logging.getLogger("wanfed_agent.gossip")

_PUSH_PULL_SCALE_THRESHOLD = 32
_STREAM_TIMEOUT = 10.0

_KIND_OF = {
    MemberState.ALIVE: NodeStateKind.ALIVE,
    MemberState.SUSPECT: NodeStateKind.SUSPECT,
    MemberState.DEAD: NodeStateKind.DEAD,
    MemberState.LEFT: NodeStateKind.LEFT,
}


def push_pull_interval(interval: float, members: int) -> float:
    """Larger pools exchange whole tables less often: the cost grows with n."""
    if members <= _PUSH_PULL_SCALE_THRESHOLD:
        return interval
    return interval * (math.ceil(math.log2(members) - math.log2(_PUSH_PULL_SCALE_THRESHOLD)) + 1)


def incompatible_versions(states: tuple[PushNodeState, ...], table: MemberTable) -> str | None:
    """Why the pool would not share a protocol version after merging, if it would not.

    Every live member advertises the range it understands; each member's
    current version (remote or local, any state) must lie in the
    intersection, else some pair could not talk.
    """
    remote = [(s.name, versions(s.vsn), s.state == NodeStateKind.ALIVE) for s in states]
    local = [(n.name, versions(n.vsn), n.state is MemberState.ALIVE) for n in table.nodes.values()]
    alive_ranges = [v for _name, v, alive in remote + local if alive and any(v)]
    if not alive_ranges:
        return None
    pmin = max(v[0] for v in alive_ranges)
    pmax = min(v[1] for v in alive_ranges)
    dmin = max(v[3] for v in alive_ranges)
    dmax = min(v[4] for v in alive_ranges)
    for name, v, _alive in remote + local:
        if not pmin <= v[2] <= pmax:
            return f"Node '{name}' protocol version ({v[2]}) is incompatible: [{pmin}, {pmax}]"
        if not dmin <= v[5] <= dmax:
            return (
                f"Node '{name}' delegate protocol version ({v[5]}) is incompatible: "
                f"[{dmin}, {dmax}]"
            )
    return None


class StateSync:
    """Starts push/pulls (periodic, join, reconnect) and merges what comes back."""

    def __init__(
        self,
        config: GossipConfig,
        keyring: Keyring | None,
        table: MemberTable,
        outbox: Outbox,
        states: StateChanges,
        rng: random.Random,
    ) -> None:
        self._config = config
        self._name = config.name
        self._keyring = keyring
        self._table = table
        self._outbox = outbox
        self._states = states
        self._rng = rng

    def interval(self) -> float:
        return push_pull_interval(self._config.push_pull_interval, len(self._table))

    def local_state(self, join: bool) -> PushPull:
        states = tuple(
            PushNodeState(
                name=n.name,
                addr=n.addr,
                port=n.port,
                meta=n.meta,
                incarnation=n.incarnation,
                state=_KIND_OF[n.state],
                vsn=n.vsn,
            )
            for n in self._table.nodes.values()
        )
        return PushPull(join=join, states=states)

    def start(self, name: str, addr: HostPort, *, join: bool, now: float) -> StreamExchange:
        data = encode_push_pull(self.local_state(join), self._keyring)
        return self._outbox.open_stream(
            PendingStream(kind="push_pull", join=join), name, addr, data, now + _STREAM_TIMEOUT
        )

    def periodic(self, now: float) -> None:
        peers = self._table.random_nodes(
            1, lambda n: n.name != self._name and n.state is MemberState.ALIVE
        )
        if peers:
            self.start(peers[0].name, (peers[0].host, peers[0].port), join=False, now=now)

    def reconnect(self, now: float) -> None:
        failed = self._states.failed
        for name, (_addr, since) in list(failed.items()):
            if now - since > self._config.reconnect_timeout:
                del failed[name]
                logger.info("giving up reconnecting to failed member node=%s", name)
        if not failed or self._states.left:
            return
        name = self._rng.choice(sorted(failed))
        addr, _since = failed[name]
        logger.debug("trying to reconnect to failed member node=%s addr=%s:%d", name, *addr)
        self.start(name, addr, join=True, now=now)

    def checked_merge(
        self, states: tuple[PushNodeState, ...], source: HostPort | None, now: float
    ) -> bool:
        problem = incompatible_versions(states, self._table)
        if problem is not None:
            logger.error("not merging remote state from=%s error=%s", source, problem)
            return False
        self._merge(states, now)
        return True

    def _merge(self, states: tuple[PushNodeState, ...], now: float) -> None:
        changes = self._states
        for remote in states:
            if remote.state == NodeStateKind.ALIVE:
                alive = Alive(
                    incarnation=remote.incarnation,
                    node=remote.name,
                    addr=remote.addr,
                    port=remote.port or self._config.advertise_port,
                    meta=remote.meta,
                    vsn=remote.vsn,
                )
                changes.alive(alive, now)
            elif remote.state == NodeStateKind.LEFT:
                changes.dead(
                    Dead(incarnation=remote.incarnation, node=remote.name, from_=remote.name), now
                )
            elif remote.state in (NodeStateKind.DEAD, NodeStateKind.SUSPECT):
                # We only believe what we can check: treat remote deaths as
                # suspicions, so our own probes have a chance to disagree.
                changes.suspect(
                    Suspect(incarnation=remote.incarnation, node=remote.name, from_=self._name),
                    now,
                )
