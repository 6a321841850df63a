"""ACL tokens and policies: records with Consul's JSON names, and the built-in ones.

A token's ``SecretID`` is a bearer credential, so it never appears in a
``repr`` (and therefore in no log line or assertion message that formats a
token or a command holding one), and it is compared only with
:func:`secret_matches`, in constant time.

``Hash`` is a digest of what a token or policy grants (not of its raft
indexes or timestamps), as in Consul: replication compares hashes to skip
records that did not change. The store fills it in on every write.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from datetime import datetime
from typing import Any, Final

import msgspec

from ._structs import ZERO_TIME

__all__ = [
    "ANONYMOUS_SECRET_ID",
    "ANONYMOUS_TOKEN_ID",
    "MANAGEMENT_POLICY_ID",
    "MANAGEMENT_POLICY_NAME",
    "MANAGEMENT_POLICY_RULES",
    "ACLPolicy",
    "ACLToken",
    "ACLTokenPolicyLink",
    "anonymous_token",
    "management_policy",
    "policy_name_problem",
    "secret_matches",
]

MANAGEMENT_POLICY_ID: Final = "00000000-0000-0000-0000-000000000001"
MANAGEMENT_POLICY_NAME: Final = "global-management"
MANAGEMENT_POLICY_RULES: Final = """acl = "write"
agent_prefix "" {
  policy = "write"
}
node_prefix "" {
  policy = "write"
}
service_prefix "" {
  policy = "write"
}
operator = "write"
mesh = "write"
"""
"""Shown to operators; the authorizer grants everything to this policy's ID regardless."""

ANONYMOUS_TOKEN_ID: Final = "00000000-0000-0000-0000-000000000002"
ANONYMOUS_SECRET_ID: Final = "anonymous"
"""What Consul stores as the anonymous token's secret; a request without a token uses it."""

_POLICY_NAME: Final = re.compile(r"[A-Za-z0-9\-_]{1,128}")


def policy_name_problem(name: str) -> str:
    """Why ``name`` cannot name a policy (Consul's rule), or ``""``."""
    if _POLICY_NAME.fullmatch(name):
        return ""
    return (
        f"Invalid Policy: invalid Name {name!r}: only alphanumeric characters, '-' and '_' "
        "are allowed, 1 to 128 of them"
    )


def secret_matches(stored: str, presented: str) -> bool:
    """Constant-time comparison of two secrets, so timing reveals no prefix of a secret."""
    return hmac.compare_digest(
        stored.encode("utf-8", "surrogatepass"), presented.encode("utf-8", "surrogatepass")
    )


class ACLTokenPolicyLink(msgspec.Struct, frozen=True, kw_only=True):
    """A token's reference to a policy; the store keeps ``Name`` current on reads."""

    id: str = msgspec.field(default="", name="ID")
    name: str = msgspec.field(default="", name="Name")


class ACLPolicy(msgspec.Struct, frozen=True, kw_only=True, rename="pascal"):
    """A named set of rules. ``Datacenters`` empty means "valid everywhere"."""

    id: str = msgspec.field(default="", name="ID")
    name: str = ""
    description: str = ""
    rules: str = ""
    datacenters: list[str] = msgspec.field(default_factory=list)
    hash: bytes = b""
    create_index: int = 0
    modify_index: int = 0

    def computed_hash(self) -> bytes:
        """Digest of what the policy grants and how it is named."""
        content = (self.name, self.description, self.rules, sorted(self.datacenters))
        return hashlib.blake2b(msgspec.msgpack.encode(content), digest_size=32).digest()


class ACLToken(msgspec.Struct, frozen=True, kw_only=True, rename="pascal"):
    """A bearer token: the public ``AccessorID`` names it, the ``SecretID`` is presented.

    ``Local`` tokens live only in the datacenter that made them; the others
    are global (made in the primary, replicated everywhere).
    """

    accessor_id: str = msgspec.field(default="", name="AccessorID")
    secret_id: str = msgspec.field(default="", name="SecretID")
    description: str = ""
    policies: list[ACLTokenPolicyLink] = msgspec.field(default_factory=list)
    local: bool = False
    create_time: datetime = ZERO_TIME
    hash: bytes = b""
    create_index: int = 0
    modify_index: int = 0

    def __repr__(self) -> str:
        shown = "" if not self.secret_id else "<redacted>"
        return (
            f"ACLToken(accessor_id={self.accessor_id!r}, secret_id={shown!r}, "
            f"description={self.description!r}, policies={self.policies!r}, local={self.local!r}, "
            f"create_index={self.create_index!r}, modify_index={self.modify_index!r})"
        )

    __str__ = __repr__

    def __rich_repr__(self) -> list[tuple[str, Any]]:
        """What pretty-printers (rich) show instead of msgspec's field-by-field default."""
        return [
            ("accessor_id", self.accessor_id),
            ("secret_id", "" if not self.secret_id else "<redacted>"),
            ("description", self.description),
            ("policies", self.policies),
            ("local", self.local),
        ]

    def computed_hash(self) -> bytes:
        """Digest of what the token grants (its policies, locality, description), as Consul's."""
        content = (self.description, sorted(link.id for link in self.policies), self.local)
        return hashlib.blake2b(msgspec.msgpack.encode(content), digest_size=32).digest()

    def redacted(self) -> ACLToken:
        """This token with ``SecretID`` hidden, for callers without ``acl:write``."""
        return msgspec.structs.replace(self, secret_id="<hidden>")


def management_policy(index: int = 0) -> ACLPolicy:
    """The built-in global-management policy, as stored."""
    policy = ACLPolicy(
        id=MANAGEMENT_POLICY_ID,
        name=MANAGEMENT_POLICY_NAME,
        description="Builtin Policy that grants unlimited access",
        rules=MANAGEMENT_POLICY_RULES,
        create_index=index,
        modify_index=index,
    )
    return msgspec.structs.replace(policy, hash=policy.computed_hash())


def anonymous_token(create_time: datetime, index: int = 0) -> ACLToken:
    """The built-in anonymous token: what a request without a token acts as."""
    token = ACLToken(
        accessor_id=ANONYMOUS_TOKEN_ID,
        secret_id=ANONYMOUS_SECRET_ID,
        description="Anonymous Token",
        create_time=create_time,
        create_index=index,
        modify_index=index,
    )
    return msgspec.structs.replace(token, hash=token.computed_hash())
