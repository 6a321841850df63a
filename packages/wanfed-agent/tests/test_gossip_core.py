"""The membership core driven by hand: exact packets out for packets and time in."""

from __future__ import annotations

import pytest

from wanfed_agent.gossip import (
    Ack,
    Alive,
    Dead,
    GossipConfigError,
    IndirectPing,
    MemberEventKind,
    Membership,
    MemberState,
    Nack,
    Ping,
    PushNodeState,
    PushPull,
    SendPacket,
    StreamExchange,
    Suspect,
    decode_packet,
    encode_message,
    encode_push_pull,
    encode_stream_message,
    fast_profile,
    read_stream_message,
    tcp_pings_allowed_within,
)

LO = bytes((127, 0, 0, 1))
VSN = bytes((1, 5, 2, 0, 0, 0))


def alive(name: str, last_octet: int, incarnation: int = 1) -> bytes:
    return encode_message(
        Alive(
            incarnation=incarnation,
            node=name,
            addr=bytes((127, 0, 0, last_octet)),
            port=8302,
            vsn=VSN,
        )
    )


def core_with_peers(*peers: str, policy: str | None = None) -> Membership:
    core = Membership(
        fast_profile("me.dc1", "127.0.0.1", 8302),
        now=0.0,
        seed=3,
        tcp_ping_allowed=tcp_pings_allowed_within(policy) if policy else None,
    )
    for index, name in enumerate(peers, start=2):
        core.handle_packet(alive(name, index), ("127.0.0.9", 1), 0.0)
    core.drain_actions()
    core.drain_events()
    return core


def packets(core: Membership) -> list[tuple[str, list[object]]]:
    return [
        (action.name, list(decode_packet(action.data)))
        for action in core.drain_actions()
        if isinstance(action, SendPacket)
    ]


def run_to(core: Membership, end: float) -> list[SendPacket | StreamExchange]:
    actions: list[SendPacket | StreamExchange] = []
    now = 0.0
    while (deadline := core.next_deadline()) <= end:
        now = max(now, deadline)
        core.handle_timer(now)
        actions.extend(core.drain_actions())
    return actions


def test_ping_is_answered_with_an_ack_to_the_source_address() -> None:
    core = core_with_peers()
    ping = Ping(seq_no=42, node="me.dc1", source_addr=LO, source_port=9999, source_node="b.dc1")
    core.handle_packet(encode_message(ping), ("127.0.0.5", 1234), 1.0)
    sent = core.drain_actions()
    assert len(sent) == 1
    assert isinstance(sent[0], SendPacket)
    assert sent[0].addr == ("127.0.0.1", 9999)
    assert sent[0].name == "b.dc1"
    assert Ack(seq_no=42) in decode_packet(sent[0].data)


def test_ping_for_another_name_is_not_answered() -> None:
    core = core_with_peers()
    core.handle_packet(encode_message(Ping(seq_no=1, node="someone.else")), ("127.0.0.5", 1), 1.0)
    assert core.drain_actions() == []


def test_failed_probe_goes_indirect_then_suspects() -> None:
    core = core_with_peers("a.dc1", "b.dc1", "c.dc1")
    actions = run_to(core, 0.5)
    pings = [
        a
        for a in actions
        if isinstance(a, SendPacket) and isinstance(decode_packet(a.data)[0], Ping)
    ]
    assert pings, "a probe must start within one interval"
    target = pings[0].name
    indirect = [
        (a.name, m)
        for a in actions
        if isinstance(a, SendPacket)
        for m in decode_packet(a.data)
        if isinstance(m, IndirectPing)
    ]
    about_target = [(name, m) for name, m in indirect if m.node == target]
    assert about_target, "no ack: indirect probes must follow"
    assert {name for name, _ in about_target} <= {"a.dc1", "b.dc1", "c.dc1"} - {target}
    assert all(m.nack for _, m in about_target)
    fallback = [a for a in actions if isinstance(a, StreamExchange)]
    assert fallback, "same-datacenter members get a TCP fallback ping"
    msg, _ = read_stream_message(fallback[0].data)
    assert isinstance(msg, Ping)
    assert core.state_of(target) is MemberState.SUSPECT


