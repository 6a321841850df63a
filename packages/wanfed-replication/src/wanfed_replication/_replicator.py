"""The generic index replicator: the asyncio adapter over :class:`ReplicationCore`.

The decisions — when a round starts, rate limit, backoff, full resyncs, the
diff, apply pacing, restarts — are the core's (see :mod:`._replication_core`).
:class:`IndexReplicator` only carries its actions out through a
:class:`ReplicationDelegate` (the I/O of one table), tells a
:class:`ReplicationFeedback` how each dialled fetch went, and re-arms one
timer from :meth:`ReplicationCore.next_deadline`. It owns the only clock
reads and sleeps of replication.

:func:`diff_by_key` is the pure two-pointer diff delegates use.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Generic, Protocol, TypeVar

from ._driving import drive
from ._replication_core import (
    DEFAULT_APPLY_LIMIT,
    MAX_RETRY_WAIT,
    AbandonFetch,
    Applied,
    Delete,
    Diff,
    Fetch,
    FetchFailed,
    FetchNotReady,
    FetchSucceeded,
    LocalFailed,
    LocalRead,
    ReadLocal,
    ReplicationAction,
    ReplicationCore,
    ReplicationEvent,
    ReplicationPolicy,
    ReportOutcome,
    RestartRequested,
    Update,
)

__all__ = [
    "DEFAULT_APPLY_LIMIT",
    "MAX_RETRY_WAIT",
    "Diff",
    "IndexReplicator",
    "ReplicationDelegate",
    "ReplicationFeedback",
    "ReplicationNotReady",
    "ReplicationPolicy",
    "ReplicationRoundError",
    "RoundRestarted",
    "diff_by_key",
]

log = logging.getLogger("wanfed.replication")

T = TypeVar("T")


class ReplicationNotReady(Exception):
    """The remote cannot be asked yet (e.g. the primary is not in the WAN pool).

    Not a failed round: nothing was dialled, so it neither backs off nor tells
    the gateway locator anything about the path.
    """


class RoundRestarted(Exception):
    """A round's fetch was abandoned because the path to the remote changed.

    Kept for callers that catch it: the replicator now starts the next round
    itself (see :meth:`IndexReplicator.restart_round`), so rounds no longer
    raise it.
    """


class ReplicationRoundError(Exception):
    """A round could not fetch the remote table."""


def diff_by_key(
    local: Sequence[T],
    remote: Sequence[T],
    last_remote_index: int,
    *,
    key: Callable[[T], str],
    modify_index: Callable[[T], int],
) -> Diff[T]:
    """Two-pointer diff of two tables keyed by ``key``.

    A record present on both sides is updated only when the remote copy
    changed after ``last_remote_index`` (0 after a reset: everything is
    rewritten). Local records missing remotely are deleted; remote records
    missing locally are written.
    """
    local_sorted = sorted(local, key=key)
    remote_sorted = sorted(remote, key=key)
    deletions: list[str] = []
    updates: list[T] = []
    i = j = 0
    while i < len(local_sorted) and j < len(remote_sorted):
        local_key = key(local_sorted[i])
        remote_key = key(remote_sorted[j])
        if local_key == remote_key:
            if modify_index(remote_sorted[j]) > last_remote_index:
                updates.append(remote_sorted[j])
            i += 1
            j += 1
        elif local_key < remote_key:
            deletions.append(local_key)
            i += 1
        else:
            updates.append(remote_sorted[j])
            j += 1
    deletions.extend(key(record) for record in local_sorted[i:])
    updates.extend(remote_sorted[j:])
    return Diff(deletions=deletions, updates=updates)


class ReplicationDelegate(Protocol[T]):
    """The I/O of one replicated table."""

    name: str

    async def fetch_remote(self, last_remote_index: int) -> tuple[int, Sequence[T]]:
        """Blocking read of the remote table above ``last_remote_index``."""
        ...

    async def fetch_local(self) -> Sequence[T]: ...

    def diff(self, local: Sequence[T], remote: Sequence[T], last_remote_index: int) -> Diff[T]: ...

    async def delete(self, key: str) -> None: ...

    async def update(self, record: T) -> None: ...


class ReplicationFeedback(Protocol):
    """Told about every remote fetch that dialled: the gateway locator implements it."""

    def on_replication_result(
        self, error: str | None, *, from_replication: bool = True
    ) -> None: ...


class IndexReplicator(Generic[T]):
    """Runs rounds of one :class:`ReplicationDelegate` until cancelled.

    One driver at a time (:meth:`run` or :meth:`replicate_once`); a replicator
    whose :meth:`run` was cancelled is done (its core may be mid-round): the
    owner builds a new one for the next term, as the server does on every
    leadership gain.
    """

    def __init__(
        self,
        delegate: ReplicationDelegate[T],
        *,
        policy: ReplicationPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        feedback: ReplicationFeedback | None = None,
    ) -> None:
        self.delegate = delegate
        self.policy = policy or ReplicationPolicy()
        self._clock = clock
        self._feedback = feedback
        self.core: ReplicationCore[T] = ReplicationCore(
            name=delegate.name, diff=delegate.diff, now=clock(), policy=self.policy, rng=rng
        )
        self._pending: deque[ReplicationAction[T]] = deque()
        self._wake = asyncio.Event()
        self._fetch: tuple[int, asyncio.Future[tuple[int, Sequence[T]]]] | None = None
        self._error: BaseException | None = None

    # The counters live in the core; these keep the adapter's old attributes.

    @property
    def last_remote_index(self) -> int:
        return self.core.last_remote_index

    @last_remote_index.setter
    def last_remote_index(self, index: int) -> None:
        self.core.last_remote_index = index

    @property
    def failures(self) -> int:
        return self.core.failures

    @property
    def rounds(self) -> int:
        return self.core.rounds

    @property
    def restarts(self) -> int:
        return self.core.restarts

    def restart_round(self, reason: str) -> bool:
        """Ask again now: abandon the fetch in flight, or end the backoff wait.

        True when there was one or the other. Nothing was applied from an
        abandoned fetch, so the next round asks from the same index; the
        failure count stays, so failing along the new path too backs off on.
        Safe to call from inside a :class:`ReplicationFeedback` report.
        """
        before = self.core.restarts
        for action in self.core.feed(RestartRequested(reason=reason), self._clock()):
            if isinstance(action, AbandonFetch):
                self._abandon(action)
            else:
                self._pending.append(action)
        self._wake.set()
        return self.core.restarts > before

    async def replicate_once(self) -> None:
        """One round now, past the rate limit and any backoff; raises on failure.

        A restart asked for meanwhile is carried out: the round that replaces
        the abandoned one is the one that counts.
        """
        ended = self.core.rounds_ended
        self._error = None
        self._pending.extend(self.core.start_round(self._clock()))
        await self._drive(lambda: self.core.rounds_ended > ended)
        if self._error is not None:
            raise self._error

    async def run(self) -> None:
        """Rounds until cancelled: rate limited, backing off after failures."""
        await self._drive(lambda: False)

    # -- carrying actions out ------------------------------------------------

    async def _drive(self, done: Callable[[], bool]) -> None:
        await drive(
            self.core, self._pending, self._carry_out, clock=self._clock, done=done, wake=self._wake
        )

    def _feed(self, event: ReplicationEvent[T]) -> None:
        self._pending.extend(self.core.feed(event, self._clock()))

    async def _carry_out(self, action: ReplicationAction[T]) -> None:
        match action:
            case Fetch():
                await self._fetch_remote(action)
            case ReadLocal():
                try:
                    local = await self.delegate.fetch_local()
                except Exception as exc:
                    self._error = exc
                    self._feed(LocalFailed(round=action.round, error=_describe(exc)))
                else:
                    self._feed(LocalRead(round=action.round, records=local))
            case Delete() | Update():
                try:
                    if isinstance(action, Delete):
                        await self.delegate.delete(action.key)
                    else:
                        await self.delegate.update(action.record)
                except Exception as exc:
                    self._error = exc
                    self._feed(LocalFailed(round=action.round, error=_describe(exc)))
                else:
                    self._feed(Applied(round=action.round))
            case ReportOutcome():
                self._report(action.error)
            case AbandonFetch():
                self._abandon(action)

    async def _fetch_remote(self, action: Fetch) -> None:
        if self.core.fetching_round != action.round:
            return  # abandoned before it was dialled
        fetch = asyncio.ensure_future(self.delegate.fetch_remote(action.min_index))
        self._fetch = (action.round, fetch)
        try:
            await asyncio.wait([fetch])
        except asyncio.CancelledError:
            fetch.cancel()  # the owner stops us: the fetch goes too
            raise
        finally:
            self._fetch = None
        if fetch.cancelled():
            if self.core.fetching_round == action.round:
                # Cancelled from inside, not abandoned by a restart: a failed fetch.
                self._error = ReplicationRoundError(f"fetching {self.delegate.name} was cancelled")
                self._feed(FetchFailed(round=action.round, error="fetch cancelled"))
            return
        exc = fetch.exception()
        if exc is None:
            index, records = fetch.result()
            self._error = None
            self._feed(FetchSucceeded(round=action.round, index=index, records=records))
        elif isinstance(exc, ReplicationNotReady):
            self._error = exc
            self._feed(FetchNotReady(round=action.round, reason=_describe(exc)))
        else:
            error = ReplicationRoundError(f"failed to retrieve {self.delegate.name}: {exc}")
            error.__cause__ = exc
            self._error = error
            self._feed(FetchFailed(round=action.round, error=_describe(exc)))

    def _abandon(self, action: AbandonFetch) -> None:
        if self._fetch is not None and self._fetch[0] == action.round:
            self._fetch[1].cancel()

    def _report(self, error: str | None) -> None:
        if self._feedback is None:
            return
        try:
            self._feedback.on_replication_result(error)
        except Exception:
            log.exception(
                "replication feedback failed; replication carries on",
                extra={"table": self.delegate.name},
            )


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
