"""ConnectionLimiter and RateLimitedLog: the sans-I/O pieces every listener shares."""

from __future__ import annotations

import logging

import pytest

from wanfed_proto import ConnectionLimiter, RateLimitedLog, Refusal

LOG = "wanfed_proto.tests.limits"


def test_per_client_cap_refuses_only_that_client() -> None:
    limiter = ConnectionLimiter(per_client=2, total=10)
    assert limiter.admit("a") is None
    assert limiter.admit("a") is None
    assert limiter.admit("a") is Refusal.PER_CLIENT
    assert limiter.admit("b") is None
    assert limiter.open_from("a") == 2
    assert limiter.open_total == 3
    assert limiter.refused == {Refusal.PER_CLIENT: 1, Refusal.TOTAL: 0}


def test_total_cap_refuses_everyone_and_wins_over_the_per_client_cap() -> None:
    limiter = ConnectionLimiter(per_client=1, total=2)
    assert limiter.admit("a") is None
    assert limiter.admit("b") is None
    assert limiter.admit("c") is Refusal.TOTAL
    assert limiter.admit("a") is Refusal.TOTAL
    assert limiter.refused[Refusal.TOTAL] == 2
    assert limiter.limit_of(Refusal.TOTAL) == 2
    assert limiter.limit_of(Refusal.PER_CLIENT) == 1


def test_release_makes_room_again() -> None:
    limiter = ConnectionLimiter(per_client=1, total=1)
    assert limiter.admit("a") is None
    limiter.release("a")
    assert limiter.open_total == 0
    assert limiter.open_from("a") == 0
    assert limiter.admit("b") is None


def test_zero_means_no_cap() -> None:
    limiter = ConnectionLimiter(per_client=0, total=0)
    for _ in range(1000):
        assert limiter.admit("a") is None
    assert limiter.open_total == 1000


def test_release_without_admission_is_a_bug_not_a_negative_count() -> None:
    limiter = ConnectionLimiter(per_client=1, total=1)
    with pytest.raises(RuntimeError, match="never admitted"):
        limiter.release("a")


def test_negative_caps_are_refused() -> None:
    with pytest.raises(ValueError, match="must not be negative"):
        ConnectionLimiter(per_client=-1, total=0)


def test_rate_limited_log_writes_one_line_per_interval_with_the_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOG)
    log = RateLimitedLog(logging.getLogger(LOG), interval=10.0)
    written = [log.log(t, logging.WARNING, "refused", key="k") for t in (0.0, 1.0, 2.0, 9.9)]
    assert written == [True, False, False, False]
    assert log.log(10.0, logging.WARNING, "refused", key="k", extra={"client": "x"})
    records = [r for r in caplog.records if r.name == LOG]
    assert [r.getMessage() for r in records] == ["refused", "refused"]
    assert [r.__dict__["suppressed"] for r in records] == [0, 3]
    assert records[1].__dict__["client"] == "x"
    assert records[1].__dict__["log_interval"] == 10.0


def test_rate_limited_log_keys_are_independent(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOG)
    log = RateLimitedLog(logging.getLogger(LOG), interval=10.0)
    assert log.log(0.0, logging.WARNING, "a", key="a")
    assert log.log(0.0, logging.WARNING, "b", key="b")
    assert not log.log(0.5, logging.WARNING, "a", key="a")


def test_rate_limited_log_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="interval"):
        RateLimitedLog(logging.getLogger(LOG), interval=0)
