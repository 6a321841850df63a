"""The simulated servers' time constants, shared by the server and its drivers."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

__all__ = ["BLOCKING_WAIT", "EPOCH", "RPC_SLACK"]

EPOCH: Final = datetime(2026, 1, 1, tzinfo=UTC)
"""The wall-clock time of virtual time 0 (stamped on written records)."""
BLOCKING_WAIT: Final = 300.0
"""How long a blocking read waits for a change (the server's replication wait)."""
RPC_SLACK: Final = 10.0
"""A plain call's deadline; a blocking one gets the wait, a sixteenth of it, and this."""
