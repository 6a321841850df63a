"""Every error wanfed_fsm raises derives from :class:`FsmError`.

The consensus errors are split by what a caller may conclude: a
:class:`NotLeaderError` means the write was never submitted (safe to retry
elsewhere), an :class:`OutcomeUnknownError` means it may or may not have been
committed (retry only if the write is idempotent), and
:class:`NotReadyError` means a consistent read could not be served.
"""

from __future__ import annotations

__all__ = [
    "CatalogError",
    "CommandDecodeError",
    "CommandRejectedError",
    "ConsensusError",
    "FsmError",
    "InvalidOperationError",
    "MissingDatacenterError",
    "NotLeaderError",
    "NotReadyError",
    "OutcomeUnknownError",
    "RaftSecurityError",
    "SnapshotFormatError",
]


class FsmError(Exception):
    """Base of every error raised by wanfed_fsm."""


class MissingDatacenterError(FsmError, ValueError):
    """A federation-state write without a datacenter."""

    def __init__(self) -> None:
        super().__init__("missing datacenter on federation state")


class InvalidOperationError(FsmError, ValueError):
    """A federation-state request whose op is neither upsert nor delete."""

    def __init__(self, op: str) -> None:
        super().__init__(f"invalid federation state operation type: {op}")
        self.op = op


class CatalogError(FsmError, ValueError):
    """A catalog write that would leave the catalog inconsistent (a check without its service)."""


class CommandRejectedError(FsmError):
    """The FSM applied the command and returned an error; the write changed nothing."""


class CommandDecodeError(FsmError):
    """Command bytes that do not decode to a known command."""


class SnapshotFormatError(FsmError):
    """A snapshot this build cannot restore (corrupt, or from an unknown format version)."""


class ConsensusError(FsmError):
    """Base of the errors raised by :class:`~wanfed_fsm.Consensus` implementations."""


class NotLeaderError(ConsensusError):
    """This server is not the leader; the write was not submitted."""

    def __init__(self, leader: str | None) -> None:
        where = f"the leader is {leader}" if leader else "no leader is known"
        super().__init__(f"not the raft leader; {where}")
        self.leader = leader


class OutcomeUnknownError(ConsensusError):
    """The write was submitted but its fate is unknown (leader change or timeout)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"outcome of the raft write is unknown: {reason}")
        self.reason = reason


class NotReadyError(ConsensusError):
    """Leadership could not be confirmed, so a consistent read would be unsafe."""

    def __init__(self) -> None:
        super().__init__("Not ready to serve consistent reads")


class RaftSecurityError(ConsensusError):
    """Raft traffic would travel unauthenticated; the server refuses to start."""
