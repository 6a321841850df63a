"""Deadlines: every call to another server has one, long-polls included.

A call's timeout travels in the envelope as an absolute deadline, so the
server stops work nobody waits for. An ordinary call gets
:data:`DEFAULT_CALL_TIMEOUT`. A blocking query waits on the server for its
``max_query_time`` (the server's default and cap apply) plus a random jitter
of up to a sixteenth of it; its caller waits that long at most, plus
:data:`BLOCKING_MARGIN` for the hops and a leader election on the way.
"""

from __future__ import annotations

from typing import Final

from wanfed_fsm import QueryOptions, query_wait

__all__ = [
    "BLOCKING_MARGIN",
    "DEFAULT_CALL_TIMEOUT",
    "blocking_call_timeout",
    "call_timeout",
]

DEFAULT_CALL_TIMEOUT: Final = 60.0
"""Seconds an ordinary (non-blocking) call may take, forwarding and a leader
election included; a dead connection fails sooner, by keepalive."""

BLOCKING_MARGIN: Final = 10.0
"""Seconds a blocking query's caller waits beyond the longest the server may block."""


def blocking_call_timeout(max_query_time: float, margin: float = BLOCKING_MARGIN) -> float:
    """The timeout of a blocking query asked to wait ``max_query_time`` seconds.

    The server's own rule decides the wait (0 means its default, and it is
    capped); the jitter is taken at its largest, so an answer never arrives
    after its caller gave up.
    """
    if margin < 0:
        raise ValueError(f"margin must not be negative, got {margin}")
    return query_wait(max_query_time, 1.0) + margin


def call_timeout(request: object) -> float:
    """The timeout of a call carrying ``request``: blocking queries wait longer."""
    if isinstance(request, QueryOptions) and request.min_query_index > 0:
        return blocking_call_timeout(request.max_query_time)
    return DEFAULT_CALL_TIMEOUT
