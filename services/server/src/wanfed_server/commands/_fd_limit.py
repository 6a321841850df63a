"""Raise the open-files limit at start, as a server that holds many sockets must.

Many systems still start processes with a soft ``RLIMIT_NOFILE`` of 1024
while allowing far more (the hard limit). A server at 1024 runs out after
about a thousand idle connections, and then cannot accept, dial or open its
own files. So ``wanfed agent`` and ``wanfed gateway`` raise the soft limit to
the hard one before they listen, log both in one line, and warn when the
configured connection caps could still use up what is left.
"""

from __future__ import annotations

import logging
import resource
from typing import Final

__all__ = ["FD_RESERVE", "OpenFilesLimit", "raise_open_files_limit"]

logger = logging.getLogger("wanfed_server.fd_limit")

FD_RESERVE: Final = 256
"""Descriptors kept for the process itself beyond its listeners' caps: Raft
journal and snapshots, outgoing dials, the event loop, logs."""


class OpenFilesLimit:
    """The soft and hard limits after :func:`raise_open_files_limit`."""

    __slots__ = ("hard", "previous_soft", "soft")

    def __init__(self, soft: int, hard: int, previous_soft: int) -> None:
        self.soft = soft
        self.hard = hard
        self.previous_soft = previous_soft


def _text(value: int) -> str:
    return "unlimited" if value == resource.RLIM_INFINITY else str(value)


def raise_open_files_limit(connection_caps: int = 0) -> OpenFilesLimit:
    """Set the soft ``RLIMIT_NOFILE`` to the hard limit and log the outcome.

    ``connection_caps`` is the sum of the process's total connection caps;
    if it does not fit under the soft limit with :data:`FD_RESERVE` to spare,
    a warning says which limit to raise. Never fails: a limit that cannot be
    raised is logged and the process goes on with the one it has.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    previous = soft
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:
            logger.warning(
                "could not raise the open files limit: %s; continuing with the soft limit",
                exc,
                extra={"soft": _text(soft), "hard": _text(hard)},
            )
    logger.info(
        "open files limit: soft raised to the hard limit"
        if soft != previous
        else "open files limit: soft already at the hard limit",
        extra={"soft": _text(soft), "hard": _text(hard), "previous_soft": _text(previous)},
    )
    if connection_caps and soft != resource.RLIM_INFINITY and connection_caps + FD_RESERVE > soft:
        logger.warning(
            "the connection caps leave too few open files for the server itself; raise the "
            "hard open-files limit (ulimit -Hn, LimitNOFILE=) or lower the connection caps",
            extra={"connection_caps": connection_caps, "soft": soft, "reserve": FD_RESERVE},
        )
    return OpenFilesLimit(soft, hard, previous)
