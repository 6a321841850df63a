"""The blocking-query contract (reference 3.13) against a real store and a writer thread."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from wanfed_fsm import (
    DEFAULT_QUERY_WAIT,
    MAX_QUERY_WAIT,
    FederationState,
    FederationStateRequest,
    FederationStateWrite,
    Fsm,
    LocalConsensus,
    Node,
    NotReadyError,
    QueryOptions,
    ReadTxn,
    RegisterRequest,
    StateStore,
    Table,
    blocking_query,
    query_wait,
)


def _states(txn: ReadTxn) -> tuple[int, list[FederationState]]:
    return txn.federation_states()


def test_wait_defaults_clamps_and_jitters() -> None:
    assert query_wait(0, 0.0) == DEFAULT_QUERY_WAIT
    assert query_wait(-5, 0.0) == DEFAULT_QUERY_WAIT
    assert query_wait(10_000, 0.0) == MAX_QUERY_WAIT
    assert query_wait(16, 0.5) == 16.5
    assert query_wait(16, 0.999) < 17


async def test_index_zero_returns_at_once_and_index_is_never_below_one() -> None:
    meta, states = await blocking_query(StateStore(), QueryOptions(), _states)
    assert (meta.index, states) == (1, [])


async def test_returns_unchanged_result_after_the_wait() -> None:
    store = StateStore()
    started = time.monotonic()
    meta, _ = await blocking_query(
        store, QueryOptions(min_query_index=1, max_query_time=0.05), _states, jitter=lambda: 0.0
    )
    assert meta.index == 1
    # A lower bound only: a loaded machine can delay the answer, never hasten it.
    assert time.monotonic() - started >= 0.05
    assert store.watch_count() == 0


async def parked(store: StateStore, count: int = 1) -> None:
    """Until ``count`` queries wait on the store's watches (each a loop turn at most)."""
    for _ in range(1000):
        if store.watch_count() >= count:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"{count} query(ies) never parked: {store.watch_count()} watch(es)")


async def _wakes_only_for_its_table(fsm: Fsm, index: int) -> None:
    """Block a query at ``index - 1``; a catalog write from another thread must not
    wake it, a federation-state write from another thread must."""
    query = asyncio.ensure_future(
        blocking_query(
            fsm.store, QueryOptions(min_query_index=index - 1, max_query_time=600), _states
        )
    )
    await parked(fsm.store)

    catalog = threading.Thread(
        target=fsm.store.ensure_registration,
        args=(index, RegisterRequest(node=Node(node=f"n{index}"))),
    )
    catalog.start()
    await asyncio.to_thread(catalog.join)
    # A watch fires at most once and is dropped when it fires: still registered
    # after the write means the catalog write did not wake the query.
    assert fsm.store.watch_count(Table.FEDERATION_STATES) == 1, "woken by a catalog write"
    assert not query.done()

    writer = threading.Thread(
        target=fsm.store.federation_state_set,
        args=(index + 1, FederationState(datacenter=f"dc{index}")),
    )
    writer.start()
    await asyncio.to_thread(writer.join)
    assert fsm.store.watch_count() == 0, "the federation-state write fired the watch"
    # Woken, not timed out: its wait is 600 s (a deadline, not a measurement; the
    # wake-up latency is measured by ``nox -s bench -- liveness``).
    meta, _ = await asyncio.wait_for(query, 30)
    assert meta.index == index + 1


async def test_wakes_on_a_federation_state_write_from_another_thread_not_for_catalog() -> None:
    fsm = Fsm()
    fsm.store.federation_state_set(1, FederationState(datacenter="dc0"))
    for index in range(2, 16, 2):
        await _wakes_only_for_its_table(fsm, index)
    with fsm.store.read() as txn:
        assert len(txn.federation_states()[1]) == 8


async def test_restore_wakes_the_query_which_returns_the_new_contents() -> None:
    store = StateStore()
    store.federation_state_set(7, FederationState(datacenter="dc1"))
    other = StateStore()
    other.federation_state_set(3, FederationState(datacenter="dc9"))
    query = asyncio.ensure_future(
        blocking_query(store, QueryOptions(min_query_index=7, max_query_time=600), _states)
    )
    await parked(store)
    store.restore(other.snapshot())
    meta, states = await asyncio.wait_for(query, 30)
    assert meta.index == 3  # moved backwards: the client must resync
    assert [s.datacenter for s in states] == ["dc9"]


async def test_cancelled_query_leaves_no_watch_behind() -> None:
    store = StateStore()
    query = asyncio.ensure_future(
        blocking_query(store, QueryOptions(min_query_index=1, max_query_time=5), _states)
    )
    await parked(store)
    assert store.watch_count() == 1
    query.cancel()
    with pytest.raises(asyncio.CancelledError):
        await query
    assert store.watch_count() == 0


class _Deposed:
    def leader_address(self) -> str | None:
        return None

    async def verify_leader(self) -> None:
        raise NotReadyError()


async def test_consistent_reads_check_leadership_first() -> None:
    with pytest.raises(NotReadyError, match="Not ready to serve consistent reads"):
        await blocking_query(
            StateStore(), QueryOptions(require_consistent=True), _states, leadership=_Deposed()
        )
    consensus = LocalConsensus()
    index = await consensus.apply(
        FederationStateWrite(
            request=FederationStateRequest(op="upsert", state=FederationState(datacenter="dc1"))
        )
    )
    meta, states = await blocking_query(
        consensus.store, QueryOptions(require_consistent=True), _states, leadership=consensus
    )
    assert meta.index == index
    assert meta.known_leader
    assert len(states) == 1


async def test_cancelled_while_a_write_wakes_it_still_ends_cancelled() -> None:
    """Cancellation must win over a wake-up that lands in the same loop turn.

    ``asyncio.wait_for`` on Python 3.11 returns the inner result when both
    happen together, swallowing the cancellation: a task looping over blocking
    queries (a watcher) then never stops, and whoever awaits it hangs."""
    store = StateStore()
    store.federation_state_set(1, FederationState(datacenter="dc0"))
    query = asyncio.ensure_future(
        blocking_query(store, QueryOptions(min_query_index=1, max_query_time=30), _states)
    )
    await parked(store)
    assert store.watch_count() == 1
    store.federation_state_set(2, FederationState(datacenter="dc1"))  # schedules the wake
    query.cancel()  # same turn
    with pytest.raises(asyncio.CancelledError):
        await query
    assert query.cancelled()
