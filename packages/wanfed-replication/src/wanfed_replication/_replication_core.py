"""The replication core: when to ask the remote, and what to change locally.

Theory of operation. Replication runs in *rounds*. A round asks for a
:class:`Fetch` of the remote table above the remote index of the last good
round (a blocking query), then a :class:`ReadLocal` of the local table,
diffs the two and asks for deletions before updates, one at a time, at most
``apply_limit`` per second so that catching up never starves the local Raft
log. When the last apply lands the round is good: its remote index becomes
the next ``min_index``. A remote index that moved backwards (the remote
restored a snapshot, or a new primary cluster) is diffed from index 0, a full
resync.

Rounds start no faster than a token bucket allows (default 1/s, bursts of
5). After ``n`` consecutive failed rounds the next one waits ``2**(n-1)``
seconds, capped at 120 s, plus up to 10 % jitter from the injected
``random.Random`` (so a seed replays), and asks from index 0. A fetch that
*dialled* — it succeeded or failed, not "not ready" — is reported to the
gateway locator with a :class:`ReportOutcome`, because it measured the path
in use. "Not ready" (nothing dialled) is neither a failure nor a report: the
next round just waits for its token.

A :class:`RestartRequested` (the path to the remote changed) abandons the
fetch in flight (:class:`AbandonFetch`, counted neither as a failure nor
reported) or ends a backoff early; the next round then only waits for its
token. Since the outcome report comes after the core has taken the failure
in, an owner that restarts from inside that report (the failure itself moved
the path) lands in the backoff and cuts it short.

The seam (aioquic style): feed events with ``now`` and carry out the actions
returned, in order; call :meth:`ReplicationCore.handle_timer` once
:meth:`ReplicationCore.next_deadline` has passed. A round only ever starts
from the timer (or :meth:`ReplicationCore.start_round`): an event's answer is
the rest of its own round, and the end of a round sets the deadline of the
next. Every event names the round it answers; an answer for an abandoned
round is ignored. The core never reads a clock, sleeps, or calls anything
above it.
"""

from __future__ import annotations

import enum
import logging
import random
from collections import deque
from collections.abc import Callable, Sequence
from typing import Final, Generic, TypeVar

import msgspec

from wanfed_fsm import TokenBucket

__all__ = [
    "DEFAULT_APPLY_LIMIT",
    "MAX_RETRY_WAIT",
    "AbandonFetch",
    "Applied",
    "Delete",
    "Diff",
    "Fetch",
    "FetchFailed",
    "FetchNotReady",
    "FetchSucceeded",
    "LocalFailed",
    "LocalRead",
    "ReadLocal",
    "ReplicationAction",
    "ReplicationCore",
    "ReplicationEvent",
    "ReplicationPolicy",
    "ReportOutcome",
    "RestartRequested",
    "Update",
]

log = logging.getLogger("wanfed.replication")

MAX_RETRY_WAIT: Final = 120.0
DEFAULT_APPLY_LIMIT: Final = 100.0

T = TypeVar("T")


class Diff(msgspec.Struct, Generic[T], frozen=True, kw_only=True):
    """What a round must change locally: keys to delete, records to write."""

    deletions: list[str]
    updates: list[T]


class ReplicationPolicy:
    """Pace of one replicator; defaults as Consul's federation-state replication.

    ``apply_limit`` 0 means unpaced applies.
    """

    def __init__(
        self,
        *,
        rate: float = 1.0,
        burst: int = 5,
        apply_limit: float = DEFAULT_APPLY_LIMIT,
        max_retry_wait: float = MAX_RETRY_WAIT,
        jitter_fraction: float = 0.1,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"replication needs rate > 0 and burst >= 1, got {rate}, {burst}")
        if apply_limit < 0:
            raise ValueError(f"apply_limit must be >= 0 (0: unpaced), got {apply_limit}")
        if max_retry_wait <= 0:
            raise ValueError(f"max_retry_wait must be > 0, got {max_retry_wait}")
        if not 0 <= jitter_fraction <= 1:
            raise ValueError(f"jitter_fraction must be within [0, 1], got {jitter_fraction}")
        self.rate = rate
        self.burst = burst
        self.apply_limit = apply_limit
        self.max_retry_wait = max_retry_wait
        self.jitter_fraction = jitter_fraction

    def retry_wait(self, failures: int, rng: random.Random) -> float:
        """Wait before the round after ``failures`` consecutive failed rounds."""
        if failures <= 0:
            return 0.0
        base = min(self.max_retry_wait, 2.0 ** min(failures - 1, 64))
        return base + rng.uniform(0, base * self.jitter_fraction)


