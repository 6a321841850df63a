"""Federation-state replication, anti-entropy and pruning over real stores.

Two in-memory single-node "datacenters" (``LocalConsensus``) stand for the
primary and a secondary; the secondary reads the primary through a blocking
query exactly as the ``FederationState.List`` endpoint will.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Collection, Sequence
from datetime import UTC, datetime

import msgspec
import pytest

from wanfed_fsm import (
    CheckServiceNode,
    Command,
    DCSpecificRequest,
    FederationState,
    FederationStateRequest,
    FederationStateWrite,
    HealthCheck,
    HealthStatus,
    IndexedFederationStates,
    LocalConsensus,
    Node,
    Register,
    RegisterRequest,
    RetryPolicy,
    Service,
    blocking_query,
)
from wanfed_replication import (
    AntiEntropy,
    FederationStateReplication,
    IndexReplicator,
    Pruner,
    ReplicationPolicy,
    diff_by_key,
    federation_state_to_sync,
    stale_datacenters,
)


def gw(dc: str, i: int, port: int) -> CheckServiceNode:
    return CheckServiceNode(
        node=Node(node=f"gw{i}-{dc}", address=f"198.18.0.{i}", datacenter=dc),
        service=Service(
            kind="mesh-gateway",
            id="mesh-gateway",
            service="mesh-gateway",
            port=port,
            meta={"consul-wan-federation": "1"},
        ),
    )


def state(dc: str, count: int, port: int) -> FederationState:
    return FederationState(datacenter=dc, mesh_gateways=[gw(dc, i, port) for i in range(count)])


async def upsert(consensus: LocalConsensus, record: FederationState) -> None:
    await consensus.apply(
        FederationStateWrite(
            request=FederationStateRequest(datacenter="dc1", op="upsert", state=record)
        )
    )


async def delete(consensus: LocalConsensus, dc: str) -> None:
    await consensus.apply(
        FederationStateWrite(
            request=FederationStateRequest(
                datacenter="dc1", op="delete", state=FederationState(datacenter=dc)
            )
        )
    )


class Primary:
    """``FederationState.List`` against an in-memory primary, with failure injection."""

    def __init__(self, consensus: LocalConsensus, wait: float = 5.0) -> None:
        self.consensus = consensus
        self.wait = wait
        self.broken = False
        self.calls = 0

    async def list_federation_states(self, min_index: int) -> IndexedFederationStates:
        self.calls += 1
        if self.broken:
            raise ConnectionRefusedError("primary gateway refused the connection")
        meta, states = await blocking_query(
            self.consensus.store,
            DCSpecificRequest(
                min_query_index=min_index, max_query_time=self.wait, allow_stale=True
            ),
            lambda txn: txn.federation_states(),
        )
        return IndexedFederationStates(index=meta.index, states=states)


class Feedback:
    def __init__(self) -> None:
        self.results: list[str | None] = []

    def on_replication_result(self, error: str | None, *, from_replication: bool = True) -> None:
        self.results.append(error)


def comparable(states: Sequence[FederationState]) -> list[FederationState]:
    """Ignore raft indexes and times: what replication must carry is the content."""
    return [
        msgspec.structs.replace(
            s, create_index=0, modify_index=0, primary_modify_index=0, updated_at=s.updated_at
        )
        for s in sorted(states, key=lambda s: s.datacenter)
    ]


def stored(consensus: LocalConsensus) -> list[FederationState]:
    with consensus.store.read() as txn:
        return txn.federation_states()[1]


async def wait_for_states(
    consensus: LocalConsensus, predicate: Callable[[list[FederationState]], bool]
) -> None:
    """Wait, on the store's own watch, until its federation states satisfy ``predicate``."""
    loop = asyncio.get_running_loop()
    while True:
        woken: asyncio.Future[None] = loop.create_future()

        def wake(_abandoned: bool, woken: asyncio.Future[None] = woken) -> None:
            loop.call_soon_threadsafe(_settle, woken)

        with consensus.store.read() as txn:
            if predicate(txn.federation_states()[1]):
                return
            watch = txn.watch(wake)
        try:
            await asyncio.wait_for(woken, 10)
        finally:
            watch.cancel()


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def settle_until(predicate: Callable[[], bool]) -> None:
    """Let the loop run (no time passes) until ``predicate`` holds; fail if it never does."""
    for _ in range(1000):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


