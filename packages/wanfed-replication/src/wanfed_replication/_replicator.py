"""The generic index replicator: pull a remote table, make the local one equal.

Theory of operation. A round fetches the remote table with a blocking query
(``min_index`` = the remote index of the last good round), reads the local
table, computes a diff and applies deletions before updates. A remote index
that moved backwards (the remote restored a snapshot, or a new primary
cluster) forces a full resync. Rounds are rate limited by a token bucket
(default 1 round/s, bursts of 5); after ``n`` consecutive failed rounds the
replicator waits ``2**(n-1)`` seconds, capped at 120 s, plus up to 10 %
jitter, so that a broken primary is not hammered by every secondary at once.
Applies are paced (default at most 100/s) so that catching up never starves
the local Raft log. :meth:`IndexReplicator.restart_round` abandons a fetch in
flight and starts the round again at once, uncounted, or cuts the backoff
after a failure short: the owner calls it when the path to the remote
changed, so neither a long-poll sent along the old path (which may be the
broken one) nor a backoff earned on it holds the round back from the new one.

:func:`diff_by_key` is the pure two-pointer diff; :class:`IndexReplicator`
holds the round logic with the I/O behind a :class:`ReplicationDelegate`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Sequence
from typing import Final, Generic, Protocol, TypeVar

import msgspec

from wanfed_fsm import TokenBucket

__all__ = [
    "DEFAULT_APPLY_LIMIT",
    "MAX_RETRY_WAIT",
    "Diff",
    "IndexReplicator",
    "ReplicationDelegate",
    "ReplicationNotReady",
    "ReplicationPolicy",
    "RoundRestarted",
    "diff_by_key",
]

log = logging.getLogger("wanfed.replication")

MAX_RETRY_WAIT: Final = 120.0
DEFAULT_APPLY_LIMIT: Final = 100.0

T = TypeVar("T")


class ReplicationNotReady(Exception):
    """The remote cannot be asked yet (e.g. the primary is not in the WAN pool).

    Not a failed round: nothing was dialled, so it neither backs off nor tells
    the gateway locator anything about the path.
    """


class RoundRestarted(Exception):
    """The owner abandoned the fetch in flight (see :meth:`IndexReplicator.restart_round`).

    Not a failed round: it neither backs off nor tells the locator anything.
    """


class Diff(msgspec.Struct, Generic[T], frozen=True, kw_only=True):
    """What a round must change locally: keys to delete, records to write."""

    deletions: list[str]
    updates: list[T]


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


class ReplicationPolicy:
    """Pace of one replicator; defaults as Consul's federation-state replication."""

    def __init__(
        self,
        *,
        rate: float = 1.0,
        burst: int = 5,
        apply_limit: float = DEFAULT_APPLY_LIMIT,
        max_retry_wait: float = MAX_RETRY_WAIT,
        jitter_fraction: float = 0.1,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.apply_limit = apply_limit
        self.max_retry_wait = max_retry_wait
        self.jitter_fraction = jitter_fraction

    def retry_wait(self, failures: int, rng: random.Random) -> float:
        """Wait before the round after ``failures`` consecutive failed rounds."""
        if failures <= 0:
            return 0.0
        base = min(self.max_retry_wait, 2.0 ** (failures - 1))
        return base + rng.uniform(0, base * self.jitter_fraction)


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


class IndexReplicator(Generic[T]):
    """Runs rounds of one :class:`ReplicationDelegate` until cancelled."""

    def __init__(
        self,
        delegate: ReplicationDelegate[T],
        *,
        policy: ReplicationPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.delegate = delegate
        self.policy = policy or ReplicationPolicy()
        self._clock = clock
        self._rng = rng or random.Random()
        self.last_remote_index = 0
        self.failures = 0
        self.rounds = 0
        self.restarts = 0
        self._fetch: asyncio.Future[tuple[int, Sequence[T]]] | None = None
        self._backoff: asyncio.Event | None = None
        self._restart_reason = ""

    def restart_round(self, reason: str) -> bool:
        """Ask again now: abandon the fetch in flight, or end the backoff wait.

        True when there was one or the other. Nothing was applied from an
        abandoned fetch, so the next round asks from the same index; the
        failure count stays, so failing along the new path too backs off on.
        """
        fetch = self._fetch
        if fetch is not None and not fetch.done():
            self._restart_reason = reason
            fetch.cancel()
            return True
        backoff = self._backoff
        if backoff is not None and not backoff.is_set():
            self._restart_reason = reason
            backoff.set()
            return True
        return False

    async def replicate_once(self) -> None:
        """One round; raises on failure (the caller decides how to wait)."""
        fetch = asyncio.ensure_future(self.delegate.fetch_remote(self.last_remote_index))
        self._fetch = fetch
        try:
            remote_index, remote = await fetch
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if fetch.cancelled() and self._restart_reason and not (task and task.cancelling()):
                raise RoundRestarted(self._restart_reason) from None
            raise
        except ReplicationNotReady:
            raise
        except Exception as exc:
            raise ReplicationRoundError(f"failed to retrieve {self.delegate.name}: {exc}") from exc
        finally:
            self._fetch = None
        local = await self.delegate.fetch_local()
        last = self.last_remote_index
        if remote_index < last:
            log.warning(
                "remote index moved backwards; doing a full resync",
                extra={"table": self.delegate.name, "remote_index": remote_index, "last": last},
            )
            last = 0
        diff = self.delegate.diff(local, remote, last)
        pause = 1.0 / self.policy.apply_limit if self.policy.apply_limit > 0 else 0.0
        applied = 0
        for key in diff.deletions:
            if applied and pause:
                await asyncio.sleep(pause)
            await self.delegate.delete(key)
            applied += 1
        for record in diff.updates:
            if applied and pause:
                await asyncio.sleep(pause)
            await self.delegate.update(record)
            applied += 1
        if applied:
            log.info(
                "replicated %s: %d deleted, %d updated",
                self.delegate.name,
                len(diff.deletions),
                len(diff.updates),
                extra={"table": self.delegate.name, "remote_index": remote_index},
            )
        self.last_remote_index = remote_index

    async def run(self) -> None:
        """Rounds until cancelled: rate limited, backing off after failures."""
        bucket = TokenBucket(self.policy.rate, self.policy.burst, self._clock())
        while True:
            delay = bucket.reserve(self._clock())
            if delay > 0:
                await asyncio.sleep(delay)
            self.rounds += 1
            self._restart_reason = ""
            try:
                await self.replicate_once()
            except asyncio.CancelledError:
                raise
            except RoundRestarted as exc:
                self.restarts += 1
                log.info(
                    "replication round restarted: %s; asking again now",
                    exc,
                    extra={"table": self.delegate.name},
                )
            except ReplicationNotReady as exc:
                log.info(
                    "replication waiting: %s",
                    exc,
                    extra={"table": self.delegate.name},
                )
            except Exception as exc:
                self.failures += 1
                self.last_remote_index = 0
                if self._restart_reason:
                    # The fetch failed as the restart was asked for (the failure's
                    # own feedback changed the path): its backoff is the old path's.
                    self.restarts += 1
                    log.warning(
                        "replication round failed: %s; %s, so asking again now",
                        exc,
                        self._restart_reason,
                        extra={"table": self.delegate.name, "failures": self.failures},
                    )
                    continue
                wait = self.policy.retry_wait(self.failures, self._rng)
                log.warning(
                    "replication round failed; retrying in %.1f s: %s",
                    wait,
                    exc,
                    extra={"table": self.delegate.name, "failures": self.failures},
                )
                await self._back_off(wait)
            else:
                self.failures = 0

    async def _back_off(self, wait: float) -> None:
        backoff = self._backoff = asyncio.Event()
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await backoff.wait()
        finally:
            self._backoff = None
        if backoff.is_set():
            self.restarts += 1
            log.info(
                "replication backoff cut short: %s; asking again now",
                self._restart_reason,
                extra={"table": self.delegate.name, "failures": self.failures},
            )
            self._restart_reason = ""


class ReplicationRoundError(Exception):
    """A round could not fetch the remote table."""