def test_no_tcp_fallback_ping_across_datacenters() -> None:
    core = core_with_peers("a.dc2", "b.dc2", "c.dc2", policy="dc1")
    actions = run_to(core, 1.0)
    assert not [
        a
        for a in actions
        if isinstance(a, StreamExchange) and isinstance(read_stream_message(a.data)[0], Ping)
    ]


def test_tcp_fallback_ack_prevents_suspicion() -> None:
    core = core_with_peers("a.dc1")
    now = 0.0
    while True:
        now = core.next_deadline()
        core.handle_timer(now)
        streams = [a for a in core.drain_actions() if isinstance(a, StreamExchange)]
        pings = [s for s in streams if isinstance(read_stream_message(s.data)[0], Ping)]
        if pings:
            break
    ping = read_stream_message(pings[0].data)[0]
    assert isinstance(ping, Ping)
    reply = encode_stream_message(Ack(seq_no=ping.seq_no))
    assert core.handle_stream_reply(pings[0].stream_id, reply, now)
    # Past the end of this probe (but before the next one could fail).
    end = pings[0].deadline + core.config.probe_timeout / 2
    while (deadline := core.next_deadline()) <= end:
        core.handle_timer(deadline)
        core.drain_actions()
    assert core.state_of("a.dc1") is MemberState.ALIVE


def test_indirect_ping_is_relayed_and_nacked_on_silence() -> None:
    core = core_with_peers("target.dc1")
    req = IndirectPing(
        seq_no=77,
        target=bytes((127, 0, 0, 2)),
        port=8302,
        node="target.dc1",
        nack=True,
        source_addr=LO,
        source_port=7000,
        source_node="asker.dc1",
    )
    core.handle_packet(encode_message(req), ("127.0.0.1", 7000), 10.0)
    sent = packets(core)
    relayed = [
        m for name, msgs in sent if name == "target.dc1" for m in msgs if isinstance(m, Ping)
    ]
    assert len(relayed) == 1
    # The target stays silent: after the probe timeout the asker gets a nack.
    core.handle_timer(10.0 + core.config.probe_timeout)
    nacks = [
        m
        for name, msgs in packets(core)
        if name == "asker.dc1"
        for m in msgs
        if isinstance(m, Nack)
    ]
    assert nacks == [Nack(seq_no=77)]


def test_indirect_ack_is_forwarded_with_the_askers_sequence_number() -> None:
    core = core_with_peers("target.dc1")
    req = IndirectPing(seq_no=5, target=bytes((127, 0, 0, 2)), port=8302, node="target.dc1")
    core.handle_packet(encode_message(req), ("127.0.0.3", 7001), 1.0)
    relayed = [m for _, msgs in packets(core) for m in msgs if isinstance(m, Ping)]
    core.handle_packet(encode_message(Ack(seq_no=relayed[0].seq_no)), ("127.0.0.2", 8302), 1.01)
    forwarded = [
        (a.addr, decode_packet(a.data)) for a in core.drain_actions() if isinstance(a, SendPacket)
    ]
    assert forwarded[0][0] == ("127.0.0.3", 7001)
    assert Ack(seq_no=5) in forwarded[0][1]


def test_suspicion_about_ourselves_is_refuted_with_a_higher_incarnation() -> None:
    core = core_with_peers("a.dc1")
    me_before = core.member("me.dc1")
    assert me_before is not None
    accusation = Suspect(incarnation=me_before.incarnation + 5, node="me.dc1", from_="a.dc1")
    core.handle_packet(encode_message(accusation), ("127.0.0.2", 8302), 1.0)
    me = core.member("me.dc1")
    assert me is not None
    assert me.state is MemberState.ALIVE
    assert me.incarnation == me_before.incarnation + 6
    assert core.health_score == 1  # Lifeguard: being accused lowers our own confidence
    # The refutation rides the next packet we send.
    core.handle_packet(encode_message(Ping(seq_no=1, node="me.dc1")), ("127.0.0.2", 8302), 1.1)
    carried = [m for _, msgs in packets(core) for m in msgs if isinstance(m, Alive)]
    assert carried
    assert carried[0].incarnation == me.incarnation