async def converge(a: LocalConsensus, b: LocalConsensus) -> None:
    """Wait until ``b`` (being replicated into) holds what ``a`` holds."""
    await wait_for_states(b, lambda states: comparable(states) == comparable(stored(a)))


FAST = ReplicationPolicy(rate=1000.0, burst=100, apply_limit=1e6)


async def test_fifty_states_created_updated_deleted_converge() -> None:
    primary, secondary = LocalConsensus(), LocalConsensus()
    feedback = Feedback()
    source = Primary(primary)
    delegate = FederationStateReplication(
        datacenter="dc2", primary=source, consensus=secondary, feedback=feedback
    )
    task = asyncio.create_task(delegate.replicator(FAST).run())
    try:
        for i in range(1, 51):
            await upsert(primary, state(f"alt-dc{i}", 2, 443))
        await converge(primary, secondary)
        assert len(stored(secondary)) == 50
        for i in range(1, 51):
            await upsert(primary, state(f"alt-dc{i}", 3, 8443))
        await converge(primary, secondary)
        assert all(len(s.mesh_gateways) == 3 for s in stored(secondary))
        for i in range(1, 51):
            await delete(primary, f"alt-dc{i}")
        await converge(primary, secondary)
        assert stored(secondary) == []
    finally:
        task.cancel()
    assert feedback.results
    assert all(result is None for result in feedback.results)
    # The secondary's copies carry the primary's index, so anti-entropy and
    # operators can tell which primary write they reflect.
    await upsert(primary, state("alt-dc1", 1, 443))
    one_round = IndexReplicator(delegate, policy=FAST)
    await one_round.replicate_once()
    (copy,) = stored(secondary)
    (original,) = stored(primary)
    assert copy.primary_modify_index == original.modify_index


async def test_failures_are_reported_and_reset_to_full_sync() -> None:
    primary, secondary = LocalConsensus(), LocalConsensus()
    feedback = Feedback()
    source = Primary(primary)
    delegate = FederationStateReplication(
        datacenter="dc2", primary=source, consensus=secondary, feedback=feedback
    )
    replicator = delegate.replicator(FAST)
    await upsert(primary, state("dc1", 1, 443))
    await replicator.replicate_once()
    assert replicator.last_remote_index > 0
    source.broken = True
    with pytest.raises(Exception, match="failed to retrieve federation states: primary gateway"):
        await replicator.replicate_once()
    assert feedback.results == [None, "primary gateway refused the connection"]


class CountingPrimary(Primary):
    """A primary whose every ``FederationState.List`` call can be waited for."""

    def __init__(self, consensus: LocalConsensus, wait: float) -> None:
        super().__init__(consensus, wait)
        self.called = asyncio.Event()

    async def list_federation_states(self, min_index: int) -> IndexedFederationStates:
        self.called.set()
        return await super().list_federation_states(min_index)

    async def until_calls(self, count: int) -> None:
        """Wait until ``count`` calls have been made in all (counting those made already)."""
        while self.calls < count:
            self.called.clear()
            await self.called.wait()


async def test_restart_round_abandons_the_long_poll_in_flight_uncounted() -> None:
    """A path change must not leave the round waiting on a long-poll sent along
    the old path: the fetch is abandoned and asked again at once, as no failure."""
    primary, secondary = LocalConsensus(), LocalConsensus()
    await upsert(primary, state("dc1", 1, 443))
    feedback = Feedback()
    source = CountingPrimary(primary, wait=300.0)
    delegate = FederationStateReplication(
        datacenter="dc2", primary=source, consensus=secondary, feedback=feedback
    )
    replicator = delegate.replicator(FAST)
    assert replicator.restart_round("nothing in flight") is False
    task = asyncio.create_task(replicator.run())
    try:
        await converge(primary, secondary)
        await source.until_calls(2)  # the second round: a 300 s long-poll, parked
        assert replicator.restart_round("path to the primary changed") is True
        await source.until_calls(3)
        assert (replicator.failures, replicator.restarts) == (0, 1)
        assert all(result is None for result in feedback.results)
        await upsert(primary, state("dc3", 2, 443))  # the new long-poll answers
        await converge(primary, secondary)
    finally:
        task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task  # the owner's cancellation is never mistaken for a restart


class LongBackoff(ReplicationPolicy):
    """Every failed round earns five minutes of backoff."""

    def retry_wait(self, failures: int, rng: random.Random) -> float:
        return 300.0


