"""The replication core driven with an explicit ``now``: no event loop, no sleeps."""

from __future__ import annotations

import random
from collections.abc import Sequence

import msgspec
import pytest

from wanfed_replication import (
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
    ReplicationPolicy,
    ReportOutcome,
    RestartRequested,
    Update,
    diff_by_key,
)


class Record(msgspec.Struct, frozen=True):
    key: str
    index: int


def diff(local: Sequence[Record], remote: Sequence[Record], last: int) -> Diff[Record]:
    return diff_by_key(local, remote, last, key=lambda r: r.key, modify_index=lambda r: r.index)


UNPACED = ReplicationPolicy(apply_limit=0)


def core_at(
    now: float = 0.0, policy: ReplicationPolicy = UNPACED, seed: int = 7
) -> ReplicationCore[Record]:
    return ReplicationCore(
        name="records", diff=diff, now=now, policy=policy, rng=random.Random(seed)
    )


def fetch(core: ReplicationCore[Record], now: float) -> Fetch:
    """Start the round that is due at ``now`` and return its fetch."""
    assert core.next_deadline() is not None
    assert core.next_deadline() <= now  # type: ignore[operator]
    (action,) = core.handle_timer(now)
    assert isinstance(action, Fetch)
    return action


def good_round(
    core: ReplicationCore[Record],
    now: float,
    index: int,
    remote: Sequence[Record] = (),
    local: Sequence[Record] = (),
) -> list[ReplicationAction[Record]]:
    """A round that fetched ``remote`` at ``index``; every apply lands at ``now``."""
    action = fetch(core, now)
    applies: list[ReplicationAction[Record]] = []
    assert core.feed(FetchSucceeded(round=action.round, index=index, records=remote), now) == [
        ReportOutcome(error=None),
        ReadLocal(round=action.round),
    ]
    actions = core.feed(LocalRead(round=action.round, records=local), now)
    while actions:
        (apply,) = actions
        applies.append(apply)
        actions = core.feed(Applied(round=action.round), now)
    assert not core.round_in_progress
    return applies


def fail(core: ReplicationCore[Record], now: float) -> float:
    """A round whose fetch fails at ``now``; the wait until the next one."""
    action = fetch(core, now)
    assert action.min_index == 0 or core.failures == 0
    actions = core.feed(FetchFailed(round=action.round, error="no route"), now)
    assert actions == [ReportOutcome(error="no route")]
    deadline = core.next_deadline()
    assert deadline is not None
    return deadline - now


def test_a_round_fetches_above_the_last_index_and_deletes_before_updating() -> None:
    core = core_at()
    assert fetch(core, 0.0) == Fetch(round=1, min_index=0)
    assert core.next_deadline() is None  # waiting on the fetch, not on time
    assert core.feed(
        FetchSucceeded(round=1, index=10, records=[Record("b", 5), Record("c", 6)]), 0.0
    ) == [ReportOutcome(error=None), ReadLocal(round=1)]
    assert core.feed(LocalRead(round=1, records=[Record("a", 1), Record("b", 1)]), 0.0) == [
        Delete(round=1, key="a")
    ]
    assert core.feed(Applied(round=1), 0.0) == [Update(round=1, record=Record("b", 5))]
    assert core.feed(Applied(round=1), 0.0) == [Update(round=1, record=Record("c", 6))]
    assert core.feed(Applied(round=1), 0.0) == []
    assert (core.last_remote_index, core.failures, core.rounds_ended) == (10, 0, 1)
    assert fetch(core, 0.0) == Fetch(round=2, min_index=10)


def backoff_waits(seed: int, count: int) -> list[float]:
    """The waits after ``count`` consecutive failures, each round due when the last wait ends."""
    core = core_at(seed=seed)
    now = 0.0
    waits = []
    for failures in range(1, count + 1):
        wait = fail(core, now)
        assert core.failures == failures
        assert core.last_remote_index == 0
        assert core.handle_timer(now + wait - 0.001) == []  # not before the backoff ends
        waits.append(wait)
        now += wait
    return waits


