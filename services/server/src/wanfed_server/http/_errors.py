"""How failures become HTTP answers, the way Consul's API reports them.

Clients (py-consul, curl scripts, the CLI) branch on the status code and
show the body, so every failure is a short ``text/plain`` message and never a
traceback: 400 for a request the caller got wrong, 403 for a permission
failure, 404 for an unknown agent check or service, 500 for anything the
servers reported (``No path to datacenter`` included, as Consul does) and
for lost connections. A request an RPC endpoint refused as invalid
(:class:`InvalidRequestError`, also when another server or datacenter
answered) is the caller's error too: 400 with the endpoint's message.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import msgspec
from aiohttp import web

from wanfed_proto import RemoteError, TransportError
from wanfed_server.local_agent import (
    CheckNotTtlError,
    DefinitionError,
    TooManyChecksError,
    UnknownCheckError,
    UnknownServiceError,
)
from wanfed_server.runtime import InvalidRequestError

__all__ = ["HttpError", "error_middleware", "status_for_remote_error"]

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class HttpError(Exception):
    """Stop handling and answer ``status`` with ``message`` as the body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def status_for_remote_error(message: str) -> int:
    """Consul answers most RPC errors with 500; ACL denials are the exception."""
    if "Permission denied" in message or "ACL not found" in message:
        return 403
    if message == "ACL support disabled":
        return 401
    return 500


def _text(status: int, message: str) -> web.Response:
    return web.Response(status=status, text=message)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except HttpError as error:
        return _text(error.status, error.message)
    except TooManyChecksError as error:
        return _text(400, str(error))
    except (DefinitionError, msgspec.ValidationError, msgspec.DecodeError) as error:
        return _text(400, f"Request decode failed: {error}")
    except UnknownCheckError as error:
        return _text(404, str(error))
    except UnknownServiceError as error:
        return _text(404, str(error))
    except CheckNotTtlError as error:
        return _text(500, str(error))
    except InvalidRequestError as error:
        logger.info("rpc refused the request path=%s error=%s; answered 400", request.path, error)
        return _text(400, str(error))
    except RemoteError as error:
        message = str(error)
        logger.info("rpc failed path=%s error=%s", request.path, message)
        return _text(status_for_remote_error(message), message)
    except TransportError as error:
        logger.warning("rpc connection lost path=%s error=%s", request.path, error)
        return _text(500, f"rpc error: {error}")
    except Exception:
        logger.exception("http handler failed path=%s; answered 500", request.path)
        return _text(500, "internal error; see the server log")