def test_dead_from_itself_means_left() -> None:
    core = core_with_peers("a.dc1")
    core.handle_packet(
        encode_message(Dead(incarnation=1, node="a.dc1", from_="a.dc1")), ("127.0.0.2", 8302), 1.0
    )
    assert core.state_of("a.dc1") is MemberState.LEFT
    assert [e.kind for e in core.drain_events()] == [MemberEventKind.LEAVE]


def test_stale_incarnations_are_ignored() -> None:
    core = core_with_peers("a.dc1")
    core.handle_packet(alive("a.dc1", 2, incarnation=9), ("127.0.0.2", 8302), 1.0)
    core.handle_packet(
        encode_message(Dead(incarnation=3, node="a.dc1", from_="x")), ("127.0.0.2", 8302), 1.0
    )
    assert core.state_of("a.dc1") is MemberState.ALIVE


def test_conflicting_address_for_a_live_member_is_refused() -> None:
    core = core_with_peers("a.dc1")
    core.handle_packet(alive("a.dc1", 77, incarnation=5), ("127.0.0.77", 8302), 1.0)
    member = core.member("a.dc1")
    assert member is not None
    assert member.host == "127.0.0.2"


def test_push_pull_request_gets_our_table_and_merges_theirs() -> None:
    core = core_with_peers("a.dc1")
    state = PushNodeState(
        name="new.dc1", addr=bytes((127, 0, 0, 8)), port=8302, incarnation=2, vsn=VSN
    )
    reply = core.handle_stream(
        encode_push_pull(PushPull(join=True, states=(state,))), ("127.0.0.8", 1), 2.0
    )
    assert reply is not None
    answer = read_stream_message(reply)[0]
    assert isinstance(answer, PushPull)
    assert answer.join
    assert {s.name for s in answer.states} == {"me.dc1", "a.dc1"}
    assert core.state_of("new.dc1") is MemberState.ALIVE


def test_tcp_pings_stay_inside_the_datacenter_named_in_the_member_name() -> None:
    allowed = tcp_pings_allowed_within("dc1")
    assert allowed("a.dc1")
    assert not allowed("a.dc2")
    assert allowed("unparsable")


def test_core_needs_a_real_port() -> None:
    with pytest.raises(GossipConfigError, match="real advertised port"):
        Membership(fast_profile("me.dc1", "127.0.0.1", 0), now=0.0)


def test_suspicion_timeout_shrinks_with_independent_confirmations() -> None:
    from wanfed_agent.gossip._suspicion import Awareness, Suspicion

    s = Suspicion(accuser="a", k=3, minimum=1.0, maximum=6.0, now=100.0)
    assert s.deadline == 106.0
    assert not s.confirm("a")  # the first accuser does not count twice
    assert s.confirm("b")
    assert s.deadline == pytest.approx(103.5)  # log(2)/log(4) of the way to the minimum
    assert s.confirm("c")
    assert s.confirm("d")
    assert s.deadline == pytest.approx(101.0)
    assert not s.confirm("e")  # k reached: nothing left to shrink
    lone = Suspicion(accuser="a", k=0, minimum=1.0, maximum=6.0, now=0.0)
    assert lone.deadline == 1.0  # too few members to expect confirmations

    health = Awareness(8)
    health.apply(-1)
    assert health.scale(0.5) == 0.5
    health.apply(20)
    assert health.score == 7
    assert health.scale(0.5) == 4.0


def test_push_pull_with_an_incompatible_protocol_version_is_not_merged() -> None:
    core = core_with_peers("a.dc1")
    future = PushNodeState(
        name="future.dc1",
        addr=bytes((127, 0, 0, 8)),
        port=8302,
        incarnation=1,
        vsn=bytes((6, 9, 7, 0, 0, 0)),
    )
    reply = core.handle_stream(
        encode_push_pull(PushPull(join=True, states=(future,))), ("127.0.0.8", 1), 2.0
    )
    assert reply is not None  # memberlist still answers with its own state
    assert core.state_of("future.dc1") is None
    ok = PushNodeState(
        name="fine.dc1", addr=bytes((127, 0, 0, 9)), port=8302, incarnation=1, vsn=VSN
    )
    core.handle_stream(encode_push_pull(PushPull(join=True, states=(ok,))), ("127.0.0.9", 1), 2.0)
    assert core.state_of("fine.dc1") is MemberState.ALIVE
