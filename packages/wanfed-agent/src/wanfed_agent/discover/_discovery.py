"""Primary-gateway discovery: turn ``primary_gateways`` into fallback addresses.

A secondary server cannot reach the primary until it knows at least one of
the primary's gateways. This routine resolves the configured entries every
``primary_gateways_interval`` until the list is non-empty, hands it to the
gateway locator through one small interface, and then stops — as Consul does
— unless the locator later says that the leader is dialling the primary's
gateways directly and every candidate keeps failing. In that state the
routine keeps re-running discovery, so replacing every primary gateway and
updating only the discovery source (a DNS record, a file) heals a running
secondary without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol

from ._providers import DiscoveryError, DiscoveryProvider, load_provider, parse_provider_entry

__all__ = ["FallbackSink", "PrimaryGatewayDiscovery"]

log = logging.getLogger("wanfed.discover")


class FallbackSink(Protocol):
    """Where discovered addresses go: the gateway locator."""

    def refresh_fallback_addresses(
        self, addresses: Iterable[str], source: str = "configured"
    ) -> bool: ...


class PrimaryGatewayDiscovery:
    """Resolves ``primary_gateways`` and keeps the locator's fallback list current."""

    def __init__(
        self,
        entries: Sequence[str],
        sink: FallbackSink,
        *,
        interval: float,
        ready: asyncio.Event | None = None,
        needs_rediscovery: Callable[[], bool] = lambda: False,
        providers: Mapping[str, DiscoveryProvider] | None = None,
    ) -> None:
        """``ready`` is set when replication learnt the primary's gateways.

        ``needs_rediscovery`` is asked after the first success; while it says
        True, discovery runs again every interval.
        """
        self._entries = list(entries)
        self._sink = sink
        self._interval = interval
        self._ready = ready
        self._needs_rediscovery = needs_rediscovery
        self._providers: dict[str, DiscoveryProvider] = dict(providers or {})
        self.found = asyncio.Event()
        """Set once the locator holds a non-empty fallback list (the WAN join waits on it)."""
        self.attempts = 0
        for entry in self._entries:  # fail at start-up, not at the first attempt
            parsed = parse_provider_entry(entry)
            if parsed is not None and parsed.name not in self._providers:
                self._providers[parsed.name] = load_provider(parsed.name)

    @property
    def source(self) -> str:
        kinds = {"discovered" if parse_provider_entry(e) else "configured" for e in self._entries}
        return "+".join(sorted(kinds)) or "configured"

    async def discover_once(self) -> list[str]:
        """Resolve every entry; a failing provider is logged and skipped."""
        self.attempts += 1
        found: list[str] = []
        for entry in self._entries:
            parsed = parse_provider_entry(entry)
            if parsed is None:
                found.append(entry)  # host:port; names resolve at dial time
                continue
            try:
                addresses = await self._providers[parsed.name].addresses(parsed.args)
            except DiscoveryError as exc:
                log.warning("primary gateway discovery failed: %s", exc, extra={"entry": entry})
                continue
            found.extend(addresses)
        return sorted(set(found))

    async def _wait(self, *, stop_on_ready: bool) -> bool:
        """Sleep one interval; True when replication made further discovery moot."""
        if stop_on_ready and self._ready is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval):
                    await self._ready.wait()
                return True
            return False
        await asyncio.sleep(self._interval)
        return False

    async def run(self) -> None:
        """Discover until something is found, then watch for the need to rediscover."""
        if not self._entries:
            return
        while True:
            addresses = await self.discover_once()
            if addresses:
                self._sink.refresh_fallback_addresses(addresses, self.source)
                self.found.set()
                log.info(
                    "refreshing mesh gateways completed",
                    extra={"gateways": addresses, "attempts": self.attempts},
                )
                break
            log.warning(
                "no mesh gateways found; retrying in %g s",
                self._interval,
                extra={"entries": self._entries, "attempts": self.attempts},
            )
            if await self._wait(stop_on_ready=True):
                log.info("primary gateways learnt from replication; discovery not needed")
                return
        while True:
            await self._wait(stop_on_ready=False)
            if not self._needs_rediscovery():
                continue
            addresses = await self.discover_once()
            if addresses and self._sink.refresh_fallback_addresses(addresses, self.source):
                log.info(
                    "rediscovered the primary's mesh gateways while its known gateways fail",
                    extra={"gateways": addresses},
                )
