"""What a new leader of the primary datacenter writes when ACLs are on.

The built-in global-management policy and the anonymous token must exist
before any token resolves (``ACLInitialize``, a no-op when they do), and an
operator who configured ``acl.tokens.initial_management`` expects that
secret to be a management token without running ``wanfed acl bootstrap``.
Both are ordinary log entries, so every server applies the same records;
a write that fails (leadership lost mid-way) is tried again by the next leader.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import UTC, datetime
from typing import Final

from wanfed_agent.config import ACLConfig
from wanfed_fsm import (
    MANAGEMENT_POLICY_ID,
    ACLInitialize,
    ACLToken,
    ACLTokenPolicyLink,
    ACLTokenSet,
    Consensus,
    ConsensusError,
    FsmError,
)

__all__ = ["AclLeader"]

logger = logging.getLogger("wanfed_server.runtime.acl")

INITIAL_MANAGEMENT_DESCRIPTION: Final = "Initial Management Token"


class AclLeader:
    """Subscribe :meth:`on_leadership` to the consensus of a primary's server."""

    def __init__(self, consensus: Consensus, config: ACLConfig, *, primary: bool) -> None:
        self._consensus = consensus
        self._config = config
        self._primary = primary
        self._task: asyncio.Task[None] | None = None
        self.initialized = asyncio.Event()
        """Set once this server, as leader, has written the built-ins."""

    def on_leadership(self, leader: bool) -> None:
        if not (self._config.enabled and self._primary):
            return
        if leader and self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._initialize(), name="acl-initialize"
            )
        elif not leader and self._task is not None:
            self._task.cancel()
            self._task = None

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _initialize(self) -> None:
        now = datetime.now(UTC)
        try:
            await self._consensus.apply(ACLInitialize(create_time=now))
            secret = self._config.tokens.initial_management
            if secret:
                with self._consensus.store.read() as txn:
                    _, existing = txn.acl_token_by_secret(secret)
                if existing is None:
                    token = ACLToken(
                        accessor_id=str(uuid.uuid4()),
                        secret_id=secret,
                        description=INITIAL_MANAGEMENT_DESCRIPTION,
                        policies=[ACLTokenPolicyLink(id=MANAGEMENT_POLICY_ID)],
                        create_time=now,
                    )
                    await self._consensus.apply(ACLTokenSet(tokens=[token]))
                    logger.info(
                        "acl initial management token created accessor=%s", token.accessor_id
                    )
        except (ConsensusError, FsmError) as exc:
            logger.warning("acl initialization failed error=%s; the next leader tries again", exc)
            return
        logger.info("acl initialized: built-in policy and anonymous token present")
        self.initialized.set()
