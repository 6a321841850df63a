"""The ACL tables of the state store: tokens and policies with their indexes.

Theory of operation. :class:`ACLTables` is plain data plus the rules every
write must keep; the :class:`~wanfed_fsm.StateStore` owns one, calls it with
its lock held, moves table indexes and fires watches. Each write checks every
record of a batch before it changes anything, so a batch is applied whole or
refused whole.

Indexes: tokens by ``AccessorID`` and by secret, policies by ``ID`` and by
name. Policy names are unique regardless of case (``Web`` and ``web`` are one
name), as in Consul. The secret index is keyed by a SHA-256 digest of the
secret and the hit is confirmed with a constant-time comparison, so neither
the dictionary lookup nor the comparison compares secret bytes in variable
time.

A token's policy links are resolved on write (a link by name becomes a link
by ID; a link to no policy is refused unless the write is replication's,
which may run ahead of the policies) and on read (names are refreshed, links
to deleted policies are dropped), so an API always shows current names.

Bootstrap, as in Consul: the first ``bootstrap`` records its raft index; a
later one is refused with that index (:class:`ACLBootstrapNotAllowedError`)
unless it carries exactly that index as its reset index.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import datetime
from typing import Final

import msgspec

from ._acl_errors import (
    ACLBootstrapNotAllowedError,
    ACLBootstrapResetIndexError,
    ACLError,
)
from ._acl_rules import parse_rules
from ._acl_structs import (
    ANONYMOUS_SECRET_ID,
    ANONYMOUS_TOKEN_ID,
    MANAGEMENT_POLICY_ID,
    ACLPolicy,
    ACLToken,
    ACLTokenPolicyLink,
    anonymous_token,
    management_policy,
    policy_name_problem,
    secret_matches,
)

__all__ = ["ACLChange", "ACLTables", "acl_inconsistency"]

ACLChange = tuple[bool, bool]
"""(tokens changed, policies changed)."""

_NOTHING: Final[ACLChange] = (False, False)


def _secret_key(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()


def _name_key(name: str) -> str:
    return name.lower()


class ACLTables:
    """Tokens and policies. Not thread-safe: the store calls it with its lock held."""

    def __init__(self) -> None:
        self.tokens: dict[str, ACLToken] = {}
        self.by_secret: dict[bytes, str] = {}
        self.policies: dict[str, ACLPolicy] = {}
        self.by_name: dict[str, str] = {}
        self.bootstrap_index = 0

    @classmethod
    def build(
        cls, tokens: Iterable[ACLToken], policies: Iterable[ACLPolicy], bootstrap_index: int
    ) -> ACLTables:
        """Tables holding exactly these records (a snapshot's, already checked)."""
        tables = cls()
        for policy in policies:
            tables.policies[policy.id] = policy
            tables.by_name[_name_key(policy.name)] = policy.id
        for token in tokens:
            tables.tokens[token.accessor_id] = token
            tables.by_secret[_secret_key(token.secret_id)] = token.accessor_id
        tables.bootstrap_index = bootstrap_index
        return tables

    # --- reads -------------------------------------------------------------------

    def token_by_secret(self, secret: str) -> ACLToken | None:
        accessor = self.by_secret.get(_secret_key(secret))
        token = None if accessor is None else self.tokens.get(accessor)
        if token is None or not secret_matches(token.secret_id, secret):
            return None
        return token

    def policy_by_name(self, name: str) -> ACLPolicy | None:
        policy_id = self.by_name.get(_name_key(name))
        return None if policy_id is None else self.policies.get(policy_id)

    def resolved(self, token: ACLToken) -> ACLToken:
        """The token with link names as they are now and links to deleted policies dropped."""
        links = [
            ACLTokenPolicyLink(id=link.id, name=policy.name)
            for link in token.policies
            if (policy := self.policies.get(link.id)) is not None
        ]
        if links == token.policies:
            return token
        return msgspec.structs.replace(token, policies=links)

    def policies_of(self, token: ACLToken) -> list[ACLPolicy]:
        return [p for link in token.policies if (p := self.policies.get(link.id)) is not None]

    # --- token writes --------------------------------------------------------------

    def set_tokens(
        self, index: int, tokens: Iterable[ACLToken], *, allow_missing_links: bool = False
    ) -> ACLChange:
        checked = self._check_tokens(list(tokens), allow_missing_links=allow_missing_links)
        changed = False
        for token in checked:
            existing = self.tokens.get(token.accessor_id)
            stored = msgspec.structs.replace(
                token,
                hash=token.computed_hash(),
                create_index=existing.create_index if existing is not None else index,
                modify_index=index,
            )
            if existing is not None and _same_token(stored, existing):
                continue
            self.tokens[token.accessor_id] = stored
            self.by_secret[_secret_key(token.secret_id)] = token.accessor_id
            changed = True
        return changed, False

    def _check_tokens(self, tokens: list[ACLToken], *, allow_missing_links: bool) -> list[ACLToken]:
        accessors: set[str] = set()
        secrets: dict[bytes, str] = {}
        checked: list[ACLToken] = []
        for token in tokens:
            accessor = token.accessor_id
            if not accessor:
                raise ACLError("Missing token AccessorID")
            if not token.secret_id:
                raise ACLError(f"Missing token SecretID (token {accessor})")
            if accessor in accessors:
                raise ACLError(f"token {accessor} appears twice in one write")
            accessors.add(accessor)
            key = _secret_key(token.secret_id)
            owner = secrets.get(key, self.by_secret.get(key))
            if owner is not None and owner != accessor:
                raise ACLError(f"Invalid Token: SecretID is already in use (token {accessor})")
            secrets[key] = accessor
            existing = self.tokens.get(accessor)
            if existing is not None and not secret_matches(existing.secret_id, token.secret_id):
                raise ACLError(
                    f"Invalid Token: a token's SecretID cannot change (token {accessor})"
                )
            links = self._resolve_links(token, allow_missing=allow_missing_links)
            checked.append(msgspec.structs.replace(token, policies=links))
        return checked

    def _resolve_links(self, token: ACLToken, *, allow_missing: bool) -> list[ACLTokenPolicyLink]:
        links: dict[str, ACLTokenPolicyLink] = {}
        for link in token.policies:
            policy = self.policies.get(link.id) if link.id else self.policy_by_name(link.name)
            if policy is not None:
                links.setdefault(policy.id, ACLTokenPolicyLink(id=policy.id, name=policy.name))
            elif allow_missing and link.id:
                links.setdefault(link.id, link)
            elif link.id:
                raise ACLError(f"No such ACL policy with ID {link.id!r}")
            else:
                raise ACLError(f"No such ACL policy with name {link.name!r}")
        return list(links.values())

    def delete_tokens(self, accessor_ids: Iterable[str]) -> ACLChange:
        accessor_ids = list(accessor_ids)
        if ANONYMOUS_TOKEN_ID in accessor_ids:
            raise ACLError("Deletion of the builtin anonymous token is not permitted")
        changed = False
        for accessor in accessor_ids:
            token = self.tokens.pop(accessor, None)
            if token is not None:
                self.by_secret.pop(_secret_key(token.secret_id), None)
                changed = True
        return changed, False

    # --- policy writes -------------------------------------------------------------

    def set_policies(self, index: int, policies: Iterable[ACLPolicy]) -> ACLChange:
        policies = list(policies)
        self._check_policies(policies)
        changed = False
        for policy in policies:
            existing = self.policies.get(policy.id)
            stored = msgspec.structs.replace(
                policy,
                hash=policy.computed_hash(),
                create_index=existing.create_index if existing is not None else index,
                modify_index=index,
            )
            if existing is not None and _same_policy(stored, existing):
                continue
            if existing is not None and self.by_name.get(_name_key(existing.name)) == policy.id:
                del self.by_name[_name_key(existing.name)]
            self.policies[policy.id] = stored
            self.by_name[_name_key(policy.name)] = policy.id
            changed = True
        return False, changed

    def _check_policies(self, policies: list[ACLPolicy]) -> None:
        ids: set[str] = set()
        for policy in policies:
            if not policy.id:
                raise ACLError("Missing policy ID")
            if policy.id in ids:
                raise ACLError(f"policy {policy.id} appears twice in one write")
            ids.add(policy.id)
        # Names as they will be after the write: a batch may hand a name from one policy
        # to another, so the old names of the written policies are released first.
        names = dict(self.by_name)
        for policy in policies:
            existing = self.policies.get(policy.id)
            if existing is not None and names.get(_name_key(existing.name)) == policy.id:
                del names[_name_key(existing.name)]
        for policy in policies:
            problem = policy_name_problem(policy.name)
            if problem:
                raise ACLError(problem)
            holder = names.setdefault(_name_key(policy.name), policy.id)
            if holder != policy.id:
                raise ACLError(f"Invalid Policy: A Policy with Name {policy.name!r} already exists")
            if policy.id == MANAGEMENT_POLICY_ID:
                builtin = management_policy()
                if policy.rules != builtin.rules or policy.datacenters:
                    raise ACLError(
                        "Changing the Rules or Datacenters of the builtin global-management "
                        "policy is not permitted"
                    )
            parse_rules(policy.rules)

    def delete_policies(self, policy_ids: Iterable[str]) -> ACLChange:
        policy_ids = list(policy_ids)
        if MANAGEMENT_POLICY_ID in policy_ids:
            raise ACLError("Deletion of the builtin global-management policy is not permitted")
        changed = False
        for policy_id in policy_ids:
            policy = self.policies.pop(policy_id, None)
            if policy is not None:
                self.by_name.pop(_name_key(policy.name), None)
                changed = True
        return False, changed

    # --- built-ins and bootstrap -------------------------------------------------------

    def initialize(self, index: int, create_time: datetime) -> ACLChange:
        """Create the global-management policy and the anonymous token if missing."""
        policies_changed = False
        if MANAGEMENT_POLICY_ID not in self.policies:
            self.set_policies(index, [management_policy()])
            policies_changed = True
        tokens_changed = False
        if ANONYMOUS_TOKEN_ID not in self.tokens:
            self.set_tokens(index, [anonymous_token(create_time)])
            tokens_changed = True
        return tokens_changed, policies_changed

    def bootstrap(self, index: int, token: ACLToken, reset_index: int) -> ACLChange:
        """Store the first management token (with the global-management policy, whatever
        the token lists), creating the built-ins first."""
        if self.bootstrap_index:
            if reset_index == 0:
                raise ACLBootstrapNotAllowedError(self.bootstrap_index)
            if reset_index != self.bootstrap_index:
                raise ACLBootstrapResetIndexError(reset_index, self.bootstrap_index)
        # Checked before the built-ins exist so a refused bootstrap changes nothing.
        management = ACLTokenPolicyLink(id=MANAGEMENT_POLICY_ID)
        token = msgspec.structs.replace(token, policies=[management], local=False)
        if token.accessor_id == ANONYMOUS_TOKEN_ID or secret_matches(
            token.secret_id, ANONYMOUS_SECRET_ID
        ):
            raise ACLError("the bootstrap token cannot be the anonymous token")
        self._check_tokens([token], allow_missing_links=True)
        _, policies_changed = self.initialize(index, token.create_time)
        self.set_tokens(index, [token])
        self.bootstrap_index = index
        return True, policies_changed


def _same_token(a: ACLToken, b: ACLToken) -> bool:
    return msgspec.structs.replace(a, create_index=b.create_index, modify_index=b.modify_index) == b


def _same_policy(a: ACLPolicy, b: ACLPolicy) -> bool:
    return msgspec.structs.replace(a, create_index=b.create_index, modify_index=b.modify_index) == b


def acl_inconsistency(
    tokens: list[ACLToken], policies: list[ACLPolicy], bootstrap_index: int
) -> str:
    """What makes snapshot ACL contents impossible for the tables to hold, or ``""``."""
    if not 0 <= bootstrap_index < 2**64:
        return f"ACL bootstrap index {bootstrap_index} is out of range"
    names: set[str] = set()
    ids: set[str] = set()
    for policy in policies:
        if not policy.id or policy.id in ids:
            return f"policy ID {policy.id!r} is empty or appears twice"
        ids.add(policy.id)
        if policy_name_problem(policy.name) or _name_key(policy.name) in names:
            return f"policy name {policy.name!r} is invalid or appears twice"
        names.add(_name_key(policy.name))
        try:
            parse_rules(policy.rules)
        except ACLError as error:
            return f"policy {policy.name!r}: {error}"
    accessors: set[str] = set()
    secrets: set[bytes] = set()
    for token in tokens:
        if not token.accessor_id or token.accessor_id in accessors:
            return f"token {token.accessor_id!r} is unnamed or appears twice"
        accessors.add(token.accessor_id)
        key = _secret_key(token.secret_id)
        if not token.secret_id or key in secrets:
            return f"token {token.accessor_id}: its SecretID is empty or another token's"
        secrets.add(key)
    return ""
