"""Keeping the gateway's own catalog entry: register, refresh the TTL, deregister.

The body comes from :class:`GatewayRegistration`; this adapter only sends it.
The TTL refresh writes the registration again every third of the TTL with
the time in its output (an identical write would not restart the TTL), so
the gateway's check is passing exactly while this process lives and turns
critical when it vanishes. Deregistration on a clean stop tries every server
once, so other datacenters stop routing here while the listener still
answers.
"""

from __future__ import annotations

import asyncio
import datetime
import logging

from ._api import ApiClient, ApiError, ServerUnreachableError
from ._registration import GatewayRegistration, refresh_interval

__all__ = ["Registrar"]

log = logging.getLogger("wanfed.gateway.process")


class Registrar:
    """Writes one gateway's registration through the shared API client."""

    def __init__(
        self,
        api: ApiClient,
        registration: GatewayRegistration,
        *,
        deregister_timeout: float,
        registered: asyncio.Event,
    ) -> None:
        """``registered`` is set each time the registration is written."""
        self._api = api
        self.registration = registration
        self._deregister_timeout = deregister_timeout
        self._refreshes = 0
        self._registered = registered

    async def register(self) -> None:
        """Write the registration, passing, with this moment in its output."""
        stamp = datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")
        self._refreshes += 1
        output = f"mesh gateway process alive; refresh {self._refreshes} at {stamp}"
        await self._api.request(
            "PUT", "/v1/catalog/register", body=self.registration.register_body(output)
        )
        self._registered.set()

    async def refresh_forever(self) -> None:
        """Keep the TTL check passing while this process runs, from the start:
        an entry left by a previous run of this gateway may be close to expiry.

        A refresh that fails is retried at the next tick (and the pool moves
        on when the server is gone): the TTL allows two lost refreshes before
        the check turns critical.
        """
        interval = refresh_interval(self.registration)
        while True:
            url = self._api.pool.current
            try:
                await self.register()
            except ServerUnreachableError as exc:
                log.warning(
                    "TTL refresh failed; trying the next server at the next refresh",
                    extra={"server": url, "error": str(exc), "next": self._api.pool.failed(url)},
                )
            except ApiError as exc:
                log.warning(
                    "TTL refresh refused; retrying at the next refresh",
                    extra={"server": url, "error": str(exc), "retry_in": interval},
                )
            except Exception:
                # A bug must not silently end the refreshes and let the gateway turn critical.
                log.exception(
                    "TTL refresh failed unexpectedly; retrying at the next refresh",
                    extra={"server": url, "retry_in": interval},
                )
            await asyncio.sleep(interval)

    async def deregister(self) -> None:
        """Remove the gateway's node, trying each server once (best effort)."""
        registration = self.registration
        body = registration.deregister_body()
        pool = self._api.pool
        for url in (pool.current, *[u for u in pool.urls if u != pool.current]):
            try:
                await self._api.request(
                    "PUT",
                    "/v1/catalog/deregister",
                    body=body,
                    url=url,
                    limit=self._deregister_timeout,
                )
            except (ServerUnreachableError, ApiError) as exc:
                log.warning(
                    "deregistration failed; trying the next server",
                    extra={"server": url, "error": str(exc)},
                )
                continue
            log.info(
                "gateway deregistered from the catalog",
                extra={"node": registration.node, "server": url},
            )
            return
        log.error(
            "gateway could not deregister; the catalog keeps it until its check "
            "has been critical long enough",
            extra={"node": registration.node},
        )
