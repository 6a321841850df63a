"""The one retry policy: the core decision table, and ``call_servers`` carrying it out."""

from __future__ import annotations

from typing import Any

import pytest

from wanfed_agent.rpc import (
    CallAttempts,
    DialError,
    Failure,
    PlainDialer,
    RetryPolicy,
    Route,
    RouteTable,
    RpcPool,
    Target,
    call_servers,
)
from wanfed_proto import RemoteError, TransportError

POLICY = RetryPolicy(max_sends=3, backoff=0.0, backoff_cap=0.0)


def test_dial_failures_move_on_once_per_server_at_once() -> None:
    attempts = CallAttempts(RetryPolicy(), read=False, targets=3, now=0.0)
    assert attempts.target == 0
    assert attempts.failed(Failure.DIAL, 1.0) == 0.0
    assert attempts.target == 1
    assert attempts.failed(Failure.DIAL, 2.0) == 0.0
    assert attempts.target == 2
    assert attempts.failed(Failure.DIAL, 3.0) is None  # every server tried once


def test_dial_failures_stop_moving_on_after_the_dial_budget() -> None:
    """Through a black-holed path every dial costs its timeout: the caller must
    hear of it in bounded time, not after one timeout per server."""
    attempts = CallAttempts(RetryPolicy(dial_budget=10.0), read=True, targets=5, now=100.0)
    assert attempts.failed(Failure.DIAL, 105.0) == 0.0
    assert attempts.failed(Failure.DIAL, 110.0) is None


def test_a_failure_on_an_unchanged_path_is_never_hidden_by_a_resend() -> None:
    for read in (True, False):
        attempts = CallAttempts(RetryPolicy(), read=read, targets=3, now=0.0)
        assert attempts.failed(Failure.TRANSPORT, 1.0) is None


def test_a_read_cut_by_a_path_change_is_resent_with_doubling_backoff_within_its_budget() -> None:
    policy = RetryPolicy(max_sends=4, backoff=0.1, backoff_cap=0.3)
    attempts = CallAttempts(policy, read=True, targets=1, now=0.0)
    assert attempts.failed(Failure.PATH_CHANGED, 1.0) == pytest.approx(0.1)
    assert attempts.target == 0  # the same server, along the new path
    assert attempts.failed(Failure.PATH_CHANGED, 2.0) == pytest.approx(0.2)
    assert attempts.failed(Failure.PATH_CHANGED, 3.0) == pytest.approx(0.3)  # capped
    assert attempts.failed(Failure.PATH_CHANGED, 4.0) is None  # four sends


def test_a_write_cut_by_a_path_change_is_not_resent() -> None:
    attempts = CallAttempts(RetryPolicy(), read=False, targets=3, now=0.0)
    assert attempts.failed(Failure.PATH_CHANGED, 1.0) is None


def test_the_dial_budget_starts_again_on_the_new_path() -> None:
    attempts = CallAttempts(RetryPolicy(dial_budget=10.0), read=True, targets=2, now=0.0)
    assert attempts.failed(Failure.PATH_CHANGED, 300.0) is not None  # a long-poll, cut
    assert attempts.failed(Failure.DIAL, 305.0) == 0.0


def test_policies_and_attempts_are_checked() -> None:
    with pytest.raises(ValueError, match="max_sends"):
        RetryPolicy(max_sends=0)
    with pytest.raises(ValueError, match="backoff"):
        RetryPolicy(backoff=1.0, backoff_cap=0.5)
    with pytest.raises(ValueError, match="dial_budget"):
        RetryPolicy(dial_budget=-1.0)
    with pytest.raises(ValueError, match="at least one server"):
        CallAttempts(RetryPolicy(), read=True, targets=0, now=0.0)


