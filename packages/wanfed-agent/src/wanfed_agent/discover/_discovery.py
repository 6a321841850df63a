"""Primary-gateway discovery: turn ``primary_gateways`` into fallback addresses.

A secondary server cannot reach the primary until it knows a gateway to
dial. This routine resolves the configured entries every
``primary_gateways_interval`` until the list is non-empty and hands it to the
gateway locator through one small interface. Unlike Consul, it does not stop
early when replication (or a restart's stored states) already named the
primary's gateways: those may be the stale ones of a primary whose gateways
were all replaced, and a provider that answers nothing *right now* (a DNS
record not yet published, a file not yet written) must still be heard once
it answers, without a restart. The WAN join never waits for this routine: it
starts as soon as the locator knows any gateway to the primary.

Once something was found, the routine watches: while the locator says that
the leader is dialling the primary's gateways directly and every candidate
keeps failing, it re-runs discovery every interval, so replacing every
primary gateway and updating only the discovery source heals a running
secondary without a restart.
"""

from __future__ import annotations

import asyncio
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
        needs_rediscovery: Callable[[], bool] = lambda: False,
        providers: Mapping[str, DiscoveryProvider] | None = None,
    ) -> None:
        """``needs_rediscovery`` is asked after the first success; while it says
        True, discovery runs again every interval."""
        if not interval > 0:
            raise ValueError(
                f"discovery interval must be greater than zero seconds, got {interval!r}"
            )
        self._entries = list(entries)
        self._sink = sink
        self._interval = interval
        self._needs_rediscovery = needs_rediscovery
        self._providers: dict[str, DiscoveryProvider] = dict(providers or {})
        self.found = asyncio.Event()
        """Set once the locator holds a non-empty fallback list."""
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
            await asyncio.sleep(self._interval)
        while True:
            await asyncio.sleep(self._interval)
            if not self._needs_rediscovery():
                continue
            addresses = await self.discover_once()
            if addresses and self._sink.refresh_fallback_addresses(addresses, self.source):
                log.info(
                    "rediscovered the primary's mesh gateways while its known gateways fail",
                    extra={"gateways": addresses},
                )
