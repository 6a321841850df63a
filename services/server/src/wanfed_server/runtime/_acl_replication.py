"""ACL replication: a secondary's leader copies the primary's policies and global tokens.

Theory of operation. The primary is authoritative for policies and for
every token that is not ``Local``. While a server leads a secondary
datacenter with ACLs on, it runs two index replicators (the generic
machinery of ``wanfed_replication``: blocking fetch above the last remote
index, diff by key, deletions then updates through Raft, rate limited, with
backoff), one per table:

* policies: ``ACL.PolicyList`` in the primary (needs ``acl:read``);
* tokens: ``ACL.TokenList`` with ``IncludeLocal = false`` (needs
  ``acl:read``, and ``acl:write`` to see the secrets, as Consul documents for
  its replication token: a list whose secrets come back ``<hidden>`` fails
  the round rather than storing tokens nobody could present). Local tokens of
  this datacenter are left out of the diff, so replication never deletes
  them, and never sends them anywhere.

Both present ``acl.tokens.replication``. Tokens are written with
``allow_missing_links``: a token may arrive before a policy it names, and a
link to a policy not (yet) stored grants nothing until it is.

Every outcome goes to the :class:`AclReplicationTracker` (for
``/v1/acl/replication``), and a small loop turns its staleness into
:meth:`TokenResolver.set_stale`, so ``acl.down_policy`` decides once the
primary has been unreachable for ``acl.token_ttl``. Federation-state
replication reports its fetches to the gateway locator; this replication
reports nothing there: an ACL list failing (say, for a weak replication
token) says nothing about the path to the primary.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Final, Generic, Protocol, TypeVar

import msgspec

from wanfed_fsm import (
    ANONYMOUS_TOKEN_ID,
    ACLPolicy,
    ACLPolicyDelete,
    ACLPolicySet,
    ACLToken,
    ACLTokenDelete,
    ACLTokenSet,
    Consensus,
    DCSpecificRequest,
)
from wanfed_replication import (
    Diff,
    IndexReplicator,
    ReplicationNotReady,
    ReplicationPolicy,
    diff_by_key,
)

from ._acl import TokenResolver
from ._acl_messages import ACLPolicyList, ACLTokenList, ACLTokenListRequest
from ._acl_replication_status import POLICIES, TOKENS, AclReplicationTracker, AclTable
from ._router import NoPathToDatacenterError

__all__ = ["AclReplication", "AclReplicationOptions", "AclRpc"]

logger = logging.getLogger("wanfed_server.runtime.acl_replication")

T = TypeVar("T")
R = TypeVar("R")

HIDDEN_SECRET: Final = "<hidden>"


class AclRpc(Protocol):
    """This server's RPC dispatch (forwarding to the primary included)."""

    async def rpc(self, method: str, args: msgspec.Struct, reply_type: type[R]) -> R: ...


class AclReplicationOptions(msgspec.Struct, frozen=True, kw_only=True):
    """Pace of ACL replication; the defaults are federation-state replication's."""

    wait: float = 300.0
    """``MaxQueryTime`` of the blocking lists in the primary."""
    rate: float = 1.0
    burst: int = 5
    max_retry_wait: float = 120.0


