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
    RouteTable,
    RpcPool,
    Target,
    call_servers,
)
from wanfed_proto import RemoteError, TransportError

POLICY = RetryPolicy(max_sends=3, backoff=0.0, backoff_cap=0.0)


def test_dial_failures_move_on_once_per_server_at_once() -> None:
    attempts = CallAttempts(RetryPolicy(), read=False, targets=3)
    assert attempts.target == 0
    assert attempts.failed(Failure.DIAL) == 0.0
    assert attempts.target == 1
    assert attempts.failed(Failure.DIAL) == 0.0
    assert attempts.target == 2
    assert attempts.failed(Failure.DIAL) is None  # every server tried once


def test_a_write_is_never_sent_twice() -> None:
    attempts = CallAttempts(RetryPolicy(), read=False, targets=3)
    assert attempts.failed(Failure.TRANSPORT) is None


def test_a_read_is_sent_again_with_doubling_backoff_within_its_budget() -> None:
    policy = RetryPolicy(max_sends=4, backoff=0.1, backoff_cap=0.3)
    attempts = CallAttempts(policy, read=True, targets=1)
    assert attempts.failed(Failure.TRANSPORT) == pytest.approx(0.1)
    assert attempts.target == 0  # one server: the same one, along the path in use now
    assert attempts.failed(Failure.TRANSPORT) == pytest.approx(0.2)
    assert attempts.failed(Failure.TRANSPORT) == pytest.approx(0.3)  # capped
    assert attempts.failed(Failure.TRANSPORT) is None  # four sends


def test_policies_and_attempts_are_checked() -> None:
    with pytest.raises(ValueError, match="max_sends"):
        RetryPolicy(max_sends=0)
    with pytest.raises(ValueError, match="backoff"):
        RetryPolicy(backoff=1.0, backoff_cap=0.5)
    with pytest.raises(ValueError, match="at least one server"):
        CallAttempts(RetryPolicy(), read=True, targets=0)


class ScriptedPool:
    """Stands for the pool: each call takes the next outcome of the script."""

    def __init__(self, *outcomes: object) -> None:
        self.outcomes = list(outcomes)
        self.calls: list[tuple[str, str, float | None]] = []

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


async def test_a_read_cut_after_sending_is_asked_again_a_write_is_not() -> None:
    pool = ScriptedPool(TransportError("connection lost"), "answer")
    assert await call(pool, read=True) == "answer"
    pool = ScriptedPool(TransportError("connection lost"), "never")
    with pytest.raises(TransportError, match="connection lost"):
        await call(pool, read=False)
    assert len(pool.calls) == 1


async def test_an_answer_even_an_error_ends_the_call() -> None:
    pool = ScriptedPool(RemoteError("Permission denied"), "never")
    with pytest.raises(RemoteError, match="Permission denied"):
        await call(pool, read=True)
    assert len(pool.calls) == 1


async def test_reads_give_up_after_their_budget() -> None:
    cut = [TransportError(f"cut {n}") for n in range(POLICY.max_sends)]
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
