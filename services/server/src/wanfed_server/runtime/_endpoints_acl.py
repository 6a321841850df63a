"""``ACL.*``: tokens and policies over RPC, so followers and other datacenters forward.

Writes are answered by the primary's leader (the primary is authoritative
for policies and global tokens; a ``Local`` token is written in its own
datacenter), reads by the datacenter asked. The leader fills in what every
server must store identically (generated IDs and secrets, ``CreateTime``)
before the command enters the log. Reads and writes need ``acl:read`` /
``acl:write``; a reader without ``acl:write`` sees secrets as ``<hidden>``;
``ACL.TokenRead`` with ``SelfLookup`` needs only the token itself.
Bootstrap needs no token: it is allowed once (Consul's reset index).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Final

import msgspec

from wanfed_fsm import (
    ANONYMOUS_SECRET_ID,
    MANAGEMENT_POLICY_ID,
    ACLBootstrap,
    ACLError,
    ACLPolicy,
    ACLPolicyDelete,
    ACLPolicySet,
    ACLToken,
    ACLTokenDelete,
    ACLTokenPolicyLink,
    ACLTokenSet,
    DCSpecificRequest,
    parse_rules,
    policy_name_problem,
)
from wanfed_proto import RemoteError

from ._acl import AclNotFoundError, AclSubject, TokenResolver
from ._acl_messages import (
    ACLBootstrapRequest,
    ACLPolicyDeleteRequest,
    ACLPolicyGetRequest,
    ACLPolicyList,
    ACLPolicyResponse,
    ACLPolicySetRequest,
    ACLTokenDeleteRequest,
    ACLTokenGetRequest,
    ACLTokenList,
    ACLTokenListRequest,
    ACLTokenResponse,
    ACLTokenSetRequest,
)
from ._acl_rules import acl_open
from ._caller import PermissionDeniedError
from ._endpoint import Endpoint, EndpointContext, EndpointKind, meta_fields, run_query
from ._endpoints_errors import InvalidRequestError

__all__ = ["ACL_DISABLED", "AclDisabledError", "acl_endpoints"]

ACL_DISABLED: Final = "ACL support disabled"


class AclDisabledError(RemoteError):
    """An ACL method while ACLs are off (Consul answers 401 ``ACL support disabled``)."""

    def __init__(self) -> None:
        super().__init__(ACL_DISABLED)


def _acl_read(subject: AclSubject, _request: Any) -> None:
    subject.require(subject.authorizer.acl_read(), "acl:read")


def _acl_write(subject: AclSubject, _request: Any) -> None:
    subject.require(subject.authorizer.acl_write(), "acl:write")


def _token_read_check(subject: AclSubject, request: ACLTokenGetRequest) -> None:
    if not request.self_lookup:
        _acl_read(subject, request)


def _hidden_secrets(subject: AclSubject, tokens: list[ACLToken]) -> list[ACLToken]:
    if subject.authorizer.acl_write():
        return tokens
    return [token.redacted() for token in tokens]


def _filter_token(subject: AclSubject, reply: ACLTokenResponse) -> ACLTokenResponse:
    token = reply.acl_token
    if token is None or subject.authorizer.acl_write():
        return reply
    if subject.accessor_id and token.accessor_id == subject.accessor_id:
        return reply  # one's own token, looked up with its own secret
    return msgspec.structs.replace(reply, acl_token=token.redacted())


def _filter_tokens(subject: AclSubject, reply: ACLTokenList) -> ACLTokenList:
    return msgspec.structs.replace(reply, tokens=_hidden_secrets(subject, reply.tokens))


def acl_endpoints(context: EndpointContext, resolver: TokenResolver) -> list[Endpoint[Any, Any]]:
    """The ``ACL.*`` endpoints of a server whose tokens ``resolver`` resolves."""

    def require_enabled() -> None:
        if not resolver.enabled:
            raise AclDisabledError

    def to_primary(request: Any) -> Any:
        if isinstance(request, ACLTokenSetRequest) and request.acl_token.local:
            return request
        return msgspec.structs.replace(request, datacenter=context.primary_datacenter)

    def target(request: Any) -> str:
        return str(request.datacenter)

    async def apply(command: Any) -> None:
        try:
            await context.consensus.apply(command)
        except ACLError as exc:
            raise InvalidRequestError(str(exc)) from None

    def stored_token(accessor_id: str) -> ACLToken:
        with context.store.read() as txn:
            _, token = txn.acl_token(accessor_id)
        if token is None:
            raise AclNotFoundError
        return token

    def stored_policy(policy_id: str) -> ACLPolicy:
        with context.store.read() as txn:
            _, policy = txn.acl_policy(policy_id)
        if policy is None:
            raise InvalidRequestError(f"Cannot find policy {policy_id}")
        return policy

    async def bootstrap(request: ACLBootstrapRequest) -> ACLToken:
        require_enabled()
        with context.store.read() as txn:
            _, (allowed, reset_index) = txn.acl_bootstrap_allowed()
        if not allowed and request.reset_index != reset_index:
            raise PermissionDeniedError(
                f"ACL bootstrap no longer allowed (reset index: {reset_index})"
            )
        token = ACLToken(
            accessor_id=str(uuid.uuid4()),
            secret_id=str(uuid.uuid4()),
            description="Bootstrap Token (Global Management)",
            policies=[ACLTokenPolicyLink(id=MANAGEMENT_POLICY_ID)],
            create_time=datetime.now(UTC),
        )
        try:
            await context.consensus.apply(
                ACLBootstrap(token=token, reset_index=request.reset_index)
            )
        except ACLError as exc:
            raise PermissionDeniedError(str(exc)) from None
        return stored_token(token.accessor_id)

    async def token_set(request: ACLTokenSetRequest) -> ACLToken:
        require_enabled()
        token = request.acl_token
        if request.create:
            token = msgspec.structs.replace(
                token,
                accessor_id=token.accessor_id or str(uuid.uuid4()),
                secret_id=token.secret_id or str(uuid.uuid4()),
                create_time=datetime.now(UTC),
            )
            with context.store.read() as txn:
                _, taken = txn.acl_token(token.accessor_id)
            if taken is not None:
                raise InvalidRequestError(f"Invalid Token: AccessorID {token.accessor_id} in use")
        else:
            existing = stored_token(token.accessor_id)
            if token.secret_id and token.secret_id != existing.secret_id:
                raise InvalidRequestError("Changing a token's SecretID is not permitted")
            token = msgspec.structs.replace(
                token,
                secret_id=existing.secret_id,
                create_time=existing.create_time,
                local=existing.local,
            )
        await apply(ACLTokenSet(tokens=[token]))
        return stored_token(token.accessor_id)

    async def token_read(request: ACLTokenGetRequest) -> ACLTokenResponse:
        require_enabled()
        secret = request.token or ANONYMOUS_SECRET_ID

        def query(txn: Any) -> tuple[int, ACLToken | None]:
            if request.self_lookup:
                return txn.acl_token_by_secret(secret)  # type: ignore[no-any-return]
            return txn.acl_token(request.accessor_id)  # type: ignore[no-any-return]

        meta, token = await run_query(context, request, query)
        if token is None and request.self_lookup:
            raise AclNotFoundError
        return ACLTokenResponse(**meta_fields(meta), acl_token=token)

    async def token_list(request: ACLTokenListRequest) -> ACLTokenList:
        require_enabled()
        meta, tokens = await run_query(context, request, lambda txn: txn.acl_tokens())
        wanted = [
            token
            for token in tokens
            if (request.include_local if token.local else request.include_global)
        ]
        return ACLTokenList(**meta_fields(meta), tokens=wanted)

    async def token_delete(request: ACLTokenDeleteRequest) -> bool:
        require_enabled()
        stored_token(request.accessor_id)
        await apply(ACLTokenDelete(accessor_ids=[request.accessor_id]))
        return True

    async def policy_set(request: ACLPolicySetRequest) -> ACLPolicy:
        require_enabled()
        policy = request.policy
        problem = policy_name_problem(policy.name)
        if problem:
            raise InvalidRequestError(problem)
        try:
            parse_rules(policy.rules)
        except ACLError as exc:
            raise InvalidRequestError(str(exc)) from None
        if policy.id:
            stored_policy(policy.id)
        else:
            policy = msgspec.structs.replace(policy, id=str(uuid.uuid4()))
        await apply(ACLPolicySet(policies=[policy]))
        return stored_policy(policy.id)

    async def policy_read(request: ACLPolicyGetRequest) -> ACLPolicyResponse:
        require_enabled()

        def query(txn: Any) -> tuple[int, ACLPolicy | None]:
            if request.policy_id:
                return txn.acl_policy(request.policy_id)  # type: ignore[no-any-return]
            return txn.acl_policy_by_name(request.policy_name)  # type: ignore[no-any-return]

        meta, policy = await run_query(context, request, query)
        return ACLPolicyResponse(**meta_fields(meta), policy=policy)

    async def policy_list(request: DCSpecificRequest) -> ACLPolicyList:
        require_enabled()
        meta, policies = await run_query(context, request, lambda txn: txn.acl_policies())
        return ACLPolicyList(**meta_fields(meta), policies=policies)

    async def policy_delete(request: ACLPolicyDeleteRequest) -> bool:
        require_enabled()
        stored_policy(request.policy_id)
        await apply(ACLPolicyDelete(policy_ids=[request.policy_id]))
        return True

    read, write = EndpointKind.READ, EndpointKind.WRITE
    return [
        Endpoint(
            "ACL.Bootstrap",
            ACLBootstrapRequest,
            ACLToken,
            write,
            bootstrap,
            target,
            to_primary,
            acl_check=acl_open,
        ),
        Endpoint(
            "ACL.TokenSet",
            ACLTokenSetRequest,
            ACLToken,
            write,
            token_set,
            target,
            to_primary,
            acl_check=_acl_write,
        ),
        Endpoint(
            "ACL.TokenRead",
            ACLTokenGetRequest,
            ACLTokenResponse,
            read,
            token_read,
            target,
            acl_check=_token_read_check,
            acl_filter=_filter_token,
        ),
        Endpoint(
            "ACL.TokenList",
            ACLTokenListRequest,
            ACLTokenList,
            read,
            token_list,
            target,
            acl_check=_acl_read,
            acl_filter=_filter_tokens,
        ),
        Endpoint(
            "ACL.TokenDelete",
            ACLTokenDeleteRequest,
            bool,
            write,
            token_delete,
            target,
            to_primary,
            acl_check=_acl_write,
        ),
        Endpoint(
            "ACL.PolicySet",
            ACLPolicySetRequest,
            ACLPolicy,
            write,
            policy_set,
            target,
            to_primary,
            acl_check=_acl_write,
        ),
        Endpoint(
            "ACL.PolicyRead",
            ACLPolicyGetRequest,
            ACLPolicyResponse,
            read,
            policy_read,
            target,
            acl_check=_acl_read,
        ),
        Endpoint(
            "ACL.PolicyList",
            DCSpecificRequest,
            ACLPolicyList,
            read,
            policy_list,
            target,
            acl_check=_acl_read,
        ),
        Endpoint(
            "ACL.PolicyDelete",
            ACLPolicyDeleteRequest,
            bool,
            write,
            policy_delete,
            target,
            to_primary,
            acl_check=_acl_write,
        ),
    ]