class _TableReplication(ABC, Generic[T]):
    """What both tables share: the fetch's error handling and the tracker's reports."""

    name = ""
    table: AclTable = POLICIES

    def __init__(
        self,
        *,
        primary: str,
        rpc: AclRpc,
        consensus: Consensus,
        token: str,
        wait: float,
        tracker: AclReplicationTracker,
        changed: Callable[[], None],
        clock: Callable[[], float],
    ) -> None:
        self._primary = primary
        self._rpc = rpc
        self._consensus = consensus
        self._token = token
        self._wait = wait
        self._tracker = tracker
        self._changed = changed
        self._clock = clock
        self._fetched_index = 0
        self._pending = 0

    def _request(self, min_index: int) -> DCSpecificRequest:
        return DCSpecificRequest(
            datacenter=self._primary,
            min_query_index=min_index,
            max_query_time=self._wait,
            allow_stale=True,
            token=self._token,
        )

    @abstractmethod
    async def _fetch(self, min_index: int) -> tuple[int, Sequence[T]]:
        """One blocking list of the table in the primary: its index and records."""

    async def fetch_remote(self, last_remote_index: int) -> tuple[int, Sequence[T]]:
        try:
            index, records = await self._fetch(last_remote_index)
        except NoPathToDatacenterError as exc:
            self._failed(f"no server of the primary datacenter {self._primary} is known yet")
            raise ReplicationNotReady(str(exc)) from None
        except Exception as exc:
            self._failed(str(exc) or type(exc).__name__)
            raise
        self._tracker.contact(self.table, self._clock())
        self._fetched_index = index
        self._changed()
        return index, records

    def _counted(self, diff: Diff[T]) -> Diff[T]:
        """Remember how many writes the round makes; none: the round is done."""
        self._pending = len(diff.deletions) + len(diff.updates)
        if not self._pending:
            self._done()
        return diff

    def _landed(self) -> None:
        self._pending -= 1
        if self._pending <= 0:
            self._done()

    def _done(self) -> None:
        self._tracker.replicated(self.table, self._fetched_index, self._clock(), datetime.now(UTC))
        self._changed()

    def _failed(self, error: str) -> None:
        self._tracker.failed(self.table, f"{self.name}: {error}", datetime.now(UTC))
        self._changed()


class _PolicyReplication(_TableReplication[ACLPolicy]):
    name = "acl policies"
    table = POLICIES

    async def _fetch(self, min_index: int) -> tuple[int, Sequence[ACLPolicy]]:
        reply = await self._rpc.rpc("ACL.PolicyList", self._request(min_index), ACLPolicyList)
        return reply.index, reply.policies

    async def fetch_local(self) -> Sequence[ACLPolicy]:
        with self._consensus.store.read() as txn:
            return txn.acl_policies()[1]

    def diff(
        self, local: Sequence[ACLPolicy], remote: Sequence[ACLPolicy], last_remote_index: int
    ) -> Diff[ACLPolicy]:
        return self._counted(
            diff_by_key(
                local,
                remote,
                last_remote_index,
                key=lambda policy: policy.id,
                modify_index=lambda policy: policy.modify_index,
            )
        )

    async def delete(self, key: str) -> None:
        try:
            await self._consensus.apply(ACLPolicyDelete(policy_ids=[key]))
        except Exception as exc:
            self._failed(str(exc))
            raise
        self._landed()

    async def update(self, record: ACLPolicy) -> None:
        try:
            with self._consensus.store.read() as txn:
                _, holder = txn.acl_policy_by_name(record.name)
            if holder is not None and holder.id != record.id:
                # Two policies swapped names in the primary: the other one comes
                # back under its new name later in this round (a token's link is
                # by ID, so it survives the gap).
                await self._consensus.apply(ACLPolicyDelete(policy_ids=[holder.id]))
            await self._consensus.apply(ACLPolicySet(policies=[record]))
        except Exception as exc:
            self._failed(str(exc))
            raise
        self._landed()