class PathChange(Exception):
    """In a script: the path changes, then the call fails with ``error``."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


class ScriptedPool:
    """Stands for the pool: each call takes the next outcome of the script."""

    def __init__(self, *outcomes: object) -> None:
        self.outcomes = list(outcomes)
        self.calls: list[tuple[str, str, float | None]] = []
        self.epoch = 0
        """The path epoch to dc2; a scripted :class:`PathChange` moves it."""
        self.routes = RouteTable("dc1", self)

    def path_to(self, datacenter: str) -> tuple[str, int]:
        return "local-gateways", self.epoch

    def epoch_seen(self, datacenter: str) -> int | None:
        return self.epoch

    async def call_on(
        self,
        route: Route,
        method: str,
        body: object,
        reply_type: type[Any],
        *,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> Any:
        return await self.call(
            route.node or "",
            route.datacenter,
            route.address or "",
            method,
            body,
            reply_type,
            timeout=timeout,
        )

    async def call(
        self,
        node: str,
        datacenter: str,
        address: str,
        method: str,
        body: object,
        reply_type: type[Any],
        *,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> Any:
        self.calls.append((node, address, timeout))
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, PathChange):
            self.epoch += 1
            raise outcome.error
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


SERVERS = [Target(node="a", address="198.18.2.1:8300"), Target(node="b", address="198.18.2.2:8300")]


async def call(pool: ScriptedPool, *, read: bool, failed: list[Target] | None = None) -> Any:
    return await call_servers(
        pool,  # type: ignore[arg-type]
        "dc2",
        SERVERS,
        "Catalog.ListNodes",
        None,
        str,
        read=read,
        timeout=7.0,
        policy=POLICY,
        on_failed=None if failed is None else failed.append,
    )


async def test_an_undialled_server_is_reported_and_the_next_one_answers() -> None:
    pool = ScriptedPool(DialError("refused"), "answer")
    failed: list[Target] = []
    assert await call(pool, read=False, failed=failed) == "answer"
    assert [node for node, _, _ in pool.calls] == ["a", "b"]
    assert failed == [SERVERS[0]]
    assert {timeout for _, _, timeout in pool.calls} == {7.0}


async def test_no_server_dialled_is_a_dial_error() -> None:
    pool = ScriptedPool(DialError("refused a"), DialError("refused b"))
    with pytest.raises(DialError, match="refused b"):
        await call(pool, read=True)


async def test_a_read_cut_by_a_path_change_is_asked_again_a_write_is_not() -> None:
    failed: list[Target] = []
    pool = ScriptedPool(PathChange(TransportError("retired")), "answer")
    assert await call(pool, read=True, failed=failed) == "answer"
    assert failed == [], "the server did nothing wrong"
    pool = ScriptedPool(PathChange(TransportError("retired")), "never")
    with pytest.raises(TransportError, match="retired"):
        await call(pool, read=False)
    assert len(pool.calls) == 1


async def test_a_connection_failing_on_the_same_path_fails_the_call() -> None:
    """The replicator and the locator judge the path by this failure."""
    failed: list[Target] = []
    pool = ScriptedPool(TransportError("keepalive: no answer"), "never")
    with pytest.raises(TransportError, match="keepalive"):
        await call(pool, read=True, failed=failed)
    assert len(pool.calls) == 1
    assert failed == [SERVERS[0]]


async def test_an_answer_even_an_error_ends_the_call() -> None:
    pool = ScriptedPool(RemoteError("Permission denied"), "never")
    with pytest.raises(RemoteError, match="Permission denied"):
        await call(pool, read=True)
    assert len(pool.calls) == 1


async def test_reads_give_up_after_their_budget() -> None:
    cut = [PathChange(TransportError(f"cut {n}")) for n in range(POLICY.max_sends)]
    pool = ScriptedPool(*cut, "never")
    with pytest.raises(TransportError, match=f"cut {POLICY.max_sends - 1}"):
        await call(pool, read=True)
    assert len(pool.calls) == POLICY.max_sends


async def test_the_real_pool_fits_the_seam() -> None:
    """``call_servers`` takes the real pool (the scripted one stands for it)."""
    pool = RpcPool(PlainDialer(), RouteTable("dc1"))
    await pool.close()
    with pytest.raises(DialError, match="closed"):
        await call_servers(pool, "dc1", SERVERS, "Status.Ping", None, bool, read=True)
