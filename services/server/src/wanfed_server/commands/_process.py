"""What every long-running ``wanfed`` command shares: logging, the event loop, signals.

``wanfed agent`` and ``wanfed gateway`` both run until SIGINT or SIGTERM, log
``time level logger: message key=value...`` lines to stderr, and prefer uvloop.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
from collections.abc import Coroutine, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncio

__all__ = [
    "STOP_SIGNALS",
    "KeyValueFormatter",
    "configure_logging",
    "run_main",
    "stop_on_signals",
]

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
"""What stops a long-running command cleanly (Ctrl-C, ``kill``, ``docker stop``)."""

logger = logging.getLogger("wanfed_server.commands")


class KeyValueFormatter(logging.Formatter):
    """``time level logger: message key=value...`` with the ``extra=`` fields appended."""

    _STANDARD = frozenset(vars(logging.makeLogRecord({})))

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        extra = {k: v for k, v in vars(record).items() if k not in self._STANDARD}
        extra.pop("message", None)
        extra.pop("asctime", None)
        if extra:
            text += " " + " ".join(f"{k}={v}" for k, v in sorted(extra.items()))
        return text


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(KeyValueFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper(), logging.INFO))


def run_main(main: Coroutine[Any, Any, int]) -> int:
    """Run a command's coroutine on uvloop (asyncio where uvloop is not installed)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        import asyncio

        return asyncio.run(main)
    return uvloop.run(main)


@contextlib.contextmanager
def stop_on_signals(stop: asyncio.Event) -> Iterator[None]:
    """Set ``stop`` on SIGINT/SIGTERM while the block runs.

    Python delivers signals to the main thread only: a command run anywhere
    else (tests drive these coroutines from worker threads and stop them by
    setting ``stop`` themselves) installs no handler and says so.
    """
    import asyncio  # imported by the commands that run a loop, not by every command

    if threading.current_thread() is not threading.main_thread():
        logger.debug("not on the main thread: no signal handlers; stop through the event")
        yield
        return
    loop = asyncio.get_running_loop()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    try:
        yield
    finally:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)
