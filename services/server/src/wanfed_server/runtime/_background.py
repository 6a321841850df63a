"""The server's background tasks: which ones stop the server when they fail.

Cluster formation (and the hellos after it) is the server's life: if it
fails, the server cannot serve, so its error is what ``wait_failed``
returns and the command stops the process. Other tasks (committing a
member's join) log their own failures and leave the server running. Every
task is cancelled and awaited at stop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

__all__ = ["Background"]

logger = logging.getLogger("wanfed_server.runtime")


class Background:
    """Tasks that live until the server stops."""

    def __init__(self) -> None:
        self._tasks: list[asyncio.Task[None]] = []
        self._failed: asyncio.Future[BaseException] | None = None

    def start(self) -> None:
        self._failed = asyncio.get_running_loop().create_future()

    def track(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        """Run ``coro`` until the server stops; its failure is its own to log."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.append(task)
        task.add_done_callback(self._forget)

    def essential(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        """Run ``coro`` until the server stops; its failure stops the server."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.append(task)

        def done(task: asyncio.Task[None]) -> None:
            if task.cancelled() or task.exception() is None:
                return
            error = task.exception()
            logger.error("server task %s failed: %r; the server must stop", name, error)
            if self._failed is not None and not self._failed.done() and error is not None:
                self._failed.set_result(error)

        task.add_done_callback(done)

    def _forget(self, task: asyncio.Task[None]) -> None:
        if task in self._tasks:
            self._tasks.remove(task)

    async def wait_failed(self) -> BaseException:
        """The error of the first essential task that failed."""
        if self._failed is None:
            raise RuntimeError("server not started")
        return await asyncio.shield(self._failed)

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
