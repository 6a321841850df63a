"""When the WAN join is tried: the schedule's decisions on a virtual clock."""

from __future__ import annotations

import pytest

from wanfed_server.runtime._wan import NUDGE_SPACING, JoinSchedule


def test_the_first_try_is_due_at_once() -> None:
    assert JoinSchedule(30.0).due_in(0.0) == 0.0


def test_a_failed_try_is_retried_an_interval_later() -> None:
    schedule = JoinSchedule(30.0)
    schedule.began()
    schedule.tried(2.0)
    assert schedule.due_in(2.0) == 30.0
    assert schedule.due_in(31.0) == 1.0


def test_a_nudge_brings_the_next_try_forward_but_not_closer_than_the_spacing() -> None:
    schedule = JoinSchedule(30.0)
    schedule.tried(0.0)  # nothing to dial yet
    schedule.nudged(0.2)  # the locator read the store a moment later
    assert schedule.due_in(0.2) == pytest.approx(NUDGE_SPACING - 0.2)
    schedule.tried(1.0)
    schedule.nudged(5.0)  # a fallback address became known
    assert schedule.due_in(5.0) == 0.0


def test_a_nudge_never_postpones_a_try() -> None:
    schedule = JoinSchedule(30.0)
    schedule.nudged(0.0)
    assert schedule.due_in(0.0) == 0.0


def test_a_nudge_during_a_try_asks_again_soon_after_it() -> None:
    """The path changed while a join was on its way, perhaps along the old path."""
    schedule = JoinSchedule(30.0)
    schedule.began()
    schedule.nudged(1.0)
    schedule.tried(4.0)
    assert schedule.due_in(4.0) == NUDGE_SPACING
    schedule.began()
    schedule.tried(5.0)  # no nudge this time: back to the interval
    assert schedule.due_in(5.0) == 30.0


def test_the_spacing_never_exceeds_a_short_interval() -> None:
    schedule = JoinSchedule(0.2)
    schedule.began()
    schedule.nudged(0.0)
    schedule.tried(0.0)
    assert schedule.due_in(0.0) == 0.2


def test_a_non_positive_interval_is_refused() -> None:
    with pytest.raises(ValueError, match="greater than zero seconds, got 0"):
        JoinSchedule(0.0)
