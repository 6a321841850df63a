"""One logical call to a datacenter's servers, under the one retry policy."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

import msgspec

from wanfed_proto import TransportError

from ._dial import DialError
from ._pool import RpcPool
from ._retry import DEFAULT_RETRY, CallAttempts, Failure, RetryPolicy

__all__ = ["ServerAddress", "Target", "call_servers"]

logger = logging.getLogger("wanfed.rpc.client")

T = TypeVar("T")


class ServerAddress(Protocol):
    """A server to try: its node name (``None`` or empty: any) and advertised address."""

    @property
    def node(self) -> str | None: ...

    @property
    def address(self) -> str: ...


S = TypeVar("S", bound=ServerAddress)


class Target(msgspec.Struct, frozen=True, kw_only=True):
    """The plain :class:`ServerAddress`."""

    node: str | None
    address: str = ""


async def call_servers(
    pool: RpcPool,
    datacenter: str,
    targets: Sequence[S],
    method: str,
    body: object,
    reply_type: type[T],
    *,
    read: bool,
    timeout: float | None = None,  # noqa: ASYNC109 (each send's deadline)
    policy: RetryPolicy = DEFAULT_RETRY,
    on_failed: Callable[[S], object] | None = None,
) -> T:
    """``method`` on the first of ``targets`` that answers, as :mod:`._retry` allows.

    ``read`` says the call may be sent again when the path changed under it.
    ``on_failed`` hears of every server that could not be dialled or whose
    connection failed on the path in use, so the caller can try it last next
    time. Raises :class:`DialError` when no server could be dialled, or the
    last failure.
    """
    attempts: CallAttempts | None = None  # made at the first failure: most calls have none
    index = 0
    while True:
        target = targets[index]
        route = pool.routes.route(datacenter, target.node or None, target.address or None)
        try:
            return await pool.call_on(route, method, body, reply_type, timeout=timeout)
        except TransportError as exc:
            error = exc
            if isinstance(exc, DialError):
                failure = Failure.DIAL
            elif pool.epoch_seen(datacenter) != route.epoch:
                failure = Failure.PATH_CHANGED  # the pool retired the old path's connection
            else:
                failure = Failure.TRANSPORT
        if on_failed is not None and failure is not Failure.PATH_CHANGED:
            on_failed(target)  # the server did nothing wrong when the path changed
        now = asyncio.get_running_loop().time()
        if attempts is None:
            attempts = CallAttempts(policy, read=read, targets=len(targets), now=now)
        delay = attempts.failed(failure, now)
        if delay is None:
            raise error
        index = attempts.target
        logger.info(
            "rpc call failed; trying again",
            extra={
                "method": method,
                "datacenter": datacenter,
                "server": target.node or "*",
                "failure": failure.value,
                "error": str(error),
                "next": (
                    "the next server" if failure is Failure.DIAL else f"the new path in {delay:g}s"
                ),
            },
        )
        if delay:
            await asyncio.sleep(delay)
