"""Requests and replies of the ``ACL.*`` RPC methods (Consul's field names).

Every request carries the caller's ``Token`` (checked where it is answered)
and a ``Datacenter``; token and policy writes are answered by the primary,
which is authoritative for them (a ``Local`` token by its own datacenter).
"""

from __future__ import annotations

import msgspec

from wanfed_fsm import ACLPolicy, ACLToken, DCSpecificRequest, QueryMeta, QueryOptions

__all__ = [
    "ACLBootstrapRequest",
    "ACLPolicyDeleteRequest",
    "ACLPolicyGetRequest",
    "ACLPolicyList",
    "ACLPolicyResponse",
    "ACLPolicySetRequest",
    "ACLTokenDeleteRequest",
    "ACLTokenGetRequest",
    "ACLTokenList",
    "ACLTokenListRequest",
    "ACLTokenResponse",
    "ACLTokenSetRequest",
]


class ACLBootstrapRequest(msgspec.Struct, frozen=True, kw_only=True, rename="pascal"):
    datacenter: str = ""
    reset_index: int = 0


class ACLTokenSetRequest(msgspec.Struct, frozen=True, kw_only=True, rename="pascal"):
    """``create``: a new token (IDs generated unless given); else an update of
    ``acl_token.accessor_id``, whose secret cannot change."""

    datacenter: str = ""
    acl_token: ACLToken = msgspec.field(name="ACLToken")
    create: bool = False
    token: str = ""


class ACLTokenGetRequest(QueryOptions, frozen=True, kw_only=True, rename="pascal"):
    """One token by AccessorID; ``self_lookup``: the token whose secret is ``Token``."""

    datacenter: str = ""
    accessor_id: str = msgspec.field(default="", name="AccessorID")
    self_lookup: bool = False


class ACLTokenResponse(QueryMeta, frozen=True, kw_only=True, rename="pascal"):
    acl_token: ACLToken | None = msgspec.field(default=None, name="ACLToken")


class ACLTokenListRequest(DCSpecificRequest, frozen=True, kw_only=True, rename="pascal"):
    """``ACL.TokenList``; a secondary's replication asks for global tokens only
    (``IncludeLocal`` false, Consul's fields): a ``Local`` token never leaves the
    datacenter that made it."""

    include_local: bool = True
    include_global: bool = True


class ACLTokenList(QueryMeta, frozen=True, kw_only=True, rename="pascal"):
    tokens: list[ACLToken] = msgspec.field(default_factory=list)


class ACLTokenDeleteRequest(msgspec.Struct, frozen=True, kw_only=True, rename="pascal"):
    datacenter: str = ""
    accessor_id: str = msgspec.field(name="AccessorID")
    token: str = ""


class ACLPolicySetRequest(msgspec.Struct, frozen=True, kw_only=True, rename="pascal"):
    datacenter: str = ""
    policy: ACLPolicy
    token: str = ""


class ACLPolicyGetRequest(QueryOptions, frozen=True, kw_only=True, rename="pascal"):
    """By ``policy_id``, or by ``policy_name`` (any case) when the ID is empty."""

    datacenter: str = ""
    policy_id: str = msgspec.field(default="", name="PolicyID")
    policy_name: str = ""


class ACLPolicyResponse(QueryMeta, frozen=True, kw_only=True, rename="pascal"):
    policy: ACLPolicy | None = None


class ACLPolicyList(QueryMeta, frozen=True, kw_only=True, rename="pascal"):
    policies: list[ACLPolicy] = msgspec.field(default_factory=list)


class ACLPolicyDeleteRequest(msgspec.Struct, frozen=True, kw_only=True, rename="pascal"):
    datacenter: str = ""
    policy_id: str = msgspec.field(name="PolicyID")
    token: str = ""