async def test_restart_round_cuts_the_backoff_after_a_failure_short() -> None:
    """The locator sends the leader to the primary's gateways right after a
    failed round: the new path is tried at once, not after that round's backoff."""
    primary, secondary = LocalConsensus(), LocalConsensus()
    await upsert(primary, state("dc1", 1, 443))
    feedback = Feedback()
    source = CountingPrimary(primary, wait=300.0)
    source.broken = True
    delegate = FederationStateReplication(
        datacenter="dc2", primary=source, consensus=secondary, feedback=feedback
    )
    replicator = delegate.replicator(LongBackoff(rate=1000.0, burst=100, apply_limit=1e6))
    task = asyncio.create_task(replicator.run())
    try:
        await source.until_calls(1)
        await settle_until(lambda: replicator.core.backing_off)
        assert replicator.failures == 1
        source.broken = False  # the new path works
        assert replicator.restart_round("path to the primary is now primary-gateways") is True
        await asyncio.wait_for(source.until_calls(2), 5)
        await converge(primary, secondary)
        assert replicator.restarts == 1
        assert feedback.results[0] == "primary gateway refused the connection"
    finally:
        task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


class SwitchingFeedback(Feedback):
    """Like the locator: the failure it is told of changes the path, and the
    owner asks the replicator to restart from inside that very report."""

    def __init__(self, source: Primary) -> None:
        super().__init__()
        self.source = source
        self.replicator: IndexReplicator[FederationState] | None = None
        self.switched = False

    def on_replication_result(self, error: str | None, *, from_replication: bool = True) -> None:
        super().on_replication_result(error, from_replication=from_replication)
        if error is not None and not self.switched and self.replicator is not None:
            self.switched = True
            self.source.broken = False  # the new path works
            assert self.replicator.restart_round("path to the primary is now primary-gateways")


async def test_a_failure_that_changes_the_path_earns_no_backoff() -> None:
    primary, secondary = LocalConsensus(), LocalConsensus()
    await upsert(primary, state("dc1", 1, 443))
    source = CountingPrimary(primary, wait=300.0)
    source.broken = True
    feedback = SwitchingFeedback(source)
    delegate = FederationStateReplication(
        datacenter="dc2", primary=source, consensus=secondary, feedback=feedback
    )
    replicator = delegate.replicator(LongBackoff(rate=1000.0, burst=100, apply_limit=1e6))
    feedback.replicator = replicator
    task = asyncio.create_task(replicator.run())
    try:
        await asyncio.wait_for(converge(primary, secondary), 5)
        assert feedback.results[:2] == ["primary gateway refused the connection", None]
        assert (replicator.failures, replicator.restarts) == (0, 1)
    finally:
        task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_remote_index_going_backwards_forces_full_resync() -> None:
    primary, secondary = LocalConsensus(), LocalConsensus()
    delegate = FederationStateReplication(
        datacenter="dc2", primary=Primary(primary), consensus=secondary, feedback=Feedback()
    )
    replicator = IndexReplicator(delegate, policy=FAST)
    for i in range(5):
        await upsert(primary, state(f"dc{i}", 1, 443))
    await replicator.replicate_once()
    # The primary is rebuilt (e.g. restored from an old snapshot): lower indexes.
    rebuilt = LocalConsensus()
    await upsert(rebuilt, state("dc0", 2, 443))
    # A blocking read above the rebuilt primary's index times out and returns
    # its (lower) index: that is how a replicator notices.
    delegate._primary = Primary(rebuilt, wait=0.05)
    replicator.last_remote_index = 10_000
    await replicator.replicate_once()
    assert comparable(stored(secondary)) == comparable(stored(rebuilt))


def test_retry_wait_doubles_caps_and_jitters() -> None:
    policy = ReplicationPolicy()
    rng = random.Random(1)
    assert policy.retry_wait(0, rng) == 0.0
    waits = [policy.retry_wait(n, rng) for n in range(1, 10)]
    for n, wait in enumerate(waits, start=1):
        base = min(120.0, 2.0 ** (n - 1))
        assert base <= wait <= base * 1.1


