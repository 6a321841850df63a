"""``/v1/acl/*``: Consul's ACL API for tokens and policies.

Every route is one or two ``ACL.*`` RPCs, so writes reach the primary's
leader from any server and the token is checked where the data lives.
Shapes are Consul's: a token is ``{AccessorID, SecretID, Description,
Policies: [{ID, Name}], Local, CreateTime, Hash, CreateIndex,
ModifyIndex}``, a policy ``{ID, Name, Description, Rules, Datacenters, Hash,
CreateIndex, ModifyIndex}``; lists leave a policy's ``Rules`` out. An
unknown token or policy is ``403 ACL not found``, a refusal ``403
Permission denied: ...``, ACLs off ``401 ACL support disabled``. Roles,
identities, auth methods and expiring tokens are not supported: a body that
asks for them is refused (400) rather than half-obeyed.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec
from aiohttp import web

from wanfed_fsm import ACLPolicy, ACLToken, ACLTokenPolicyLink, DCSpecificRequest
from wanfed_server.runtime import (
    ACL_NOT_FOUND,
    ACLBootstrapRequest,
    ACLPolicyDeleteRequest,
    ACLPolicyGetRequest,
    ACLPolicyList,
    ACLPolicyResponse,
    ACLPolicySetRequest,
    ACLTokenDeleteRequest,
    ACLTokenGetRequest,
    ACLTokenList,
    ACLTokenResponse,
    ACLTokenSetRequest,
)

from ._body import canonical_keys, read_json
from ._context import context
from ._errors import HttpError
from ._query import json_response, parse_query, request_token

__all__ = ["register_acl_routes"]

_TOKEN_KEYS: Final = (
    "AccessorID",
    "SecretID",
    "Description",
    "Policies",
    "Local",
    "ID",
    "Name",
    "Roles",
    "ServiceIdentities",
    "NodeIdentities",
    "TemplatedPolicies",
    "ExpirationTime",
    "ExpirationTTL",
)
_UNSUPPORTED: Final = (
    "Roles",
    "ServiceIdentities",
    "NodeIdentities",
    "TemplatedPolicies",
    "ExpirationTime",
    "ExpirationTTL",
)
_POLICY_KEYS: Final = ("ID", "Name", "Description", "Rules", "Datacenters")


def _object(body: object, names: tuple[str, ...]) -> dict[str, Any]:
    fields = canonical_keys(body, names)
    if not isinstance(fields, dict):
        raise HttpError(400, "Request decode failed: expected a JSON object")
    return fields


def _text(fields: dict[str, Any], key: str) -> str:
    value = fields.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise HttpError(400, f"Request decode failed: {key} must be a string")
    return value


def _token_from_body(body: object, accessor_id: str = "") -> ACLToken:
    fields = _object(body, _TOKEN_KEYS)
    for key in _UNSUPPORTED:
        if fields.get(key):
            raise HttpError(400, f"Request decode failed: {key} is not supported")
    given = _text(fields, "AccessorID")
    if accessor_id and given and given != accessor_id:
        raise HttpError(400, "Token Accessor ID in URL and payload do not match")
    links = fields.get("Policies") or []
    if not isinstance(links, list) or not all(isinstance(link, dict) for link in links):
        raise HttpError(400, "Request decode failed: Policies must be a list of {ID, Name}")
    local = fields.get("Local", False)
    if not isinstance(local, bool):
        raise HttpError(400, "Request decode failed: Local must be true or false")
    return ACLToken(
        accessor_id=accessor_id or given,
        secret_id=_text(fields, "SecretID"),
        description=_text(fields, "Description"),
        policies=[
            ACLTokenPolicyLink(id=_text(link, "ID"), name=_text(link, "Name")) for link in links
        ],
        local=local,
    )


def _policy_from_body(body: object, policy_id: str = "") -> ACLPolicy:
    fields = _object(body, _POLICY_KEYS)
    given = _text(fields, "ID")
    if policy_id and given and given != policy_id:
        raise HttpError(400, "Policy ID in URL and payload do not match")
    datacenters = fields.get("Datacenters") or []
    if not isinstance(datacenters, list) or not all(isinstance(d, str) for d in datacenters):
        raise HttpError(400, "Request decode failed: Datacenters must be a list of names")
    return ACLPolicy(
        id=policy_id or given,
        name=_text(fields, "Name"),
        description=_text(fields, "Description"),
        rules=_text(fields, "Rules"),
        datacenters=datacenters,
    )


def _datacenter(request: web.Request) -> str:
    return request.query.get("dc") or context(request).view.datacenter


async def bootstrap(request: web.Request) -> web.Response:
    ctx = context(request)
    token = await ctx.dispatcher.rpc(
        "ACL.Bootstrap", ACLBootstrapRequest(datacenter=_datacenter(request)), ACLToken
    )
    return json_response(token)


async def _set_token(request: web.Request, token: ACLToken, *, create: bool) -> web.Response:
    stored = await context(request).dispatcher.rpc(
        "ACL.TokenSet",
        ACLTokenSetRequest(
            datacenter=_datacenter(request),
            acl_token=token,
            create=create,
            token=request_token(request),
        ),
        ACLToken,
    )
    return json_response(stored)


async def token_create(request: web.Request) -> web.Response:
    return await _set_token(request, _token_from_body(await read_json(request)), create=True)


async def token_update(request: web.Request) -> web.Response:
    accessor_id = request.match_info["accessor_id"]
    token = _token_from_body(await read_json(request), accessor_id)
    return await _set_token(request, token, create=False)


async def _read_token(request: web.Request, accessor_id: str, *, self_lookup: bool) -> Any:
    ctx = context(request)
    params = parse_query(request, ctx.view.datacenter)
    reply = await ctx.dispatcher.rpc(
        "ACL.TokenRead",
        ACLTokenGetRequest(
            datacenter=params.datacenter,
            accessor_id=accessor_id,
            self_lookup=self_lookup,
            **params.options(),
        ),
        ACLTokenResponse,
    )
    if reply.acl_token is None:
        raise HttpError(403, ACL_NOT_FOUND)
    return reply


async def token_read(request: web.Request) -> web.Response:
    accessor_id = request.match_info["accessor_id"]
    reply = await _read_token(request, accessor_id, self_lookup=accessor_id == "self")
    return json_response(reply.acl_token, reply)


async def token_clone(request: web.Request) -> web.Response:
    fields = _object(await read_json(request) if request.can_read_body else {}, _TOKEN_KEYS)
    reply = await _read_token(request, request.match_info["accessor_id"], self_lookup=False)
    original: ACLToken = reply.acl_token
    clone = ACLToken(
        description=_text(fields, "Description") or original.description,
        policies=original.policies,
        local=original.local,
    )
    return await _set_token(request, clone, create=True)


async def token_delete(request: web.Request) -> web.Response:
    ok = await context(request).dispatcher.rpc(
        "ACL.TokenDelete",
        ACLTokenDeleteRequest(
            datacenter=_datacenter(request),
            accessor_id=request.match_info["accessor_id"],
            token=request_token(request),
        ),
        bool,
    )
    return json_response(bool(ok))


def _token_stub(token: ACLToken) -> dict[str, Any]:
    stub: dict[str, Any] = msgspec.to_builtins(token)
    stub["Legacy"] = False
    return stub


async def token_list(request: web.Request) -> web.Response:
    ctx = context(request)
    params = parse_query(request, ctx.view.datacenter)
    reply = await ctx.dispatcher.rpc(
        "ACL.TokenList",
        DCSpecificRequest(datacenter=params.datacenter, **params.options()),
        ACLTokenList,
    )
    policy = request.query.get("policy", "")
    tokens = [t for t in reply.tokens if not policy or any(p.id == policy for p in t.policies)]
    return json_response([_token_stub(token) for token in tokens], reply)


async def _set_policy(request: web.Request, policy: ACLPolicy) -> web.Response:
    stored = await context(request).dispatcher.rpc(
        "ACL.PolicySet",
        ACLPolicySetRequest(
            datacenter=_datacenter(request), policy=policy, token=request_token(request)
        ),
        ACLPolicy,
    )
    return json_response(stored)


async def policy_create(request: web.Request) -> web.Response:
    policy = _policy_from_body(await read_json(request))
    if policy.id:
        raise HttpError(400, "Cannot specify a policy ID when creating a policy")
    return await _set_policy(request, policy)


async def policy_update(request: web.Request) -> web.Response:
    policy_id = request.match_info["policy_id"]
    return await _set_policy(request, _policy_from_body(await read_json(request), policy_id))


async def _read_policy(
    request: web.Request, *, policy_id: str = "", name: str = ""
) -> web.Response:
    ctx = context(request)
    params = parse_query(request, ctx.view.datacenter)
    reply = await ctx.dispatcher.rpc(
        "ACL.PolicyRead",
        ACLPolicyGetRequest(
            datacenter=params.datacenter, policy_id=policy_id, policy_name=name, **params.options()
        ),
        ACLPolicyResponse,
    )
    if reply.policy is None:
        raise HttpError(403, ACL_NOT_FOUND)
    return json_response(reply.policy, reply)


async def policy_read(request: web.Request) -> web.Response:
    return await _read_policy(request, policy_id=request.match_info["policy_id"])


async def policy_read_by_name(request: web.Request) -> web.Response:
    return await _read_policy(request, name=request.match_info["name"])


async def policy_delete(request: web.Request) -> web.Response:
    ok = await context(request).dispatcher.rpc(
        "ACL.PolicyDelete",
        ACLPolicyDeleteRequest(
            datacenter=_datacenter(request),
            policy_id=request.match_info["policy_id"],
            token=request_token(request),
        ),
        bool,
    )
    return json_response(bool(ok))


async def policy_list(request: web.Request) -> web.Response:
    ctx = context(request)
    params = parse_query(request, ctx.view.datacenter)
    reply = await ctx.dispatcher.rpc(
        "ACL.PolicyList",
        DCSpecificRequest(datacenter=params.datacenter, **params.options()),
        ACLPolicyList,
    )
    stubs = []
    for policy in reply.policies:
        stub: dict[str, Any] = msgspec.to_builtins(policy)
        stub.pop("Rules", None)
        stubs.append(stub)
    return json_response(stubs, reply)


def register_acl_routes(app: web.Application) -> None:
    router = app.router
    router.add_put("/v1/acl/bootstrap", bootstrap)
    router.add_put("/v1/acl/token", token_create)
    router.add_get("/v1/acl/tokens", token_list)
    router.add_get("/v1/acl/token/{accessor_id}", token_read)
    router.add_put("/v1/acl/token/{accessor_id}", token_update)
    router.add_delete("/v1/acl/token/{accessor_id}", token_delete)
    router.add_put("/v1/acl/token/{accessor_id}/clone", token_clone)
    router.add_put("/v1/acl/policy", policy_create)
    router.add_get("/v1/acl/policies", policy_list)
    router.add_get("/v1/acl/policy/name/{name}", policy_read_by_name)
    router.add_get("/v1/acl/policy/{policy_id}", policy_read)
    router.add_put("/v1/acl/policy/{policy_id}", policy_update)
    router.add_delete("/v1/acl/policy/{policy_id}", policy_delete)