def test_backoff_doubles_from_one_second_up_to_120_with_at_most_ten_percent_jitter() -> None:
    waits = backoff_waits(seed=7, count=12)
    for failures, wait in enumerate(waits, start=1):
        base = min(120.0, 2.0 ** (failures - 1))
        assert base <= wait <= base * 1.1, (failures, wait)
    assert len({round(w / min(120.0, 2.0**n), 6) for n, w in enumerate(waits)}) > 1  # jittered
    # The randomness is injected: the same seed replays the same waits.
    assert backoff_waits(seed=7, count=12) == waits
    assert backoff_waits(seed=8, count=12) != waits


def test_a_good_round_ends_the_backoff_and_the_full_resync() -> None:
    core = core_at()
    now = 0.0
    for _ in range(3):
        now += fail(core, now)
    assert fetch(core, now).min_index == 0  # after a failure: a full resync
    core.feed(FetchSucceeded(round=core.rounds, index=50, records=[]), now)
    core.feed(LocalRead(round=core.rounds, records=[]), now)
    assert core.failures == 0
    wait = fail(core, now)
    assert 1.0 <= wait <= 1.1


def test_rounds_are_rate_limited_by_the_token_bucket() -> None:
    core = core_at(policy=ReplicationPolicy(rate=1.0, burst=2, apply_limit=0))
    good_round(core, 0.0, index=1)
    good_round(core, 0.0, index=2)
    assert core.handle_timer(0.0) == []  # the burst is spent
    assert core.next_deadline() == pytest.approx(1.0)
    assert core.handle_timer(0.5) == []
    assert fetch(core, 1.0) == Fetch(round=3, min_index=2)


def test_a_remote_index_moving_backwards_forces_a_full_resync() -> None:
    core = core_at()
    good_round(core, 0.0, index=100, remote=[Record("a", 50)], local=[])
    # Same index going forward: the unchanged record is not rewritten.
    assert good_round(core, 0.0, index=120, remote=[Record("a", 50)], local=[Record("a", 50)]) == []
    # The remote was rebuilt (a restored snapshot): lower indexes everywhere.
    # Diffed above index 120 the record would look unchanged; from 0 it is rewritten.
    applies = good_round(core, 0.0, index=40, remote=[Record("a", 30)], local=[Record("a", 50)])
    assert applies == [Update(round=core.rounds, record=Record("a", 30))]
    assert core.last_remote_index == 40


def test_a_restart_abandons_the_fetch_in_flight_uncounted_and_asks_again_at_once() -> None:
    core = core_at()
    good_round(core, 0.0, index=7)
    parked = fetch(core, 0.0)  # a long-poll along the old path
    actions = core.feed(RestartRequested(reason="path changed"), 3.0)
    assert actions == [AbandonFetch(round=parked.round, reason="path changed")]
    assert (core.restarts, core.failures, core.rounds_ended) == (1, 0, 1)
    again = fetch(core, 3.0)
    assert again == Fetch(round=parked.round + 1, min_index=7)  # nothing was applied
    # The abandoned fetch answering late changes nothing.
    assert core.feed(FetchSucceeded(round=parked.round, index=9, records=[]), 3.5) == []
    assert core.feed(FetchFailed(round=parked.round, error="reset"), 3.5) == []
    assert core.fetching_round == again.round


def test_a_restart_cuts_a_backoff_short_and_keeps_the_failure_count() -> None:
    core = core_at()
    wait = fail(core, 10.0)
    assert wait >= 1.0
    assert core.backing_off
    # The owner restarts from inside the outcome report (the failure moved the path).
    assert core.feed(RestartRequested(reason="now via primary gateways"), 10.0) == []
    assert (core.restarts, core.backing_off) == (1, False)
    assert core.next_deadline() == 10.0
    assert fetch(core, 10.0) == Fetch(round=2, min_index=0)
    assert core.failures == 1  # failing along the new path too backs off further
    core.feed(FetchFailed(round=2, error="no route either"), 11.0)
    deadline = core.next_deadline()
    assert deadline is not None
    assert 2.0 <= deadline - 11.0 <= 2.2