def test_diff_two_pointer() -> None:
    def rec(dc: str, idx: int) -> FederationState:
        return FederationState(datacenter=dc, modify_index=idx)

    local = [rec("a", 1), rec("b", 1), rec("d", 1)]
    remote = [rec("b", 5), rec("c", 6), rec("d", 2)]
    diff = diff_by_key(
        local, remote, 3, key=lambda s: s.datacenter, modify_index=lambda s: s.modify_index
    )
    assert diff.deletions == ["a"]
    assert [s.datacenter for s in diff.updates] == ["b", "c"]
    full = diff_by_key(
        local, remote, 0, key=lambda s: s.datacenter, modify_index=lambda s: s.modify_index
    )
    assert [s.datacenter for s in full.updates] == ["b", "c", "d"]


# --- anti-entropy ----------------------------------------------------------------------


class StoreView:
    """The AE view over one store: this DC's record plus its mesh-gateway dump."""

    def __init__(self, consensus: LocalConsensus, dc: str) -> None:
        self.consensus = consensus
        self.dc = dc

    async def local_federation_view(
        self, min_index: int
    ) -> tuple[int, FederationState | None, Sequence[CheckServiceNode]]:
        def query(txn: object) -> tuple[int, tuple[FederationState | None, list[CheckServiceNode]]]:
            from wanfed_fsm import ReadTxn

            assert isinstance(txn, ReadTxn)
            i1, record = txn.federation_state(self.dc)
            i2, dump = txn.service_dump("mesh-gateway")
            return max(i1, i2), (record, dump)

        meta, (record, dump) = await blocking_query(
            self.consensus.store,
            DCSpecificRequest(min_query_index=min_index, max_query_time=5),
            query,
        )
        return meta.index, record, dump


class LocalApplier:
    def __init__(self, consensus: LocalConsensus) -> None:
        self.consensus = consensus
        self.writes: list[FederationState] = []

    async def apply_federation_state(self, state: FederationState) -> None:
        self.writes.append(state)
        await upsert(self.consensus, state)


async def register_gateway(consensus: LocalConsensus, name: str, status: str) -> None:
    await consensus.apply(
        Register(
            request=RegisterRequest(
                node=Node(node=name, address="127.0.0.2"),
                service=Service(
                    kind="mesh-gateway",
                    id="mesh-gateway",
                    service="mesh-gateway",
                    port=8443,
                    meta={"consul-wan-federation": "1"},
                ),
                checks=[
                    HealthCheck(
                        node=name,
                        check_id="service:mesh-gateway",
                        service_id="mesh-gateway",
                        status=status,  # type: ignore[arg-type]
                    )
                ],
            )
        )
    )


async def test_anti_entropy_writes_only_on_change_and_debounces() -> None:
    primary = LocalConsensus()
    now = [0.0]  # the debounce decisions read this clock only; a wait lasts 0.05 s at most
    applier = LocalApplier(primary)
    ae = AntiEntropy(
        datacenter="dc1",
        view=StoreView(primary, "dc1"),
        applier=applier,
        sync_interval=0.05,
        clock=lambda: now[0],
    )
    assert await ae.sync_once() is True  # first sync: no record yet (zero gateways)
    assert applier.writes[-1].mesh_gateways == []
    await register_gateway(primary, "gw1", "passing")
    assert await ae.sync_once() is True  # woken by the catalog write
    assert len(stored(primary)[0].mesh_gateways) == 1
    # Our own write woke the watch; nothing changed, so no second write.
    assert await ae.sync_once() is False
    # A flap inside the debounce interval is absorbed: AE waits out the
    # interval, re-reads, finds the catalog back to what is stored, writes nothing.
    await register_gateway(primary, "gw1", "critical")
    task = asyncio.create_task(ae.sync_once())
    await settle_until(lambda: ae.core.debouncing)
    await register_gateway(primary, "gw1", "passing")
    now[0] += 1.0  # the interval is over when the adapter's timer fires
    assert await task is False
    assert ae.syncs == 2
    # A lasting change after the interval is written once.
    await register_gateway(primary, "gw1", "critical")
    assert await ae.sync_once() is True
    assert ae.syncs == 3
    assert stored(primary)[0].mesh_gateways[0].checks[0].status == "critical"


async def test_the_first_usable_gateway_is_published_without_waiting_out_the_debounce() -> None:
    """Bootstrap, or every gateway replaced: until the record names a usable
    gateway, no other datacenter can reach this one."""
    primary = LocalConsensus()
    applier = LocalApplier(primary)
    ae = AntiEntropy(
        datacenter="dc1", view=StoreView(primary, "dc1"), applier=applier, sync_interval=3600.0
    )
    await register_gateway(primary, "old", "critical")
    assert await ae.sync_once() is True  # a record naming no usable gateway
    await register_gateway(primary, "new", "passing")
    assert await asyncio.wait_for(ae.sync_once(), 5) is True
    names = sorted(
        g.node.node for g in stored(primary)[0].mesh_gateways if g.checks[0].status != "critical"
    )
    assert names == ["new"]


