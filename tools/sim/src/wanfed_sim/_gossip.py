"""The WAN pool: every server's real SWIM ``Membership`` core over the simulated links.

Packets and push/pull streams cross one hop, server to server, judged by the
same :class:`~wanfed_sim._network.Network` as calls (so partitions and black
holes between datacenters cut gossip too); through mesh gateways the real
packets take more hops, which the simulation folds into one. A killed server's
core is dropped; a restarted one starts a new core and joins through a random
server of another datacenter (its retry-join list). The pruner's registry is
what the server's own ``datacenters_kept`` over the primary leader's core: every
datacenter with a server that neither left nor was reaped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from wanfed_agent.gossip import (
    GossipConfig,
    HostPort,
    Membership,
    MemberState,
    SendPacket,
    StreamExchange,
    encode_tags,
    wan_profile,
)
from wanfed_server.runtime._wan import datacenters_kept

from ._network import Host

if TYPE_CHECKING:
    from ._world import World

__all__ = ["GOSSIP_PORT", "GossipPool"]

GOSSIP_PORT: Final = 8302
RETRY_JOIN_INTERVAL: Final = 30.0
"""A server that knows no other member tries its join list again this often."""


class GossipPool:
    """Carries the membership cores' packets and streams on the virtual clock."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.members: dict[str, Membership] = {}
        self._hosts: dict[HostPort, Host] = {}
        self._addresses: dict[str, HostPort] = {}
        self._armed: dict[str, float] = {}
        self._lives: dict[str, int] = {}
        self.packets = 0

    def register(self, host: Host, ip: str) -> None:
        address = (ip, GOSSIP_PORT)
        self._hosts[address] = host
        self._addresses[host.name] = address

    def _config(self, host: Host) -> GossipConfig:
        ip, port = self._addresses[host.name]
        return wan_profile(
            f"{host.name}.{host.datacenter}",
            ip,
            port,
            meta=encode_tags({"dc": host.datacenter, "role": "consul"}),
        )

    def start(self, host: Host, join: list[Host]) -> None:
        """A new core for ``host`` (a start or a restart), joining through ``join``."""
        now = self.world.scheduler.now
        member = Membership(
            self._config(host), now=now, seed=self.world.scheduler.rng.getrandbits(32)
        )
        self.members[host.name] = member
        self._lives[host.name] = self._lives.get(host.name, 0) + 1
        self._armed.pop(host.name, None)
        self._join(host, member, join)
        life = self._lives[host.name]
        self.world.scheduler.after(RETRY_JOIN_INTERVAL, lambda: self._retry_join(host, life, join))

    def _join(self, host: Host, member: Membership, peers: list[Host]) -> None:
        now = self.world.scheduler.now
        for peer in peers:
            member.join(f"{peer.name}.{peer.datacenter}", self._addresses[peer.name], now)
        self._after(host)

    def _retry_join(self, host: Host, life: int, peers: list[Host]) -> None:
        member = self._alive(host, life)
        if member is None or len(member.members()) > 1:
            return
        self._join(host, member, peers)
        self.world.scheduler.after(RETRY_JOIN_INTERVAL, lambda: self._retry_join(host, life, peers))

    def stop(self, host: Host) -> None:
        self.members.pop(host.name, None)
        self._armed.pop(host.name, None)

    def known_datacenters(self, observer: str) -> list[str]:
        """What the server's registry answers the pruner, from ``observer``'s core."""
        member = self.members.get(observer)
        host = self._hosts[self._addresses[observer]]
        if member is None:
            return [host.datacenter]
        return datacenters_kept(member.members(), member.failed_member_names(), host.datacenter)

    def converged(self) -> list[str]:
        """Problems: a running server that does not see another running server alive."""
        problems: list[str] = []
        running = sorted(self.members)
        for observer in running:
            member = self.members[observer]
            for subject in running:
                host = self._hosts[self._addresses[subject]]
                state = member.state_of(f"{subject}.{host.datacenter}")
                if state is not MemberState.ALIVE:
                    problems.append(f"{observer} sees {subject} as {state}")
        return problems[:3]

    # -- plumbing -------------------------------------------------------------

    def _after(self, host: Host) -> None:
        member = self.members.get(host.name)
        if member is None:
            return
        member.drain_events()
        for action in member.drain_actions():
            if isinstance(action, SendPacket):
                self._packet(host, action)
            else:
                self._stream(host, action)
        deadline = member.next_deadline()
        if self._armed.get(host.name) != deadline:
            self._armed[host.name] = deadline
            life = self._lives[host.name]
            self.world.scheduler.at(deadline, lambda: self._fire(host, deadline, life))

    def _alive(self, host: Host, life: int) -> Membership | None:
        if self._lives.get(host.name) != life:
            return None
        return self.members.get(host.name)

    def _fire(self, host: Host, deadline: float, life: int) -> None:
        member = self._alive(host, life)
        if member is None or self._armed.get(host.name) != deadline:
            return
        del self._armed[host.name]
        member.handle_timer(self.world.scheduler.now)
        self._after(host)

    def _packet(self, sender: Host, action: SendPacket) -> None:
        self.packets += 1
        target = self._hosts.get(action.addr)
        if target is None:
            return
        outcome, delay = self.world.network.hop(sender, target)
        if outcome != "ok":
            return  # a datagram lost or refused is the same to the sender
        source = self._addresses[sender.name]
        life = self._lives.get(target.name, 0)

        def deliver() -> None:
            member = self._alive(target, life)
            if member is not None and target.up:
                member.handle_packet(action.data, source, self.world.scheduler.now)
                self._after(target)

        self.world.scheduler.after(delay, deliver)

    def _stream(self, sender: Host, action: StreamExchange) -> None:
        scheduler = self.world.scheduler
        life = self._lives[sender.name]
        target = self._hosts.get(action.addr)

        def fail() -> None:
            member = self._alive(sender, life)
            if member is not None:
                member.handle_stream_failure(action.stream_id, scheduler.now)
                self._after(sender)

        outcome, delay = (
            ("blackhole", 0.0) if target is None else self.world.network.hop(sender, target)
        )
        if target is None or outcome != "ok":
            scheduler.at(action.deadline if outcome == "blackhole" else scheduler.now + delay, fail)
            return
        source = self._addresses[sender.name]
        target_life = self._lives.get(target.name, 0)

        def serve() -> None:
            served = self._alive(target, target_life)
            if served is None:
                scheduler.at(action.deadline, fail)
                return
            reply = served.handle_stream(action.data, source, scheduler.now)
            self._after(target)
            back, back_delay = self.world.network.hop(target, sender)
            if back != "ok" or reply is None:
                scheduler.at(action.deadline if back == "blackhole" else scheduler.now, fail)
                return

            def answer() -> None:
                member = self._alive(sender, life)
                if member is not None:
                    member.handle_stream_reply(action.stream_id, reply, scheduler.now)
                    self._after(sender)

            scheduler.after(back_delay, answer)

        scheduler.after(delay, serve)