def test_a_restart_with_nothing_to_restart_does_nothing() -> None:
    core = core_at(policy=ReplicationPolicy(rate=1.0, burst=1, apply_limit=0))
    assert core.feed(RestartRequested(reason="idle"), 0.0) == []
    good_round(core, 0.0, index=3)
    assert core.handle_timer(0.0) == []  # waiting for a token: no backoff to cut
    assert core.feed(RestartRequested(reason="waiting"), 0.0) == []
    action = fetch(core, 1.0)
    core.feed(FetchSucceeded(round=action.round, index=4, records=[]), 1.0)
    assert core.feed(RestartRequested(reason="reading"), 1.0) == []  # the fetch is done
    assert core.restarts == 0


def test_not_ready_is_no_failure_and_no_report() -> None:
    core = core_at(policy=ReplicationPolicy(rate=1.0, burst=1, apply_limit=0))
    good_round(core, 0.0, index=5)
    action = fetch(core, 1.0)
    assert core.feed(FetchNotReady(round=action.round, reason="no primary server yet"), 1.0) == []
    assert (core.failures, core.last_remote_index, core.backing_off) == (0, 5, False)
    assert core.next_deadline() == 1.0  # only the rate limit holds the next round back
    assert core.handle_timer(1.0) == []
    assert fetch(core, 2.0) == Fetch(round=action.round + 1, min_index=5)


def test_applies_are_paced_to_the_apply_limit() -> None:
    core = core_at(policy=ReplicationPolicy(apply_limit=2.0))  # one every 0.5 s
    action = fetch(core, 0.0)
    remote = [Record(key, 1) for key in "abc"]
    core.feed(FetchSucceeded(round=action.round, index=1, records=remote), 0.0)
    assert core.feed(LocalRead(round=action.round, records=[]), 0.0) == [
        Update(round=action.round, record=remote[0])
    ]
    assert core.feed(Applied(round=action.round), 0.1) == []
    assert core.next_deadline() == 0.5
    assert core.handle_timer(0.4) == []
    assert core.handle_timer(0.5) == [Update(round=action.round, record=remote[1])]
    assert core.next_deadline() is None  # the apply in flight answers first
    # An apply that took longer than the pause is followed at once.
    assert core.feed(Applied(round=action.round), 2.0) == [
        Update(round=action.round, record=remote[2])
    ]
    assert core.feed(Applied(round=action.round), 2.1) == []
    assert core.last_remote_index == 1


def test_a_local_failure_backs_off_without_a_locator_report() -> None:
    core = core_at()
    action = fetch(core, 0.0)
    core.feed(FetchSucceeded(round=action.round, index=3, records=[Record("a", 1)]), 0.0)
    core.feed(LocalRead(round=action.round, records=[]), 0.0)
    assert core.feed(LocalFailed(round=action.round, error="not the leader"), 0.0) == []
    assert core.failures == 1
    assert core.backing_off
    assert core.last_remote_index == 0


def test_start_round_skips_the_schedule_but_not_a_round_in_progress() -> None:
    core = core_at()
    fail(core, 0.0)
    assert core.start_round(0.0) == [Fetch(round=2, min_index=0)]
    with pytest.raises(RuntimeError, match="still in progress"):
        core.start_round(0.0)


def test_events_and_policy_are_validated() -> None:
    with pytest.raises(ValueError, match="numbered from 1"):
        Applied(round=0)
    with pytest.raises(ValueError, match="never negative"):
        FetchSucceeded(round=1, index=-1, records=[])
    with pytest.raises(ValueError, match="error text"):
        FetchFailed(round=1, error="")
    with pytest.raises(ValueError, match="rate > 0"):
        ReplicationPolicy(rate=0)
    with pytest.raises(ValueError, match="jitter_fraction"):
        ReplicationPolicy(jitter_fraction=2)
    core = core_at()
    action = fetch(core, 0.0)
    with pytest.raises(ValueError, match="LocalRead unexpected while fetching"):
        core.feed(LocalRead(round=action.round, records=[]), 0.0)