def test_sync_decision_ignores_times_and_indexes() -> None:
    gateways = [gw("dc2", 1, 443)]
    stored_record = FederationState(
        datacenter="dc2",
        mesh_gateways=[
            msgspec.structs.replace(
                gateways[0], node=msgspec.structs.replace(gateways[0].node, modify_index=9)
            )
        ],
        updated_at=datetime(2020, 1, 1, tzinfo=UTC),
        modify_index=9,
    )
    now = datetime.now(UTC)
    assert federation_state_to_sync("dc2", stored_record, gateways, now) is None
    changed = federation_state_to_sync("dc2", stored_record, [gw("dc2", 1, 8443)], now)
    assert changed is not None
    assert changed.updated_at == now
    assert federation_state_to_sync("dc2", None, [], now) is not None


def test_a_gateway_ttl_refresh_is_no_federation_state_write() -> None:
    """A gateway refreshes its TTL check by writing new output; only status counts."""

    def with_check(status: HealthStatus, output: str) -> CheckServiceNode:
        check = HealthCheck(
            node="gw1-dc2", check_id="mesh-gateway-ttl", name="ttl", status=status, output=output
        )
        return msgspec.structs.replace(gw("dc2", 1, 443), checks=[check])

    now = datetime.now(UTC)
    first = federation_state_to_sync("dc2", None, [with_check("passing", "refresh 1")], now)
    assert first is not None
    assert [c.output for c in first.mesh_gateways[0].checks] == [""]
    refreshed = [with_check("passing", "refresh 2")]
    assert federation_state_to_sync("dc2", first, refreshed, now) is None
    critical = federation_state_to_sync("dc2", first, [with_check("critical", "TTL expired")], now)
    assert critical is not None
    assert critical.mesh_gateways[0].has_critical_check()


# --- pruning --------------------------------------------------------------------------


class Registry:
    def __init__(self, known: set[str]) -> None:
        self.known = known

    def known_datacenters(self) -> Collection[str]:
        return self.known


async def test_pruner_deletes_departed_datacenters_only() -> None:
    primary = LocalConsensus()
    for dc in ("dc1", "dc2", "dc3"):
        await upsert(primary, state(dc, 1, 443))
    registry = Registry({"dc1", "dc3"})
    pruner = Pruner(primary="dc1", consensus=primary, registry=registry, interval=0.01)
    task = asyncio.create_task(pruner.run())
    try:
        await wait_for_states(primary, lambda states: len(states) == 2)
    finally:
        task.cancel()
    assert [s.datacenter for s in stored(primary)] == ["dc1", "dc3"]
    assert stale_datacenters(stored(primary), set(), "dc1") == ["dc3"]


class RefusingConsensus(LocalConsensus):
    """A store whose writes can be refused, as a server that just lost leadership does."""

    refuse = False

    async def apply(self, command: Command) -> int:
        if self.refuse:
            raise RuntimeError("not the leader")
        return await super().apply(command)


async def test_prune_once_returns_what_it_pruned_and_raises_when_a_delete_fails() -> None:
    primary = RefusingConsensus()
    for dc in ("dc1", "dc2", "dc3", "dc4"):
        await upsert(primary, state(dc, 1, 443))
    pruner = Pruner(primary="dc1", consensus=primary, registry=Registry({"dc3", "dc4"}))
    assert await pruner.prune_once() == ["dc2"]
    assert [s.datacenter for s in stored(primary)] == ["dc1", "dc3", "dc4"]
    assert await pruner.prune_once() == []
    primary.refuse = True
    pruner = Pruner(primary="dc1", consensus=primary, registry=Registry(set()))
    with pytest.raises(RuntimeError, match="not the leader"):
        await pruner.prune_once()
    assert pruner.core.next_deadline() is not None  # the next pass is scheduled
    assert len(stored(primary)) == 3


def test_retry_policy_is_shared_with_the_leader_loops() -> None:
    assert RetryPolicy().backoff(1) == 2.0
    assert RetryPolicy().backoff(20) == 256.0
