"""The gateway's HTTP client for the local servers' API: one session, the pool's
current server, a deadline on every request, and two kinds of failure.

:class:`ServerUnreachableError` means the server could not be reached (move
on to the next one); :class:`ApiError` means it answered with an error
status (it is alive; whether to move on is the caller's call).
"""

from __future__ import annotations

from typing import Final

import aiohttp
import msgspec

from wanfed_proto import error_text

from ._watch import ServerPool

__all__ = ["REQUEST_MARGIN", "ApiClient", "ApiError", "HiddenToken", "ServerUnreachableError"]

REQUEST_MARGIN: Final = 10.0
"""Seconds a request may take (a blocking query: beyond its ``wait`` and jitter)."""


class ServerUnreachableError(Exception):
    """The server's HTTP API could not be reached or stopped answering; try another."""


class ApiError(Exception):
    """The server answered with an error status; the server itself is alive."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"HTTP {status}: {text.strip()}")
        self.status = status


class HiddenToken(str):
    """An ACL secret that a ``repr`` (a logged settings object) shows as ``<redacted>``."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "'<redacted>'" if self else "''"


class ApiClient:
    """A thin HTTP client over the pool: the current server, one session.

    ``token`` (the gateway's ACL token) is presented as ``X-Consul-Token`` on
    every request, so registration and discovery work under ``default_policy = "deny"``.
    """

    def __init__(self, pool: ServerPool, token: str = "") -> None:
        self.pool = pool
        self._headers = {"X-Consul-Token": str(token)} if token else {}
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: object = None,
        limit: float = REQUEST_MARGIN,
        url: str | None = None,
    ) -> tuple[bytes, int, str]:
        """Send one request; returns the body, ``X-Consul-Index`` (0 when absent)
        and ``X-Consul-ContentHash`` (empty when absent)."""
        base = url or self.pool.current
        data = None if body is None else msgspec.json.encode(body)
        try:
            async with self.session.request(
                method,
                base + path,
                params=params,
                data=data,
                headers=self._headers,
                timeout=aiohttp.ClientTimeout(total=limit),
            ) as response:
                payload = await response.read()
                if response.status != 200:
                    raise ApiError(response.status, payload.decode(errors="replace"))
                index_text = response.headers.get("X-Consul-Index", "0")
                content_hash = response.headers.get("X-Consul-ContentHash", "")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise ServerUnreachableError(f"{base}: {error_text(exc)}") from exc
        try:
            index = int(index_text)
        except ValueError:
            index = 0
        return payload, index, content_hash