class _TokenReplication(_TableReplication[ACLToken]):
    name = "acl tokens"
    table = TOKENS

    async def _fetch(self, min_index: int) -> tuple[int, Sequence[ACLToken]]:
        base = self._request(min_index)
        request = ACLTokenListRequest(
            **msgspec.structs.asdict(base), include_local=False, include_global=True
        )
        reply = await self._rpc.rpc("ACL.TokenList", request, ACLTokenList)
        tokens = [token for token in reply.tokens if not token.local]
        if any(token.secret_id == HIDDEN_SECRET for token in tokens):
            raise PermissionError(
                "the primary hid the token secrets: acl.tokens.replication needs acl:write "
                "to replicate tokens (acl:read replicates policies only)"
            )
        return reply.index, tokens

    async def fetch_local(self) -> Sequence[ACLToken]:
        with self._consensus.store.read() as txn:
            return [token for token in txn.acl_tokens()[1] if not token.local]

    def diff(
        self, local: Sequence[ACLToken], remote: Sequence[ACLToken], last_remote_index: int
    ) -> Diff[ACLToken]:
        diff = diff_by_key(
            local,
            remote,
            last_remote_index,
            key=lambda token: token.accessor_id,
            modify_index=lambda token: token.modify_index,
        )
        # The replicated anonymous token ends a secondary's bootstrap identity
        # (see ``_acl``): written last, it lands only after every other token of
        # the round, the agent token's own record among them.
        updates = sorted(diff.updates, key=lambda token: token.accessor_id == ANONYMOUS_TOKEN_ID)
        return self._counted(Diff(deletions=diff.deletions, updates=updates))

    async def delete(self, key: str) -> None:
        try:
            await self._consensus.apply(ACLTokenDelete(accessor_ids=[key]))
        except Exception as exc:
            self._failed(str(exc))
            raise
        self._landed()

    async def update(self, record: ACLToken) -> None:
        try:
            await self._consensus.apply(ACLTokenSet(tokens=[record], allow_missing_links=True))
        except Exception as exc:
            self._failed(str(exc))
            raise
        self._landed()


_D = TypeVar("_D", "_PolicyReplication", "_TokenReplication")


class AclReplication:
    """Subscribe :meth:`on_leadership` to a secondary server's consensus (ACLs on)."""

    def __init__(
        self,
        *,
        primary: str,
        rpc: AclRpc,
        consensus: Consensus,
        resolver: TokenResolver,
        tracker: AclReplicationTracker,
        token: str,
        options: AclReplicationOptions | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._primary = primary
        self._rpc = rpc
        self._consensus = consensus
        self._resolver = resolver
        self._tracker = tracker
        self._token = token
        self._options = options or AclReplicationOptions()
        self._clock = clock
        self._tasks: list[asyncio.Task[None]] = []
        self._reaping: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()

    def on_leadership(self, leader: bool) -> None:
        if leader and not self._tasks:
            self._start()
        elif not leader and self._tasks:
            self._release()

    def _start(self) -> None:
        opts = self._options
        self._tracker.started(self._clock())
        policy = ReplicationPolicy(
            rate=opts.rate, burst=opts.burst, max_retry_wait=opts.max_retry_wait
        )
        policies = IndexReplicator(self._delegate(_PolicyReplication), policy=policy)
        tokens = IndexReplicator(self._delegate(_TokenReplication), policy=policy)
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(policies.run(), name="acl-policy-replication"),
            loop.create_task(tokens.run(), name="acl-token-replication"),
            loop.create_task(self._follow_staleness(), name="acl-staleness"),
        ]
        logger.info("leadership gained: replicating acl policies and tokens from %s", self._primary)
        if not self._token:
            logger.warning(
                "acl.tokens.replication is not set: replication presents acl.tokens.agent "
                "(or none); the primary refuses it unless it has acl:read, and acl:write "
                "for tokens. Set a replication token on every server of this datacenter"
            )

    def _delegate(self, kind: type[_D]) -> _D:
        return kind(
            primary=self._primary,
            rpc=self._rpc,
            consensus=self._consensus,
            token=self._token,
            wait=self._options.wait,
            tracker=self._tracker,
            changed=self._wake.set,
            clock=self._clock,
        )

    def _release(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
            self._reaping.add(task)
            task.add_done_callback(self._reaping.discard)
        self._tracker.stopped()
        # A follower does not replicate: it answers from its tables as they are.
        self._resolver.set_stale(False)
        logger.info("leadership lost: acl replication stopped; the new leader replicates")

    async def stop(self) -> None:
        if self._tasks:
            self._release()
        await asyncio.gather(*self._reaping, return_exceptions=True)

    async def _follow_staleness(self) -> None:
        """Tell the resolver whenever the tracker's staleness changes."""
        while True:
            self._wake.clear()  # before reading: an outcome from now on wakes the wait
            now = self._clock()
            self._resolver.set_stale(self._tracker.stale(now))
            deadline = self._tracker.next_deadline(now)
            timeout = None if deadline is None else max(0.0, deadline - now)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
