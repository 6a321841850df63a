"""Blocking queries: long-poll reads that return when what they read changes.

The contract (what a caller may rely on):

* ``MinQueryIndex == 0`` runs the query once and returns at once.
* Otherwise the query waits until its index exceeds ``MinQueryIndex``, or
  until the wait elapses: ``MaxQueryTime`` clamped to 600 s, 300 s when zero
  or negative, plus a uniform jitter in ``[0, wait/16)`` so that many
  clients started together do not come back together. A return after the
  wait is not proof of change: the caller gets the unchanged result.
* The returned index is never below 1, so a client never spins sending 0.
* A query wakes only when a table it read changes (see the store's watches),
  and returns at once, re-run on the new contents, when a snapshot restore
  replaces the store (its index may have moved backwards).
* ``RequireConsistent`` verifies leadership (a Raft barrier) before every
  run of the query; failure raises instead of returning stale data.

Rules for writing a query function ``query(txn) -> (index, result)``:

1. Read only through the :class:`ReadTxn` passed in. It records which tables
   were read; that is what the query will wait on. Reading anything else
   (another store, a clock, a cache) cannot wake the query.
2. Return the index the txn methods gave you (the max if you called several).
   It must exceed ``MinQueryIndex`` whenever the result changed: the store
   guarantees that for any result computed from txn reads.
3. Be pure and quick: the txn holds the store lock, so the Raft thread cannot
   apply while the query runs. No awaits, no I/O, no sleeping.
4. Do not return an index larger than what the txn reported, and do not
   widen what you read "just in case": every extra table is a spurious wake-up.
5. Results may share the store's immutable records; copy a list before
   filtering it in place.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Final, Protocol, TypeVar

from ._store import ReadTxn, StateStore
from ._structs import QueryMeta, QueryOptions

__all__ = [
    "DEFAULT_QUERY_WAIT",
    "MAX_QUERY_WAIT",
    "QueryLeadership",
    "blocking_query",
    "query_wait",
]

T = TypeVar("T")

DEFAULT_QUERY_WAIT: Final = 300.0
MAX_QUERY_WAIT: Final = 600.0


class QueryLeadership(Protocol):
    """The part of :class:`~wanfed_fsm.Consensus` a blocking query needs."""

    def leader_address(self) -> str | None: ...

    async def verify_leader(self) -> None: ...


def query_wait(max_query_time: float, jitter: float) -> float:
    """How long a blocking query may wait; ``jitter`` is a uniform sample in ``[0, 1)``."""
    wait = DEFAULT_QUERY_WAIT if max_query_time <= 0 else min(max_query_time, MAX_QUERY_WAIT)
    return wait + wait / 16 * jitter


async def blocking_query(
    store: StateStore,
    options: QueryOptions,
    query: Callable[[ReadTxn], tuple[int, T]],
    *,
    leadership: QueryLeadership | None = None,
    jitter: Callable[[], float] = random.random,
) -> tuple[QueryMeta, T]:
    """Run ``query`` under the blocking-query contract above.

    ``leadership`` is None only where the local store is authoritative by
    construction (tests, tools); servers pass their :class:`Consensus`.
    """
    loop = asyncio.get_running_loop()

    def meta(index: int) -> QueryMeta:
        known = leadership is None or leadership.leader_address() is not None
        return QueryMeta(index=max(index, 1), known_leader=known)

    async def run_once() -> tuple[int, T]:
        if options.require_consistent and leadership is not None:
            await leadership.verify_leader()
        with store.read() as txn:
            return query(txn)

    if options.min_query_index == 0:
        index, result = await run_once()
        return meta(index), result

    deadline = loop.time() + query_wait(options.max_query_time, jitter())
    while True:
        if options.require_consistent and leadership is not None:
            await leadership.verify_leader()
        # Resolved by the store's watch (True: the watch was abandoned) or, with
        # None, by the deadline's timer. Deliberately neither ``wait_for`` (on
        # Python 3.11 it returns the result when a wake-up and a cancellation
        # land in the same loop turn, losing the cancellation, so a watcher task
        # would never stop) nor ``asyncio.timeout`` (the RPC port may run a
        # handler's first step outside any task, where it refuses to work).
        woken: asyncio.Future[bool | None] = loop.create_future()

        def wake(abandoned: bool, woken: asyncio.Future[bool | None] = woken) -> None:
            loop.call_soon_threadsafe(_resolve, woken, abandoned)

        with store.read() as txn:
            index, result = query(txn)
            watch = txn.watch(wake) if max(index, 1) <= options.min_query_index else None
        if watch is None:
            return meta(index), result
        remaining = deadline - loop.time()
        if remaining <= 0:
            watch.cancel()
            return meta(index), result
        timer = loop.call_later(remaining, _resolve, woken, None)
        try:
            abandoned = await woken
        finally:
            timer.cancel()
            watch.cancel()
        if abandoned is None:
            return meta(index), result
        if abandoned:
            index, result = await run_once()
            return meta(index), result


def _resolve(future: asyncio.Future[bool | None], abandoned: bool | None) -> None:
    if not future.done():
        future.set_result(abandoned)