# --- events (in) -----------------------------------------------------------------


class _RoundEvent(msgspec.Struct, frozen=True, kw_only=True):
    round: int

    def __post_init__(self) -> None:
        if self.round < 1:
            raise ValueError(f"rounds are numbered from 1, got {self.round}")


class FetchSucceeded(_RoundEvent, Generic[T], frozen=True, kw_only=True):
    """The remote answered the :class:`Fetch` of ``round``: its index and table."""

    index: int
    records: Sequence[T]

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.index < 0:
            raise ValueError(f"a remote index is never negative, got {self.index}")


class FetchFailed(_RoundEvent, frozen=True, kw_only=True):
    """The fetch dialled the remote and failed (``error`` says how)."""

    error: str

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.error:
            raise ValueError("a failed fetch needs an error text (the locator logs it)")


class FetchNotReady(_RoundEvent, frozen=True, kw_only=True):
    """The remote cannot be asked yet; nothing was dialled."""

    reason: str


class LocalRead(_RoundEvent, Generic[T], frozen=True, kw_only=True):
    """The local table, as asked by :class:`ReadLocal`."""

    records: Sequence[T]


class Applied(_RoundEvent, frozen=True, kw_only=True):
    """The last :class:`Delete` or :class:`Update` of ``round`` landed."""


class LocalFailed(_RoundEvent, frozen=True, kw_only=True):
    """Reading the local table or applying to it failed: the round failed."""

    error: str


class RestartRequested(msgspec.Struct, frozen=True, kw_only=True):
    """The path to the remote changed: ask again along the new one now."""

    reason: str


ReplicationEvent = (
    FetchSucceeded[T]
    | FetchFailed
    | FetchNotReady
    | LocalRead[T]
    | Applied
    | LocalFailed
    | RestartRequested
)


# --- actions (out) ---------------------------------------------------------------


class Fetch(msgspec.Struct, frozen=True, kw_only=True):
    """Blocking read of the remote table above ``min_index``; answer with a Fetch* event."""

    round: int
    min_index: int


class AbandonFetch(msgspec.Struct, frozen=True, kw_only=True):
    """Drop the fetch of ``round`` in flight; its answer, if any, is ignored."""

    round: int
    reason: str


class ReadLocal(msgspec.Struct, frozen=True, kw_only=True):
    """Read the local table; answer with :class:`LocalRead` or :class:`LocalFailed`."""

    round: int


class Delete(msgspec.Struct, frozen=True, kw_only=True):
    """Delete the local record ``key``; answer with :class:`Applied` or :class:`LocalFailed`."""

    round: int
    key: str


class Update(msgspec.Struct, Generic[T], frozen=True, kw_only=True):
    """Write ``record`` locally; answer with :class:`Applied` or :class:`LocalFailed`."""

    round: int
    record: T


class ReportOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """Tell the gateway locator how a fetch that dialled went (``None``: it worked)."""

    error: str | None


ReplicationAction = Fetch | AbandonFetch | ReadLocal | Delete | Update[T] | ReportOutcome


class _Phase(enum.Enum):
    WAITING = "waiting"  # for the next round's start time and token
    FETCHING = "fetching"
    READING = "reading"
    APPLYING = "applying"


