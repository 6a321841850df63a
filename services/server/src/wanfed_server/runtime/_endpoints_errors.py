"""The one error an endpoint raises on purpose: the request itself is invalid.

A caller that sends a request no server can carry out (a check whose
``DeregisterCriticalServiceAfter`` is not a duration, a health query without
a service) must learn that it is at fault, so the HTTP API answers 400, not
the 500 of a server-side failure. Errors cross the RPC wire as text only
(net/rpc style), so the kind travels in the wording: an invalid request's
message starts with :data:`INVALID_REQUEST_PREFIX`. :func:`typed_remote_error`
turns such a message received from another server back into
:class:`InvalidRequestError`, so a request forwarded to the leader or to
another datacenter fails exactly as one answered here.
"""

from __future__ import annotations

from typing import Final

from wanfed_proto import RemoteError

__all__ = ["INVALID_REQUEST_PREFIX", "InvalidRequestError", "typed_remote_error"]

INVALID_REQUEST_PREFIX: Final = "invalid request: "


class InvalidRequestError(RemoteError):
    """The caller's request is wrong; sent again unchanged it fails again.

    A :class:`RemoteError`, so code that handles any server-side refusal
    keeps working; the RPC port answers it with its message and no traceback.
    """

    def __init__(self, reason: str) -> None:
        message = (
            reason
            if reason.startswith(INVALID_REQUEST_PREFIX)
            else f"{INVALID_REQUEST_PREFIX}{reason}"
        )
        super().__init__(message)
        self.reason = message.removeprefix(INVALID_REQUEST_PREFIX)


def typed_remote_error(error: RemoteError) -> RemoteError:
    """``error`` as received from another server, with its kind restored from the text."""
    if isinstance(error, InvalidRequestError):
        return error
    message = str(error)
    if message.startswith(INVALID_REQUEST_PREFIX):
        return InvalidRequestError(message)
    return error
