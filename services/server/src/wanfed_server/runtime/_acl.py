"""Who a token is: a presented secret becomes an :class:`~wanfed_fsm.Authorizer`.

Theory of operation. Every request carries its token (the ``Token`` field
of the request Struct, which travels unchanged when a request is forwarded
to the leader or to another datacenter), and the server that answers
resolves it from its own ACL tables just before the handler runs, so a
request is authorized where its data lives.

* ACLs off: every token is the management authorizer (everything allowed).
* Empty secret: ``acl.tokens.default`` if configured, else the anonymous
  token.
* A secret no token has: ``ACL not found`` (Consul's text; HTTP 403).
* In the primary the tables are authoritative. A secondary resolves from
  replicated tables; while whoever replicates them reports them stale
  (:meth:`TokenResolver.set_stale`), ``acl.down_policy`` decides:
  ``extend-cache`` and ``async-cache`` keep answering from the tables as they
  are, ``deny`` denies every token but a management one, ``allow`` allows
  everything.
* Bootstrap of a secondary (Consul #9568): until token replication has
  brought the primary's tokens once (the replicated anonymous token is the
  mark, as nothing else writes it in a secondary), the secondary's own
  ``acl.tokens.agent`` secret resolves to :data:`BOOTSTRAP_CATALOG_RULES`,
  enough for its servers and its mesh gateways (which are given that secret)
  to register; from the first replicated tokens on, that secret means what
  the primary says it means.

The comparison of secrets is the store's (constant time). A secret never
appears in a message or a log line: refusals name the token's AccessorID.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Final

from wanfed_agent.config import ACLConfig
from wanfed_fsm import (
    ANONYMOUS_SECRET_ID,
    ANONYMOUS_TOKEN_ID,
    ACLPolicy,
    Authorizer,
    StateStore,
    secret_matches,
)
from wanfed_proto import RemoteError

from ._caller import PermissionDeniedError

__all__ = [
    "ACL_NOT_FOUND",
    "BOOTSTRAP_CATALOG_RULES",
    "AclNotFoundError",
    "AclSubject",
    "TokenResolver",
]

logger = logging.getLogger("wanfed_server.runtime.acl")

ACL_NOT_FOUND: Final = "ACL not found"
_DENY_ALL: Final = Authorizer(default_policy="deny")
BOOTSTRAP_CATALOG_RULES: Final = """
node_prefix "" { policy = "write" }
service_prefix "" { policy = "write" }
agent_prefix "" { policy = "read" }
"""
"""What a secondary's ``acl.tokens.agent`` may do before token replication ran once."""
BOOTSTRAP_ACCESSOR_ID: Final = "bootstrap-agent-token"


class AclNotFoundError(RemoteError):
    """The presented secret belongs to no token (Consul answers 403 ``ACL not found``)."""

    def __init__(self) -> None:
        super().__init__(ACL_NOT_FOUND)


@dataclass(frozen=True)
class AclSubject:
    """A resolved token: what it may do, and its public name for refusals."""

    authorizer: Authorizer
    accessor_id: str = ""

    @property
    def is_management(self) -> bool:
        return self.authorizer.is_management

    def require(self, allowed: bool, permission: str, resource: str = "") -> None:
        """Refuse as Consul does when ``allowed`` is false: ``Permission denied: token
        with AccessorID '...' lacks permission 'node:write' on "web"``."""
        if allowed:
            return
        who = f"token with AccessorID '{self.accessor_id}'" if self.accessor_id else "token"
        on = f' on "{resource}"' if resource else ""
        raise PermissionDeniedError(f"{who} lacks permission '{permission}'{on}")


_EVERYTHING: Final = AclSubject(Authorizer.management())


class TokenResolver:
    """Resolves secrets against this server's ACL tables; see the module docstring."""

    def __init__(
        self, store: StateStore, config: ACLConfig, datacenter: str, *, primary: bool = True
    ) -> None:
        self._store = store
        self._config = config
        self._datacenter = datacenter
        self._primary = primary
        self._stale = False

    @property
    def enabled(self) -> bool:
        return self._config.enabled

    @property
    def stale(self) -> bool:
        return self._stale

    def set_stale(self, stale: bool) -> None:
        """Told by replication whether the replicated tables can be trusted to be current."""
        if stale != self._stale:
            logger.warning(
                "acl data %s down_policy=%s; %s",
                "stale" if stale else "current again",
                self._config.down_policy,
                "tokens resolve per the down policy" if stale else "tokens resolve normally",
            )
        self._stale = stale

    def resolve(self, secret: str) -> AclSubject:
        """The subject ``secret`` names; raises :class:`AclNotFoundError` for an unknown one."""
        if not self._config.enabled:
            return _EVERYTHING
        down = self._config.down_policy if self._stale else None
        if down == "allow":
            return _EVERYTHING
        if not secret:
            secret = self._config.tokens.default or ANONYMOUS_SECRET_ID
        with self._store.read() as txn:
            _, token = txn.acl_token_by_secret(secret)
            if token is None:
                replicated = txn.acl_token(ANONYMOUS_TOKEN_ID)[1] is not None
                if not replicated and self._bootstrap_secret(secret):
                    return AclSubject(self._bootstrap(), BOOTSTRAP_ACCESSOR_ID)
                if secret == ANONYMOUS_SECRET_ID:
                    # before the leader initialized the tables: the anonymous token has no rules
                    return AclSubject(self._bare(), ANONYMOUS_TOKEN_ID)
                raise AclNotFoundError
            _, policies = txn.acl_token_policies(token)
        authorizer = Authorizer.from_policies(
            policies, default_policy=self._config.default_policy, datacenter=self._datacenter
        )
        if down == "deny" and not authorizer.is_management:
            return AclSubject(_DENY_ALL, token.accessor_id)
        return AclSubject(authorizer, token.accessor_id)

    def _bootstrap_secret(self, secret: str) -> bool:
        agent = self._config.tokens.agent
        return not self._primary and bool(agent) and secret_matches(agent or "", secret)

    def _bootstrap(self) -> Authorizer:
        policy = ACLPolicy(
            id=BOOTSTRAP_ACCESSOR_ID, name="bootstrap", rules=BOOTSTRAP_CATALOG_RULES
        )
        return Authorizer.from_policies(
            [policy], default_policy="deny", datacenter=self._datacenter
        )

    def _bare(self) -> Authorizer:
        return Authorizer(default_policy=self._config.default_policy)