class ReplicationCore(Generic[T]):
    """Rounds of one replicated table, as a state machine fed events and ``now``."""

    def __init__(
        self,
        *,
        name: str,
        diff: Callable[[Sequence[T], Sequence[T], int], Diff[T]],
        now: float,
        policy: ReplicationPolicy | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.name = name
        self.policy = policy or ReplicationPolicy()
        self._diff = diff
        self._rng = rng if rng is not None else random.Random()
        self._bucket = TokenBucket(self.policy.rate, self.policy.burst, now)
        self._pause = 1.0 / self.policy.apply_limit if self.policy.apply_limit > 0 else 0.0
        self.last_remote_index = 0
        self.failures = 0
        self.rounds = 0
        self.restarts = 0
        self.rounds_ended = 0  # good, failed or not ready; abandoned ones do not end
        self._phase = _Phase.WAITING
        self._start_at = now  # WAITING: the next round is due then
        self._token_held = False
        self._backing_off = False
        self._remote_index = 0
        self._remote: Sequence[T] = ()
        self._queue: deque[Delete | Update[T]] = deque()
        self._apply_in_flight = False
        self._deletions = 0
        self._applies = 0
        self._next_apply_at = now

    # -- queries -----------------------------------------------------------

    @property
    def round_in_progress(self) -> bool:
        """A round is fetching, reading or applying (not waiting to start)."""
        return self._phase is not _Phase.WAITING

    @property
    def fetching_round(self) -> int | None:
        """The round whose fetch is in flight, if any."""
        return self.rounds if self._phase is _Phase.FETCHING else None

    @property
    def backing_off(self) -> bool:
        return self._phase is _Phase.WAITING and self._backing_off

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timer` has work; ``None`` while waiting on an answer."""
        if self._phase is _Phase.WAITING:
            return self._start_at
        if self._phase is _Phase.APPLYING and self._queue and not self._apply_in_flight:
            return self._next_apply_at
        return None

    # -- the seam ----------------------------------------------------------

    def handle_timer(self, now: float) -> list[ReplicationAction[T]]:
        """Start a due round, or issue a paced apply that came due."""
        if self._phase is _Phase.WAITING:
            return self._start_when_due(now)
        if self._phase is _Phase.APPLYING:
            return self._next_apply(now)
        return []

    def start_round(self, now: float) -> list[ReplicationAction[T]]:
        """Start a round at once, regardless of the rate limit and any backoff.

        For one-shot use (``IndexReplicator.replicate_once``) and tests.
        """
        if self._phase is not _Phase.WAITING:
            raise RuntimeError(f"{self.name}: round {self.rounds} is still in progress")
        return self._begin(now)

    def feed(self, event: ReplicationEvent[T], now: float) -> list[ReplicationAction[T]]:
        """Take one event in; return what to do next, in order."""
        if isinstance(event, RestartRequested):
            return self._restart(event.reason, now)
        if event.round != self.rounds or self._phase is _Phase.WAITING:
            return []  # an answer for an abandoned round
        match event:
            case FetchSucceeded() if self._phase is _Phase.FETCHING:
                return self._fetched(event.index, event.records)
            case FetchFailed() if self._phase is _Phase.FETCHING:
                return [*self._fail(event.error, now), ReportOutcome(error=event.error)]
            case FetchNotReady() if self._phase is _Phase.FETCHING:
                log.info(
                    "replication waiting: %s; asking again when the rate limit allows",
                    event.reason,
                    extra={"table": self.name},
                )
                self._wait(now)
                return []
            case LocalRead() if self._phase is _Phase.READING:
                return self._diffed(event.records, now)
            case Applied() if self._phase is _Phase.APPLYING and self._apply_in_flight:
                self._apply_in_flight = False
                return self._next_apply(now)
            case LocalFailed() if self._phase in (_Phase.READING, _Phase.APPLYING):
                return self._fail(event.error, now)
        unexpected = type(event).__name__
        raise ValueError(f"{self.name}: {unexpected} unexpected while {self._phase.value}")

    # -- steps -------------------------------------------------------------

    def _wait(self, at: float, *, backing_off: bool = False) -> None:
        if self._phase is not _Phase.WAITING:
            self.rounds_ended += 1
        self._phase = _Phase.WAITING
        self._start_at = at
        self._token_held = False
        self._backing_off = backing_off
        self._remote = ()
        self._queue = deque()

    def _start_when_due(self, now: float) -> list[ReplicationAction[T]]:
        if now < self._start_at:
            return []
        if not self._token_held:
            self._token_held = True
            self._backing_off = False
            delay = self._bucket.reserve(now)
            if delay > 0:
                self._start_at = now + delay
                return []
        return self._begin(now)

    def _begin(self, now: float) -> list[ReplicationAction[T]]:
        self.rounds += 1
        self._phase = _Phase.FETCHING
        self._token_held = False
        self._backing_off = False
        return [Fetch(round=self.rounds, min_index=self.last_remote_index)]

    def _fetched(self, index: int, records: Sequence[T]) -> list[ReplicationAction[T]]:
        self._phase = _Phase.READING
        self._remote_index = index
        self._remote = records
        return [ReportOutcome(error=None), ReadLocal(round=self.rounds)]

    def _diffed(self, local: Sequence[T], now: float) -> list[ReplicationAction[T]]:
        last = self.last_remote_index
        if self._remote_index < last:
            log.warning(
                "remote index moved backwards; doing a full resync",
                extra={"table": self.name, "remote_index": self._remote_index, "last": last},
            )
            last = 0
        diff = self._diff(local, self._remote, last)
        self._remote = ()
        self._deletions = len(diff.deletions)
        queue: deque[Delete | Update[T]] = deque(
            Delete(round=self.rounds, key=key) for key in diff.deletions
        )
        queue.extend(Update(round=self.rounds, record=record) for record in diff.updates)
        self._queue = queue
        self._applies = len(queue)
        self._phase = _Phase.APPLYING
        self._apply_in_flight = False
        self._next_apply_at = now
        return self._next_apply(now)

    def _next_apply(self, now: float) -> list[ReplicationAction[T]]:
        if self._apply_in_flight:
            return []  # the apply in flight answers first
        if not self._queue:
            return self._succeeded(now)
        if now < self._next_apply_at:
            return []
        self._next_apply_at = now + self._pause
        self._apply_in_flight = True
        return [self._queue.popleft()]

    def _succeeded(self, now: float) -> list[ReplicationAction[T]]:
        if self._applies:
            log.info(
                "replicated %s: %d deleted, %d updated",
                self.name,
                self._deletions,
                self._applies - self._deletions,
                extra={"table": self.name, "remote_index": self._remote_index},
            )
        self.last_remote_index = self._remote_index
        self.failures = 0
        self._wait(now)
        return []

    def _fail(self, error: str, now: float) -> list[ReplicationAction[T]]:
        self.failures += 1
        self.last_remote_index = 0
        wait = self.policy.retry_wait(self.failures, self._rng)
        log.warning(
            "replication round failed; retrying in %.1f s: %s",
            wait,
            error,
            extra={"table": self.name, "failures": self.failures, "retry_in": wait},
        )
        self._wait(now + wait, backing_off=True)
        return []

    def _restart(self, reason: str, now: float) -> list[ReplicationAction[T]]:
        if self._phase is _Phase.FETCHING:
            self.restarts += 1
            log.info(
                "replication round restarted: %s; asking again now",
                reason,
                extra={"table": self.name},
            )
            abandoned = AbandonFetch(round=self.rounds, reason=reason)
            self._phase = _Phase.WAITING  # abandoned, not ended: rounds_ended stays
            self._wait(now)
            return [abandoned]
        if self.backing_off:
            self.restarts += 1
            log.info(
                "replication backoff cut short: %s; asking again now",
                reason,
                extra={"table": self.name, "failures": self.failures},
            )
            self._wait(now)
        return []
