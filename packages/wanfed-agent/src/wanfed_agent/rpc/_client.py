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

    ``read`` says the call may be sent again after a transport failure.
    ``on_failed`` hears of every server that could not be dialled or whose
    connection failed, so the caller can try it last next time. Raises
    :class:`DialError` when no server could be dialled, or the last failure.
    """
    attempts = CallAttempts(policy, read=read, targets=len(targets))
    while True:
        target = targets[attempts.target]
        try:
            return await pool.call(
                target.node or "",
                datacenter,
                target.address,
                method,
                body,
                reply_type,
                timeout=timeout,
            )
        except TransportError as exc:
            failure = Failure.DIAL if isinstance(exc, DialError) else Failure.TRANSPORT
            error = exc
        if on_failed is not None:
            on_failed(target)
        delay = attempts.failed(failure)
        if delay is None:
            raise error
        logger.info(
            "rpc call failed; trying again",
            extra={
                "method": method,
                "datacenter": datacenter,
                "server": target.node or "*",
                "failure": failure.value,
                "error": str(error),
                "next": "the next server" if failure is Failure.DIAL else f"after {delay:g}s",
            },
        )
        if delay:
            await asyncio.sleep(delay)
