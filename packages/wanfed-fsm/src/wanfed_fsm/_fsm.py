"""FSM commands and their deterministic application to a :class:`StateStore`.

A command is a tagged msgspec Struct; the Raft log holds its msgpack bytes,
never pickle. Applying the same bytes at the same raft index to equal stores
gives equal stores on every server: application reads no clock, no random
source and no environment (timestamps such as ``UpdatedAt`` are set by the
endpoint before the command enters the log).

An FSM error (a rejected write) is a *result*, not an exception: every
server must agree that entry N failed, and the Raft thread must never see an
exception from the state machine.
"""

from __future__ import annotations

import logging
from datetime import datetime

import msgspec

from ._acl_structs import ACLPolicy, ACLToken
from ._errors import CommandDecodeError, FsmError, InvalidOperationError
from ._store import StateStore
from ._structs import (
    DeregisterRequest,
    FederationState,
    FederationStateOp,
    FederationStateRequest,
    HealthStatus,
    RegisterRequest,
)

__all__ = [
    "ACLBootstrap",
    "ACLInitialize",
    "ACLPolicyDelete",
    "ACLPolicySet",
    "ACLTokenDelete",
    "ACLTokenSet",
    "ApplyResult",
    "Barrier",
    "CheckStatusUpdate",
    "Command",
    "Deregister",
    "FederationStateBatch",
    "FederationStateWrite",
    "Fsm",
    "Register",
    "decode_command",
    "encode_command",
]

logger = logging.getLogger(__name__)


class Register(msgspec.Struct, frozen=True, kw_only=True, tag="register"):
    request: RegisterRequest


class Deregister(msgspec.Struct, frozen=True, kw_only=True, tag="deregister"):
    """Removes a check, else a service, else the whole node (per the request's fields)."""

    request: DeregisterRequest


class CheckStatusUpdate(msgspec.Struct, frozen=True, kw_only=True, tag="check-status"):
    node: str
    check_id: str
    status: HealthStatus
    output: str = ""


class FederationStateWrite(msgspec.Struct, frozen=True, kw_only=True, tag="federation-state"):
    request: FederationStateRequest


class FederationStateBatch(msgspec.Struct, frozen=True, kw_only=True, tag="federation-state-batch"):
    """Several upserts or deletes in one transaction (one index, one wake-up)."""

    op: FederationStateOp
    states: list[FederationState]


class Barrier(msgspec.Struct, frozen=True, kw_only=True, tag="barrier"):
    """Changes nothing; committing it proves leadership and that all before it is applied."""


class ACLTokenSet(msgspec.Struct, frozen=True, kw_only=True, tag="acl-token-set"):
    """Upsert one or more tokens in one transaction (replication sends many).

    The endpoint fills AccessorID, SecretID and CreateTime before the command
    enters the log, so every server stores the same token.
    """

    tokens: list[ACLToken]
    allow_missing_links: bool = False


class ACLTokenDelete(msgspec.Struct, frozen=True, kw_only=True, tag="acl-token-delete"):
    accessor_ids: list[str]


class ACLPolicySet(msgspec.Struct, frozen=True, kw_only=True, tag="acl-policy-set"):
    policies: list[ACLPolicy]


class ACLPolicyDelete(msgspec.Struct, frozen=True, kw_only=True, tag="acl-policy-delete"):
    policy_ids: list[str]


class ACLInitialize(msgspec.Struct, frozen=True, kw_only=True, tag="acl-initialize"):
    """Create the built-in policy and anonymous token if missing (a new leader's first
    ACL write); ``create_time`` is the anonymous token's, chosen by the leader."""

    create_time: datetime


class ACLBootstrap(msgspec.Struct, frozen=True, kw_only=True, tag="acl-bootstrap"):
    """The first management token; ``reset_index`` allows one more bootstrap when it
    equals the index of the last one."""

    token: ACLToken
    reset_index: int = 0


Command = (
    Register
    | Deregister
    | CheckStatusUpdate
    | FederationStateWrite
    | FederationStateBatch
    | Barrier
    | ACLTokenSet
    | ACLTokenDelete
    | ACLPolicySet
    | ACLPolicyDelete
    | ACLInitialize
    | ACLBootstrap
)

_encoder = msgspec.msgpack.Encoder()
_decoder: msgspec.msgpack.Decoder[Command] = msgspec.msgpack.Decoder(Command)


def encode_command(command: Command) -> bytes:
    return _encoder.encode(command)


def decode_command(data: bytes) -> Command:
    try:
        return _decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise CommandDecodeError(f"undecodable FSM command: {exc}") from exc
    except RecursionError:
        # Unknown fields are skipped by descending into them, so even a typed
        # decoder meets arbitrary nesting and gives up at the recursion limit.
        raise CommandDecodeError("undecodable FSM command: nested too deeply") from None


class ApplyResult(msgspec.Struct, frozen=True, kw_only=True):
    """What applying one log entry produced: its index and an error message or ``""``."""

    index: int
    error: str = ""


class Fsm:
    """Feeds log entries to a store. Call only from one thread (the Raft thread)."""

    def __init__(self, store: StateStore | None = None) -> None:
        self.store = store if store is not None else StateStore()

    def apply(self, index: int, data: bytes) -> ApplyResult:
        """Apply one entry. Never raises: a bad entry is logged and reported as an error result."""
        try:
            self._dispatch(index, decode_command(data))
        except FsmError as exc:
            return ApplyResult(index=index, error=str(exc))
        except Exception as exc:  # a bug must not kill the Raft thread or diverge servers
            logger.exception("fsm apply failed index=%d; entry skipped, store unchanged", index)
            return ApplyResult(index=index, error=f"internal error applying entry {index}: {exc}")
        return ApplyResult(index=index)

    def _dispatch(self, index: int, command: Command) -> None:
        store = self.store
        match command:
            case Register(request=request):
                store.ensure_registration(index, request)
            case Deregister(request=request):
                if request.check_id:
                    store.delete_check(index, request.node, request.check_id)
                elif request.service_id:
                    store.delete_service(index, request.node, request.service_id)
                else:
                    store.delete_node(index, request.node)
            case CheckStatusUpdate():
                store.update_check_status(
                    index, command.node, command.check_id, command.status, command.output
                )
            case FederationStateWrite(request=request):
                if request.op == "upsert":
                    store.federation_state_set(index, request.state)
                elif request.op == "delete":
                    store.federation_state_delete(index, request.state.datacenter)
                else:
                    raise InvalidOperationError(request.op)
            case FederationStateBatch(op=op, states=states):
                if op == "upsert":
                    store.federation_state_batch_set(index, states)
                elif op == "delete":
                    store.federation_state_batch_delete(index, [s.datacenter for s in states])
                else:
                    raise InvalidOperationError(op)
            case Barrier():
                pass
            case ACLTokenSet(tokens=tokens, allow_missing_links=allow_missing):
                store.acl_token_set(index, tokens, allow_missing_links=allow_missing)
            case ACLTokenDelete(accessor_ids=accessor_ids):
                store.acl_token_delete(index, accessor_ids)
            case ACLPolicySet(policies=policies):
                store.acl_policy_set(index, policies)
            case ACLPolicyDelete(policy_ids=policy_ids):
                store.acl_policy_delete(index, policy_ids)
            case ACLInitialize(create_time=create_time):
                store.acl_initialize(index, create_time)
            case ACLBootstrap(token=token, reset_index=reset_index):
                store.acl_bootstrap(index, token, reset_index)

    def snapshot(self) -> bytes:
        return self.store.snapshot()

    def restore(self, data: bytes) -> None:
        self.store.restore(data)
